"""Differentiable renders of a signed distance function (negative inside).

:func:`render_sdf` takes any torch callable ``sdf_fn(points (N, 3)) -> (N,)`` - a
closure over a DeepSDF decoder and its latent code, or an analytic SDF with learnable
parameters - and renders depth, normals, a Lambert-shaded image and a soft silhouette
whose gradients reach every tensor ``sdf_fn`` depends on (codes, weights).

Three stages:

1. **Sphere tracing, without gradients.** Each ray starts where it enters the box
   ``[-bound, bound]^3`` (clipped to ``[near, far]``) and marches ``t += f(o + t d)``
   until ``|f| < eps`` (a hit) or it leaves the box; rays still marching after
   ``max_steps`` count as misses.
2. **Differentiable re-evaluation at the hits** (IDR, Yariv et al. 2020; DVR): with the
   traced ``t*`` held fixed, implicit differentiation of ``f(o + t d; theta) = 0`` gives
   ``dt/dtheta = -(df/dtheta) / (grad_x f . d)``, realised as
   ``t = t* - (f - f.detach()) / (grad_x f . d).detach()`` - the value stays ``t*``, the
   gradient is the implicit one. Normals are ``normalize(grad_x f)`` at the
   differentiable point ``o + t d`` (``create_graph=True``), so shading is differentiable
   through both the normal field and the moving hit point.
3. **Soft silhouette for every pixel:** ``sigmoid(-sharpness * min_t f(o + t d))``; the
   minimum is searched without gradients - ``silhouette_samples`` evenly spaced samples
   on the ray's segment inside the box, then golden-section search around the best -
   and ``f`` is re-evaluated with gradients at the arg-min (the envelope theorem makes
   that the derivative of the minimum). A segment's samples cost ``silhouette_samples +
   12`` SDF evaluations per ray, often more than the tracing itself.

Depth is the distance along the camera z axis (as in :mod:`shapes3d.render.mesh`),
``+inf`` where missed; normals are 0 and ``shaded`` is ``background`` where missed.
:func:`shade_by_differences` re-shades traced renders with normals from central
differences of ``f``: a ReLU network's autograd normals are piecewise constant in its
inputs (a latent code included), so shading built on them has no gradient there.

Everything stays on ``device``; pass the device of ``sdf_fn``'s tensors (inferred when
``sdf_fn`` is an ``nn.Module``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from shapes3d.render.cameras import Camera
from shapes3d.render.mesh import as_camera_list, check_shading, unit_light

log = logging.getLogger(__name__)

SDFFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SDFRenders:
    """Differentiable renders of an SDF, V views of H x W pixels (torch tensors)."""

    depth: torch.Tensor
    """(V, H, W): distance along the camera z axis; ``inf`` where the ray misses."""
    normals: torch.Tensor
    """(V, H, W, 3): world-space unit normals ``grad f / |grad f|``; 0 where missed."""
    shaded: torch.Tensor
    """(V, H, W) in [0, 1]: Lambert shading; ``background`` where missed."""
    silhouette_soft: torch.Tensor
    """(V, H, W) in (0, 1): ``sigmoid(-sharpness * min_t f)``, defined for every pixel."""
    hit: torch.Tensor
    """(V, H, W) bool: sphere tracing converged on the surface."""


def _evaluate(sdf_fn: SDFFn, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """``sdf_fn`` on (N, 3) points in chunks of ``chunk``, returning (N,)."""
    outs = []
    for s in range(0, x.shape[0], chunk):
        xs = x[s:s + chunk]
        f = sdf_fn(xs)
        if not isinstance(f, torch.Tensor):
            raise TypeError(f"sdf_fn must return a torch.Tensor, got {type(f).__name__}")
        if f.shape == (xs.shape[0], 1):
            f = f[:, 0]
        if f.shape != (xs.shape[0],):
            raise ValueError(f"sdf_fn must map points (N, 3) to values (N,) or (N, 1); for N={xs.shape[0]} it "
                             f"returned shape {tuple(f.shape)}")
        outs.append(f.to(x.dtype))
    if not outs:
        return x.new_zeros(0)
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def _segments(o: torch.Tensor, d: torch.Tensor, *, bound: float, near: float, far: float):
    """Each ray's parameter interval inside the box ``[-bound, bound]^3`` and ``[near, far]``.

    Returns ``t0, t1`` (N,) and ``valid`` (N,) bool. For rays that miss the box the
    interval collapses onto the point nearest the origin, so the soft silhouette still
    has one sample there.
    """
    d_safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    ta, tb = (-bound - o) / d_safe, (bound - o) / d_safe
    t_enter = torch.minimum(ta, tb).amax(dim=1).clamp_min(near)
    t_exit = torch.maximum(ta, tb).amin(dim=1).clamp_max(far)
    valid = t_enter < t_exit
    closest = (-(o * d).sum(dim=1)).clamp(near, far)
    t0 = torch.where(valid, t_enter, closest)
    t1 = torch.where(valid, t_exit, closest)
    return t0, t1, valid


@torch.no_grad()
def _trace(sdf_fn: SDFFn, o, d, t0, t1, valid, *, max_steps: int, eps: float, chunk: int):
    """Sphere tracing from ``t0``; returns the final ``t`` (N,) and the hit mask (N,)."""
    t = t0.clone()
    hit = torch.zeros_like(valid)
    active = valid.clone()
    for _ in range(max_steps):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        ti = t[idx]
        f = _evaluate(sdf_fn, o[idx] + ti[:, None] * d[idx], chunk)
        conv = f.abs() < eps
        hit[idx[conv]] = True
        t_next = ti + f
        t[idx[~conv]] = t_next[~conv]
        # Leaving the far end is a miss; stepping back behind the start means the ray
        # began inside the shape, where sphere tracing has nothing to find.
        done = conv | (t_next > t1[idx]) | (t_next < t0[idx] - eps)
        active[idx[done]] = False
    return t, hit


_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
#: Golden-section steps refining the silhouette's arg-min: the bracket (two sample
#: spacings) shrinks by 0.618**10 ~ 1/120.
_REFINE_STEPS = 10


@torch.no_grad()
def _argmin_along(sdf_fn: SDFFn, o, d, t0, t1, valid, *, samples: int, refine: int, chunk: int):
    """Where on each ray's segment the SDF is smallest, (N,): evenly spaced samples, then
    golden-section search in the bracket around the best one.

    The traced points are deliberately not candidates: they move with the parameters, so
    a minimum over them is not a minimum over a fixed set and its derivative is not the
    envelope-theorem one. Every point used here is a piecewise-constant function of the
    parameters, which makes ``d f(x_min) / d theta = df/dtheta`` hold exactly.
    """
    t_min = t0.clone()  # rays missing the box: one sample at their closest approach
    idx = valid.nonzero().squeeze(1)
    if idx.numel() == 0:
        return t_min
    a0, b0 = t0[idx], t1[idx]
    oi, di = o[idx], d[idx]

    def f_at(t):  # (n,) or (n, S) ray parameters -> SDF values of the same shape
        x = oi.unsqueeze(-2) + t.unsqueeze(-1) * di.unsqueeze(-2) if t.dim() == 2 else oi + t[:, None] * di
        return _evaluate(sdf_fn, x.reshape(-1, 3), chunk).reshape(t.shape)

    step = (b0 - a0) / samples
    ts = a0[:, None] + (torch.arange(samples, device=o.device, dtype=o.dtype)[None, :] + 0.5) * step[:, None]
    fs = f_at(ts)
    best_f, k = fs.min(dim=1)
    best_t = ts.gather(1, k[:, None])[:, 0]
    lo, hi = torch.maximum(best_t - step, a0), torch.minimum(best_t + step, b0)
    c, e = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fc, fe = f_at(c), f_at(e)
    for _ in range(refine):
        left = fc < fe  # the minimum lies in [lo, e]: drop (e, hi]
        hi = torch.where(left, e, hi)
        lo = torch.where(left, lo, c)
        new = torch.where(left, hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo))
        f_new = f_at(new)
        c, e, fc, fe = (torch.where(left, new, e), torch.where(left, c, new),
                        torch.where(left, f_new, fe), torch.where(left, fc, f_new))
    cand_t = torch.stack([best_t, c, e], dim=1)
    cand_f = torch.stack([best_f, fc, fe], dim=1)
    t_min[idx] = cand_t.gather(1, cand_f.argmin(dim=1, keepdim=True))[:, 0]
    return t_min


def _infer_device_dtype(sdf_fn, device, dtype) -> tuple[torch.device, torch.dtype]:
    param = None
    if isinstance(sdf_fn, torch.nn.Module):
        param = next((p for p in sdf_fn.parameters() if p.is_floating_point()), None)
    if device is None:
        device = param.device if param is not None else torch.device("cpu")
    if dtype is None:
        dtype = param.dtype if param is not None else torch.float32
    return torch.device(device), dtype


def _check_options(sdf_fn, *, near, far, max_steps, chunk, silhouette_samples, eps, bound,
                   soft_silhouette_sharpness) -> None:
    if not callable(sdf_fn):
        raise TypeError(f"sdf_fn must be a callable points (N, 3) -> (N,), got {type(sdf_fn).__name__}")
    if not (0.0 <= near < far and math.isfinite(far)):
        raise ValueError(f"need 0 <= near < far < inf, got near={near!r}, far={far!r}")
    for name, value in (("max_steps", max_steps), ("chunk", chunk)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(silhouette_samples, bool) or int(silhouette_samples) != silhouette_samples or silhouette_samples < 1:
        raise ValueError(f"silhouette_samples must be a positive integer, got {silhouette_samples!r}")
    for name, value in (("eps", eps), ("bound", bound), ("soft_silhouette_sharpness", soft_silhouette_sharpness)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and > 0, got {value!r}")


def _differentiable_hits(sdf_fn: SDFFn, o_h: torch.Tensor, d_h: torch.Tensor, t_hit: torch.Tensor, *, chunk: int,
                         create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray parameters (M,) and unit normals (M, 3) at M hits, differentiable in ``sdf_fn``'s tensors.

    One implicit-differentiation step from the traced hit x*: t = t* - (f(x*) - sg(f(x*))) / (grad f . d),
    whose value is t* and whose gradient is the implicit function theorem's; normals are grad f at x(t).
    """
    x_star = (o_h + t_hit[:, None] * d_h).detach().requires_grad_(True)
    f0 = _evaluate(sdf_fn, x_star, chunk)
    (g0,) = torch.autograd.grad(f0.sum(), x_star, retain_graph=True) if len(t_hit) else (torch.zeros_like(x_star),)
    gd = (g0 * d_h).sum(dim=1)
    # Grazing hits have grad f . d -> 0 (it is < 0 at a hit from outside); bound the step.
    gd = torch.where(gd.abs() < 1e-6, torch.full_like(gd, -1e-6), gd)
    t_diff = t_hit - (f0 - f0.detach()) / gd
    x_diff = o_h + t_diff[:, None] * d_h
    f1 = _evaluate(sdf_fn, x_diff, chunk)
    if len(t_hit):
        (g1,) = torch.autograd.grad(f1.sum(), x_diff, create_graph=create_graph)
    else:
        g1 = torch.zeros_like(x_diff)
    return t_diff, g1 / g1.norm(dim=1, keepdim=True).clamp_min(1e-12)


