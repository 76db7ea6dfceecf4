"""DeepSDF auto-decoder training: decoder and one latent code per shape, optimised jointly.

The loop reads top to bottom: each epoch shuffles the shapes, and each step takes
``shapes_per_batch`` of them, draws a balanced set of SDF samples per shape and runs
:func:`train_step`. Everything random comes from one seeded ``torch.Generator``
(shape order), generators derived from (seed, epoch, shape) for the sample draws, and
torch's global RNG (init, dropout); the states go into the checkpoint so that ``resume``
continues exactly as an uninterrupted run would, also from the middle of an epoch. The
learning rates are a pure function of the epoch (step decay), so no scheduler state.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from shapes3d.config import config_from_dict, config_to_dict, config_to_toml
from shapes3d.data.sdf_dataset import SDFDataset
from shapes3d.deepsdf.config import DeepSDFConfig, SDFTrainConfig
from shapes3d.engine.checkpoint import load_checkpoint, require_keys, save_checkpoint
from shapes3d.engine.distributed import StopFlag, batch_to, setup, wrap_ddp
from shapes3d.engine.plots import plot_curves
from shapes3d.errors import CheckpointError, ConfigError
from shapes3d.losses.sdf_objective import sdf_objective
from shapes3d.models.deepsdf import LatentCodes, SDFDecoder
from shapes3d.utils.device import pick_device
from shapes3d.utils.io import atomic_write_csv, atomic_write_text
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)
FORMAT = "shapes3d-deepsdf-v1"
OBJECTIVE = sdf_objective  # the fit module imports this very object


def build_decoder(cfg: DeepSDFConfig) -> SDFDecoder:
    m = cfg.model
    return SDFDecoder(latent_size=m.latent_size, hidden=m.hidden, layers=m.layers, skip_at=m.skip_at,
                      dropout=m.dropout, weight_norm=m.weight_norm)


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


def set_learning_rates(opt: torch.optim.Optimizer, t: SDFTrainConfig, epoch: int) -> None:
    """Official step decay: lr = initial * factor ** (epoch // interval), epochs counted from 1."""
    decay = t.lr_factor ** (epoch // t.lr_interval)
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


def _rng_state(gen: torch.Generator, device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "generator": gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["generator"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class SDFTrainResult:
    history: list[dict]
    last_path: Path
    interrupted: str | None = None  # name of the signal that stopped training early (checkpoint saved)


def train(cfg: DeepSDFConfig, data: SDFDataset, out_dir: str | Path, *, resume: bool = False,
          stop_after: int | None = None) -> SDFTrainResult:
    """Train decoder and codes on ``data``; writes ``last.pt``, ``log.csv``, ``curves.png`` and ``config.toml``.

    ``resume`` continues from ``out_dir/last.pt``; ``stop_after`` ends this call after that
    many epochs (resuming later gives the same result as one uninterrupted run). Under
    ``torchrun`` each rank takes its slice of every batch of shapes and draws only their
    samples; every code is updated from the gradient averaged over ranks, as one process
    would. SIGINT/SIGTERM save the exact position and return with ``interrupted`` set.
    """
    out = Path(out_dir)
    t = cfg.train
    if cfg.model.latent_size == 0 and len(data) != 1:
        raise ConfigError(f"single-shape mode (model.latent_size = 0) trains on exactly 1 shape, got {len(data)}")
    dist = setup(t.device)
    device = dist.device
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(t.seed)
    gen = torch.Generator().manual_seed(t.seed)
    decoder = build_decoder(cfg).to(device)
    codes = build_codes(cfg, len(data))
    codes = codes.to(device) if codes is not None else None
    opt = build_optimizer(cfg, decoder, codes)
    history: list[dict] = []
    start_epoch, last_path, position = 1, out / "last.pt", None
    if resume and last_path.exists():
        ck = load_checkpoint(last_path, map_location=device)
        require_keys(last_path, ck, ("format", "decoder", "optimizer", "epoch", "rng", "history"))
        decoder.load_state_dict(ck["decoder"])
        if codes is not None:
            codes.load_state_dict(ck["codes"])
        opt.load_state_dict(ck["optimizer"])
        _set_rng_state(ck["rng"], gen, device)
        history, start_epoch, position = ck["history"], ck["epoch"] + 1, ck.get("position")
        log.info("resumed from %s at epoch %d%s", last_path, start_epoch,
                 f", step {position['step']}" if position else "")
    net = wrap_ddp(AutoDecoder(decoder, codes), dist)
    if dist.is_main:
        atomic_write_text(out / "config.toml", config_to_toml(cfg, header="Resolved configuration of this run."))
    log.info("training DeepSDF (%d decoder parameters) on %d shapes, device %s, %s, %d rank(s)",
             sum(p.numel() for p in decoder.parameters()), len(data), device, t.precision, dist.world)

    def payload(epoch_done: int, pos: dict | None) -> dict:
        return _payload(cfg, data, decoder, codes, opt, epoch_done, gen, device, history) | {"position": pos}

    end_epoch = t.epochs if stop_after is None else min(t.epochs, start_epoch + stop_after - 1)
    with StopFlag() as stop:
        for epoch in range(start_epoch, end_epoch + 1):
            set_learning_rates(opt, t, epoch)
            if position is not None and position["epoch"] == epoch:
                order, first, sums, spent = position["order"], position["step"], position["sums"], position["seconds"]
                position = None
            else:
                order = torch.randperm(len(data), generator=gen)
                first, sums, spent = 0, {"total": 0.0, "sdf": 0.0, "code": 0.0}, 0.0
            t0 = time.perf_counter() - spent
            batches = order.split(t.shapes_per_batch)
            bar = progress(range(first, len(batches)), desc=f"epoch {epoch}/{t.epochs}", unit="step", leave=False,
                           disable=not dist.is_main)
            for bi in bar:
                idx = batches[bi]
                mine = dist.shard(idx)
                if dist.enabled and codes is not None:
                    with torch.no_grad():  # max-norm renormalisation of every code in the global batch, on every
                        codes(idx.to(device))  # rank, so that the ranks' copies of the codes stay identical
                if len(idx) >= dist.world:  # every rank needs a shape (DDP's backward is collective)
                    xyz, sdf = sample_batch(data, mine, t.samples_per_shape, seed=t.seed, epoch=epoch)
                    stats = train_step(decoder, codes, opt, batch_to(mine, device), batch_to(xyz, device),
                                       batch_to(sdf, device), t=t, epoch=epoch, net=net,
                                       loss_scale=dist.loss_scale(len(mine), len(idx)))
                    for k in sums:
                        sums[k] += stats[k] * len(mine)
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(loss=f"{stats['total']:.4f}")
                if stop.requested(dist):
                    pos = {"epoch": epoch, "step": bi + 1, "order": order, "sums": dict(sums),
                           "seconds": time.perf_counter() - t0}
                    if dist.is_main:
                        save_checkpoint(last_path, payload(epoch - 1, pos))
                    log.warning("stopped by %s at epoch %d, step %d/%d; resume with --resume", stop.name, epoch,
                                bi + 1, len(batches))
                    return SDFTrainResult(history, last_path, interrupted=stop.name)
            seconds = time.perf_counter() - t0
            total = dict(zip(sums, dist.all_sum(list(sums.values()))))
            row = {"epoch": epoch, "lr_decoder": opt.param_groups[0]["lr"], "train_loss": total["total"] / len(data),
                   "train_sdf": total["sdf"] / len(data), "train_code": total["code"] / len(data),
                   "seconds": seconds, "samples_per_s": len(data) * t.samples_per_shape / seconds}
            if codes is not None:
                row["code_norm"] = float(codes.weight.detach().norm(dim=1).mean())
            history.append(row)
            if dist.is_main and (epoch % t.checkpoint_every == 0 or epoch == end_epoch):
                save_checkpoint(last_path, payload(epoch, None))
                _write_log(history, out)
            log.info("epoch %d/%d  loss %.5f (sdf %.5f)  %.1fs", epoch, t.epochs, row["train_loss"], row["train_sdf"],
                     seconds)
    dist.barrier()
    return SDFTrainResult(history, last_path)


def _payload(cfg, data, decoder, codes, opt, epoch, gen, device, history) -> dict:
    return {"format": FORMAT, "decoder": decoder.state_dict(),
            "codes": codes.state_dict() if codes is not None else {}, "optimizer": opt.state_dict(),
            "epoch": epoch, "rng": _rng_state(gen, device), "history": history, "config": config_to_dict(cfg),
            "names": list(data.names), "offsets": data.offsets, "scales": data.scales}


def _write_log(history: list[dict], out: Path) -> None:
    atomic_write_csv(out / "log.csv", history)
    plot_curves([{"epoch": h["epoch"], "train_loss": h["train_loss"], "train_sdf": h["train_sdf"]} for h in history],
                out / "curves.png", title="DeepSDF training")


@dataclass
class TrainedDeepSDF:
    """A trained model: decoder (eval mode), codes (S, L) or None, config, names, normalisations (S, 3), (S,)."""

    decoder: SDFDecoder
    codes: torch.Tensor | None
    config: DeepSDFConfig
    names: list[str]
    offsets: torch.Tensor
    scales: torch.Tensor


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
    return TrainedDeepSDF(decoder.to(dev).eval(), None if codes is None else codes.to(dev), cfg, list(ck["names"]),
                          ck["offsets"], ck["scales"])
