"""Writing meshes to PLY, OBJ, OFF and GLB, atomically (temp file + rename), with vertex normals where the format
has them.

PLY (binary little-endian, float32 vertices and ``nx ny nz`` normals) and GLB (binary glTF 2.0: float32
``POSITION`` and ``NORMAL``) go through trimesh's exporters; their round trip is within ~1e-7 relative. OBJ
goes through ``trimesh.exchange.obj.export_obj`` with ``vn`` normals and enough fixed-point ``digits`` for the
smallest non-zero coordinate to keep 17 significant digits, so vertices round-trip exactly (trimesh's default
of 8 digits loses precision on small coordinates). OFF has no normals; it uses our plain layout, which the
reader in ``geometry/off.py`` accepts, with 17 significant digits (exact). Normals are trimesh's area-weighted
vertex normals of the mesh as written (outward for the suite's meshes, whose SDF is negative inside).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import trimesh

from shapes3d.errors import UnsupportedFormatError
from shapes3d.utils.io import atomic_write

EXPORT_EXTENSIONS = (".ply", ".obj", ".off", ".glb")
#: The extensions whose files carry vertex normals.
NORMAL_EXTENSIONS = (".ply", ".obj", ".glb")
_SIGNIFICANT = 17  # decimal digits that identify every float64


def off_bytes(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """OFF text for vertices (N, 3) and triangle faces (F, 3)."""
    buf = io.StringIO()
    buf.write(f"OFF\n{len(vertices)} {len(faces)} 0\n")
    if len(vertices):
        np.savetxt(buf, np.asarray(vertices, dtype=np.float64), fmt="%.17g")
    if len(faces):
        np.savetxt(buf, np.column_stack([np.full(len(faces), 3), faces]).astype(np.int64), fmt="%d")
    return buf.getvalue().encode("ascii")


def exact_digits(values: np.ndarray) -> int:
    """Fixed-point decimals that keep 17 significant digits of the smallest non-zero ``|value|`` (at least 17)."""
    a = np.abs(np.asarray(values, dtype=np.float64))
    a = a[a > 0]
    if a.size == 0:
        return _SIGNIFICANT
    return max(_SIGNIFICANT, _SIGNIFICANT - int(np.floor(np.log10(a.min()))))


def obj_bytes(vertices: np.ndarray, faces: np.ndarray, *, normals: bool = True) -> bytes:
    """Wavefront OBJ text (1-based indices, ``vn`` vertex normals unless ``normals=False``) for vertices (N, 3)
    and triangle faces (F, 3), written by trimesh with :func:`exact_digits` decimals."""
    mesh = trimesh.Trimesh(np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64), process=False)
    text = trimesh.exchange.obj.export_obj(mesh, include_normals=normals, include_color=False,
                                           include_texture=False, digits=exact_digits(mesh.vertices), header=None)
    return text.encode("ascii")


def _mesh_bytes(mesh: trimesh.Trimesh, ext: str) -> bytes:
    if ext == ".off":
        return off_bytes(mesh.vertices, mesh.faces)
    if ext == ".obj":
        return obj_bytes(mesh.vertices, mesh.faces)
    plain = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)  # geometry and its normals, no visuals
    if ext == ".glb":
        return trimesh.exchange.gltf.export_glb(plain, include_normals=True)
    return trimesh.exchange.ply.export_ply(plain, encoding="binary", vertex_normal=True)


def export_mesh(mesh: trimesh.Trimesh, path: str | os.PathLike) -> Path:
    """Write ``mesh`` to ``path`` in the format named by its extension (.ply, .obj, .off, .glb).

    PLY, OBJ and GLB carry vertex normals (:data:`NORMAL_EXTENSIONS`); colours and textures are not written.

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
    data = _mesh_bytes(mesh, ext)
    with atomic_write(path, "wb") as f:
        f.write(data)
    return path