def evaluations_per_view(height: int, width: int, *, max_steps: int, silhouette_samples: int) -> int:
    """At most this many ``sdf_fn`` points per view of :func:`render_sdf`: per pixel ``max_steps`` sphere-tracing
    steps, the silhouette's samples and golden-section steps, and the two differentiable evaluations."""
    return height * width * (max_steps + silhouette_samples + _REFINE_STEPS + 4)


def _count(n: float) -> str:
    """``950``, ``38.5k``, ``1.6M``: a count for people."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def announce_render(sdf_fn: SDFFn, cams: Sequence[Camera], *, max_steps: int, silhouette_samples: int, chunk: int,
                    device: torch.device, dtype: torch.dtype) -> float:
    """Log, before a long render starts, its SDF evaluations per view and the time they take at the rate of one
    timed chunk of ``sdf_fn`` (an upper bound: most rays stop early); returns the estimate in seconds."""
    import time

    from shapes3d.utils.progress import format_duration

    per_view = evaluations_per_view(cams[0].height, cams[0].width, max_steps=max_steps,
                                    silhouette_samples=silhouette_samples)
    x = torch.zeros((min(chunk, per_view), 3), dtype=dtype, device=device)
    with torch.no_grad():
        _evaluate(sdf_fn, x[:64], chunk)  # warm-up: first calls pay for allocation and kernels
        start = time.perf_counter()
        _evaluate(sdf_fn, x, chunk)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rate = x.shape[0] / max(time.perf_counter() - start, 1e-9)
    seconds = per_view * len(cams) / rate
    log.info("sdf render: %d views of %dx%d, up to %s SDF evaluations per view at %s per second: at most %s",
             len(cams), cams[0].height, cams[0].width, _count(per_view), _count(rate), format_duration(seconds))
    return seconds


def render_sdf(
    sdf_fn: SDFFn,
    cameras: Camera | Sequence[Camera],
    *,
    near: float,
    far: float,
    max_steps: int = 64,
    eps: float = 1e-3,
    bound: float = 1.0,
    light_dir: Sequence[float] | None = None,
    ambient: float = 0.2,
    background: float = 1.0,
    soft_silhouette_sharpness: float = 50.0,
    silhouette_samples: int = 32,
    chunk: int = 32768,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    announce: bool = False,
) -> SDFRenders:
    """Render ``sdf_fn`` (points (N, 3) -> SDF (N,), negative inside) from every camera.

    Returns :class:`SDFRenders` of V views of H x W, differentiable with respect to the
    tensors ``sdf_fn`` uses (see the module docstring for the method). ``near``/``far``
    bound the ray parameter; ``bound`` is the half-size of the box the shape lives in;
    ``eps`` is the hit tolerance on ``|f|``; ``light_dir`` (world, toward the light) or
    ``None`` for a headlight. ``chunk`` caps the points per ``sdf_fn`` call. ``device`` and
    ``dtype`` default to those of ``sdf_fn``'s first parameter when it is an
    ``nn.Module``, else CPU float32. The autograd graph spans every pixel: for large
    images or many views, render in groups of views and backpropagate each. ``announce``:
    first log the evaluations per view and an estimated time (:func:`announce_render`).
    """
    _check_options(sdf_fn, near=near, far=far, max_steps=max_steps, chunk=chunk, silhouette_samples=silhouette_samples,
                   eps=eps, bound=bound, soft_silhouette_sharpness=soft_silhouette_sharpness)
    cams = as_camera_list(cameras)
    light = unit_light(light_dir)
    check_shading(ambient, background)
    device, dtype = _infer_device_dtype(sdf_fn, device, dtype)
    need_graph = torch.is_grad_enabled()
    if announce:
        announce_render(sdf_fn, cams, max_steps=int(max_steps), silhouette_samples=int(silhouette_samples),
                        chunk=int(chunk), device=torch.device(device), dtype=dtype)

    o_np, d_np = zip(*(c.rays() for c in cams))
    n_pix = cams[0].height * cams[0].width
    o = torch.as_tensor(np.concatenate(o_np), dtype=dtype, device=device)
    d = torch.as_tensor(np.concatenate(d_np), dtype=dtype, device=device)
    fwd = torch.as_tensor(np.repeat(np.stack([c.forward for c in cams]), n_pix, axis=0), dtype=dtype, device=device)

    t0, t1, valid = _segments(o, d, bound=bound, near=near, far=far)
    t_hit, hit = _trace(sdf_fn, o, d, t0, t1, valid, max_steps=int(max_steps), eps=eps, chunk=int(chunk))
    t_min = _argmin_along(sdf_fn, o, d, t0, t1, valid, samples=int(silhouette_samples), refine=_REFINE_STEPS,
                          chunk=int(chunk))

    with torch.enable_grad():
        f_sil = _evaluate(sdf_fn, (o + t_min[:, None] * d).detach(), chunk)
        silhouette = torch.sigmoid(-soft_silhouette_sharpness * f_sil)

        idx = hit.nonzero().squeeze(1)
        o_h, d_h = o[idx], d[idx]
        t_diff, n_h = _differentiable_hits(sdf_fn, o_h, d_h, t_hit[idx], chunk=chunk, create_graph=need_graph)
        l_h = -d_h if light is None else torch.as_tensor(light, dtype=dtype, device=device).expand_as(n_h)
        shade_h = ambient + (1.0 - ambient) * (n_h * l_h).sum(dim=1).clamp_min(0.0)
        depth_h = t_diff * (d_h * fwd[idx]).sum(dim=1)

        m = o.shape[0]
        depth = torch.full((m,), math.inf, dtype=dtype, device=device).index_put((idx,), depth_h)
        normals = torch.zeros((m, 3), dtype=dtype, device=device).index_put((idx,), n_h)
        shaded = torch.full((m,), float(background), dtype=dtype, device=device).index_put((idx,), shade_h)

    v, h, w = len(cams), cams[0].height, cams[0].width
    out = SDFRenders(depth=depth.reshape(v, h, w), normals=normals.reshape(v, h, w, 3), shaded=shaded.reshape(v, h, w),
                     silhouette_soft=silhouette.reshape(v, h, w), hit=hit.reshape(v, h, w))
    log.debug("sdf render: %d views of %dx%d, %d of %d rays hit", v, h, w, int(idx.numel()), m)
    if not need_graph:
        out = SDFRenders(*(t.detach() for t in (out.depth, out.normals, out.shaded, out.silhouette_soft)), out.hit)
    return out


def shade_by_differences(sdf_fn: SDFFn, renders: SDFRenders, cameras: Camera | Sequence[Camera], *, eps: float,
                         ambient: float = 0.2, background: float = 1.0,
                         chunk: int = 32768) -> tuple[torch.Tensor, torch.Tensor]:
    """Headlight Lambert shading (V, H, W) and normals (V, H, W, 3) from central differences of ``sdf_fn``.

    Why: a ReLU decoder's autograd normals are piecewise constant in everything that enters
    it as an input - the latent code included - so shading built on them has a zero
    gradient with respect to the code. Differences of the SDF over ``2 * eps`` vary smoothly
    with the code. The hit points come from ``renders.depth``, so they keep the implicit
    gradient of the traced surface; misses get ``background`` and zero normals.
    """
    cams = as_camera_list(cameras)
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be finite and > 0, got {eps!r}")
    check_shading(ambient, background)
    hit = renders.hit.reshape(-1)
    idx = hit.nonzero().squeeze(1)
    depth = renders.depth.reshape(-1)
    device, dtype = depth.device, depth.dtype
    o_np, d_np = zip(*(c.rays() for c in cams))
    n_pix = cams[0].height * cams[0].width
    fwd = np.repeat(np.stack([c.forward for c in cams]), n_pix, axis=0)
    o = torch.as_tensor(np.concatenate(o_np), dtype=dtype, device=device)[idx]
    d = torch.as_tensor(np.concatenate(d_np), dtype=dtype, device=device)[idx]
    zs = torch.as_tensor(np.einsum("ij,ij->i", np.concatenate(d_np), fwd), dtype=dtype, device=device)[idx]
    x = o + (depth[idx] / zs)[:, None] * d
    steps = torch.eye(3, dtype=dtype, device=device) * eps
    probes = torch.cat([x[None] + steps[:, None], x[None] - steps[:, None]]).reshape(-1, 3)  # (6M, 3)
    f = _evaluate(sdf_fn, probes, chunk).reshape(2, 3, -1)
    g = ((f[0] - f[1]) / (2 * eps)).T  # (M, 3)
    n = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
    shade = ambient + (1.0 - ambient) * (n * -d).sum(dim=1).clamp_min(0.0)
    m = hit.numel()
    shaded = torch.full((m,), float(background), dtype=dtype, device=device).index_put((idx,), shade)
    normals = torch.zeros((m, 3), dtype=dtype, device=device).index_put((idx,), n)
    return shaded.reshape(renders.hit.shape), normals.reshape(*renders.hit.shape, 3)
