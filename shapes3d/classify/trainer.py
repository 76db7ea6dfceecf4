"""Voxel classification: train VoxNet, evaluate with rotation voting, predict.

The loop reads top to bottom: for each epoch, one pass of :func:`train_step` over
shuffled batches, one validation pass, a log row, checkpoints. Everything random
comes from one seeded ``torch.Generator`` (data order, augmentation) plus torch's
global RNG (dropout, init); both are saved in the checkpoint so ``--resume``
continues exactly where an uninterrupted run would be.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shapes3d.classify.config import ClassifyConfig
from shapes3d.config import config_from_dict, config_to_dict, config_to_toml
from shapes3d.data.voxel_dataset import (
    GridStack,
    VoxelSet,
    apply_augment,
    augment_params,
    class_weights,
    select_rotations,
    stratified_split,
)
from shapes3d.engine.checkpoint import load_checkpoint, require_keys, save_checkpoint
from shapes3d.engine.distributed import StopFlag, batch_to, setup, wrap_ddp
from shapes3d.engine.plots import plot_confusion, plot_curves
from shapes3d.errors import CheckpointError
from shapes3d.models.voxnet import VoxNet
from shapes3d.utils.device import pick_device
from shapes3d.utils.io import atomic_write_csv, atomic_write_text
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)
FORMAT = "shapes3d-classify-v1"
# Channels-last 3D activations: oneDNN's conv3d kernels ran a VoxNet training step ~20 % faster
# on this CPU (1.30 s vs 1.70 s per batch of 32, one thread); the maths is unchanged.
_CL3D = torch.channels_last_3d


def build_model(cfg: ClassifyConfig, n_classes: int) -> VoxNet:
    m = cfg.model
    return VoxNet(n_classes, resolution=cfg.data.resolution, filters=m.filters, hidden=m.hidden,
                  dropout=m.dropout, batch_norm=m.batch_norm)


def _optimizer(cfg: ClassifyConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


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


@torch.no_grad()
def predict_proba(model: VoxNet, grids: np.ndarray, *, vote: bool, device: torch.device,
                  batch_size: int = 64, mirror_vote: bool = False, up_axis: str = "z") -> np.ndarray:
    """uint8 grids (S, K, R, R, R) -> class probabilities (S, K_classes).

    With ``vote`` the softmax is averaged over all K cached rotations (and, with
    ``mirror_vote``, their mirror images); otherwise only rotation 0 is used.
    """
    model.eval()
    out = []
    flip_axis = [a for a in range(3) if a != {"x": 0, "y": 1, "z": 2}[up_axis]][0] + 2
    for start in range(0, len(grids), batch_size):
        g = torch.as_tensor(np.asarray(grids[start:start + batch_size]))
        if not vote:
            g = g[:, :1]
        b, k = g.shape[:2]
        x = g.reshape(b * k, 1, *g.shape[2:]).float().to(device).contiguous(memory_format=_CL3D)
        p = F.softmax(model(x), dim=1)
        if mirror_vote:
            p = (p + F.softmax(model(x.flip(flip_axis)), dim=1)) / 2
        out.append(p.reshape(b, k, -1).mean(1).cpu())
    return torch.cat(out).numpy()


def _rng_state(gen: torch.Generator) -> dict:
    return {"torch": torch.get_rng_state(), "generator": gen.get_state()}


def _set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["generator"])


@dataclass
class TrainResult:
    best_val_acc: float
    history: list[dict]
    best_path: Path
    last_path: Path
    interrupted: str | None = None  # name of the signal that stopped training early (checkpoint saved)


def train(cfg: ClassifyConfig, train_set: VoxelSet, out_dir: str | Path, *, resume: bool = False,
          stop_after: int | None = None) -> TrainResult:
    """Train on ``train_set`` (a validation split is carved from it); writes checkpoints, CSV log and curves.

    ``resume`` continues from ``out_dir/last.pt`` (also from the middle of an epoch);
    ``stop_after`` ends this invocation after that many epochs (for time-limited jobs:
    resume later and the result equals one uninterrupted run). Under ``torchrun`` each rank
    trains on its slice of every global batch (DistributedDataParallel); SIGINT/SIGTERM
    save the exact position and return with ``interrupted`` set.
    """
    out = Path(out_dir)
    t = cfg.train
    dist = setup(t.device)
    device = dist.device
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(t.seed)
    gen = torch.Generator().manual_seed(t.seed)
    tr_idx, va_idx = stratified_split(train_set.labels, t.val_fraction, seed=t.seed)
    tr, va = train_set.subset(tr_idx), train_set.subset(va_idx)
    classes = train_set.classes
    model = build_model(cfg, len(classes))
    if dist.enabled and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # CPU (gloo) keeps per-rank statistics
    model = model.to(device, memory_format=_CL3D)
    opt = _optimizer(cfg, model)
    sched = _scheduler(cfg, opt)
    history: list[dict] = []
    start_epoch, best, position = 1, -1.0, None
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume and last_path.exists():
        ck = load_checkpoint(last_path, map_location=device)
        require_keys(last_path, ck, ("model", "optimizer", "scheduler", "epoch", "rng", "history"))
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        _set_rng_state(ck["rng"], gen)
        history, best, start_epoch = ck["history"], ck["best_val_acc"], ck["epoch"] + 1
        position = ck.get("position")
        log.info("resumed from %s at epoch %d%s", last_path, start_epoch,
                 f", step {position['step']}" if position else "")
    net = wrap_ddp(model, dist)
    if dist.is_main:
        atomic_write_text(out / "config.toml", config_to_toml(cfg, header="Resolved configuration of this run."))
    log.info("training VoxNet (%d parameters) on %d shapes (%d validation), %d classes, device %s, %d rank(s)",
             sum(p.numel() for p in model.parameters()), len(tr), len(va), len(classes), device, dist.world)
    weights = class_weights(tr.labels, len(classes)) if cfg.augment.balanced else None
    labels_t = torch.from_numpy(tr.labels)
    n_batches = math.ceil(len(tr) / t.batch_size)
    min_batch = max(2 if cfg.model.batch_norm else 1, dist.world)  # BatchNorm cannot train on one sample

    def payload(epoch_done: int, pos: dict | None) -> dict:
        return {"format": FORMAT, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "epoch": epoch_done, "rng": _rng_state(gen), "history": history,
                "config": config_to_dict(cfg), "classes": list(classes), "best_val_acc": best, "position": pos}

    end_epoch = t.epochs if stop_after is None else min(t.epochs, start_epoch + stop_after - 1)
    with StopFlag() as stop:
        for epoch in range(start_epoch, end_epoch + 1):
            if position is not None and position["epoch"] == epoch:
                order, first, sums, spent = position["order"], position["step"], position["sums"], position["seconds"]
                position = None
            else:
                if weights is not None:
                    order = torch.multinomial(weights, len(tr), replacement=True, generator=gen)
                else:
                    order = torch.randperm(len(tr), generator=gen)
                first, sums, spent = 0, {"loss": 0.0, "acc": 0.0}, 0.0
            t0 = time.perf_counter() - spent
            bar = progress(range(first, n_batches), desc=f"epoch {epoch}/{t.epochs}", unit="batch", leave=False,
                           disable=not dist.is_main)
            for bi in bar:
                idx = order[bi * t.batch_size:(bi + 1) * t.batch_size]
                if len(idx) >= min_batch:
                    params = augment_params(len(idx), tr.grids.shape[1], generator=gen, rotate=cfg.augment.rotate,
                                            mirror=cfg.augment.mirror, translate=cfg.augment.translate)
                    mine = dist.shard(torch.arange(len(idx)))
                    rows, p_mine = idx[mine], params[mine].clone()
                    # read only the drawn rotation of each shape (lazy caches: the batch, not the dataset)
                    g = torch.from_numpy(select_rotations(tr.grids, rows.numpy(), p_mine[:, 0].numpy()))
                    p_mine[:, 0] = 0
                    x = apply_augment(g, p_mine, up_axis=cfg.data.up_axis)
                    x = batch_to(x, device).contiguous(memory_format=_CL3D)
                    stats = train_step(net, opt, x, batch_to(labels_t[idx[mine]], device),
                                       label_smoothing=t.label_smoothing, precision=t.precision,
                                       loss_scale=dist.loss_scale(len(mine), len(idx)))
                    for k in sums:
                        sums[k] += stats[k] * len(mine)
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(loss=f"{stats['loss']:.3f}")
                step_pos = {"epoch": epoch, "step": bi + 1, "order": order, "sums": dict(sums),
                            "seconds": time.perf_counter() - t0}
                if stop.requested(dist):
                    if dist.is_main:
                        save_checkpoint(last_path, payload(epoch - 1, step_pos))
                    log.warning("stopped by %s at epoch %d, step %d/%d; resume with --resume", stop.name, epoch,
                                bi + 1, n_batches)
                    return TrainResult(best, history, best_path, last_path, interrupted=stop.name)
                if t.checkpoint_steps and (bi + 1) % t.checkpoint_steps == 0 and bi + 1 < n_batches and dist.is_main:
                    save_checkpoint(last_path, payload(epoch - 1, step_pos))
            sched.step()
            total = dist.all_sum([sums["loss"], sums["acc"]])
            row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "train_loss": total[0] / len(tr),
                   "train_acc": total[1] / len(tr)}
            if len(va):
                p = _predict_sharded(model, va.grids, cfg, dist)
                row["val_loss"] = float(-np.log(np.maximum(p[np.arange(len(va)), va.labels], 1e-12)).mean())
                row["val_acc"] = float((p.argmax(1) == va.labels).mean())
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            score = row.get("val_acc", row["train_acc"])
            improved = score > best
            best = max(best, score)
            if dist.is_main:
                if improved:
                    save_checkpoint(best_path, payload(epoch, None))
                save_checkpoint(last_path, payload(epoch, None))
                _write_log(history, out)
            log.info("epoch %d/%d  loss %.4f  train acc %.3f%s  %.1fs", epoch, t.epochs, row["train_loss"],
                     row["train_acc"], f"  val acc {row['val_acc']:.3f}" if "val_acc" in row else "", row["seconds"])
    dist.barrier()
    return TrainResult(best, history, best_path, last_path)


def _predict_sharded(model: VoxNet, grids: np.ndarray | GridStack, cfg: ClassifyConfig, dist) -> np.ndarray:
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


def _write_log(history: list[dict], out: Path) -> None:
    atomic_write_csv(out / "log.csv", history)
    plot_curves(history, out / "curves.png", title="VoxNet training")


def load_classifier(path: str | Path, *, device: str = "auto") -> tuple[VoxNet, ClassifyConfig, list[str]]:
    """A trained model (eval mode, on the device), its config and class names from a checkpoint."""
    ck = load_checkpoint(path)
    require_keys(path, ck, ("format", "model", "config", "classes"))
    if ck["format"] != FORMAT:
        raise CheckpointError(path, f"format {ck['format']!r} is not a classification checkpoint ({FORMAT})")
    cfg = config_from_dict(ClassifyConfig, ck["config"], source=f"{path} (config)")
    model = build_model(cfg, len(ck["classes"]))
    model.load_state_dict(ck["model"])
    dev = pick_device(device)
    return model.to(dev).eval(), cfg, list(ck["classes"])


def evaluate(model: VoxNet, cfg: ClassifyConfig, test_set: VoxelSet, out_dir: str | Path, *,
             vote: bool | None = None, mirror_vote: bool | None = None, device: str = "auto") -> dict:
    """Overall and mean-class accuracy, per-class table, confusion matrix PNG and JSON in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vote = cfg.vote if vote is None else vote
    mirror_vote = cfg.mirror_vote if mirror_vote is None else mirror_vote
    dev = next(model.parameters()).device if device == "auto" else pick_device(device)
    t0 = time.perf_counter()
    p = predict_proba(model, test_set.grids, vote=vote, device=dev, up_axis=cfg.data.up_axis, mirror_vote=mirror_vote)
    seconds = time.perf_counter() - t0
    pred = p.argmax(1)
    k = len(test_set.classes)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (test_set.labels, pred), 1)
    support = conf.sum(1)
    per_class = {c: {"accuracy": float(conf[i, i] / support[i]) if support[i] else None, "support": int(support[i])}
                 for i, c in enumerate(test_set.classes)}
    accs = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    result = {
        "overall_accuracy": float((pred == test_set.labels).mean()),
        "mean_class_accuracy": float(np.mean(accs)),
        "n": int(len(test_set)),
        "vote": bool(vote),
        "rotations": int(test_set.grids.shape[1]) if vote else 1,
        "mirror_vote": bool(mirror_vote),
        "per_class": per_class,
        "confusion": conf.tolist(),
        "classes": list(test_set.classes),
        "inference_shapes_per_second": float(len(test_set) / seconds),
        "skipped": [[str(p), r] for p, r in test_set.skipped],
    }
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2))
    plot_confusion(conf, test_set.classes, out / "confusion.png",
                   title=f"accuracy {result['overall_accuracy']:.3f} (mean class {result['mean_class_accuracy']:.3f})")
    return result
