"""Pinhole cameras and cameras placed on a sphere around a target.

Conventions (used by every renderer in :mod:`shapes3d.render`):

* **Camera frame: OpenCV.** x points right, y points *down*, z points forward (from
  the camera toward ``look_at``). :attr:`Camera.extrinsics` maps world to this frame.
* **Pixels:** ``(u, v)`` = (column, row); row 0 is the top of the image. The centre of
  pixel ``[row, col]`` is at ``(u, v) = (col, row)`` (OpenCV: integer coordinates are
  pixel centres), so the default principal point is ``((W - 1) / 2, (H - 1) / 2)``.
* **Field of view** ``fov_deg`` is vertical; pixels are square (``fx == fy``) unless
  ``fx``/``fy`` are given explicitly.
* **Depth** (in the renderers) is the distance along the camera z axis, not the ray length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_UP_FRAMES = {
    # up axis -> (h1, h2, up): a right-handed frame whose third axis is "up"; azimuth 0
    # lies along h1 and azimuth 90 along h2 (for up="z": +x, then +y, as in ModelNet).
    "x": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),
    "y": ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "z": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
}


def _vec3(name: str, value) -> tuple[float, float, float]:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"camera {name} must be 3 finite numbers, got {value!r}")
    return tuple(float(v) for v in arr)  # type: ignore[return-value]


@dataclass(frozen=True)
class Camera:
    """A pinhole camera at ``position`` looking at ``look_at``, with ``up`` roughly up in the image.

    Intrinsics: either ``fov_deg`` (vertical field of view, square pixels) or all of
    ``fx``/``fy`` (focal lengths in pixels); ``cx``/``cy`` default to the image centre.
    """

    position: tuple[float, float, float]
    look_at: tuple[float, float, float] = (0.0, 0.0, 0.0)
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    width: int = 128
    height: int = 128
    fov_deg: float | None = 40.0
    fx: float | None = None
    fy: float | None = None
    cx: float | None = None
    cy: float | None = None

    def __post_init__(self) -> None:
        for name in ("position", "look_at", "up"):
            object.__setattr__(self, name, _vec3(name, getattr(self, name)))
        for name in ("width", "height"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"camera {name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        if (self.fx is None) != (self.fy is None):
            raise ValueError(f"give both fx and fy or neither, got fx={self.fx!r}, fy={self.fy!r}")
        if self.fx is None:
            if self.fov_deg is None or not 0.0 < float(self.fov_deg) < 180.0:
                raise ValueError(f"fov_deg must be in (0, 180) degrees when fx/fy are not given, got {self.fov_deg!r}")
        elif not (self.fx > 0 and self.fy > 0 and math.isfinite(self.fx) and math.isfinite(self.fy)):
            raise ValueError(f"fx and fy must be finite and > 0, got fx={self.fx!r}, fy={self.fy!r}")
        forward = np.subtract(self.look_at, self.position)
        if np.linalg.norm(forward) < 1e-12:
            raise ValueError(f"camera position {self.position} equals look_at; the view direction is undefined")
        f = forward / np.linalg.norm(forward)
        if np.linalg.norm(np.cross(f, self.up)) < 1e-9 * max(np.linalg.norm(self.up), 1e-300):
            raise ValueError(f"camera up {self.up} is parallel to the view direction {tuple(f)}; give another up")

    # ---------------------------------------------------------------- frame
    @property
    def rotation(self) -> np.ndarray:
        """3x3 world->camera rotation; its rows are the camera's right, down and forward axes in world."""
        f = np.subtract(self.look_at, self.position)
        f = f / np.linalg.norm(f)
        right = np.cross(f, self.up)  # forward x up = right for a right-handed world
        right /= np.linalg.norm(right)
        down = np.cross(f, right)
        return np.stack([right, down, f])

    @property
    def forward(self) -> np.ndarray:
        """Unit view direction (3,) in world coordinates: the camera's +z axis."""
        return self.rotation[2]

    @property
    def extrinsics(self) -> np.ndarray:
        """4x4 world->camera matrix ``[R | -R p]`` (OpenCV frame: x right, y down, z forward)."""
        r = self.rotation
        m = np.eye(4)
        m[:3, :3] = r
        m[:3, 3] = -r @ np.asarray(self.position)
        return m

    @property
    def intrinsics(self) -> np.ndarray:
        """3x3 matrix ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` in pixels."""
        if self.fx is not None:
            fx, fy = float(self.fx), float(self.fy)
        else:
            fy = 0.5 * (self.height) / math.tan(math.radians(float(self.fov_deg)) / 2.0)
            fx = fy
        cx = (self.width - 1) / 2.0 if self.cx is None else float(self.cx)
        cy = (self.height - 1) / 2.0 if self.cy is None else float(self.cy)
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    # ---------------------------------------------------------------- rays and projection
    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Rays through every pixel centre, row-major from the top-left pixel.

        Returns ``origins`` (H*W, 3) and unit ``directions`` (H*W, 3), float64, world frame.
        """
        k = self.intrinsics
        right, down, fwd = self.rotation
        # Separable: the x slope depends only on the column, the y slope only on the row.
        # Broadcasting instead of a (H*W, 3) @ (3, 3) matmul, which went through a BLAS
        # call that was ~10x slower on a loaded machine.
        sx = (np.arange(self.width, dtype=np.float64) - k[0, 2]) / k[0, 0]
        sy = (np.arange(self.height, dtype=np.float64) - k[1, 2]) / k[1, 1]
        d = sx[None, :, None] * right + sy[:, None, None] * down + fwd  # (H, W, 3)
        d /= np.sqrt(np.einsum("hwk,hwk->hw", d, d))[..., None]
        d = d.reshape(-1, 3)
        o = np.broadcast_to(np.asarray(self.position), d.shape).copy()
        return o, d

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> camera-frame points (N, 3); column 2 is the depth."""
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points must have shape (N, 3), got {p.shape}")
        return (p - np.asarray(self.position)) @ self.rotation.T

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> pixel coordinates ``(u, v)`` (N, 2); NaN for points with depth <= 0."""
        pc = self.to_camera(points)
        k = self.intrinsics
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = np.stack([k[0, 0] * pc[:, 0] / z + k[0, 2], k[1, 1] * pc[:, 1] / z + k[1, 2]], axis=1)
        uv[z <= 0] = np.nan
        return uv


def _angles(name: str, values) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a non-empty sequence of finite angles in degrees, got {values!r}")
    return arr


def cameras_on_sphere(
    *,
    elevations_deg: Sequence[float] | float,
    azimuths_deg: Sequence[float] | float,
    distance: float,
    look_at: Sequence[float] = (0.0, 0.0, 0.0),
    up: str = "z",
    fov_deg: float = 40.0,
    width: int = 128,
    height: int = 128,
) -> list[Camera]:
    """Cameras on a sphere of radius ``distance`` around ``look_at``, all looking at it.

    One camera per (elevation, azimuth) pair, elevation-major: ``len(elev) * len(azim)``
    cameras. Elevation is the angle above the plane perpendicular to ``up`` ("x", "y" or
    "z"; z for ModelNet, y for ShapeNet); azimuth turns about ``up``, with 0 deg on the
    first horizontal axis (up="z": +x, then 90 deg on +y). At elevation +-90 deg the image
    up vector turns continuously with azimuth, so the poles are valid views.
    """
    if up not in _UP_FRAMES:
        raise ValueError(f"up must be one of 'x', 'y', 'z', got {up!r}")
    if not (math.isfinite(distance) and distance > 0):
        raise ValueError(f"distance must be finite and > 0, got {distance!r}")
    elev = np.radians(_angles("elevations_deg", elevations_deg))
    azim = np.radians(_angles("azimuths_deg", azimuths_deg))
    h1, h2, u = (np.asarray(a) for a in _UP_FRAMES[up])
    target = np.asarray(_vec3("look_at", look_at))
    cams = []
    for e in elev:
        for a in azim:
            horiz = math.cos(a) * h1 + math.sin(a) * h2
            pos = target + distance * (math.cos(e) * horiz + math.sin(e) * u)
            # The world up projected onto the image plane, written so that it stays
            # defined (and continuous) at the poles where it is parallel to the view.
            img_up = -math.sin(e) * horiz + math.cos(e) * u
            cams.append(Camera(position=tuple(pos), look_at=tuple(target), up=tuple(img_up),
                               width=width, height=height, fov_deg=fov_deg))
    return cams
