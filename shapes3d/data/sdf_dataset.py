"""SDF samples of many shapes, and the balanced sampler DeepSDF trains with.

Per shape, samples with SDF > 0 (``pos``, (P, 4) rows ``x, y, z, sdf``) and SDF <= 0
(``neg``, (Q, 4)) are kept apart, as in the official release's npz files and
:class:`shapes3d.geometry.sampling.SDFSamples` (which :class:`SDFDataset` accepts as is), so that every
step can draw half of its samples from each side: near-surface samples dominate and
the sign balance keeps thin parts from being washed out. Each shape also carries the
normalisation that mapped its mesh into the unit sphere (``offset`` (3,), ``scale``),
``x_normalised = (x_mesh - offset) * scale`` (the geometry layer's convention), so reconstructions can be mapped back.

:func:`build_sdf_dataset` samples meshes through the content-keyed cache (the ``sdf`` preprocessing task) and
reads official DeepSDF samples (``SdfSamples/<dataset>/<class>/<id>.npz``, see :mod:`shapes3d.data.deepsdf_layout`)
as they are. Shapes are named by their unique ids (:func:`shapes3d.data.shape_ids.shape_names`: ``<synset>/<id>``
for ShapeNet); the dataset also keeps each shape's absolute path and class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from shapes3d.data.cache import load_cached
from shapes3d.data.discovery import ManifestEntry
from shapes3d.errors import Shapes3DError

if TYPE_CHECKING:
    from shapes3d.data.preprocess import PreprocessReport
    from shapes3d.geometry.sampling import SDFSampleConfig


@dataclass(frozen=True)
class ShapeSamples:
    """Samples with SDF > 0 (P, 4) and SDF <= 0 (Q, 4) ``[x, y, z, sdf]`` of one shape, plus its normalisation."""

    pos: np.ndarray
    neg: np.ndarray
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("pos", "neg"):
            a = np.asarray(getattr(self, name), dtype=np.float32)
            if a.ndim != 2 or a.shape[1] != 4:
                raise ValueError(f"{name} must have shape (N, 4) [x, y, z, sdf], got {a.shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"{name} contains NaN or inf values")
            object.__setattr__(self, name, a)
        if len(self.pos) + len(self.neg) == 0:
            raise ValueError("a shape needs at least one SDF sample (pos and neg are both empty)")
        if (self.pos[:, 3] <= 0).any() or (self.neg[:, 3] > 0).any():
            raise ValueError("pos must hold SDF > 0 and neg SDF <= 0 (negative inside)")


def split_by_sign(points: np.ndarray, sdf: np.ndarray, **normalisation) -> ShapeSamples:
    """Points (N, 3) and SDF values (N,) -> :class:`ShapeSamples` (SDF > 0 goes to ``pos``, the rest to ``neg``)."""
    points = np.asarray(points, dtype=np.float32)
    sdf = np.asarray(sdf, dtype=np.float32).reshape(-1)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) != len(sdf):
        raise ValueError(f"points must be (N, 3) matching sdf (N,), got {points.shape} and {sdf.shape}")
    rows = np.concatenate([points, sdf[:, None]], axis=1)
    return ShapeSamples(rows[sdf > 0], rows[sdf <= 0], **normalisation)


def samples_from_sdf(sdf_fn: Callable[[np.ndarray], np.ndarray], surface_points: np.ndarray, *, n: int,
                     variances: Sequence[float] = (0.005, 0.0005), uniform_fraction: float = 0.1, bound: float = 1.0,
                     seed: int = 0) -> ShapeSamples:
    """DeepSDF-style samples of an analytic SDF: Gaussian perturbations of surface points plus uniform ones.

    ``surface_points`` (M, 3) lie on the zero level set; ``variances`` are the official
    recipe's per-coordinate jitter (as :mod:`shapes3d.geometry.sampling`); a ``uniform_fraction`` of the
    ``n`` samples is uniform in ``[-bound, bound]^3``. Meshes are sampled by the geometry
    layer; this helper serves analytic shapes (tests, benchmarks).
    """
    rng = np.random.default_rng(seed)
    surface_points = np.asarray(surface_points, dtype=np.float64)
    if surface_points.ndim != 2 or surface_points.shape[1] != 3 or len(surface_points) == 0:
        raise ValueError(f"surface_points must be a non-empty (M, 3) array, got {surface_points.shape}")
    n_uniform = int(round(n * uniform_fraction))
    per_std = (n - n_uniform) // len(variances)
    parts = [rng.uniform(-bound, bound, size=(n - per_std * len(variances), 3))]
    for var in variances:
        base = surface_points[rng.integers(0, len(surface_points), per_std)]
        parts.append(base + rng.normal(0.0, np.sqrt(var), size=base.shape))
    pts = np.concatenate(parts)
    return split_by_sign(pts, np.asarray(sdf_fn(pts), dtype=np.float64))


class SDFDataset:
    """Many shapes' samples held as tensors; :meth:`sample` draws a balanced batch; :meth:`chunks` is the
    ``torch.utils.data.Dataset`` view (one balanced chunk per shape) for a ``DataLoader``.

    ``shapes``: :class:`ShapeSamples` or any object with ``pos``/``neg`` (and optionally
    ``offset``/``scale``) attributes, e.g. the geometry layer's ``SDFSamples``. ``paths`` (the source files,
    absolute) and ``classes`` default to the names and ``""``.
    """

    def __init__(self, shapes: Sequence, names: Sequence[str] | None = None, *, paths: Sequence[str] | None = None,
                 classes: Sequence[str] | None = None) -> None:
        if len(shapes) == 0:
            raise ValueError("SDFDataset needs at least one shape")
        self.names = [f"shape_{i:04d}" for i in range(len(shapes))] if names is None else [str(n) for n in names]
        if len(self.names) != len(shapes):
            raise ValueError(f"got {len(shapes)} shapes but {len(self.names)} names")
        if len(set(self.names)) != len(self.names):
            raise ValueError("shape names must be unique (see shapes3d.data.shape_ids.shape_names)")
        self.paths = list(self.names) if paths is None else [str(p) for p in paths]
        self.classes = [""] * len(self.names) if classes is None else [str(c) for c in classes]
        if not len(self.paths) == len(self.classes) == len(self.names):
            raise ValueError(f"got {len(self.names)} names, {len(self.paths)} paths, {len(self.classes)} classes")
        shapes = [s if isinstance(s, ShapeSamples) else
                  ShapeSamples(s.pos, s.neg, tuple(np.asarray(getattr(s, "offset", (0, 0, 0)), float).tolist()),
                               float(getattr(s, "scale", 1.0))) for s in shapes]
        self.pos = [torch.from_numpy(s.pos) for s in shapes]
        self.neg = [torch.from_numpy(s.neg) for s in shapes]
        self.offsets = torch.tensor([s.offset for s in shapes], dtype=torch.float64)
        self.scales = torch.tensor([s.scale for s in shapes], dtype=torch.float64)

    def __len__(self) -> int:
        return len(self.pos)

    def sample(self, shape_indices: torch.Tensor, samples_per_shape: int, *,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Balanced samples of shapes (B,): xyz (B*S, 3) and sdf (B*S,), grouped by shape in that order.

        Each shape gives ``S // 2`` positive and ``S - S // 2`` negative samples, drawn
        uniformly with replacement (so short sides simply repeat); a shape with no
        samples on one side takes all S from the other.
        """
        if samples_per_shape < 1:
            raise ValueError(f"samples_per_shape must be >= 1, got {samples_per_shape}")
        rows = []
        for i in shape_indices.tolist():
            if not 0 <= i < len(self):
                raise IndexError(f"shape index {i} out of range for {len(self)} shapes")
            pos, neg = self.pos[i], self.neg[i]
            n_pos = samples_per_shape // 2 if len(neg) else samples_per_shape
            n_pos = n_pos if len(pos) else 0
            n_neg = samples_per_shape - n_pos
            for side, k in ((pos, n_pos), (neg, n_neg)):
                if k:
                    rows.append(side[torch.randint(0, len(side), (k,), generator=generator)])
        batch = torch.cat(rows)
        return batch[:, :3].contiguous(), batch[:, 3].contiguous()

    def chunks(self, samples_per_shape: int, *, seed: int = 0, epoch: int = 0,
               seed_for: Callable[[int, int, int], int] | None = None) -> SDFChunks:
        """A ``torch.utils.data.Dataset`` of this set: a balanced chunk of S samples per shape (:class:`SDFChunks`)."""
        return SDFChunks(self, samples_per_shape, seed=seed, epoch=epoch, seed_for=seed_for)


