"""Fitting a latent code to observations with the decoder frozen, and interpolating codes.

Fitting optimises a new code z with Adam on the very objective training uses
(:data:`OBJECTIVE`, the regulariser at full weight), from full SDF samples or from
partial observations of the surface:

* :func:`observations_from_depth`: surface points seen from one camera (a depth view).
  Each gives an SDF-0 sample, plus free-space samples on the segment from the camera to
  it. A point at depth t on a ray that first hits the surface at depth d is outside
  (SDF > 0) and at most d - t from the hit point, so 0 < SDF <= d - t. We use the upper
  bound d - t as the target: exact where the ray meets the surface head-on, too large
  at grazing angles; since the loss clamps at delta, only samples with d - t < delta
  carry distance information, and those are the ones nearly on the ray's own surface
  patch. ``min_gap`` keeps free-space samples off the surface itself.
* :func:`crop_observation`: the same, keeping only surface points on one side of a plane.

Restarts start from independent N(0, init_std^2) codes; the one with the lowest
objective over all observations wins. Everything is seeded, so a call is deterministic.
They matter more than they seem: the clamped L1 has zero gradient wherever prediction
and target are both beyond ±delta, so a start whose surface lies farther than delta from
every observation never moves (seen with partial views; full samples rarely suffer,
since their near-surface samples reach both signs). A wider ``init_std`` with several
restarts escapes it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from shapes3d.data.sdf_dataset import SDFDataset, ShapeSamples, split_by_sign
from shapes3d.deepsdf.config import DeepSDFConfig
from shapes3d.losses.sdf_objective import sdf_objective
from shapes3d.models.deepsdf import SDFDecoder
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)
OBJECTIVE = sdf_objective  # identical object to shapes3d.deepsdf.trainer.OBJECTIVE


@dataclass(frozen=True)
class Observation:
    """Observed points (N, 3) with SDF targets (N,) (0 on the surface, > 0 in free space)."""

    points: np.ndarray
    sdf: np.ndarray


def _as_points(a, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3 or len(a) == 0:
        raise ValueError(f"{name} must be a non-empty (N, 3) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return a


def observations_from_depth(surface_points, camera_center, *, free_space_samples: int = 4, min_gap: float = 0.01,
                            seed: int = 0) -> Observation:
    """Surface points (N, 3) seen from ``camera_center`` (3,) -> SDF-0 samples plus free space along the rays.

    Per surface point, ``free_space_samples`` depths t are drawn uniformly in
    ``[0, d - min_gap]`` (d: distance from the camera) with target SDF ``d - t`` (an upper
    bound, see the module notes). Returns N * (1 + free_space_samples) observations at most.
    """
    pts = _as_points(surface_points, "surface_points")
    cam = np.asarray(camera_center, dtype=np.float64).reshape(-1)
    if cam.shape != (3,) or not np.isfinite(cam).all():
        raise ValueError(f"camera_center must be 3 finite numbers, got {camera_center!r}")
    if free_space_samples < 0 or min_gap < 0:
        raise ValueError(f"free_space_samples and min_gap must be >= 0, got {free_space_samples}, {min_gap}")
    ray = pts - cam
    depth = np.linalg.norm(ray, axis=1)
    if (depth <= min_gap).any():
        raise ValueError(f"camera_center {cam.tolist()} lies within min_gap {min_gap} of a surface point")
    unit = ray / depth[:, None]
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.0, 1.0, size=(len(pts), free_space_samples)) * (depth - min_gap)[:, None]
    free = cam + t[..., None] * unit[:, None, :]
    gap = depth[:, None] - t
    points = np.concatenate([pts, free.reshape(-1, 3)])
    sdf = np.concatenate([np.zeros(len(pts)), gap.reshape(-1)])
    return Observation(points.astype(np.float32), sdf.astype(np.float32))


def crop_observation(surface_points, camera_center, *, plane_normal, plane_offset: float = 0.0,
                     free_space_samples: int = 4, min_gap: float = 0.01, seed: int = 0) -> Observation:
    """Like :func:`observations_from_depth`, keeping only surface points p with ``n . p >= plane_offset``."""
    pts = _as_points(surface_points, "surface_points")
    n = np.asarray(plane_normal, dtype=np.float64).reshape(-1)
    if n.shape != (3,) or not np.linalg.norm(n) > 0:
        raise ValueError(f"plane_normal must be a non-zero 3-vector, got {plane_normal!r}")
    keep = pts @ (n / np.linalg.norm(n)) >= plane_offset
    if not keep.any():
        raise ValueError(f"the crop (normal {n.tolist()}, offset {plane_offset}) keeps none of {len(pts)} points")
    return observations_from_depth(pts[keep], camera_center, free_space_samples=free_space_samples,
                                   min_gap=min_gap, seed=seed)


def fit_options(cfg: DeepSDFConfig) -> dict:
    """:func:`fit_code` keywords for a checkpoint's config: its ``[fit]`` table plus the loss it was trained with
    (``train.clamp``, ``train.code_reg``), so that a fitted code minimises the objective the codes were learnt on."""
    return {**dataclasses.asdict(cfg.fit), "clamp": cfg.train.clamp, "code_reg": cfg.train.code_reg}


@dataclass
class FitResult:
    """The best code (L,), its objective over all observations, its per-iteration losses, every restart's loss."""

    code: torch.Tensor
    loss: float
    history: list[float]
    restart_losses: list[float] = field(default_factory=list)


