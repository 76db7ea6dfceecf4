"""Loading meshes and point clouds, validated and cleaned.

``load_mesh`` reads OFF (our own parser, including ModelNet's ``OFF1046 900 0``
header), OBJ, PLY, STL and GLB/GLTF (scenes flattened into one mesh with their node
transforms applied). Every failure is a :class:`~shapes3d.errors.InputFileError`
subclass whose message starts with the file's path.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import numpy as np
import trimesh

from shapes3d.errors import (
    CorruptFileError,
    DegenerateMeshError,
    EmptyMeshError,
    FaceIndexError,
    InputFileError,
    MissingFileError,
    NonFiniteError,
    Shapes3DError,
    UnsupportedFormatError,
)
from shapes3d.geometry.file_checks import (
    check_glb_chunks,
    check_glb_json,
    check_gltf,
    check_npy_member,
    check_ply_header,
    check_stl_size,
)
from shapes3d.geometry.limits import BoundedReader, max_uncompressed_bytes
from shapes3d.geometry.off import read_off
from shapes3d.geometry.pcd import read_pcd

log = logging.getLogger(__name__)

MESH_EXTENSIONS = (".off", ".obj", ".ply", ".stl", ".glb", ".gltf")
POINT_EXTENSIONS = (".pcd", ".ply", ".xyz", ".txt", ".pts", ".npy", ".npz")
_MERGE_TOL = 1e-9
_TRIMESH_TYPES = {".obj": "obj", ".ply": "ply", ".stl": "stl", ".glb": "glb", ".gltf": "gltf"}


def unreadable(path: str | os.PathLike, exc: OSError) -> InputFileError:
    """An OSError met while reading ``path`` (permission denied, a folder, I/O error) as our error."""
    if isinstance(exc, Shapes3DError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return MissingFileError(path)
    if isinstance(exc, IsADirectoryError):
        return InputFileError(path, "is a directory, expected a file")
    reason = exc.strerror or f"{type(exc).__name__}: {exc}"
    return InputFileError(path, f"cannot read the file ({reason})")


def _check_file(path: str | os.PathLike, allowed: tuple[str, ...], what: str) -> tuple[Path, str]:
    path = Path(path)
    try:
        if not path.exists():
            raise MissingFileError(path, "file does not exist" if not path.is_symlink()
                                   else "file does not exist (broken or looping symlink)")
        if path.is_dir():
            raise InputFileError(path, f"is a directory, expected a {what} file")
        ext = path.suffix.lower()
        if ext not in allowed:
            raise UnsupportedFormatError(
                path, f"unsupported {what} extension {path.suffix or '(none)'!r}; supported: {', '.join(allowed)}"
            )
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(path, f"is not a regular file (a device, FIFO or socket), expected a {what} file")
        if info.st_size == 0:
            raise EmptyMeshError(path, "file is empty (0 bytes)")
        with open(path, "rb"):  # permission denied is reported here, naming the file
            pass
    except Shapes3DError:
        raise
    except OSError as e:
        raise unreadable(path, e) from None
    return path, ext
















def _read_with_trimesh(path: Path, ext: str) -> tuple[np.ndarray, np.ndarray]:
    if ext == ".ply":
        check_ply_header(path)
    elif ext == ".stl":
        check_stl_size(path)
    elif ext == ".glb":
        check_glb_chunks(path)
        check_glb_json(path)
    elif ext == ".gltf":
        check_gltf(path)
    try:
        loaded = trimesh.load(str(path), file_type=_TRIMESH_TYPES[ext], process=False, force=None)
    except Shapes3DError:
        raise
    except Exception as e:  # trimesh raises many types for garbage input
        raise CorruptFileError(path, f"could not parse {ext[1:].upper()} ({e.__class__.__name__}: {e})") from None
    if isinstance(loaded, trimesh.Scene):
        # Flatten the scene graph: each geometry placed by its node transform.
        parts = []
        for node in loaded.graph.nodes_geometry:
            transform, geom_name = loaded.graph[node]
            geom = loaded.geometry[geom_name]
            if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
                parts.append((trimesh.transform_points(np.asarray(geom.vertices, float), transform), geom.faces))
        if not parts:
            raise EmptyMeshError(path, "scene contains no triangle geometry")
        offsets = np.cumsum([0] + [len(v) for v, _ in parts[:-1]])
        vertices = np.concatenate([v for v, _ in parts])
        faces = np.concatenate([np.asarray(f, np.int64) + o for (_, f), o in zip(parts, offsets)])
        return vertices, faces
    if isinstance(loaded, trimesh.Trimesh):
        return np.asarray(loaded.vertices, np.float64), np.asarray(loaded.faces, np.int64)
    if isinstance(loaded, trimesh.PointCloud):
        raise EmptyMeshError(path, f"contains a point cloud ({len(loaded.vertices)} points) but no faces")
    raise CorruptFileError(path, f"unexpected content {type(loaded).__name__}, expected a triangle mesh")


def clean_mesh(vertices: np.ndarray, faces: np.ndarray, *, path: str | os.PathLike = "<array>") -> trimesh.Trimesh:
    """Validate and clean raw arrays into a ``trimesh.Trimesh``.

    Raises on empty input, NaN/inf coordinates, out-of-range face indices, and meshes
    whose faces are all degenerate. Merges exactly coincident vertices, removes
    degenerate faces (repeated indices or zero area) and unreferenced vertices, and
    logs how many of each were removed.
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise EmptyMeshError(path, f"mesh has no vertices (vertex array shape {v.shape})")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise EmptyMeshError(path, f"mesh has no triangle faces (face array shape {f.shape})")
    bad = ~np.isfinite(v).all(axis=1)
    if bad.any():
        raise NonFiniteError(path, f"{int(bad.sum())} of {len(v)} vertices have NaN or infinite coordinates "
                                   f"(first at index {int(np.argmax(bad))})")
    f = f.astype(np.int64, copy=False)
    lo, hi = int(f.min()), int(f.max())
    if lo < 0 or hi >= len(v):
        worst = hi if hi >= len(v) else lo
        raise FaceIndexError(path, f"face index {worst} out of range for {len(v)} vertices (valid 0..{len(v) - 1})")
    # Merge coincident vertices (seam-split vertices in OBJ/PLY, per-face vertices in
    # STL). STL exporters round-trip through float32, so "coincident" means equal after
    # snapping to 1e-9 of the bounding-box size, not bit-identical.
    scale = float(np.ptp(v, axis=0).max()) or 1.0
    snapped = np.round((v - v.min(axis=0)) / (scale * _MERGE_TOL)).astype(np.int64)
    _, first, inverse = np.unique(snapped, axis=0, return_index=True, return_inverse=True)
    uniq = v[first]
    n_dup = len(v) - len(uniq)
    f = inverse.reshape(-1)[f]
    repeated = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])
    cross = np.cross(uniq[f[:, 1]] - uniq[f[:, 0]], uniq[f[:, 2]] - uniq[f[:, 0]])
    area2 = np.linalg.norm(cross, axis=1)
    degenerate = repeated | (area2 <= 1e-14 * scale * scale)
    n_degenerate = int(degenerate.sum())
    if n_degenerate == len(f):
        raise DegenerateMeshError(path, f"all {len(f)} faces are degenerate (zero area or repeated vertices)")
    f = f[~degenerate]
    used = np.zeros(len(uniq), dtype=bool)
    used[f.ravel()] = True
    n_unref = int((~used).sum())
    if n_unref:
        remap = np.cumsum(used) - 1
        uniq, f = uniq[used], remap[f]
    if n_dup or n_degenerate or n_unref:
        log.info("%s: merged %d duplicate vertices, removed %d degenerate faces and %d unreferenced vertices",
                 path, n_dup, n_degenerate, n_unref)
    return trimesh.Trimesh(vertices=uniq, faces=f, process=False)


