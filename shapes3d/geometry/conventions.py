"""The suite's geometric conventions, defined once and tested.

* **SDF sign: negative inside, positive outside, zero on the surface.**
  trimesh's ``proximity.signed_distance`` is positive inside; open3d's
  ``compute_signed_distance`` is negative inside. :func:`sdf_from_inside_positive`
  is the one place a positive-inside value is converted.
* **Grids** are ``(R, R, R)`` arrays indexed ``[i, j, k] <-> (x, y, z)`` (numpy
  ``indexing="ij"``). A grid is either of *corners* (``R`` samples from ``lo`` to
  ``hi`` inclusive: SDF grids, marching cubes) or of *cells* (``R`` cells tiling
  ``[lo, hi]``, sampled at their centres: occupancy/voxel grids). World coordinates
  of corner ``i`` are ``lo * (1 - t) + hi * t`` with ``t = i / (R - 1)``, so both ends
  are exact in floating point (DeepSDF's ``lo + i * step`` drifted ~0.8 % at the far
  corner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

GridKind = Literal["corners", "cells"]


def sdf_from_inside_positive(values: np.ndarray) -> np.ndarray:
    """Convert a positive-inside signed distance (trimesh, pysdf) to ours (negative inside)."""
    return -np.asarray(values)


def sphere_sdf(points: np.ndarray, center=(0.0, 0.0, 0.0), radius: float = 1.0) -> np.ndarray:
    """Exact SDF of a sphere, negative inside. ``points`` (N, 3) -> (N,)."""
    p = np.asarray(points, dtype=np.float64)
    return np.linalg.norm(p - np.asarray(center, dtype=np.float64), axis=-1) - radius


def _as_box(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (3,)).copy()
    hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (3,)).copy()
    if not np.all(hi > lo):
        raise ValueError(f"grid box needs hi > lo on every axis, got lo={lo}, hi={hi}")
    return lo, hi


@dataclass(frozen=True)
class Grid:
    """A regular 3D grid over the axis-aligned box ``[lo, hi]``.

    ``kind="corners"``: ``R`` samples per axis, the first at ``lo``, the last at ``hi``.
    ``kind="cells"``: ``R`` cells per axis tiling the box; samples are cell centres.
    """

    resolution: int
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    kind: GridKind = "corners"

    def __post_init__(self) -> None:
        if int(self.resolution) != self.resolution or self.resolution < (2 if self.kind == "corners" else 1):
            raise ValueError(f"grid resolution must be an integer >= 2 (corners) or >= 1 (cells), got {self.resolution}")
        if self.kind not in ("corners", "cells"):
            raise ValueError(f"grid kind must be 'corners' or 'cells', got {self.kind!r}")
        lo, hi = _as_box(self.lo, self.hi)
        object.__setattr__(self, "lo", tuple(float(v) for v in lo))
        object.__setattr__(self, "hi", tuple(float(v) for v in hi))

    @classmethod
    def cube(cls, resolution: int, bound: float = 1.0, kind: GridKind = "corners") -> Grid:
        """Grid over ``[-bound, bound]^3``."""
        return cls(resolution, (-bound,) * 3, (bound,) * 3, kind)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.resolution,) * 3

    @property
    def spacing(self) -> np.ndarray:
        """Distance between neighbouring samples per axis, (3,)."""
        lo, hi = np.array(self.lo), np.array(self.hi)
        div = self.resolution - 1 if self.kind == "corners" else self.resolution
        return (hi - lo) / div

    def _t(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=np.float64)
        if self.kind == "corners":
            return index / (self.resolution - 1)
        return (index + 0.5) / self.resolution

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """Continuous or integer indices (..., 3) -> world points (..., 3)."""
        t = self._t(index)
        lo, hi = np.array(self.lo), np.array(self.hi)
        return lo * (1.0 - t) + hi * t

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> continuous indices (..., 3); inverse of :meth:`index_to_world`."""
        p = np.asarray(points, dtype=np.float64)
        lo, hi = np.array(self.lo), np.array(self.hi)
        t = (p - lo) / (hi - lo)
        if self.kind == "corners":
            return t * (self.resolution - 1)
        return t * self.resolution - 0.5

    def world_to_cell(self, points: np.ndarray) -> np.ndarray:
        """World points (..., 3) -> integer index of the nearest sample, clipped into the grid."""
        idx = np.rint(self.world_to_index(points)).astype(np.int64)
        return np.clip(idx, 0, self.resolution - 1)

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The sample coordinates along x, y and z, each (R,); ends exact for corners."""
        i = np.arange(self.resolution)
        t = self._t(i)
        return tuple(lo * (1.0 - t) + hi * t for lo, hi in zip(self.lo, self.hi))  # type: ignore[return-value]

    def points(self, dtype=np.float64) -> np.ndarray:
        """All samples as (R**3, 3) in C order of ``[i, j, k]`` (x slowest)."""
        x, y, z = self.axes()
        gx, gy, gz = np.meshgrid(x, y, z, indexing="ij")
        return np.stack([gx, gy, gz], axis=-1).reshape(-1, 3).astype(dtype, copy=False)

    def index_to_world_matrix(self) -> np.ndarray:
        """4x4 affine map from (continuous) index to world, for exporting with a grid."""
        m = np.eye(4)
        m[:3, :3] = np.diag(self.spacing)
        m[:3, 3] = self.index_to_world(np.zeros(3))
        return m

    def to_dict(self) -> dict:
        return {"resolution": self.resolution, "lo": list(self.lo), "hi": list(self.hi), "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict) -> Grid:
        return cls(int(d["resolution"]), tuple(d["lo"]), tuple(d["hi"]), d.get("kind", "corners"))
