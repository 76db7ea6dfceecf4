"""Voxel datasets for classification: build from a manifest through the cache, split, augment.

Grids are uint8 ``(S, K, R, R, R)``: S shapes, K cached rotations about the up axis. A
dataset built from the cache keeps them as a :class:`GridStack` of memory-mapped cache
entries, so training memory grows with the batch, not with the dataset (ModelNet10 at
32^3 x 12 rotations is 1.6 GB of grids; at 64^3, 12.6 GB). Augmentation happens per batch
on tensors (cheap next to the forward pass).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from shapes3d.data.cache import load_cached
from shapes3d.data.configs import VoxelCacheConfig
from shapes3d.data.discovery import ManifestEntry
from shapes3d.data.preprocess import PreprocessReport, run_preprocess
from shapes3d.data.tasks import VOXELS_VERSION, voxel_task
from shapes3d.errors import Shapes3DError

log = logging.getLogger(__name__)
_AXES = {"x": 0, "y": 1, "z": 2}


class GridStack:
    """(S, K, R, R, R) grids read lazily from S per-shape arrays (e.g. memory maps into cache files).

    Indexing with an integer, a slice or an integer array returns an in-memory numpy array
    of just those shapes; :meth:`select` reads one rotation per shape.
    """

    def __init__(self, arrays: Sequence[np.ndarray], *, grid_shape: tuple[int, ...] | None = None,
                 dtype: np.dtype | None = None) -> None:
        self._arrays = list(arrays)
        if not self._arrays and (grid_shape is None or dtype is None):
            raise ValueError("an empty GridStack needs grid_shape and dtype")
        grid_shape = tuple(self._arrays[0].shape) if self._arrays else tuple(grid_shape)
        dtype = self._arrays[0].dtype if self._arrays else np.dtype(dtype)
        for a in self._arrays:
            if a.shape != grid_shape or a.dtype != dtype:
                raise ValueError(f"grids differ: {a.dtype}{a.shape} vs {dtype}{grid_shape}")
        self.shape = (len(self._arrays), *grid_shape)
        self.dtype = dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return len(self._arrays)

    def _rows(self, key) -> list[int]:
        if isinstance(key, slice):
            return list(range(*key.indices(len(self))))
        return [int(i) for i in np.asarray(key).reshape(-1)]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return np.asarray(self._arrays[key])
        rows = self._rows(key)
        if not rows:
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        return np.stack([self._arrays[i] for i in rows])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def subset(self, index) -> GridStack:
        return GridStack([self._arrays[i] for i in self._rows(index)], grid_shape=self.shape[1:], dtype=self.dtype)

    def select(self, rows, rotations) -> np.ndarray:
        """(B, 1, R, R, R): rotation ``rotations[b]`` of shape ``rows[b]`` (reads only those grids)."""
        return np.stack([self._arrays[int(r)][int(k)] for r, k in zip(rows, rotations, strict=True)])[:, None]


def select_rotations(grids, rows, rotations) -> np.ndarray:
    """(B, 1, R, R, R) from a :class:`GridStack` or an in-memory (S, K, R, R, R) array."""
    if isinstance(grids, GridStack):
        return grids.select(rows, rotations)
    return np.asarray(grids[np.asarray(rows), np.asarray(rotations)])[:, None]


def _grid_item(grid: np.ndarray, label: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One (R, R, R) occupancy grid and its label as a (1, R, R, R) float32 tensor and an int64 scalar."""
    return torch.from_numpy(np.asarray(grid, dtype=np.float32)[None].copy()), torch.tensor(int(label))


@dataclass
class VoxelSet(Dataset):
    """Shapes as cached occupancy grids with integer labels into ``classes``.

    A ``torch.utils.data.Dataset``: item ``i`` is ``(grid, label)``, the unrotated cached copy (rotation 0) of
    shape ``i`` as a (1, R, R, R) float32 tensor (1 inside) and its int64 label, so a ``DataLoader`` gives
    ``(B, 1, R, R, R)`` and ``(B,)``. :meth:`all_rotations` is the view over every cached rotation. The
    trainer does not go through it: it reads rotations chosen per batch (:func:`select_rotations`).
    """

    grids: np.ndarray | GridStack  # (S, K, R, R, R) uint8
    labels: np.ndarray  # (S,) int64
    paths: list[Path]
    classes: list[str]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = _check_index(i, len(self))
        return _grid_item(self.grids[i][0], self.labels[i])

    def all_rotations(self) -> VoxelRotations:
        """The ``torch.utils.data.Dataset`` of all S * K cached copies (item ``s * K + k``: rotation k of shape s)."""
        return VoxelRotations(self)

    def subset(self, index: np.ndarray) -> VoxelSet:
        grids = self.grids.subset(index) if isinstance(self.grids, GridStack) else self.grids[index]
        return VoxelSet(grids, self.labels[index], [self.paths[i] for i in index], self.classes)


def _check_index(i, n: int) -> int:
    i = int(i)
    i = i + n if i < 0 else i
    if not 0 <= i < n:
        raise IndexError(f"index {i} out of range for {n} items")
    return i


class VoxelRotations(Dataset):
    """Every cached rotation of a :class:`VoxelSet` as its own item: ``(grid (1, R, R, R) float32, label)``."""

    def __init__(self, voxels: VoxelSet) -> None:
        self.voxels = voxels
        self.rotations = int(voxels.grids.shape[1])

    def __len__(self) -> int:
        return len(self.voxels) * self.rotations

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        shape, k = divmod(_check_index(i, len(self)), self.rotations)
        return _grid_item(self.voxels.grids[shape][k], self.voxels.labels[shape])


