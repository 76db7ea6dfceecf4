"""Writing meshes to PLY, OBJ and OFF, atomically (temp file + rename).

PLY (binary little-endian) goes through trimesh's exporter, which stores float32
vertices (round trip within ~1e-7 relative). OBJ and OFF use our own writers with 17
significant digits, so their round trip is exact (trimesh's OBJ writer uses fixed-point
digits, which loses precision on small coordinates); OFF uses the plain layout that the
reader in ``geometry/off.py`` accepts.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import trimesh

from shapes3d.errors import UnsupportedFormatError
from shapes3d.utils.io import atomic_write

EXPORT_EXTENSIONS = (".ply", ".obj", ".off")


def off_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """OFF text for vertices (N, 3) and triangle faces (F, 3)."""
    buf = io.StringIO()
    buf.write(f"OFF\n{len(vertices)} {len(faces)} 0\n")
    if len(vertices):
        np.savetxt(buf, np.asarray(vertices, dtype=np.float64), fmt="%.17g")
    if len(faces):
        np.savetxt(buf, np.column_stack([np.full(len(faces), 3), faces]).astype(np.int64), fmt="%d")
    return buf.getvalue().encode("ascii")


def obj_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """Wavefront OBJ text (1-based indices) for vertices (N, 3) and triangle faces (F, 3)."""
    buf = io.StringIO()
    if len(vertices):
        np.savetxt(buf, np.asarray(vertices, dtype=np.float64), fmt="v %.17g %.17g %.17g")
    if len(faces):
        np.savetxt(buf, np.asarray(faces, dtype=np.int64) + 1, fmt="f %d %d %d")
    return buf.getvalue().encode("ascii")


def export_mesh(mesh: trimesh.Trimesh, path: str | os.PathLike) -> Path:
    """Write ``mesh`` to ``path`` in the format named by its extension (.ply, .obj, .off).

    Raises UnsupportedFormatError (naming the path) for any other extension and
    ValueError for a mesh without faces. Returns the path written.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in EXPORT_EXTENSIONS:
        raise UnsupportedFormatError(
            path, f"cannot export a mesh as {ext or 'a file without extension'!r}; expected one of {', '.join(EXPORT_EXTENSIONS)}"
        )
    if not isinstance(mesh, trimesh.Trimesh):
        raise TypeError(f"mesh must be a trimesh.Trimesh, got {type(mesh).__name__}")
    if len(mesh.faces) == 0:
        raise ValueError(f"cannot export an empty mesh (0 faces) to {path}")
    if ext == ".off":
        data = off_bytes(mesh.vertices, mesh.faces)
    elif ext == ".obj":
        data = obj_bytes(mesh.vertices, mesh.faces)
    else:
        data = trimesh.exchange.ply.export_ply(mesh, encoding="binary", vertex_normal=False)
    with atomic_write(path, "wb") as f:
        f.write(data)
    return path
