"""The fixed views of the multi-view classifier: any shape (mesh, point cloud, voxel grid) -> V small images.

:func:`render_views` puts the shape in the unit sphere and renders it from V cameras evenly spaced in azimuth
around the up axis at one elevation (Su et al. 2015's first setup: 12 views, 30 degrees). The frame is
**rotation-equivariant**: the centre is the area-weighted surface centroid (meshes) or the mean point (clouds)
and the scale is the largest distance from it, so turning the shape about the up axis by a multiple of the view
step only moves the same images to other cameras (a cyclic shift of the views).

Channels: ``shaded`` (meshes: Lambert with a headlight; clouds: splat coverage, dark on white), ``depth`` (a fixed
map of camera depth over the unit sphere's range, near dark, far light, white where empty, equal across views and
shapes) or ``both`` (the two, in that order). :func:`views_task` is the preprocessing work function of
:func:`shapes3d.data.preprocess.run_preprocess` (cached, content-keyed like the voxel task).

:func:`load_renderable` also reads voxel grids (``.npy`` / ``.npz`` occupancy arrays (R, R, R)) as meshes of
their occupied cells' exposed faces, for ``shapes3d render``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from shapes3d.errors import InputFileError

__all__ = ["CHANNELS", "VIEWS_VERSION", "load_renderable", "render_views", "view_cameras", "views_task",
           "voxel_mesh"]

VIEWS_VERSION = "1"
CHANNELS = {"shaded": ("shaded",), "depth": ("depth",), "both": ("shaded", "depth")}
CAMERA_DISTANCE = 2.6  # the shape lies in the unit sphere; a 50 degree field of view frames it with a little air
FOV_DEG = 50.0
_COVERED = 0.2  # grey of a covered pixel in a point cloud's "shaded" channel


def unit_frame(geom: trimesh.Trimesh | np.ndarray) -> np.ndarray:
    """The vertices (or points) moved and scaled into the unit sphere, rotation-equivariantly (see module doc)."""
    if isinstance(geom, trimesh.Trimesh):
        v = np.asarray(geom.vertices, dtype=np.float64)
        tri = v[np.asarray(geom.faces)]
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        centre = (tri.mean(1) * area[:, None]).sum(0) / area.sum() if area.sum() > 0 else v.mean(0)
    else:
        v = np.asarray(geom, dtype=np.float64)
        centre = v.mean(0)
    v = v - centre
    radius = np.sqrt((v**2).sum(1).max())
    return v / radius if radius > 0 else v


def view_cameras(*, views: int, elevation: float, size: int, up_axis: str):
    """V cameras at ``elevation`` degrees, azimuths ``360 * i / V`` about ``up_axis``, looking at the origin."""
    from shapes3d.render.cameras import cameras_on_sphere

    return cameras_on_sphere(elevations_deg=[elevation], azimuths_deg=np.arange(views) * 360.0 / views,
                             distance=CAMERA_DISTANCE, up=up_axis, fov_deg=FOV_DEG, width=size, height=size)


def _depth_image(depth: np.ndarray) -> np.ndarray:
    """Camera depth -> grey: the unit sphere's depth range [d - 1, d + 1] to [0.1, 0.9]; empty pixels white."""
    img = 0.1 + 0.8 * (depth.astype(np.float64) - (CAMERA_DISTANCE - 1.0)) / 2.0
    return np.where(np.isfinite(depth), np.clip(img, 0.0, 0.9), 1.0)


