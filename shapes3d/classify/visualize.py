"""Class visualisation of a trained VoxNet by gradient ascent on the occupancy grid (seeds 001-003).

For class c, find a field I (R, R, R) with values in [0, 1] (R = the model's resolution)
that VoxNet scores highly:

    I* = argmax_I S_c(I) - l2 * ||I||^2,      S_c the class logit (before the softmax)

started at I = 0, the empty grid (as on the slides). Each step moves I along the score's
gradient divided by its mean absolute value (so ``lr`` is in occupancy units whatever the
model's scale), with the L2 term applied as the matching decay ``- lr * 2 * l2 * I``, then
projects I back onto [0, 1] (the field is clamped, not sigmoid-parametrised: I = 0 is
reachable, and small values can be clipped to exactly 0). The regularisers of the
lecture (Yosinski et al. 2015):

* ``blur_every`` / ``blur_sigma``: a 3D Gaussian blur of I every k steps (removes
  high-frequency voxel noise);
* ``clip_small``: voxels with occupancy below this value are set to 0;
* ``clip_grad``: the fraction of voxels with the smallest contribution |I * dS_c/dI| is
  set to 0.

Per class the job writes the field (``<class>.npy``), the 0.5 iso-surface from marching
cubes (``<class>.ply``), a render and a slice mosaic, and one sheet over the classes.

Defaults (l2 0.05, blur sigma 1 every 4 steps, clip below 0.1) were picked by eye on a VoxNet trained on the
built-in shapes: with l2 1e-3 and sigma 0.5 the score rises further (logit ~20-30 vs ~5-12 after 200 steps)
but the field is voxel noise filling the box; the defaults give compact blobs with the class's layout.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shapes3d.models.voxnet import VoxNet
from shapes3d.utils.io import atomic_write, atomic_write_csv, safe_child
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)

ISO = 0.5  #: the occupancy level meshed


def _load_classifier(checkpoint, device: str):
    # The loader is moving from classify/trainer.py to classify/evaluation.py: accept either home.
    try:
        from shapes3d.classify.evaluation import load_classifier
    except ImportError:  # pragma: no cover - older layout
        from shapes3d.classify.trainer import load_classifier
    return load_classifier(checkpoint, device=device)


def gaussian_blur3d(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, R, R, R) fields; zero padding (outside the grid is empty space)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=field.dtype, device=field.device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    c = field.shape[1]
    out = field
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = g.numel()
        pad = [0, 0, 0]
        pad[axis] = radius
        out = F.conv3d(out, g.view(1, 1, *shape).expand(c, 1, *shape), padding=tuple(pad), groups=c)
    return out


def high_frequency_energy3d(field: torch.Tensor) -> float:
    """Mean squared forward difference over the three axes of a (R, R, R) field: high for voxel noise."""
    f = field.double()
    return float(sum(f.diff(dim=a).pow(2).mean() for a in range(3)) / 3)


@dataclass
class ClassAscent:
    """One class's result: the field (R, R, R) in [0, 1] and the score per step."""

    label: str
    index: int
    field: torch.Tensor
    start_score: float
    final_score: float
    start_prob: float
    final_prob: float
    history: list[dict]


