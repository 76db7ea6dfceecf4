"""Classification training: VoxNet (or the multi-view CNN, :class:`MVCNNTask`) on a :class:`VoxelSet`, one
:class:`ClassifyTask` for the engine.

:func:`shapes3d.engine.loop.fit` runs the epochs; this module says what one step is
(:func:`train_step` on an augmented batch), what an epoch end is (a validation pass on a
split carved from the training set) and what goes into a checkpoint. Everything random
comes from the engine's seeded generator (data order, augmentation) plus torch's global
RNG (dropout, init), so ``resume`` continues exactly where an uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shapes3d.classify.config import ClassifyConfig
from shapes3d.classify.evaluation import predict_proba
from shapes3d.classify.model import CL3D, FORMAT, build_model
from shapes3d.classify.mvcnn_data import check_source, load_backbone
from shapes3d.config import config_to_dict
from shapes3d.data.voxel_dataset import (
    GridStack,
    VoxelSet,
    apply_augment,
    augment_params,
    class_weights,
    select_rotations,
    stratified_split,
)
from shapes3d.engine.distributed import Dist, batch_to, setup, wrap_ddp
from shapes3d.engine.jobs import input_hashes
from shapes3d.engine.loop import Task, fit
from shapes3d.engine.rng import seed_all
from shapes3d.engine.run_folder import check_run_folder
from shapes3d.errors import Shapes3DError
from shapes3d.models.voxnet import VoxNet

__all__ = ["FORMAT", "ClassifyTask", "MVCNNTask", "TrainResult", "build_model", "train", "train_step"]

log = logging.getLogger(__name__)
#: The config keys that fix VoxNet's weight shapes (the input resolution sets the first fc layer's width).
ARCHITECTURE_KEYS = ("model", "data.resolution")


def _optimizer(cfg: ClassifyConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    # The fused kernel: one pass over all parameters (VoxNet: 1.7 ms against 8.6 ms a step on one CPU thread).
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=fused)


def _scheduler(cfg: ClassifyConfig, opt: torch.optim.Optimizer):
    t = cfg.train
    if t.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs)
    if t.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=t.step_epochs, gamma=t.gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def train_step(model, opt, x: torch.Tensor, y: torch.Tensor, *, label_smoothing: float = 0.0,
               loss_scale: float = 1.0, precision: str = "fp32") -> dict[str, float]:
    """One optimisation step on a batch x (B, 1, R, R, R), y (B,); returns loss and accuracy.

    ``loss_scale`` multiplies the loss before backward (data-parallel ranks with unequal
    slices, see :mod:`shapes3d.engine.distributed`); the returned loss is unscaled.
    """
    model.train()
    with _autocast(precision, x.device):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    (loss * loss_scale if loss_scale != 1.0 else loss).backward()
    opt.step()
    return {"loss": loss.item(), "acc": (logits.argmax(1) == y).float().mean().item()}


def _autocast(precision: str, device: torch.device):
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class ClassifyTask(Task):
    """VoxNet on the training part of a voxel set; validation on the held-out part at each epoch end."""

    required_keys = ("model", "optimizer", "scheduler")
    architecture_keys = ARCHITECTURE_KEYS
    sum_keys = ("loss", "acc")
    unit = "batch"
    curves_title = "VoxNet training"

    def __init__(self, cfg: ClassifyConfig, train_set: VoxelSet, dist: Dist,
                 input_sha256: Sequence[str | None] | None = None, val_mix: np.ndarray | None = None) -> None:
        t = cfg.train
        self.cfg, self.dist, self.classes = cfg, dist, train_set.classes
        self.files = [str(p) for p in train_set.paths]
        self.sha256 = list(input_sha256) if input_sha256 is not None else input_hashes(train_set.paths)
        tr_idx, va_idx = stratified_split(train_set.labels, t.val_fraction, seed=t.val_seed, mix=val_mix)
        self.tr, self.va = train_set.subset(tr_idx), train_set.subset(va_idx)
        self.model = self.net = self.make_model()
        self.opt = _optimizer(cfg, self.model)
        self.sched = _scheduler(cfg, self.opt)
        self.best = -1.0
        self.weights = class_weights(self.tr.labels, len(self.classes)) if cfg.augment.balanced else None
        self.labels = torch.from_numpy(self.tr.labels)
        self.min_batch = max(2 if cfg.model.batch_norm else 1, dist.world)  # BatchNorm cannot train on one sample

    def make_model(self) -> torch.nn.Module:
        model = build_model(self.cfg, len(self.classes))
        if self.dist.enabled and self.dist.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # CPU (gloo) keeps per-rank statistics
        return model.to(self.dist.device, memory_format=CL3D)

    def begin(self, dist: Dist) -> None:
        self.net = wrap_ddp(self.model, dist)
        log.info("training %s (%d parameters) on %d shapes (%d validation), %d classes, device %s, %d rank(s)",
                 type(self.model).__name__, sum(p.numel() for p in self.model.parameters()), len(self.tr), len(self.va), len(self.classes),
                 dist.device, dist.world)

    def epoch_order(self, epoch: int, gen: torch.Generator) -> torch.Tensor:
        if self.weights is not None:
            return torch.multinomial(self.weights, len(self.tr), replacement=True, generator=gen)
        return torch.randperm(len(self.tr), generator=gen)

    def step(self, batch: torch.Tensor, epoch: int, gen: torch.Generator) -> tuple[dict[str, float], int] | None:
        if len(batch) < self.min_batch:
            return None
        a, t, dist = self.cfg.augment, self.cfg.train, self.dist
        params = augment_params(len(batch), self.tr.grids.shape[1], generator=gen, rotate=a.rotate,
                                mirror=a.mirror, translate=a.translate)
        mine = dist.shard(torch.arange(len(batch)))
        rows, p_mine = batch[mine], params[mine].clone()
        # read only the drawn rotation of each shape (lazy caches: the batch, not the dataset)
        g = torch.from_numpy(select_rotations(self.tr.grids, rows.numpy(), p_mine[:, 0].numpy()))
        p_mine[:, 0] = 0
        x = apply_augment(g, p_mine, up_axis=self.cfg.data.up_axis)
        x = batch_to(x, dist.device).contiguous(memory_format=CL3D)
        stats = train_step(self.net, self.opt, x, batch_to(self.labels[rows], dist.device),
                           label_smoothing=t.label_smoothing, precision=t.precision,
                           loss_scale=dist.loss_scale(len(mine), len(batch)))
        return stats, len(mine)

    def end_epoch(self, epoch: int, totals: dict[str, float], elapsed: Callable[[], float]) -> dict:
        self.sched.step()
        n, va = len(self.tr), self.va
        row = {"epoch": epoch, "lr": self.opt.param_groups[0]["lr"], "train_loss": totals["loss"] / n,
               "train_acc": totals["acc"] / n}
        if len(va):
            p = _predict_sharded(self.model, va.grids, self.cfg, self.dist)
            row["val_loss"] = float(-np.log(np.maximum(p[np.arange(len(va)), va.labels], 1e-12)).mean())
            row["val_acc"] = float((p.argmax(1) == va.labels).mean())
        row["seconds"] = elapsed()
        log.info("epoch %d/%d  loss %.4f  train acc %.3f%s  %.1fs", epoch, self.cfg.train.epochs, row["train_loss"],
                 row["train_acc"], f"  val acc {row['val_acc']:.3f}" if "val_acc" in row else "", row["seconds"])
        return row

    def is_better(self, row: dict) -> bool:
        score = row.get("val_acc", row["train_acc"])
        improved, self.best = score > self.best, max(self.best, score)
        return improved

    def payload(self) -> dict:
        return {"format": FORMAT, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "config": config_to_dict(self.cfg),
                "classes": list(self.classes), "best_val_acc": self.best,
                "train_class_counts": np.bincount(self.tr.labels, minlength=len(self.classes)).tolist()}

    def identity(self) -> dict:
        return {"what": "class list", "names": list(self.classes), "files": self.files, "sha256": self.sha256,
                "ordered": False}

    def load(self, ck: dict) -> None:
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.best = ck["best_val_acc"]


class MVCNNTask(ClassifyTask):
    """The multi-view CNN on per-view features (frozen VGG) or on the views (fine-tuning the VGG).

    No augmentation: view pooling already makes the prediction invariant to turns by a multiple of the view step.
    The checkpoint records ``feature_source``, the identity of the VGG weights the features came from.
    """

    curves_title = "multi-view CNN training"

    def __init__(self, cfg: ClassifyConfig, train_set: VoxelSet, dist: Dist,
                 input_sha256: Sequence[str | None] | None = None, feature_source: dict | None = None,
                 val_mix: np.ndarray | None = None) -> None:
        self.feature_source = feature_source
        super().__init__(cfg, train_set, dist, input_sha256, val_mix)

    def make_model(self) -> torch.nn.Module:
        backbone = None
        if not self.cfg.model.mvcnn.frozen:
            backbone, self.feature_source = load_backbone(self.cfg.model.mvcnn)
        return build_model(self.cfg, len(self.classes), backbone=backbone).to(self.dist.device)

    def step(self, batch: torch.Tensor, epoch: int, gen: torch.Generator) -> tuple[dict[str, float], int] | None:
        if len(batch) < self.min_batch:
            return None
        dist = self.dist
        rows = batch[dist.shard(torch.arange(len(batch)))]
        x = torch.from_numpy(np.asarray(self.tr.grids[rows.numpy()]))
        x = batch_to(x.float().div(255) if x.dtype == torch.uint8 else x.float(), dist.device)
        stats = train_step(self.net, self.opt, x, batch_to(self.labels[rows], dist.device),
                           label_smoothing=self.cfg.train.label_smoothing, precision=self.cfg.train.precision,
                           loss_scale=dist.loss_scale(len(rows), len(batch)))
        return stats, len(rows)

    def payload(self) -> dict:
        return {**super().payload(), "feature_source": self.feature_source}

    def load(self, ck: dict) -> None:
        check_source(self.feature_source or {}, ck.get("feature_source"), "last.pt")
        super().load(ck)


@dataclass
class TrainResult:
    best_val_acc: float
    history: list[dict]
    best_path: Path
    last_path: Path
    interrupted: str | None = None  # name of the signal that stopped training early (checkpoint saved)


def train(cfg: ClassifyConfig, train_set: VoxelSet, out_dir: str | Path, *, resume: bool = False,
          stop_after: int | None = None, overwrite: bool = False,
          input_sha256: Sequence[str | None] | None = None, feature_source: dict | None = None,
          val_mix: np.ndarray | None = None) -> TrainResult:
    """Train on ``train_set`` (a validation split is carved from it); writes checkpoints, CSV log and curves.

    ``resume`` continues from ``out_dir/last.pt`` (also from the middle of an epoch);
    ``stop_after`` ends this invocation after that many epochs (for time-limited jobs:
    resume later and the result equals one uninterrupted run). Under ``torchrun`` each rank
    trains on its slice of every global batch (DistributedDataParallel); SIGINT/SIGTERM
    save the exact position and return with ``interrupted`` set.

    ``out_dir`` must not hold a run unless ``resume`` (continue it) or ``overwrite`` (replace it), see
    :func:`shapes3d.engine.run_folder.check_run_folder`; resume refuses other classes, training files (by content:
    ``input_sha256``, one per shape of ``train_set``, or read from its files) or architecture.
    ``cfg.model.kind = "mvcnn"``: ``train_set`` holds per-view features (``feature_source`` names the VGG they
    came from) or, fine-tuning, the views; see :mod:`shapes3d.classify.mvcnn_data`.
    ``val_mix``: the class weights of the validation split when ``train.val_mix = "test"`` (the test split's class
    counts, in ``train_set.classes`` order; :func:`shapes3d.classify.jobs.train` reads them from the data set).
    """
    t = cfg.train
    if t.val_mix == "test" and val_mix is None and t.val_fraction:
        raise Shapes3DError("train.val_mix = 'test' needs the test split's class mix (val_mix=): train through "
                            "shapes3d.classify.train, which reads it from the data set")
    val_mix = val_mix if t.val_mix == "test" else None
    check_run_folder(out_dir, resume=resume, overwrite=overwrite, epochs=t.epochs, config=cfg,
                     architecture_keys=ARCHITECTURE_KEYS)
    dist = setup(t.device)
    if dist.is_main:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    gen = seed_all(t.seed)
    if cfg.model.kind == "mvcnn":
        task = MVCNNTask(cfg, train_set, dist, input_sha256, feature_source, val_mix)
    else:
        task = ClassifyTask(cfg, train_set, dist, input_sha256, val_mix)
    res = fit(task, out_dir, dist=dist, gen=gen, epochs=t.epochs, batch_size=t.batch_size, config=cfg,
              checkpoint_steps=t.checkpoint_steps, checkpoint_every=1, resume=resume, stop_after=stop_after)
    return TrainResult(task.best, res.history, res.best_path, res.last_path, interrupted=res.interrupted)


def _predict_sharded(model: VoxNet, grids: np.ndarray | GridStack, cfg: ClassifyConfig, dist: Dist) -> np.ndarray:
    """Validation probabilities (S, K): each rank predicts its rows, one all-reduce assembles them."""
    rows = np.arange(dist.rank, len(grids), dist.world)
    mine = grids if not dist.enabled else grids.subset(rows) if isinstance(grids, GridStack) else grids[rows]
    p = predict_proba(model, mine, vote=cfg.vote, device=dist.device, up_axis=cfg.data.up_axis,
                      mirror_vote=cfg.mirror_vote)
    if not dist.enabled:
        return p
    full = torch.zeros(len(grids), p.shape[1], dtype=torch.float64)
    full[torch.from_numpy(rows)] = torch.from_numpy(p).double()
    return dist.all_sum_tensor(full).cpu().numpy()