def render_views(geom: trimesh.Trimesh | np.ndarray, *, views: int = 12, elevation: float = 30.0, size: int = 64,
                 channels: str = "shaded", up_axis: str = "z", point_radius: int = 1) -> np.ndarray:
    """A mesh or (N, 3) points -> uint8 views (V, C, H, W), 255 = white background (see the module doc)."""
    if channels not in CHANNELS:
        raise ValueError(f"channels must be one of {', '.join(CHANNELS)}, got {channels!r}")
    cams = view_cameras(views=views, elevation=elevation, size=size, up_axis=up_axis)
    unit = unit_frame(geom)
    if isinstance(geom, trimesh.Trimesh):
        from shapes3d.render.mesh import render_mesh

        r = render_mesh(trimesh.Trimesh(unit, geom.faces, process=False), cams, nthreads=1)
        images = {"shaded": r.shaded, "depth": _depth_image(r.depth)}
    else:
        from shapes3d.render.points import render_points

        r = render_points(unit, cams, radius=point_radius)
        images = {"shaded": np.where(r.coverage, _COVERED, 1.0), "depth": _depth_image(r.depth)}
    stack = np.stack([images[c] for c in CHANNELS[channels]], axis=1)
    return np.rint(np.clip(stack, 0.0, 1.0) * 255).astype(np.uint8)


def views_task(path: str | Path, **params) -> dict[str, np.ndarray]:
    """Load a mesh or point-cloud file and :func:`render_views` it (params as there) -> ``{"views": ...}``."""
    from shapes3d.geometry.io import load_geometry

    return {"views": render_views(load_geometry(path), **params)}


# ---------------------------------------------------------------- voxel grids as meshes
def voxel_mesh(grid: np.ndarray, *, threshold: float = 0.5) -> trimesh.Trimesh:
    """An occupancy grid (R, R, R), ``[i, j, k] <-> (x, y, z)``, -> the exposed faces of its cells above
    ``threshold`` as a triangle mesh in cell units (cell ``(i, j, k)`` spans ``[i, i+1] x [j, j+1] x [k, k+1]``)."""
    occ = np.asarray(grid) > threshold
    if occ.ndim != 3:
        raise ValueError(f"a voxel grid must have shape (R, R, R), got {occ.shape}")
    if not occ.any():
        raise ValueError("the voxel grid has no occupied cells above the threshold")
    padded = np.pad(occ, 1)
    verts, faces = [], []
    for axis in range(3):
        for side in (-1, 1):
            neighbour = np.roll(padded, -side, axis=axis)[1:-1, 1:-1, 1:-1]
            cells = np.argwhere(occ & ~neighbour).astype(np.float64)
            if not len(cells):
                continue
            a, b = [x for x in range(3) if x != axis]
            quad = np.zeros((4, 3))
            quad[:, axis] = 1.0 if side > 0 else 0.0
            quad[:, a] = (0, 1, 1, 0)
            quad[:, b] = (0, 0, 1, 1)
            if side * (-1 if axis == 1 else 1) < 0:  # e_a x e_b is -y for axis 1: keep every face facing out
                quad = quad[::-1]
            base = sum(len(x) for x in verts)
            verts.append((cells[:, None, :] + quad[None]).reshape(-1, 3))
            idx = base + 4 * np.arange(len(cells))[:, None]
            faces.append(np.concatenate([idx + [0, 1, 2], idx + [0, 2, 3]]))
    return trimesh.Trimesh(np.concatenate(verts), np.concatenate(faces), process=True)  # merges shared corners


def _grid_array(path: Path) -> np.ndarray | None:
    """The (R, R, R) occupancy array of a .npy/.npz file (an .npz's ``occupancy``, first rotation), or None."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputFileError(path, f"cannot read the array file ({e})") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            names = list(data.files)
            name = "occupancy" if "occupancy" in names else names[0] if len(names) == 1 else None
            arr = data[name] if name is not None else None
    else:
        arr = data
    if arr is None:
        return None
    arr = np.asarray(arr)
    if arr.ndim == 4 and arr.shape[0] >= 1:
        arr = arr[0]
    return arr if arr.ndim == 3 and min(arr.shape) > 1 else None


def load_renderable(path: str | Path) -> trimesh.Trimesh | np.ndarray:
    """A mesh (mesh files, and voxel grids as cube meshes) or (N, 3) points (point-cloud files) to render."""
    from shapes3d.geometry.io import load_geometry

    path = Path(path)
    if path.suffix.lower() in (".npy", ".npz") and path.is_file():
        grid = _grid_array(path)
        if grid is not None:
            try:
                return voxel_mesh(grid)
            except ValueError as e:
                raise InputFileError(path, str(e)) from None
    return load_geometry(path)
