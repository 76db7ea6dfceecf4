"""Figures people would rather look at: training curves, confusion matrices, filters.

Matplotlib with the non-interactive Agg backend; every figure is written atomically. Each ``plot_*`` writer has a
``*_figure`` builder that returns the matplotlib figure unsaved, so tests (and notebooks) can inspect its axes
labels, titles and colour bars.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from shapes3d.utils.io import atomic_write_bytes  # noqa: E402

DPI = 110  #: pixels per inch of every PNG written here

#: What the x axis counts, by the key its rows carry it under.
X_LABELS = {"epoch": "epoch", "step": "optimiser step"}

#: y-axis labels (with units) of the metrics the trainers and jobs log; others are labelled by their name.
Y_LABELS = {
    "loss": "loss",
    "acc": "accuracy (fraction correct)",
    "lr": "learning rate",
    "sdf": "clamped L1 SDF error (unit-sphere units)",
    "silhouette": "silhouette loss",
    "ssim": "1 - SSIM",
    "perceptual": "perceptual loss (VGG features)",
    "style": "style loss (normalised)",
    "content": "content loss (normalised)",
    "preserve": "shape-preservation loss",
    "total": "total loss",
    "tv": "total variation",
}

#: Mantissas of the labelled ticks on a log axis, coarsest first; the first giving >= 4 ticks in view wins.
_LOG_MANTISSAS = ((1.0,), (1.0, 2.0, 5.0), tuple(range(1, 10)), tuple(np.arange(1.0, 10.0, 0.5)))
MIN_LOG_TICKS = 4


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG (``DPI``, tight box) atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


_save = save_figure


def log_ticks(lo: float, hi: float) -> list[float]:
    """Labelled tick values for a log axis showing [lo, hi] (0 < lo < hi): the coarsest of 1, 1-2-5, 1..9 and
    half-steps per decade giving at least ``MIN_LOG_TICKS`` ticks, thinned to at most ~10."""
    e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    ticks: list[float] = []
    for mantissas in _LOG_MANTISSAS:
        ticks = [m * 10.0 ** e for e in range(e0, e1 + 1) for m in mantissas if lo <= m * 10.0 ** e <= hi]
        if len(ticks) >= MIN_LOG_TICKS:
            break
    if len(ticks) < MIN_LOG_TICKS:  # less than about a third of a decade: evenly spaced round values
        ticks = [t for t in MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi) if lo <= t <= hi]
    step = max(1, math.ceil(len(ticks) / 10))
    return [float(f"{t:.12g}") for t in ticks[::step]]


def set_log_axis(ax, axis: str = "y") -> None:
    """Log scale on ``ax``'s ``axis`` with labelled ticks from :func:`log_ticks` over the current view and unlabelled
    minor ticks (call after plotting, so the view limits are known)."""
    getattr(ax, f"set_{axis}scale")("log")
    lim = getattr(ax, f"get_{axis}lim")()
    target = getattr(ax, f"{axis}axis")
    target.set_major_locator(FixedLocator(log_ticks(*sorted(lim))))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    target.set_minor_locator(LogLocator(base=10.0, subs=tuple(range(1, 10)), numticks=100))
    target.set_minor_formatter(NullFormatter())
    getattr(ax, f"set_{axis}lim")(lim)


def _metrics(history: Sequence[dict]) -> list[str]:
    return list(dict.fromkeys(k.split("_", 1)[1] for h in history for k in h
                              if "_" in k and k.split("_", 1)[0] in ("train", "val")))


def _wants_log(metric: str, values: list[float]) -> bool:
    """Log scale for a positive loss spanning over 3x and for any positive series spanning over a decade (never for
    accuracies): a narrower range reads better on a linear axis."""
    vals = [v for v in values if v is not None and np.isfinite(v)]
    if not vals or min(vals) <= 0 or metric.endswith("acc"):
        return False
    return max(vals) / min(vals) > (3.0 if metric == "loss" else 10.0)


def _log_label(label: str) -> str:
    return label[:-1] + "; log scale)" if label.endswith(")") else label + " (log scale)"


def curves_figure(history: Sequence[dict], *, title: str = "", x: str = "epoch", xlabel: str | None = None,
                  ylabels: Mapping[str, str] | None = None):
    """One panel per metric of ``{x: value, "<split>_<metric>": value}`` rows (split train or val), train solid and
    val dashed; x labelled ``xlabel`` (default :data:`X_LABELS` of ``x``: "epoch", "optimiser step"), y by
    ``ylabels`` or :data:`Y_LABELS`. Losses and series spanning over a decade get a log axis with at least four
    labelled ticks per decade shown. Returns the unsaved figure."""
    labels = {**Y_LABELS, **(ylabels or {})}
    xs = [h[x] for h in history]
    metrics = _metrics(history)
    n = max(len(metrics), 1)
    cols = n if n <= 3 else math.ceil(n / 2)  # four or more panels: two rows
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.axis("off")
    for ax, metric in zip(axes.flat, metrics):
        values = []
        for split, style in (("train", "-"), ("val", "--")):
            ys = [h.get(f"{split}_{metric}") for h in history]
            if any(y is not None for y in ys):
                ax.plot(xs, [np.nan if y is None else y for y in ys], style, marker="." if len(xs) < 60 else None,
                        label=split)
                values += ys
        log = _wants_log(metric, values)
        ax.set_xlabel(xlabel or X_LABELS.get(x, x))
        ax.set_ylabel(_log_label(labels.get(metric, metric)) if log else labels.get(metric, metric))
        ax.set_title(metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log:
            set_log_axis(ax, "y")
        ax.grid(alpha=0.3, which="major")
        ax.grid(alpha=0.12, which="minor")
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(history: Sequence[dict], path: str | os.PathLike, *, title: str = "", x: str = "epoch",
                xlabel: str | None = None, ylabels: Mapping[str, str] | None = None) -> Path:
    """Write :func:`curves_figure` of ``history`` to ``path``."""
    return save_figure(curves_figure(history, title=title, x=x, xlabel=xlabel, ylabels=ylabels), path)


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], *, title: str = ""):
    """Row-normalised confusion matrix (rows: true class) with counts in the cells and a colour bar."""
    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(2.0 + 0.55 * k, 0.8 + 0.5 * k))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=60, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(k):
        for j in range(k):
            if m[i, j]:
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if title:
        ax.set_title(title)
    return fig


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: str | os.PathLike, *, title: str = "") -> Path:
    """Write :func:`confusion_figure` to ``path``."""
    return save_figure(confusion_figure(matrix, classes, title=title), path)


def filter_mosaic(weights: np.ndarray) -> np.ndarray:
    """One 3D filter (D, D, D) indexed [x, y, z] -> its D z-slices side by side, (D, D*D + D-1): row = y (top =
    high y), column = x within each slice, slice k = z index k from the left, NaN one-voxel gaps between."""
    w = np.asarray(weights, dtype=np.float64)
    d = w.shape[2]
    out = np.full((w.shape[1], d * w.shape[0] + d - 1), np.nan)
    for k in range(d):
        out[:, k * (w.shape[0] + 1):k * (w.shape[0] + 1) + w.shape[0]] = w[:, :, k].T[::-1]
    return out


def filters_figure(weights: np.ndarray, *, title: str = "", cols: int = 4, channel: int = 0):
    """A labelled grid of 3D conv filters (F, C, D, D, D) of input ``channel``, as in the VoxNet paper: each filter
    a mosaic of its D z-slices (:func:`filter_mosaic`), numbered, on one symmetric diverging scale with a shared
    colour bar of the weight value. Returns the unsaved figure."""
    w = np.asarray(weights)
    if w.ndim != 5:
        raise ValueError(f"filters must have shape (F, C, D, D, D), got {w.shape}")
    w = w[:, channel]
    f, d = w.shape[0], w.shape[-1]
    cols = max(1, min(cols, f))
    rows = math.ceil(f / cols)
    lim = float(np.abs(w).max()) or 1.0
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 1.2, 0.72 * rows + 1.2), squeeze=False)
    centres = [k * (d + 1) + (d - 1) / 2 for k in range(d)]
    im = None
    for i, ax in enumerate(axes.flat):
        if i >= f:
            ax.axis("off")
            continue
        im = ax.imshow(filter_mosaic(w[i]), cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_yticks([])
        ax.set_ylabel(f"#{i}", rotation=0, ha="right", va="center", fontsize=9)
        last_row = i // cols == rows - 1 or i + cols >= f
        ax.set_xticks(centres, [f"z{k}" for k in range(d)] if last_row else [], fontsize=7)
        ax.tick_params(length=0)
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02, label="weight value")
    note = f"{f} filters of {d}\u00b3 voxels, input channel {channel} of {np.asarray(weights).shape[1]}; " \
           f"each: its {d} z-slices left to right (x across, y up)"
    fig.suptitle((title + "\n" if title else "") + note, fontsize=10)
    return fig


def plot_filters(weights: np.ndarray, path: str | os.PathLike, *, title: str = "") -> Path:
    """Write :func:`filters_figure` of 3D conv filters (F, C, D, D, D) to ``path``."""
    return save_figure(filters_figure(weights, title=title), path)


def plot_image_strip(images: Sequence[np.ndarray], path: str | os.PathLike, *, labels: Sequence[str] = ()) -> None:
    """A row of images (H, W) or (H, W, 3) in [0, 1]."""
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.4), squeeze=False)
    for i, img in enumerate(images):
        ax = axes[0, i]
        ax.imshow(np.clip(img, 0, 1), cmap="gray" if np.ndim(img) == 2 else None)
        ax.axis("off")
        if i < len(labels):
            ax.set_title(labels[i], fontsize=8)
    _save(fig, path)


def step_rows(history: list[dict], panels: Mapping[str, Sequence[str]]) -> list[dict]:
    """Per-step log rows ``{"step", term: value}`` -> curve rows ``{"step", "train_<panel>": summed terms}``."""
    return [{"step": h["step"], **{f"train_{name}": sum(h.get(k, 0.0) for k in keys)
                                   for name, keys in panels.items() if any(k in h for k in keys)}}
            for h in history]


def write_step_log(history: list[dict], out: str | os.PathLike, *, title: str, panels: dict[str, list[str]]) -> None:
    """``log.csv`` (every term per step) and ``loss.png`` (one panel per group of summed terms, x = optimiser
    step)."""
    from shapes3d.utils.io import atomic_write_csv

    out = Path(out)
    atomic_write_csv(out / "log.csv", history)
    plot_curves(step_rows(history, panels), out / "loss.png", title=title, x="step")