def chunk_seed(seed: int, epoch: int, index: int) -> int:
    """The default generator seed of shape ``index``'s chunk in ``epoch`` (numpy's SeedSequence mixing)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] & 0x7FFFFFFFFFFFFFFF)


class SDFChunks(Dataset):
    """A ``torch.utils.data.Dataset`` view of an :class:`SDFDataset`: item ``i`` is one balanced chunk of shape ``i``.

    ``(xyz (S, 3) float32, sdf (S,) float32, i int64)``, drawn by :meth:`SDFDataset.sample` from a generator
    seeded with ``seed_for(seed, epoch, i)`` (default :func:`chunk_seed`), so an item is the same whichever
    worker, batch or order reads it. A ``DataLoader`` of batch size B gives ``(B, S, 3)``, ``(B, S)`` and the
    shape indices ``(B,)``; ``xyz.reshape(-1, 3)`` is the trainer's ``(B*S, 3)`` layout, grouped by shape.
    Call :meth:`set_epoch` between epochs for new draws (as with a ``DistributedSampler``).
    """

    def __init__(self, data: SDFDataset, samples_per_shape: int, *, seed: int = 0, epoch: int = 0,
                 seed_for: Callable[[int, int, int], int] | None = None) -> None:
        if samples_per_shape < 1:
            raise ValueError(f"samples_per_shape must be >= 1, got {samples_per_shape}")
        self.data, self.samples_per_shape, self.seed, self.epoch = data, int(samples_per_shape), int(seed), int(epoch)
        self.seed_for = chunk_seed if seed_for is None else seed_for

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"shape index {i} out of range for {len(self)} shapes")
        gen = torch.Generator().manual_seed(int(self.seed_for(self.seed, self.epoch, i)))
        xyz, sdf = self.data.sample(torch.tensor([i]), self.samples_per_shape, generator=gen)
        return xyz, sdf, torch.tensor(i)


def _copy_on_write(arr: np.ndarray) -> np.ndarray:
    """A writable view of a read-only cache memory map (torch wants writable arrays); nothing is copied
    unless written, and writes never reach the file."""
    if not isinstance(arr, np.memmap) or arr.size == 0:
        return arr
    return np.memmap(arr.filename, dtype=arr.dtype, mode="c", offset=arr.offset, shape=arr.shape,
                     order="F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C")


def sdf_task_params(cfg: SDFSampleConfig) -> dict:
    """The preprocessing parameters of the SDF sampling task (they key its cache entries)."""
    params = cfg.to_dict()
    if params["bound"] == 1.0:  # the only value before `bound` was a config key: older cache entries stay valid
        del params["bound"]
    return params


def is_official_samples(path: str | Path) -> bool:
    """Whether ``path`` is an official DeepSDF samples file (``.../SdfSamples/<dataset>/<class>/<id>.npz``)."""
    p = Path(path)
    return p.suffix.lower() == ".npz" and len(p.parts) >= 4 and p.parts[-4] == "SdfSamples"


def read_official(path: str | Path) -> ShapeSamples:
    """One official samples file as :class:`ShapeSamples` (non-finite rows dropped, normalisation converted)."""
    from shapes3d.data.deepsdf_layout import read_official_samples

    a = read_official_samples(path)
    return split_by_sign(a["points"], a["sdf"], offset=a["offset"], scale=a["scale"])


def build_sdf_dataset(entries: Sequence[ManifestEntry | str | Path], cfg: SDFSampleConfig, *, cache_dir,
                      workers: int = 1) -> tuple[SDFDataset, PreprocessReport]:
    """Sample (or read from the cache) every mesh, read official samples files as they are; failures are skipped
    and listed in the report. Shapes are named by :func:`~shapes3d.data.shape_ids.shape_names` (a clash is an
    error before anything is sampled).

    Samples are memory-mapped from the cache (verified once) and paged in as batches draw them.
    """
    from shapes3d.data.preprocess import run_preprocess  # with the sampling task: trimesh and open3d
    from shapes3d.data.shape_ids import shape_names
    from shapes3d.data.tasks import SDF_VERSION, sdf_task

    paths = [Path(e.path if isinstance(e, ManifestEntry) else e) for e in entries]
    all_names = shape_names(paths)
    classes = [e.class_name if isinstance(e, ManifestEntry) else "" for e in entries]
    meshes = [e for e, p in zip(entries, paths) if not is_official_samples(p)]
    report = run_preprocess(meshes, sdf_task, params=sdf_task_params(cfg), cache_dir=cache_dir, workers=workers,
                            desc="sdf samples", version=SDF_VERSION)
    shapes, names, kept_paths, kept_classes = [], [], [], []
    for path, name, cls in zip(paths, all_names, classes):
        if is_official_samples(path):
            try:
                shapes.append(read_official(path))
            except (Shapes3DError, ValueError) as exc:
                report.skipped.append((path, str(exc)))
                continue
        else:
            loc = report.results.get(path)
            if loc is None:
                continue
            a = load_cached(loc, mmap=True)
            shapes.append(ShapeSamples(_copy_on_write(a["pos"]), _copy_on_write(a["neg"]),
                                       tuple(a["offset"].tolist()), float(a["scale"])))
        names.append(name)
        kept_paths.append(str(path.resolve()))
        kept_classes.append(cls)
    if not shapes:
        raise Shapes3DError(f"no usable meshes out of {len(entries)} ({len(report.skipped)} skipped)")
    return SDFDataset(shapes, names, paths=kept_paths, classes=kept_classes), report