def _as_dataset(observations) -> SDFDataset:
    if isinstance(observations, Observation):
        return SDFDataset([split_by_sign(observations.points, observations.sdf)])
    if isinstance(observations, tuple) and len(observations) == 2:
        return SDFDataset([ShapeSamples(*observations)])
    if hasattr(observations, "pos") and hasattr(observations, "neg"):
        return SDFDataset([observations])
    raise TypeError(f"observations must be an Observation, a (pos, neg) tuple or have pos/neg, "
                    f"got {type(observations).__name__}")


@torch.no_grad()
def _full_objective(decoder, code, xyz, sdf, *, clamp, code_reg, chunk=16384) -> float:
    total = 0.0
    for s in range(0, len(xyz), chunk):
        x = xyz[s:s + chunk]
        pred = decoder(code.expand(len(x), -1), x)
        total += float(OBJECTIVE(pred, sdf[s:s + chunk], None, delta=clamp)["sdf"]) * len(x)
    reg = OBJECTIVE(sdf[:1], sdf[:1], code[None], delta=clamp, code_weight=code_reg, ramp_epochs=0)["code"]
    return total / len(xyz) + float(reg)


def fit_code(decoder: SDFDecoder, observations, *, iterations: int = 800, lr: float = 5e-3, lr_drop_at: int = 400,
             lr_drop_factor: float = 10.0, samples_per_iter: int = 8000, restarts: int = 3, init_std: float = 0.01,
             seed: int = 0, clamp: float = 0.1, code_reg: float = 1e-4) -> FitResult:
    """Optimise a code (L,) so that ``decoder(code, x)`` matches the observations; the decoder stays frozen.

    ``observations``: full SDF samples (``(pos (P, 4), neg (Q, 4))`` or an object with
    ``pos``/``neg``) or an :class:`Observation`. Each iteration draws ``samples_per_iter``
    of them (half per sign when both signs exist). The decoder is put in eval mode (no
    dropout) with gradients off, and restored afterwards.
    """
    if decoder.latent_size == 0:
        raise ValueError("the decoder has latent_size 0 (single-shape mode): there is no code to fit")
    if min(iterations, samples_per_iter, restarts) < 1 or not 0 <= lr_drop_at:
        raise ValueError(f"iterations, samples_per_iter, restarts must be >= 1 and lr_drop_at >= 0, got "
                         f"{iterations}, {samples_per_iter}, {restarts}, {lr_drop_at}")
    data = _as_dataset(observations)
    device = next(decoder.parameters()).device
    all_xyz = torch.cat([data.pos[0], data.neg[0]])[:, :3].to(device)
    all_sdf = torch.cat([data.pos[0], data.neg[0]])[:, 3].to(device)
    was_training = decoder.training
    flags = [p.requires_grad for p in decoder.parameters()]
    decoder.eval()
    decoder.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    one = torch.zeros(1, dtype=torch.long)
    best: FitResult | None = None
    losses_per_restart = []
    try:
        for r in range(restarts):
            code = (torch.randn(decoder.latent_size, generator=gen) * init_std).to(device).requires_grad_(True)
            opt = torch.optim.Adam([code], lr=lr)
            history = []
            for it in progress(range(iterations), total=iterations, desc=f"fit {r + 1}/{restarts}", unit="it",
                               leave=False):
                if it == lr_drop_at:
                    for g in opt.param_groups:
                        g["lr"] = lr / lr_drop_factor
                xyz, sdf = data.sample(one, samples_per_iter, generator=gen)
                xyz, sdf = xyz.to(device), sdf.to(device)
                pred = decoder(code.expand(len(xyz), -1), xyz)
                loss = OBJECTIVE(pred, sdf, code[None], delta=clamp, code_weight=code_reg, ramp_epochs=0)["total"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                history.append(float(loss.detach()))
            final = _full_objective(decoder, code.detach(), all_xyz, all_sdf, clamp=clamp, code_reg=code_reg)
            losses_per_restart.append(final)
            log.info("fit restart %d/%d: objective %.6f", r + 1, restarts, final)
            if best is None or final < best.loss:
                best = FitResult(code.detach().clone(), final, history)
    finally:
        for p, f in zip(decoder.parameters(), flags):
            p.requires_grad_(f)
        decoder.train(was_training)
    best.restart_losses = losses_per_restart
    return best


def interpolate_codes(z0: torch.Tensor, z1: torch.Tensor, steps: int, *,
                      mode: Literal["linear", "slerp"] = "linear") -> torch.Tensor:
    """Codes (L,), (L,) -> (steps, L) from z0 to z1 inclusive.

    ``slerp`` rotates the direction along the great circle and interpolates the norm
    linearly, so every code's norm lies between the endpoints' (linear interpolation
    shrinks it in the middle). Parallel or zero codes fall back to linear.
    """
    if z0.ndim != 1 or z0.shape != z1.shape:
        raise ValueError(f"z0 and z1 must be equal-length vectors (L,), got {tuple(z0.shape)} and {tuple(z1.shape)}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    if mode not in ("linear", "slerp"):
        raise ValueError(f"mode must be 'linear' or 'slerp', got {mode!r}")
    t = torch.linspace(0.0, 1.0, steps, dtype=z0.dtype, device=z0.device)[:, None]
    linear = (1 - t) * z0 + t * z1
    n0, n1 = z0.norm(), z1.norm()
    if mode == "linear" or n0 == 0 or n1 == 0:
        return linear
    u0, u1 = z0 / n0, z1 / n1
    omega = torch.arccos((u0 @ u1).clamp(-1.0, 1.0))
    if omega < 1e-6 or omega > torch.pi - 1e-6:  # parallel or antipodal: no unique great circle
        return linear
    direction = (torch.sin((1 - t) * omega) * u0 + torch.sin(t * omega) * u1) / torch.sin(omega)
    return direction * ((1 - t) * n0 + t * n1)