def ascend_class(model: VoxNet, index: int, *, steps: int = 200, lr: float = 0.05, l2: float = 0.05,
                 blur_every: int = 4, blur_sigma: float = 1.0, clip_small: float = 0.1, clip_grad: float = 0.0,
                 label: str = "") -> ClassAscent:
    """Gradient ascent of logit ``index`` of ``model`` (eval mode) on a (1, 1, R, R, R) field from I = 0."""
    if steps < 1 or lr <= 0 or l2 < 0 or blur_every < 0 or blur_sigma <= 0:
        raise ValueError(f"need steps >= 1, lr > 0, l2 >= 0, blur_every >= 0, blur_sigma > 0; got {steps}, {lr}, "
                         f"{l2}, {blur_every}, {blur_sigma}")
    if not (0 <= clip_small < 1 and 0 <= clip_grad < 1):
        raise ValueError(f"clip_small and clip_grad must be in [0, 1), got {clip_small}, {clip_grad}")
    device = next(model.parameters()).device
    r = model.resolution
    field_ = torch.zeros(1, model.in_channels, r, r, r, device=device)

    def scores(x: torch.Tensor) -> torch.Tensor:
        return model(x)[0]

    with torch.no_grad():
        s0 = scores(field_)
    history = []
    for step in progress(range(steps), desc=f"classviz {label or index}", unit="step", leave=False):
        x = field_.clone().requires_grad_(True)
        logits = scores(x)
        (grad,) = torch.autograd.grad(logits[index], x)
        g = grad / grad.abs().mean().clamp_min(1e-12)
        with torch.no_grad():
            field_ = (field_ + lr * (g - 2.0 * l2 * field_)).clamp(0.0, 1.0)
            if blur_every and (step + 1) % blur_every == 0:
                field_ = gaussian_blur3d(field_, blur_sigma)
            if clip_small:
                field_ = torch.where(field_ < clip_small, torch.zeros_like(field_), field_)
            if clip_grad:
                contribution = (field_ * grad).abs()
                threshold = torch.quantile(contribution.flatten().double(), clip_grad).to(field_.dtype)
                field_ = torch.where(contribution <= threshold, torch.zeros_like(field_), field_)
        history.append({"class": label, "step": step + 1, "score": float(logits[index].detach()),
                        "l2": float(field_.pow(2).sum())})
    with torch.no_grad():
        s1 = scores(field_)
    p0, p1 = F.softmax(s0, 0)[index], F.softmax(s1, 0)[index]
    return ClassAscent(label, index, field_[0, 0].cpu(), float(s0[index]), float(s1[index]), float(p0), float(p1),
                       history)


def field_mesh(grid: np.ndarray, *, level: float = ISO):
    """The ``level`` iso-surface of an occupancy grid (R, R, R) over [-1, 1]^3 (inside: values above level).

    Runs :func:`shapes3d.geometry.extract.extract_mesh` (dense) on a callable that looks the grid up at its
    corners, as the signed field ``level - occupancy`` (negative inside).
    """
    from shapes3d.geometry.extract import extract_mesh

    vol = np.asarray(grid, dtype=np.float64)
    r = vol.shape[0]

    def lookup(points: np.ndarray) -> np.ndarray:
        idx = np.clip(np.rint((points + 1.0) * 0.5 * (r - 1)).astype(np.int64), 0, r - 1)
        return level - vol[idx[:, 0], idx[:, 1], idx[:, 2]]

    return extract_mesh(lookup, resolution=r, bound=1.0, mode="dense", level=0.0)


def slice_mosaic(grid: np.ndarray, *, n: int = 16, up_axis: str = "z") -> np.ndarray:
    """``n`` evenly spaced slices across the up axis of a (R, R, R) grid, tiled sqrt(n) x sqrt(n) -> (sR, sR).

    Occupancy 1 is black, 0 white (like the silhouettes of the render sheets).
    """
    axis = {"x": 0, "y": 1, "z": 2}[up_axis]
    vol = np.moveaxis(np.asarray(grid, dtype=np.float64), axis, 0)
    side = int(math.ceil(math.sqrt(n)))
    idx = np.linspace(0, vol.shape[0] - 1, side * side).round().astype(int)
    r1, r2 = vol.shape[1:]
    mosaic = np.ones((side * r1, side * r2))
    for k, i in enumerate(idx[::-1]):  # top slice first
        a, b = divmod(k, side)
        mosaic[a * r1:(a + 1) * r1, b * r2:(b + 1) * r2] = 1.0 - np.clip(vol[i].T[::-1], 0, 1)
    return mosaic


@dataclass
class ClassVizReport:
    """What :func:`classviz_voxnet` wrote and measured, per class: start and final logits and probabilities."""

    sheet: Path
    classes: list[str]
    start_scores: dict[str, float]
    final_scores: dict[str, float]
    start_probs: dict[str, float]
    final_probs: dict[str, float]
    meshes: dict[str, Path] = field(default_factory=dict)
    empty: list[str] = field(default_factory=list)


