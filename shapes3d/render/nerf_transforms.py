"""Cameras as NeRF / Blender ``transforms.json``: write ours, read anyone's.

The format (Mildenhall et al. 2020's Blender scenes; nerfstudio's extension): ``camera_angle_x`` (the
horizontal field of view, radians) and ``frames``, each with a ``file_path`` and a 4x4 camera-to-world
``transform_matrix`` in the **OpenGL / Blender camera frame**: x right, y *up*, the camera looking down
its -z axis. Ours (:mod:`shapes3d.render.cameras`) is OpenCV (x right, y down, z forward), so the
matrix's columns are ``right, -down, -forward, position``.

We also write nerfstudio's intrinsics ``w``, ``h``, ``fl_x``, ``fl_y``, ``cx``, ``cy``, so off-centre and
non-square cameras round-trip exactly. Pixel conventions differ by half a pixel: ``cx``/``cy`` there count
from the image's corner (pixel ``i`` spans ``[i, i + 1)``, a centred camera has ``cx = w / 2``); ours
count from the first pixel's centre (``(W - 1) / 2``), so ``cx_file = cx_ours + 0.5``. Reading a file
without ``w``/``h`` (the original Blender scenes) takes the size from the arguments or the first frame's
image. Frames may carry ``mask_path`` (nerfstudio) and other keys; :func:`read_transforms` returns them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shapes3d.errors import InputFileError, MissingFileError
from shapes3d.render.cameras import Camera

TRANSFORMS_FILE = "transforms.json"
#: OpenCV camera axes (x right, y down, z forward) -> OpenGL / Blender ones (x right, y up, z backward).
OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0])
_ORTHO_TOL = 1e-6


def camera_to_world_opengl(cam: Camera) -> np.ndarray:
    """4x4 camera-to-world matrix of ``cam`` in the OpenGL / Blender camera frame (``transform_matrix``)."""
    m = np.eye(4)
    m[:3, :3] = cam.rotation.T @ OPENCV_TO_OPENGL  # columns: right, up, backward
    m[:3, 3] = cam.position
    return m


def _intrinsics_keys(cam: Camera) -> dict:
    k = cam.intrinsics
    return {"w": cam.width, "h": cam.height, "fl_x": k[0, 0], "fl_y": k[1, 1], "cx": k[0, 2] + 0.5, "cy": k[1, 2] + 0.5}


def transforms_dict(cameras: Sequence[Camera], file_paths: Sequence[str] | None = None,
                    frame_extras: Sequence[dict] | None = None) -> dict:
    """The ``transforms.json`` document of ``cameras``: the first camera's intrinsics at the top level, and per
    frame (nerfstudio's per-frame keys) for any camera whose size or intrinsics differ from it.

    ``file_paths`` name each frame's image (default ``view_XX.png``); ``frame_extras`` add keys per frame.
    """
    if not cameras:
        raise ValueError("transforms.json needs at least one camera")
    paths = [f"view_{i:02d}.png" for i in range(len(cameras))] if file_paths is None else list(file_paths)
    extras = [{}] * len(cameras) if frame_extras is None else list(frame_extras)
    if len(paths) != len(cameras) or len(extras) != len(cameras):
        raise ValueError(f"got {len(cameras)} cameras, {len(paths)} file paths and {len(extras)} frame extras")
    top = _intrinsics_keys(cameras[0])
    frames = []
    for c, p, e in zip(cameras, paths, extras, strict=True):
        own = _intrinsics_keys(c)
        frames.append({"file_path": str(p), "transform_matrix": camera_to_world_opengl(c).tolist(),
                       **({} if own == top else own), **e})
    return {"camera_angle_x": 2.0 * math.atan(0.5 * top["w"] / top["fl_x"]),
            "camera_angle_y": 2.0 * math.atan(0.5 * top["h"] / top["fl_y"]),
            **top, "camera_model": "OPENCV", "frames": frames}


def write_transforms(path: str | os.PathLike, cameras: Sequence[Camera], file_paths: Sequence[str] | None = None,
                     frame_extras: Sequence[dict] | None = None) -> Path:
    """Write :func:`transforms_dict` to ``path`` atomically; returns the path."""
    from shapes3d.utils.io import atomic_write_text

    path = Path(path)
    atomic_write_text(path, json.dumps(transforms_dict(cameras, file_paths, frame_extras), indent=1))
    return path


def camera_from_matrix(c2w, *, width: int, height: int, fx: float, fy: float, cx: float | None = None,
                       cy: float | None = None) -> Camera:
    """A :class:`Camera` from an OpenGL camera-to-world 4x4 and intrinsics in pixels (``cx``/``cy`` in our
    pixel-centre convention; None: the image centre). Square, centred cameras come back as ``fov_deg``."""
    m = np.asarray(c2w, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError(f"transform_matrix must be a finite 4x4 matrix, got shape {m.shape}")
    r = m[:3, :3] @ OPENCV_TO_OPENGL  # columns: right, down, forward
    if not np.allclose(r.T @ r, np.eye(3), atol=_ORTHO_TOL) or np.linalg.det(r) < 0:
        raise ValueError("transform_matrix's rotation is not a rotation (scaled, sheared or mirrored camera axes)")
    pos, fwd, down = m[:3, 3], r[:, 2], r[:, 1]
    depth = float(-pos @ fwd)  # look at the point of the view ray nearest the origin when it is in front
    look_at = pos + fwd * (depth if depth > 1e-6 * max(1.0, float(np.linalg.norm(pos))) else 1.0)
    centred = cx is None and cy is None
    if centred and math.isclose(fx, fy, rel_tol=1e-12):
        return Camera(position=tuple(pos), look_at=tuple(look_at), up=tuple(-down), width=width, height=height,
                      fov_deg=math.degrees(2.0 * math.atan(0.5 * height / fy)))
    return Camera(position=tuple(pos), look_at=tuple(look_at), up=tuple(-down), width=width, height=height,
                  fov_deg=None, fx=fx, fy=fy, cx=cx, cy=cy)


def _image_size(folder: Path, file_path: str) -> tuple[int, int]:
    """(width, height) of a frame's image; Blender scenes name it without its ``.png``."""
    from PIL import Image, UnidentifiedImageError

    p = folder / file_path
    if not p.is_file() and not p.suffix:
        p = p.with_suffix(".png")
    if not p.is_file():
        raise MissingFileError(p, "file does not exist (needed for the image size: the transforms file has no w/h)")
    try:
        with Image.open(p) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise InputFileError(p, f"not a readable image ({e})") from None


def _intrinsics(doc: dict, width: int, height: int) -> dict:
    """fx, fy, cx, cy (ours: pixel-centre convention, None when centred) from nerfstudio keys or the angles."""
    fx = float(doc["fl_x"]) if "fl_x" in doc else 0.5 * width / math.tan(0.5 * float(doc["camera_angle_x"]))
    fy = (float(doc["fl_y"]) if "fl_y" in doc else 0.5 * height / math.tan(0.5 * float(doc["camera_angle_y"]))
          if "camera_angle_y" in doc else fx)
    cx = float(doc["cx"]) - 0.5 if "cx" in doc else None
    cy = float(doc["cy"]) - 0.5 if "cy" in doc else None
    if cx is not None and cy is not None and abs(cx - (width - 1) / 2) < 1e-9 and abs(cy - (height - 1) / 2) < 1e-9:
        cx = cy = None
    if not (fx > 0 and fy > 0 and math.isfinite(fx) and math.isfinite(fy)):
        raise ValueError(f"focal lengths must be finite and > 0, got fl_x={fx}, fl_y={fy}")
    return {"fx": fx, "fy": fy, "cx": cx, "cy": cy}


def read_transforms(path: str | os.PathLike, *, width: int | None = None,
                    height: int | None = None) -> tuple[list[Camera], list[dict]]:
    """Cameras and frames (each frame's dict as in the file: ``file_path``, ``mask_path``, ...) of a
    ``transforms.json``; ``path`` may be its folder. Per-frame intrinsics (nerfstudio) override the top level.

    The image size comes from ``w``/``h``, else ``width``/``height``, else the first frame's image.
    Errors are an :class:`~shapes3d.errors.InputFileError` naming the file and what is wrong.
    """
    path = Path(path)
    path = path / TRANSFORMS_FILE if path.is_dir() else path
    if not path.is_file():
        raise MissingFileError(path)
    try:
        doc = json.loads(path.read_text())
        frames = doc["frames"]
        if not isinstance(frames, list) or not frames:
            raise ValueError("'frames' must be a non-empty list")
        w0 = int(doc.get("w", width or 0)) or None
        h0 = int(doc.get("h", height or 0)) or None
        if w0 is None or h0 is None:
            w0, h0 = _image_size(path.parent, str(frames[0]["file_path"]))
        cams = []
        for i, f in enumerate(frames):
            w, h = int(f.get("w", w0)), int(f.get("h", h0))
            try:
                cams.append(camera_from_matrix(f["transform_matrix"], width=w, height=h,
                                               **_intrinsics({**doc, **f}, w, h)))
            except ValueError as e:
                raise ValueError(f"frame {i}: {e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise InputFileError(path, f"not a valid transforms.json ({type(e).__name__}: {e})") from None
    return cams, frames
