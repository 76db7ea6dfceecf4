"""DeepDream (Mordvintsev, Olah & Tyka 2015; seeds 001-003): amplify what a VGG layer sees in an image.

I* = argmax_I 1/2 ||f_l(I)||^2: forward to layer l, set the layer's gradient to its own
activation (the gradient of 1/2 ||f||^2), back-propagate to the pixels and step uphill.
The step is the gradient divided by its mean absolute value, times ``step_size``, so one
setting works for every layer and weight convention. Two tricks of the original:

* octaves: the image is processed from coarse to fine (each octave ``octave_scale``
  times larger); the detail dreamed so far (dreamed minus the resized original) is
  upsampled and added to the next octave's resized original;
* jitter: before each step the image is rolled by a random offset of up to ``jitter``
  pixels and rolled back after, so the pattern is not tied to the pixel grid.

Pixels stay in [0, 1] (clamped after every step). :func:`dream` writes the dreamed image
and a before/after sheet; :func:`dream_views` renders a mesh from a few cameras and
dreams on each view.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shapes3d.models.vgg import VGGFeatures
from shapes3d.style.inversion import ImageLike, as_image, tap_net, to_numpy_image, vgg_for, write_config
from shapes3d.style.vis_config import DreamConfig
from shapes3d.utils.device import pick_device
from shapes3d.utils.io import atomic_write_csv
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    mode = "area" if size[0] < x.shape[-2] else "bilinear"
    return F.interpolate(x, size=size, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))


def octave_sizes(h: int, w: int, *, octaves: int, scale: float, minimum: int) -> list[tuple[int, int]]:
    """Image sizes from the coarsest octave to (h, w), each side at least ``minimum``."""
    sizes = []
    for i in range(octaves):
        f = scale ** -(octaves - 1 - i)
        sizes.append((max(int(round(h * f)), minimum), max(int(round(w * f)), minimum)))
    return sizes


def dream_objective(net: VGGFeatures, layer: str, images: torch.Tensor) -> torch.Tensor:
    """1/2 mean f_l(I)^2 per image -> (B,) (the mean, not the sum, so sizes compare)."""
    return 0.5 * net(images)[layer].pow(2).flatten(1).mean(dim=1)


def dream_image(image: torch.Tensor, cfg: DreamConfig, vgg: VGGFeatures) -> tuple[torch.Tensor, list[dict]]:
    """DeepDream of ``image`` (1, 3, H, W) in [0, 1] at ``cfg.layer`` -> (dreamed (1, 3, H, W), per-step rows)."""
    net = tap_net(vgg, (cfg.layer,))
    device = net.mean.device
    image = image.to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    sizes = octave_sizes(*image.shape[-2:], octaves=cfg.octaves, scale=cfg.octave_scale, minimum=2 ** net._n_pools)
    history: list[dict] = []
    detail = None
    img = image
    for octave, size in enumerate(sizes, start=1):
        base = _resize(image, size)
        img = base if detail is None else (base + _resize(detail, size)).clamp(0, 1)
        for step in progress(range(cfg.steps), desc=f"dream octave {octave}", unit="step", leave=False):
            if cfg.jitter:
                oy, ox = (int(v) for v in torch.randint(-cfg.jitter, cfg.jitter + 1, (2,), generator=gen))
            else:
                oy = ox = 0
            rolled = img.roll((oy, ox), dims=(2, 3)).requires_grad_(True)
            f = net(rolled)[cfg.layer]
            objective = 0.5 * f.pow(2).sum()
            (grad,) = torch.autograd.grad(objective, rolled)
            grad = grad / grad.abs().mean().clamp_min(1e-12)
            img = (rolled.detach() + cfg.step_size * grad).roll((-oy, -ox), dims=(2, 3)).clamp(0, 1)
            history.append({"octave": octave, "step": step + 1, "height": size[0], "width": size[1],
                            "objective": float(objective.detach()) / f.numel()})
        detail = img - base
    return img.detach(), history


@dataclass
class DreamReport:
    """What :func:`dream` wrote: the dreamed image, the before/after sheet, and 1/2 mean f^2 before and after."""

    image: Path
    sheet: Path
    objective_before: float
    objective_after: float


def _merge(cfg: DreamConfig | None, **given) -> DreamConfig:
    return replace(cfg or DreamConfig(), **{k: v for k, v in given.items() if v is not None})


def dream(image: ImageLike, *, out: str | os.PathLike, layer: str | None = None, octaves: int | None = None,
          steps: int | None = None, size: int | None = None, weights: str | None = None,
          cfg: DreamConfig | None = None, vgg: VGGFeatures | None = None) -> DreamReport:
    """DeepDream ``image`` (a path, ``skimage:NAME``, numpy image or (1, 3, H, W) tensor) into ``out``.

    Keyword options override the config's values (None: keep). Writes ``dream.png``,
    ``sheet.png`` (before | after), ``log.csv`` (octave, step, objective) and ``config.toml``.
    """
    from shapes3d.render.images import write_image
    from shapes3d.render.sheet import contact_sheet

    cfg = _merge(cfg, layer=layer, octaves=octaves, steps=steps, size=size, weights=weights)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    net = vgg_for(cfg, (cfg.layer,), pick_device(cfg.device), vgg)
    x = as_image(image, cfg.size).to(net.mean.device)
    result, history = dream_image(x, cfg, net)
    with torch.no_grad():
        before, after = (float(dream_objective(net, cfg.layer, t)[0]) for t in (x, result))
    path = write_image(out / "dream.png", result)
    sheet = contact_sheet(np.stack([to_numpy_image(x), to_numpy_image(result)]), out / "sheet.png", cols=2,
                          labels=["input", f"dream {cfg.layer}"],
                          title=f"DeepDream {cfg.arch} {cfg.layer}: 1/2 mean f^2 {before:.3g} -> {after:.3g}")
    atomic_write_csv(out / "log.csv", history)
    write_config(cfg, out)
    log.info("dreamed at %s: objective %.4g -> %.4g", cfg.layer, before, after)
    return DreamReport(path, sheet, before, after)


@dataclass
class DreamViewsReport:
    """What :func:`dream_views` wrote: the sheet (rows: renders, dreams) and 1/2 mean f^2 per view."""

    sheet: Path
    images: list[Path]
    objective_before: list[float]
    objective_after: list[float]


def dream_views(mesh, *, out: str | os.PathLike, views: int | None = None, size: int | None = None,
                layer: str | None = None, octaves: int | None = None, steps: int | None = None,
                weights: str | None = None, cfg: DreamConfig | None = None,
                vgg: VGGFeatures | None = None) -> DreamViewsReport:
    """Render ``mesh`` (a trimesh or a mesh file) from ``views`` cameras and DeepDream each shaded view.

    Cameras: evenly spaced azimuths at ``cfg.elevation`` around the mesh normalised into the
    unit sphere (as :func:`shapes3d.render.images.render_rows`). Writes ``views.png`` (first
    row the renders, second the dreams), ``view_<i>.png`` per dream and ``config.toml``.
    """
    from shapes3d.render.images import render_rows, write_image
    from shapes3d.render.sheet import contact_sheet

    cfg = _merge(cfg, views=views, size=size, layer=layer, octaves=octaves, steps=steps, weights=weights)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(mesh, (str, os.PathLike)):
        from shapes3d.geometry.io import load_mesh

        mesh = load_mesh(mesh)
    (shaded,) = render_rows(mesh, views=cfg.views, elevations=(cfg.elevation,), size=cfg.size, up=cfg.up,
                            modes=("shaded",))
    net = vgg_for(cfg, (cfg.layer,), pick_device(cfg.device), vgg)
    renders, dreams, paths, before, after = [], [], [], [], []
    for i, grey in enumerate(np.asarray(shaded, dtype=np.float32)):
        x = torch.from_numpy(np.ascontiguousarray(grey))[None, None].expand(1, 3, *grey.shape).contiguous()
        x = x.to(net.mean.device)
        result, _ = dream_image(x, replace(cfg, seed=cfg.seed + i), net)
        with torch.no_grad():
            before.append(float(dream_objective(net, cfg.layer, x)[0]))
            after.append(float(dream_objective(net, cfg.layer, result)[0]))
        renders.append(to_numpy_image(x))
        dreams.append(to_numpy_image(result))
        paths.append(write_image(out / f"view_{i}.png", result))
    labels = [f"view {i}" for i in range(cfg.views)] + [f"dream {cfg.layer}"] + [""] * (cfg.views - 1)
    sheet = contact_sheet(np.stack(renders + dreams), out / "views.png", cols=cfg.views, labels=labels,
                          title=f"DeepDream on {cfg.views} renders ({cfg.arch} {cfg.layer})")
    write_config(cfg, out)
    return DreamViewsReport(sheet, paths, before, after)
