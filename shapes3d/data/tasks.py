"""Per-shape preprocessing work functions that plug into :func:`shapes3d.data.preprocess.run_preprocess`.

Each is a module-level function ``fn(path, **params) -> dict of arrays`` so worker
processes can import it; bump its ``VERSION`` when its output changes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from shapes3d.geometry.io import load_geometry, load_mesh
from shapes3d.geometry.normalize import normalize
from shapes3d.geometry.sampling import SDFSampleConfig, sample_sdf
from shapes3d.geometry.voxelize import voxelize_points, voxelize_solid

VOXELS_VERSION = "2"
_AXES = {"x": 0, "y": 1, "z": 2}


def rotation_about(axis: str, angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about the named axis (right-handed)."""
    c, s = np.cos(angle), np.sin(angle)
    i = _AXES[axis]
    j, k = (i + 1) % 3, (i + 2) % 3
    r = np.eye(3)
    r[j, j], r[j, k], r[k, j], r[k, k] = c, -s, s, c
    return r


def voxelize_geometry(
    geom: trimesh.Trimesh | np.ndarray,
    *,
    resolution: int = 32,
    object_size: int = 24,
    rotations: int = 1,
    up_axis: str = "z",
    method: str = "auto",
    point_dilation: int = 0,
    point_mode: str = "binary",
) -> dict[str, np.ndarray]:
    """A mesh or (N, 3) points -> occupancy (rotations, R, R, R) uint8, one grid per rotation.

    Rotation ``r`` turns the shape by ``360 * r / rotations`` degrees about ``up_axis``;
    each rotated copy is then centred (bounding box) and scaled so its longest side
    spans ``object_size`` of the ``resolution`` cells, as VoxNet does (24 of 32 leaves
    room for translation augmentation). Meshes are filled (solid occupancy at cell
    centres); point clouds mark the cells their points fall in (``count`` mode stores
    points per cell, saturating at 255). Also returns each copy's normalisation
    (``offset`` (rotations, 3), ``scale`` (rotations,)) so cells map back.
    """
    margin = resolution / object_size - 1.0
    is_mesh = isinstance(geom, trimesh.Trimesh)
    base = np.asarray(geom.vertices if is_mesh else geom, dtype=np.float64)
    grids, offsets, scales = [], [], []
    for r in range(rotations):
        pts = base @ rotation_about(up_axis, 2 * np.pi * r / rotations).T
        shape = trimesh.Trimesh(pts, geom.faces, process=False) if is_mesh else pts
        normed, transform = normalize(shape, mode="cube", margin=margin)
        if is_mesh:
            values = voxelize_solid(normed, resolution=resolution, bound=1.0, method=method).values
        else:
            values = voxelize_points(normed, resolution=resolution, bound=1.0, mode=point_mode,
                                     dilation=point_dilation).values
        grids.append(np.minimum(values, 255).astype(np.uint8))
        offsets.append(transform.offset)
        scales.append(transform.scale)
    return {
        "occupancy": np.stack(grids),
        "offset": np.asarray(offsets, dtype=np.float64),
        "scale": np.asarray(scales, dtype=np.float64),
    }


def voxel_task(path: str | Path, **params) -> dict[str, np.ndarray]:
    """Load a mesh or point cloud file and :func:`voxelize_geometry` it (params as there)."""
    return voxelize_geometry(load_geometry(path), **params)


SDF_VERSION = "1"


def sdf_task(path: str | Path, **params) -> dict[str, np.ndarray]:
    """A mesh file -> DeepSDF samples ``pos`` (P, 4), ``neg`` (Q, 4) plus its normalisation ``offset``, ``scale``.

    ``params`` are :class:`~shapes3d.geometry.sampling.SDFSampleConfig` fields (its seed included).
    """
    s = sample_sdf(load_mesh(path), config=SDFSampleConfig.from_dict(params))
    return {"pos": s.pos, "neg": s.neg, "offset": np.asarray(s.offset, np.float64),
            "scale": np.asarray(s.scale, np.float64)}