def load_mesh(path: str | os.PathLike) -> trimesh.Trimesh:
    """Load a triangle mesh from OFF, OBJ, PLY, STL, GLB or GLTF, validated and cleaned."""
    path, ext = _check_file(path, MESH_EXTENSIONS, "mesh")
    try:
        if ext == ".off":
            vertices, faces = read_off(path)
        else:
            vertices, faces = _read_with_trimesh(path, ext)
    except OSError as e:  # permission lost, I/O error, ... between the check and the read
        raise unreadable(path, e) from None
    return clean_mesh(vertices, faces, path=path)


def _points_from_array(path: Path, arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind not in "fiu":
        raise CorruptFileError(path, f"expected a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[0] == 3 and arr.shape[1] != 3:
        raise CorruptFileError(path, f"array looks transposed: shape (3, {arr.shape[1]}); expected (N, 3) points "
                                     "(one row per point: save arr.T)")
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise CorruptFileError(path, f"expected an (N, 3+) array of points, got shape {arr.shape}")
    return np.asarray(arr[:, :3], dtype=np.float64)


def _read_xyz(path: Path) -> np.ndarray:
    rows = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.split(b"#", 1)[0].replace(b",", b" ").strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) < 3:
                raise CorruptFileError(path, f"line {lineno}: expected at least 3 numbers, got {len(parts)}")
            try:
                rows.append([float(p) for p in parts[:3]])
            except ValueError:
                raise CorruptFileError(path, f"line {lineno}: non-numeric value in {line[:60]!r}") from None
    return np.asarray(rows, dtype=np.float64).reshape(-1, 3)




def _read_numpy(path: Path, ext: str) -> np.ndarray:
    if ext == ".npy":
        with open(path, "rb") as fh:
            check_npy_member(path, fh, path.stat().st_size, "NPY header")
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise CorruptFileError(path, f"not a plain numpy file or holds pickled objects ({e})") from None
    except Exception as e:
        raise CorruptFileError(path, f"could not read {ext[1:].upper()} ({e.__class__.__name__}: {e})") from None
    if ext == ".npy":
        return _points_from_array(path, loaded)
    with loaded:
        keys = list(loaded.keys())
        key = next((k for k in ("points", "xyz", "pos", "vertices") if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None:
            raise CorruptFileError(path, f"NPZ has arrays {keys}; expected one array or one named 'points'")
        member = key if key in loaded.zip.namelist() else f"{key}.npy"
        what = f"NPZ array {key!r}"
        limit = max_uncompressed_bytes()
        try:
            size = loaded.zip.getinfo(member).file_size
            with loaded.zip.open(member) as fh:
                check_npy_member(path, BoundedReader(fh, path, what, limit), size, what, compressed=True)
            # Read through zipfile while counting the bytes it inflates: the member's declared
            # size is not trusted, the limit is.
            with loaded.zip.open(member) as fh:
                arr = np.lib.format.read_array(BoundedReader(fh, path, what, limit), allow_pickle=False)
        except InputFileError:
            raise
        except Exception as e:  # zipfile and zlib raise many types for damaged members
            raise CorruptFileError(path, f"could not read array {key!r} ({e.__class__.__name__}: {e})") from None
    return _points_from_array(path, arr)


def _read_points(path: Path, ext: str) -> np.ndarray:
    if ext == ".pcd":
        return read_pcd(path)
    if ext == ".ply":
        check_ply_header(path)
        try:
            loaded = trimesh.load(str(path), file_type="ply", process=False)
        except Exception as e:
            raise CorruptFileError(path, f"could not parse PLY ({e.__class__.__name__}: {e})") from None
        if not hasattr(loaded, "vertices"):
            raise CorruptFileError(path, f"unexpected PLY content {type(loaded).__name__}")
        return np.asarray(loaded.vertices, dtype=np.float64)
    if ext in (".npy", ".npz"):
        return _read_numpy(path, ext)
    return _read_xyz(path)


def load_points(path: str | os.PathLike) -> np.ndarray:
    """Load a point cloud -> (N, 3) float64 from PCD, PLY, XYZ/TXT/PTS, NPY or NPZ.

    A PLY holding a mesh yields its vertices. NPZ: the array named ``points`` (or
    ``xyz``/``pos``/``vertices``), or the only array.
    """
    path, ext = _check_file(path, POINT_EXTENSIONS, "point cloud")
    try:
        pts = _read_points(path, ext)
    except OSError as e:  # permission lost, I/O error, ... between the check and the read
        raise unreadable(path, e) from None
    if len(pts) == 0:
        raise EmptyMeshError(path, "point cloud contains no points")
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        raise NonFiniteError(path, f"{int(bad.sum())} of {len(pts)} points have NaN or infinite coordinates "
                                   f"(first at index {int(np.argmax(bad))})")
    return pts


def load_geometry(path: str | os.PathLike) -> trimesh.Trimesh | np.ndarray:
    """A mesh for mesh formats, points for point formats (PLY: a mesh when it has faces)."""
    ext = Path(path).suffix.lower()
    if ext == ".ply":
        try:
            return load_mesh(path)
        except EmptyMeshError as e:
            if "no faces" not in str(e) and "no triangle faces" not in str(e):
                raise
            return load_points(path)
    if ext in MESH_EXTENSIONS:
        return load_mesh(path)
    return load_points(path)
