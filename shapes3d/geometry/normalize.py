"""Normalisation into the unit sphere or cube, and a watertightness report.

:func:`normalize` is the one place shapes are scaled; it returns a
:class:`Transform` so every output (samples, extracted meshes, metrics) can be
mapped back into the input's coordinates with :meth:`Transform.invert`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from shapes3d.errors import DegenerateGeometryError

#: DeepSDF normalises into a sphere of radius 1/1.03, i.e. ``margin=0.03``.
DEEPSDF_MARGIN = 0.03


@dataclass(frozen=True)
class Transform:
    """Similarity ``y = (x - offset) * scale`` (uniform scale, no rotation)."""

    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"transform scale must be finite and > 0, got {self.scale}")
        object.__setattr__(self, "offset", tuple(float(v) for v in np.broadcast_to(self.offset, (3,))))
        object.__setattr__(self, "scale", float(self.scale))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Input coordinates (..., 3) -> normalised coordinates (..., 3)."""
        return (np.asarray(points, dtype=np.float64) - np.asarray(self.offset)) * self.scale

    def invert(self, points: np.ndarray) -> np.ndarray:
        """Normalised coordinates (..., 3) -> input coordinates (..., 3)."""
        return np.asarray(points, dtype=np.float64) / self.scale + np.asarray(self.offset)

    def invert_distance(self, values: np.ndarray) -> np.ndarray:
        """Distances (e.g. SDF values) measured in the normalised frame -> input units."""
        return np.asarray(values, dtype=np.float64) / self.scale

    def inverse(self) -> Transform:
        """The transform mapping normalised coordinates back: ``x = (y + offset*scale) / scale``."""
        return Transform(tuple(-np.asarray(self.offset) * self.scale), 1.0 / self.scale)

    @property
    def matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix of :meth:`apply`."""
        m = np.eye(4) * self.scale
        m[3, 3] = 1.0
        m[:3, 3] = -np.asarray(self.offset) * self.scale
        return m

    def to_dict(self) -> dict:
        return {"offset": list(self.offset), "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> Transform:
        return cls(tuple(d["offset"]), float(d["scale"]))


def _points_of(geometry) -> np.ndarray:
    if isinstance(geometry, trimesh.Trimesh):
        # Unreferenced vertices must not influence the box.
        return np.asarray(geometry.vertices)[np.unique(geometry.faces)] if len(geometry.faces) else geometry.vertices
    pts = np.asarray(geometry, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"expected a trimesh.Trimesh or an (N, 3) array with N > 0, got shape {pts.shape}")
    return pts


def fit_transform(
    geometry,
    *,
    mode: Literal["sphere", "cube"] = "sphere",
    margin: float = DEEPSDF_MARGIN,
    center: Literal["bbox", "centroid"] = "bbox",
) -> Transform:
    """The normalising transform of a mesh or (N, 3) points, without applying it.

    ``mode="sphere"``: the farthest point from the centre lands at radius ``1/(1+margin)``.
    ``mode="cube"``: the longest bounding-box side spans ``2/(1+margin)`` inside ``[-1, 1]^3``.
    ``center``: bounding-box centre (default; DeepSDF's choice) or the point centroid.
    Raises :class:`~shapes3d.errors.DegenerateGeometryError` (path ``"input"``) when all points
    coincide (zero extent): nothing can be scaled to a unit size.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if mode not in ("sphere", "cube"):
        raise ValueError(f"mode must be 'sphere' or 'cube', got {mode!r}")
    if center not in ("bbox", "centroid"):
        raise ValueError(f"center must be 'bbox' or 'centroid', got {center!r}")
    pts = _points_of(geometry)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    c = (lo + hi) / 2 if center == "bbox" else pts.mean(axis=0)
    if mode == "sphere":
        extent = float(np.linalg.norm(pts - c, axis=1).max())
    else:
        extent = float(np.max(np.maximum(hi - c, c - lo)))
    scale = 1.0 / ((1.0 + margin) * extent) if extent > 0 else np.inf
    if not np.isfinite(scale):
        # The file is not known here: the error names "input"; callers that know it re-raise
        # with DegenerateGeometryError.for_path (run_preprocess does for every work function).
        what = (f"all points coincide ({len(pts)} points, zero extent)" if not extent > 0
                else f"the extent of its {len(pts)} points ({extent:g}) is too small to scale")
        raise DegenerateGeometryError(problem=f"cannot normalise: {what}")
    return Transform(tuple(c), scale)


def normalize(geometry, **options) -> tuple[trimesh.Trimesh | np.ndarray, Transform]:
    """Normalise a mesh or (N, 3) points; returns (normalised copy, transform).

    Options as :func:`fit_transform`. ``transform.invert`` maps results back.
    """
    t = fit_transform(geometry, **options)
    if isinstance(geometry, trimesh.Trimesh):
        out = trimesh.Trimesh(vertices=t.apply(geometry.vertices), faces=geometry.faces.copy(), process=False)
        return out, t
    return t.apply(geometry), t


@dataclass(frozen=True)
class WatertightReport:
    """Topology facts of a triangle mesh."""

    watertight: bool
    """Every edge is shared by exactly two faces."""
    winding_consistent: bool
    """Each interior edge is traversed in opposite directions by its two faces."""
    boundary_edges: int
    """Edges used by one face (holes)."""
    non_manifold_edges: int
    """Edges used by three or more faces."""
    components: int
    """Connected components (by shared vertices)."""
    euler_characteristic: int
    """V - E + F over referenced vertices."""


def watertight_report(mesh: trimesh.Trimesh) -> WatertightReport:
    faces = np.asarray(mesh.faces, dtype=np.int64)
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    undirected = np.sort(directed, axis=1)
    _, inverse, counts = np.unique(undirected, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    boundary = int((counts == 1).sum())
    nonmanifold = int((counts > 2).sum())
    # Winding: for an edge shared by exactly two faces, the directed copies must differ.
    pair = counts[inverse] == 2
    forward = directed[:, 0] < directed[:, 1]
    fw_sum = np.bincount(inverse[pair], weights=forward[pair].astype(float), minlength=len(counts))
    consistent = bool(np.all(fw_sum[counts == 2] == 1))
    used = np.unique(faces)
    n = int(faces.max()) + 1 if len(faces) else 0
    adj = coo_matrix((np.ones(len(undirected)), (undirected[:, 0], undirected[:, 1])), shape=(n, n))
    _, labels = connected_components(adj, directed=False)
    components = len(np.unique(labels[used]))
    return WatertightReport(
        watertight=boundary == 0 and nonmanifold == 0,
        winding_consistent=consistent,
        boundary_edges=boundary,
        non_manifold_edges=nonmanifold,
        components=components,
        euler_characteristic=int(len(used) - len(counts) + len(faces)),
    )
