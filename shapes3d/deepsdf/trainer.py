"""DeepSDF auto-decoder training: decoder and one latent code per shape, optimised jointly.

:func:`shapes3d.engine.loop.fit` runs the epochs of an :class:`SDFTask`: each epoch shuffles
the shapes, and each step takes ``shapes_per_batch`` of them, draws a balanced set of SDF
samples per shape and runs :func:`train_step`. Everything random comes from one seeded ``torch.Generator``
(shape order), generators derived from (seed, epoch, shape) for the sample draws, and
torch's global RNG (init, dropout); the states go into the checkpoint so that ``resume``
continues exactly as an uninterrupted run would, also from the middle of an epoch. The
learning rates are a pure function of the epoch (step decay, or warm-up and cosine decay), so no
scheduler state.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from shapes3d.config import config_from_dict, config_to_dict
from shapes3d.data.sdf_dataset import SDFDataset
from shapes3d.deepsdf.config import DeepSDFConfig, SDFTrainConfig
from shapes3d.engine.checkpoint import load_checkpoint, require_keys
from shapes3d.engine.distributed import Dist, batch_to, setup, wrap_ddp
from shapes3d.engine.jobs import input_hashes
from shapes3d.engine.loop import Task, fit
from shapes3d.engine.rng import seed_all
from shapes3d.engine.run_folder import check_run_folder
from shapes3d.errors import CheckpointError, ConfigError
from shapes3d.losses.sdf_objective import sdf_objective
from shapes3d.models.deepsdf import LatentCodes, SDFDecoder
from shapes3d.utils.device import pick_device

log = logging.getLogger(__name__)
FORMAT = "shapes3d-deepsdf-v1"
OBJECTIVE = sdf_objective  # the fit module imports this very object


def build_decoder(cfg: DeepSDFConfig) -> SDFDecoder:
    m = cfg.model
    return SDFDecoder(latent_size=m.latent_size, hidden=m.hidden, layers=m.layers, skip_at=m.skip_at,
                      dropout=m.dropout, weight_norm=m.weight_norm, pe_frequencies=m.pe_frequencies)


def build_codes(cfg: DeepSDFConfig, n_shapes: int) -> LatentCodes | None:
    m = cfg.model
    if m.latent_size == 0:
        return None
    return LatentCodes(n_shapes, m.latent_size, init_std=m.code_init_std or None, max_norm=m.code_max_norm or None)


def build_optimizer(cfg: DeepSDFConfig, decoder: SDFDecoder, codes: LatentCodes | None) -> torch.optim.Adam:
    """Adam with two parameter groups: decoder (lr_decoder) and codes (lr_codes)."""
    groups = [{"params": list(decoder.parameters()), "lr": cfg.train.lr_decoder, "name": "decoder"}]
    if codes is not None:
        groups.append({"params": list(codes.parameters()), "lr": cfg.train.lr_codes, "name": "codes"})
    return torch.optim.Adam(groups)


def lr_multiplier(t: SDFTrainConfig, epoch: int) -> float:
    """The factor on both initial learning rates in ``epoch`` (counted from 1), a pure function of it.

    ``step`` (official): ``lr_factor ** (epoch // lr_interval)``. ``cosine``: after ``warmup_epochs``,
    ``r + (1 - r) * (1 + cos(pi * p)) / 2`` with ``r = lr_min_ratio`` and ``p = (epoch - W - 1) / (epochs - W)``
    (1 in the first epoch after the warm-up, never quite ``r``: the last epoch still learns). Warm-up (either
    schedule): epoch ``e <= W`` runs at ``e / W`` of the schedule's value.
    """
    w = t.warmup_epochs
    warm = min(1.0, epoch / w) if w > 0 else 1.0
    if t.lr_schedule == "step":
        return warm * t.lr_factor ** (epoch // t.lr_interval)
    if epoch <= w:
        return warm
    p = (epoch - w - 1) / max(1, t.epochs - w)
    return t.lr_min_ratio + (1.0 - t.lr_min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, p)))


def set_learning_rates(opt: torch.optim.Optimizer, t: SDFTrainConfig, epoch: int) -> None:
    """Both groups at their initial rate times :func:`lr_multiplier` (official step decay by default)."""
    decay = lr_multiplier(t, epoch)
    for g in opt.param_groups:
        g["lr"] = (t.lr_decoder if g["name"] == "decoder" else t.lr_codes) * decay


def autocast_for(precision: str, device: torch.device):
    """bf16 autocast (fp32 master weights) or a no-op context; ``auto`` is bf16 on CUDA only."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class AutoDecoder(torch.nn.Module):
    """Decoder and codes as one module, so DistributedDataParallel averages the code gradients too."""

    def __init__(self, decoder: SDFDecoder, codes: LatentCodes | None) -> None:
        super().__init__()
        self.decoder, self.codes = decoder, codes

    def forward(self, shape_idx: torch.Tensor, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Shapes (B,), xyz (B*S, 3) grouped by shape -> SDF (B*S,), codes (B, L) or None."""
        per_shape = xyz.shape[0] // shape_idx.shape[0]
        z = self.codes(shape_idx) if self.codes is not None else None  # (B, L), renormalised to max_norm
        latent = z.repeat_interleave(per_shape, dim=0) if z is not None else None
        return self.decoder(latent, xyz), z


def train_step(decoder: SDFDecoder, codes: LatentCodes | None, opt: torch.optim.Optimizer, shape_idx: torch.Tensor,
               xyz: torch.Tensor, sdf: torch.Tensor, *, t: SDFTrainConfig, epoch: int,
               net: torch.nn.Module | None = None, loss_scale: float = 1.0) -> dict[str, float]:
    """One step on B shapes (B,) with S samples each, xyz (B*S, 3), sdf (B*S,) grouped by shape.

    ``net`` is the (possibly DistributedDataParallel-wrapped) :class:`AutoDecoder` of
    ``decoder`` and ``codes``; ``loss_scale`` multiplies the loss before backward (see
    :mod:`shapes3d.engine.distributed`). Returned losses are unscaled.
    """
    net = AutoDecoder(decoder, codes) if net is None else net
    net.train()
    with autocast_for(t.precision, xyz.device):
        pred, z = net(shape_idx, xyz)
    # Every shape contributes equally many samples, so the per-shape codes give the same
    # mean norm as one row per sample, at 1/S of the cost.
    losses = OBJECTIVE(pred, sdf, z, delta=t.clamp, code_weight=t.code_reg, epoch=epoch, ramp_epochs=t.code_reg_ramp)
    opt.zero_grad(set_to_none=True)
    (losses["total"] * loss_scale if loss_scale != 1.0 else losses["total"]).backward()
    opt.step()
    return {k: float(v.detach()) for k, v in losses.items()}


def sample_batch(data: SDFDataset, shape_idx: torch.Tensor, samples_per_shape: int, *, seed: int,
                 epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced samples of shapes (B,) as :meth:`SDFDataset.sample`, drawn from per-(epoch, shape) generators.

    The draws for a shape depend only on (seed, epoch, shape), not on which shapes share
    its batch or rank, so a data-parallel run sees exactly the samples of a single process.
    """
    parts = [data.sample(shape_idx[i:i + 1], samples_per_shape,
                         generator=torch.Generator().manual_seed(_mix(seed, epoch, int(shape_idx[i]))))
             for i in range(len(shape_idx))]
    return torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts])


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix64-style mixing; distinct inputs give distinct streams)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class SDFTask(Task):
    """Decoder and codes on an :class:`SDFDataset`: batches of shapes, balanced samples of each."""

    required_keys = ("format", "decoder", "optimizer")
    architecture_keys = ("model",)
    sum_keys = ("total", "sdf", "code")
    bar_stat = "total"
    bar_format = ".4f"
    curves_title = "DeepSDF training"

    def __init__(self, cfg: DeepSDFConfig, data: SDFDataset, dist: Dist, input_sha256=None) -> None:
        self.cfg, self.t, self.data, self.dist = cfg, cfg.train, data, dist
        self.files = [str(p) for p in (getattr(data, "paths", None) or data.names)]
        self.sha256 = list(input_sha256) if input_sha256 is not None else input_hashes(self.files)
        self.decoder = build_decoder(cfg).to(dist.device)
        codes = build_codes(cfg, len(data))
        self.codes = codes.to(dist.device) if codes is not None else None
        self.opt = build_optimizer(cfg, self.decoder, self.codes)
        self.net: torch.nn.Module = AutoDecoder(self.decoder, self.codes)

    def begin(self, dist: Dist) -> None:
        self.net = wrap_ddp(self.net, dist)
        log.info("training DeepSDF (%d decoder parameters) on %d shapes, device %s, %s, %d rank(s)",
                 sum(p.numel() for p in self.decoder.parameters()), len(self.data), dist.device, self.t.precision,
                 dist.world)

    def begin_epoch(self, epoch: int) -> None:
        set_learning_rates(self.opt, self.t, epoch)

    def epoch_order(self, epoch: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randperm(len(self.data), generator=gen)

    def step(self, batch: torch.Tensor, epoch: int, gen: torch.Generator) -> tuple[dict[str, float], int] | None:
        dist, codes, t = self.dist, self.codes, self.t
        mine = dist.shard(batch)
        if dist.enabled and codes is not None:
            with torch.no_grad():  # max-norm renormalisation of every code in the global batch, on every
                codes(batch.to(dist.device))  # rank, so that the ranks' copies of the codes stay identical
        if len(batch) < dist.world:  # every rank needs a shape (DDP's backward is collective)
            return None
        xyz, sdf = sample_batch(self.data, mine, t.samples_per_shape, seed=t.seed, epoch=epoch)
        stats = train_step(self.decoder, codes, self.opt, batch_to(mine, dist.device), batch_to(xyz, dist.device),
                           batch_to(sdf, dist.device), t=t, epoch=epoch, net=self.net,
                           loss_scale=dist.loss_scale(len(mine), len(batch)))
        return stats, len(mine)

    def end_epoch(self, epoch: int, totals: dict[str, float], elapsed: Callable[[], float]) -> dict:
        n, seconds = len(self.data), elapsed()
        row = {"epoch": epoch, "lr_decoder": self.opt.param_groups[0]["lr"], "train_loss": totals["total"] / n,
               "train_sdf": totals["sdf"] / n, "train_code": totals["code"] / n,
               "seconds": seconds, "samples_per_s": n * self.t.samples_per_shape / seconds}
        if self.codes is not None:
            row["code_norm"] = float(self.codes.weight.detach().norm(dim=1).mean())
        log.info("epoch %d/%d  loss %.5f (sdf %.5f)  %.1fs", epoch, self.t.epochs, row["train_loss"],
                 row["train_sdf"], seconds)
        return row

    def payload(self) -> dict:
        d = self.data
        return {"format": FORMAT, "decoder": self.decoder.state_dict(),
                "codes": self.codes.state_dict() if self.codes is not None else {}, "optimizer": self.opt.state_dict(),
                "config": config_to_dict(self.cfg), "names": list(d.names), "offsets": d.offsets, "scales": d.scales,
                "paths": list(d.paths), "classes": list(d.classes)}

    def identity(self) -> dict:
        """Shape i has code i: resume needs the same inputs in the same order (by content when known)."""
        return {"what": "shape list", "names": list(self.data.names), "files": self.files, "sha256": self.sha256,
                "ordered": True}

    def load(self, ck: dict) -> None:
        self.decoder.load_state_dict(ck["decoder"])
        if self.codes is not None:
            self.codes.load_state_dict(ck["codes"])
        self.opt.load_state_dict(ck["optimizer"])

    def curve_rows(self, history: list[dict]) -> list[dict]:
        return [{"epoch": h["epoch"], "train_loss": h["train_loss"], "train_sdf": h["train_sdf"]} for h in history]


@dataclass
class SDFTrainResult:
    history: list[dict]
    last_path: Path
    interrupted: str | None = None  # name of the signal that stopped training early (checkpoint saved)


def train(cfg: DeepSDFConfig, data: SDFDataset, out_dir: str | Path, *, resume: bool = False,
          stop_after: int | None = None, overwrite: bool = False, input_sha256=None) -> SDFTrainResult:
    """Train decoder and codes on ``data``; writes ``last.pt``, ``log.csv``, ``curves.png`` and ``config.toml``.

    ``resume`` continues from ``out_dir/last.pt``; ``stop_after`` ends this call after that
    many epochs (resuming later gives the same result as one uninterrupted run). Under
    ``torchrun`` each rank takes its slice of every batch of shapes and draws only their
    samples; every code is updated from the gradient averaged over ranks, as one process
    would. SIGINT/SIGTERM save the exact position and return with ``interrupted`` set.

    ``out_dir`` must not hold a run unless ``resume`` or ``overwrite``
    (:func:`shapes3d.engine.run_folder.check_run_folder`); resume refuses another shape list (by content:
    ``input_sha256``, one per shape, or read from the shapes' files) or another ``model`` section.
    """
    t = cfg.train
    if cfg.model.latent_size == 0 and len(data) != 1:
        raise ConfigError(f"single-shape mode (model.latent_size = 0) trains on exactly 1 shape, got {len(data)}")
    check_run_folder(out_dir, resume=resume, overwrite=overwrite, epochs=t.epochs, config=cfg,
                     architecture_keys=SDFTask.architecture_keys)
    dist = setup(t.device)
    if dist.is_main:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    gen = seed_all(t.seed)
    task = SDFTask(cfg, data, dist, input_sha256)
    res = fit(task, out_dir, dist=dist, gen=gen, epochs=t.epochs, batch_size=t.shapes_per_batch, config=cfg,
              checkpoint_every=t.checkpoint_every, resume=resume, stop_after=stop_after)
    return SDFTrainResult(res.history, res.last_path, interrupted=res.interrupted)


@dataclass
class TrainedDeepSDF:
    """A trained model: decoder (eval mode), codes (S, L) or None, config, unique shape ids (``names``),
    normalisations (S, 3), (S,), and per shape its source file (absolute) and class."""

    decoder: SDFDecoder
    codes: torch.Tensor | None
    config: DeepSDFConfig
    names: list[str]
    offsets: torch.Tensor
    scales: torch.Tensor
    paths: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    sha256: list[str | None] = field(default_factory=list)  #: content hash of each source file (None: unknown)


def load_deepsdf(path: str | Path, *, device: str = "auto") -> TrainedDeepSDF:
    """Decoder, codes, config, shape names and normalisations from a training checkpoint."""
    ck = load_checkpoint(path)
    require_keys(path, ck, ("format", "decoder", "codes", "config", "names", "offsets", "scales"))
    if ck["format"] != FORMAT:
        raise CheckpointError(path, f"format {ck['format']!r} is not a DeepSDF checkpoint ({FORMAT})")
    cfg = config_from_dict(DeepSDFConfig, ck["config"], source=f"{path} (config)")
    dev = pick_device(device)
    decoder = build_decoder(cfg)
    decoder.load_state_dict(ck["decoder"])
    codes = ck["codes"].get("embedding.weight") if ck["codes"] else None
    names, paths = list(ck["names"]), list(ck.get("paths", ()))
    if "paths" not in ck:  # checkpoints before shape ids stored the source paths as names
        from shapes3d.data.shape_ids import shape_names

        paths, names = names, shape_names(names)
    classes = list(ck.get("classes", ())) or [""] * len(names)
    return TrainedDeepSDF(decoder.to(dev).eval(), None if codes is None else codes.to(dev), cfg, names,
                          ck["offsets"], ck["scales"], paths, classes, _stored_hashes(ck, len(names)))


def _stored_hashes(ck: dict, n: int) -> list:
    """The shapes' content hashes a checkpoint recorded (its ``identity``), or [] when it has none."""
    identity = ck.get("identity")
    sha = list(identity.get("sha256") or []) if isinstance(identity, dict) else []
    return sha if len(sha) == n else []