def classviz_voxnet(checkpoint: str | os.PathLike, *, out: str | os.PathLike, classes=None, steps: int = 200,
                    lr: float = 0.05, l2: float = 0.05, blur_every: int = 4, blur_sigma: float = 1.0,
                    clip_small: float = 0.1, clip_grad: float = 0.0, views: int = 3, size: int | None = None,
                    device: str = "cpu") -> ClassVizReport:
    """Visualise the classes of a VoxNet checkpoint (from ``classify train``) into ``out``.

    ``classes``: names or indices (None: all). Options as in :func:`ascend_class`; ``views``
    renders per class, ``size`` their pixels (default 4 R, the slice mosaic's size). Writes per
    class ``<class>.npy`` (field (R, R, R)), ``<class>.ply`` (0.5 iso-surface, when not empty),
    ``<class>.png`` (render) and ``<class>-slices.png``; ``classviz.png`` (one row per class:
    renders, then slices), ``scores.csv`` and ``log.csv`` (score per step).
    """
    from shapes3d.errors import Shapes3DError
    from shapes3d.geometry.export import export_mesh
    from shapes3d.render.images import render_rows, write_image
    from shapes3d.render.sheet import contact_sheet

    model, cfg, names = _load_classifier(checkpoint, device)
    if classes is None:
        picked = list(range(len(names)))
    else:
        picked = []
        for c in classes:
            if isinstance(c, int) or (isinstance(c, str) and c.isdigit() and c not in names):
                i = int(c)
                if not 0 <= i < len(names):
                    raise Shapes3DError(f"class index {i} out of range: the model has {len(names)} classes")
                picked.append(i)
            elif c in names:
                picked.append(names.index(c))
            else:
                raise Shapes3DError(f"unknown class {c!r}; the model's classes are {names}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    up = cfg.data.up_axis
    r = model.resolution
    size = size or 4 * r
    tiles, labels, results, meshes, empty = [], [], [], {}, []
    for i in picked:
        res = ascend_class(model, i, steps=steps, lr=lr, l2=l2, blur_every=blur_every, blur_sigma=blur_sigma,
                           clip_small=clip_small, clip_grad=clip_grad, label=names[i])
        results.append(res)
        grid = res.field.numpy()
        with atomic_write(safe_child(out, f"{names[i]}.npy", what="class name"), "wb") as f:
            np.save(f, grid.astype(np.float32))
        ext = field_mesh(grid)
        if ext.empty:
            empty.append(names[i])
            row = np.ones((views, size, size))
        else:
            meshes[names[i]] = export_mesh(ext.mesh, safe_child(out, f"{names[i]}.ply", what="class name"))
            (row,) = render_rows(ext.mesh, views=views, elevations=(25.0,), size=size, up=up, modes=("shaded",))
        mosaic = slice_mosaic(grid, up_axis=up)
        mosaic = np.asarray(torch.nn.functional.interpolate(torch.from_numpy(mosaic)[None, None], size=(size, size),
                                                            mode="nearest")[0, 0])
        write_image(safe_child(out, f"{names[i]}.png", what="class name"), row[0])
        write_image(safe_child(out, f"{names[i]}-slices.png", what="class name"), mosaic)
        tiles += [*row, mosaic]
        labels += [f"{names[i]} {res.start_score:.2g}->{res.final_score:.2g}"] + [""] * (views - 1) + ["slices"]
    sheet = contact_sheet(np.stack(tiles), out / "classviz.png", cols=views + 1, labels=labels,
                          title="VoxNet class visualisation: logit start->final")
    atomic_write_csv(out / "scores.csv", [{"class": x.label, "start_score": x.start_score,
                                           "final_score": x.final_score, "start_prob": x.start_prob,
                                           "final_prob": x.final_prob, "occupied": int((x.field > ISO).sum())}
                                          for x in results])
    atomic_write_csv(out / "log.csv", [h for x in results for h in x.history])
    for x in results:
        log.info("classviz %s: logit %.3g -> %.3g, p %.3f -> %.3f", x.label, x.start_score, x.final_score,
                 x.start_prob, x.final_prob)
    return ClassVizReport(sheet, [x.label for x in results], {x.label: x.start_score for x in results},
                          {x.label: x.final_score for x in results}, {x.label: x.start_prob for x in results},
                          {x.label: x.final_prob for x in results}, meshes, empty)
