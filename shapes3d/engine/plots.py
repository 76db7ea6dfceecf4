"""Figures people would rather look at: training curves, confusion matrices, filters.

Matplotlib with the non-interactive Agg backend; every figure is written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from shapes3d.utils.io import atomic_write_bytes  # noqa: E402


def _save(fig, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def plot_curves(history: Sequence[dict], path: str | os.PathLike, *, title: str = "") -> None:
    """Loss and accuracy per epoch from a list of ``{"epoch", "<split>_<metric>": value}`` rows."""
    epochs = [h["epoch"] for h in history]
    metrics = sorted({k.split("_", 1)[1] for h in history for k in h if "_" in k and k.split("_", 1)[0] in
                      ("train", "val")})
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(5 * max(len(metrics), 1), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for split, style in (("train", "-"), ("val", "--")):
            key = f"{split}_{metric}"
            ys = [h.get(key) for h in history]
            if any(y is not None for y in ys):
                ax.plot(epochs, [np.nan if y is None else y for y in ys], style, marker=".", label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        if metric == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: str | os.PathLike, *, title: str = "") -> None:
    """Row-normalised confusion matrix (rows: true class) with counts in the cells."""
    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=60, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            if m[i, j]:
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    _save(fig, path)


def plot_filters(weights: np.ndarray, path: str | os.PathLike, *, title: str = "") -> None:
    """3D conv filters (F, C, D, D, D) as rows of D slices (first input channel), as in the VoxNet paper."""
    w = np.asarray(weights)[:, 0]
    f, d = w.shape[0], w.shape[1]
    lim = float(np.abs(w).max()) or 1.0
    fig, axes = plt.subplots(f, d, figsize=(0.5 * d + 0.5, 0.5 * f + 0.5), squeeze=False)
    for i in range(f):
        for j in range(d):
            ax = axes[i, j]
            ax.imshow(w[i, :, :, j].T, cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title)
    _save(fig, path)


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


def write_step_log(history: list[dict], out: str | os.PathLike, *, title: str, panels: dict[str, list[str]]) -> None:
    """``log.csv`` (every term per step) and ``loss.png`` (one panel per group of summed terms)."""
    from shapes3d.utils.io import atomic_write_csv

    out = Path(out)
    atomic_write_csv(out / "log.csv", history)
    rows = [{"epoch": h["step"], **{f"train_{name}": sum(h.get(k, 0.0) for k in keys)
                                    for name, keys in panels.items() if any(k in h for k in keys)}}
            for h in history]
    plot_curves(rows, out / "loss.png", title=title)
