"""CPU point-cloud renders as splats: each point covers a small disc of pixels, a z-buffer keeps the nearest.

A point cloud has no surface to ray-cast, so its views are *splats*: every point is projected through each
camera and drawn as a square-ish disc of ``radius`` pixels (0: one pixel) at its depth; where discs overlap the
nearest wins. Conventions follow :mod:`shapes3d.render.mesh`: **depth** is the distance along the camera's z
axis, ``+inf`` where no point lands; **coverage** is True where some point does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shapes3d.render.cameras import Camera

__all__ = ["PointRenders", "render_points"]


@dataclass(frozen=True)
class PointRenders:
    """Per-view splats of one point cloud, V views of H x W pixels."""

    depth: np.ndarray
    """(V, H, W) float32: camera-z depth of the nearest splat; ``inf`` where none lands."""
    coverage: np.ndarray
    """(V, H, W) bool: True where a splat lands."""


def _disc(radius: int) -> np.ndarray:
    """(D, 2) integer pixel offsets (du, dv) within ``radius`` of the centre (radius 0: the centre only)."""
    r = np.arange(-radius, radius + 1)
    du, dv = np.meshgrid(r, r, indexing="xy")
    keep = du**2 + dv**2 <= radius**2 + radius  # the +radius rounds the disc's edge out (radius 1: a 3x3 cross+)
    return np.stack([du[keep], dv[keep]], axis=1)


def _check(points, cameras, radius) -> tuple[np.ndarray, list[Camera]]:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError(f"points must have shape (N, 3) with N >= 1, got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("points contain NaN or infinite coordinates")
    cams = [cameras] if isinstance(cameras, Camera) else list(cameras)
    if not cams or not all(isinstance(c, Camera) for c in cams):
        raise TypeError("cameras must be a Camera or a non-empty sequence of Cameras")
    if len({(c.width, c.height) for c in cams}) != 1:
        raise ValueError("all cameras must have the same image size")
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or not 0 <= radius <= 64:
        raise ValueError(f"radius must be an integer number of pixels in [0, 64], got {radius!r}")
    return pts, cams


def render_points(points: np.ndarray, cameras: Camera | Sequence[Camera], *, radius: int = 1) -> PointRenders:
    """Splat (N, 3) world points into every camera: V depth maps and coverage masks (see :class:`PointRenders`).

    A point at pixel ``(u, v)`` (rounded to the nearest pixel centre) covers the pixels of a disc of ``radius``
    pixels around it; points behind a camera are dropped.
    """
    pts, cams = _check(points, cameras, radius)
    h, w = cams[0].height, cams[0].width
    offsets = _disc(int(radius))
    depth = np.full((len(cams), h * w), np.inf)
    for i, cam in enumerate(cams):
        z = cam.to_camera(pts)[:, 2]
        uv = cam.project(pts)
        front = np.isfinite(uv).all(1) & (z > 0)
        u = np.rint(uv[front, 0]).astype(np.int64)[:, None] + offsets[None, :, 0]
        v = np.rint(uv[front, 1]).astype(np.int64)[:, None] + offsets[None, :, 1]
        zz = np.broadcast_to(z[front][:, None], u.shape)
        inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        np.minimum.at(depth[i], (v[inside] * w + u[inside]), zz[inside])
    depth = depth.reshape(len(cams), h, w).astype(np.float32)
    return PointRenders(depth=depth, coverage=np.isfinite(depth))