def build_voxel_set(
    entries: Sequence[ManifestEntry],
    cfg: VoxelCacheConfig,
    *,
    cache_dir: str | Path,
    classes: Sequence[str] | None = None,
    workers: int = 1,
    desc: str = "voxels",
) -> tuple[VoxelSet, PreprocessReport]:
    """Voxelize (or read from the cache) every entry; unknown or failed files are skipped and reported.

    ``classes`` fixes the label order (a trained model's); by default the sorted class names.
    """
    classes = list(classes) if classes is not None else sorted({e.class_name for e in entries})
    index = {c: i for i, c in enumerate(classes)}
    skipped: list[tuple[Path, str]] = []
    usable = []
    for e in entries:
        if e.class_name not in index:
            skipped.append((e.path, f"class {e.class_name!r} is not one of the model's classes"))
        else:
            usable.append(e)
    report = run_preprocess(usable, voxel_task, params=dataclasses.asdict(cfg), cache_dir=cache_dir,
                            workers=workers, desc=desc, version=VOXELS_VERSION)
    grids, labels, paths = [], [], []
    for e in usable:
        loc = report.results.get(Path(e.path))
        if loc is None:
            continue
        grids.append(load_cached(loc, mmap=True)["occupancy"])  # verified once, then paged in on use
        labels.append(index[e.class_name])
        paths.append(Path(e.path))
    skipped += list(report.skipped)
    if not grids:
        raise Shapes3DError(f"no usable shapes out of {len(entries)} ({len(skipped)} skipped)")
    return VoxelSet(GridStack(grids), np.asarray(labels, dtype=np.int64), paths, classes, skipped), report


def stratified_split(labels: np.ndarray, fraction: float, *, seed: int,
                     mix: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx): ``round(fraction * n_c)`` of each class (at least one when fraction > 0 and n_c > 1).

    With ``mix`` (a weight per class index, e.g. the test split's class counts) the validation split holds
    ``round(fraction * n)`` shapes in all, spread over the classes present in proportion to ``mix`` (a validation
    split that mirrors the test class mix); every class keeps at least one training shape.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    present = np.unique(labels)
    if mix is not None:
        w = np.asarray(mix, dtype=np.float64)[present]
        share = w / w.sum() if w.sum() > 0 else np.full(len(present), 1.0 / len(present))
        total = round(fraction * len(labels))
    for i, c in enumerate(present):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_val = int(round(fraction * len(idx))) if mix is None else min(int(round(total * share[i])), len(idx) - 1)
        if fraction > 0 and n_val == 0 and len(idx) > 1 and (mix is None or share[i] > 0):
            n_val = 1
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))


def augment_params(
    b: int,
    k: int,
    *,
    generator: torch.Generator,
    rotate: bool = True,
    mirror: bool = True,
    translate: int = 0,
) -> torch.Tensor:
    """Random augmentation of B samples with K cached rotations: (B, 5) int64 rows (rotation, flip, shift xyz).

    Drawn for a whole (global) batch so that data-parallel ranks, each applying its own
    slice with :func:`apply_augment`, consume the generator exactly as one process would.
    """
    rot = torch.randint(0, k, (b,), generator=generator) if rotate else torch.zeros(b, dtype=torch.long)
    flips = torch.randint(0, 2, (b,), generator=generator) if mirror else torch.zeros(b, dtype=torch.long)
    shifts = (torch.randint(-translate, translate + 1, (b, 3), generator=generator)
              if translate > 0 else torch.zeros(b, 3, dtype=torch.long))
    return torch.cat([rot[:, None], flips[:, None], shifts], dim=1)


def apply_augment(grids: torch.Tensor, params: torch.Tensor, *, up_axis: str = "z") -> torch.Tensor:
    """uint8 (B, K, R, R, R) and params (B, 5) from :func:`augment_params` -> float (B, 1, R, R, R).

    Mirroring flips one horizontal axis (never the up axis). Shifts roll the grid; the
    object occupies ``object_size`` of ``R`` cells, so small shifts never wrap it around.
    """
    b = grids.shape[0]
    x = grids[torch.arange(b), params[:, 0]].float()  # (B, R, R, R)
    horizontal = [a for a in range(3) if a != _AXES[up_axis]]
    out = []
    for i in range(b):
        v = x[i]
        if params[i, 1]:
            v = v.flip(horizontal[0])
        if params[i, 2:].any():
            v = v.roll(tuple(params[i, 2:].tolist()), dims=(0, 1, 2))
        out.append(v)
    return torch.stack(out).unsqueeze(1)


def augment_batch(
    grids: torch.Tensor,
    *,
    generator: torch.Generator,
    rotate: bool = True,
    mirror: bool = True,
    translate: int = 0,
    up_axis: str = "z",
) -> torch.Tensor:
    """uint8 (B, K, R, R, R) -> float (B, 1, R, R, R): a random cached rotation, mirror and shift per sample."""
    params = augment_params(grids.shape[0], grids.shape[1], generator=generator, rotate=rotate, mirror=mirror,
                            translate=translate)
    return apply_augment(grids, params, up_axis=up_axis)


def class_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Per-sample weights giving each class equal total probability (class-balanced sampling)."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = 1.0 / np.maximum(counts[labels], 1)
    return torch.as_tensor(w / w.sum(), dtype=torch.float64)
