"""Loading meshes and point clouds, validated and cleaned.

``load_mesh`` reads OFF (our own parser, including ModelNet's ``OFF1046 900 0``
header), OBJ, PLY, STL and GLB/GLTF (scenes flattened into one mesh with their node
transforms applied). Every failure is a :class:`~shapes3d.errors.InputFileError`
subclass whose message starts with the file's path.
"""

from __future__ import annotations

import logging
import os
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
from shapes3d.geometry.off import read_off
from shapes3d.geometry.pcd import read_pcd

log = logging.getLogger(__name__)

MESH_EXTENSIONS = (".off", ".obj", ".ply", ".stl", ".glb", ".gltf")
POINT_EXTENSIONS = (".pcd", ".ply", ".xyz", ".txt", ".pts", ".npy", ".npz")
_MERGE_TOL = 1e-9
_TRIMESH_TYPES = {".obj": "obj", ".ply": "ply", ".stl": "stl", ".glb": "glb", ".gltf": "gltf"}


def _check_file(path: str | os.PathLike, allowed: tuple[str, ...], what: str) -> tuple[Path, str]:
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path)
    if path.is_dir():
        raise InputFileError(path, f"is a directory, expected a {what} file")
    ext = path.suffix.lower()
    if ext not in allowed:
        raise UnsupportedFormatError(
            path, f"unsupported {what} extension {path.suffix or '(none)'!r}; supported: {', '.join(allowed)}"
        )
    if path.stat().st_size == 0:
        raise EmptyMeshError(path, "file is empty (0 bytes)")
    return path, ext


_PLY_SIZES = {"char": 1, "int8": 1, "uchar": 1, "uint8": 1, "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
              "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}
_MAX_PLY_HEADER = 1 << 16


def _check_ply_header(path: Path) -> None:
    """Reject a PLY whose header declares more elements than the file can hold, before parsing.

    trimesh sizes its arrays from the header's counts, so a 200-byte file declaring 4e9
    vertices must be refused here, by comparing the declared counts with the bytes (binary)
    or data lines (ASCII, one element per line) that follow the header.
    """
    with open(path, "rb") as fh:
        head = fh.read(_MAX_PLY_HEADER)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        return  # not a PLY header we can size: trimesh reports what is wrong
    nl = head.find(b"\n", end)
    body_start = len(head) if nl < 0 else nl + 1
    fmt, elements = "", []  # (name, count, fixed bytes, list count bytes, n scalar, n list)
    for raw in head[:end].decode("ascii", errors="replace").splitlines():
        tok = raw.split()
        if len(tok) >= 2 and tok[0] == "format":
            fmt = tok[1]
        elif len(tok) >= 3 and tok[0] == "element":
            try:
                count = int(tok[2])
            except ValueError:
                raise CorruptFileError(path, f"PLY element {tok[1]!r} has a non-integer count {tok[2]!r}") from None
            if count < 0:
                raise CorruptFileError(path, f"PLY element {tok[1]!r} has a negative count {count}")
            elements.append([tok[1], count, 0, 0, 0, 0])
        elif len(tok) >= 3 and tok[0] == "property" and elements:
            if tok[1] == "list" and len(tok) >= 5:
                elements[-1][3] += _PLY_SIZES.get(tok[2], 1)
                elements[-1][5] += 1
            else:
                elements[-1][2] += _PLY_SIZES.get(tok[1], 1)
                elements[-1][4] += 1
    available = path.stat().st_size - body_start
    binary = fmt.startswith("binary")
    need = 0
    for name, count, fixed, list_bytes, n_scalar, n_list in elements:
        # Fewest bytes one element can take: binary, its scalars and list lengths (lists may be
        # empty); ASCII, one digit and one separator per value.
        per = fixed + list_bytes if binary else 2 * (n_scalar + n_list)
        need += count * per
        if need > available:
            raise CorruptFileError(path, f"PLY header declares {count} {name} elements needing at least {need} "
                                         f"bytes, but only {available} bytes follow the header (truncated or corrupt)")
    if not binary and elements:
        with open(path, "rb") as fh:
            fh.seek(body_start)
            lines = sum(1 for line in fh if line.strip())
        declared = sum(e[1] for e in elements)
        if lines < declared:
            raise CorruptFileError(path, f"truncated: PLY header declares {declared} elements but only {lines} "
                                         "data lines follow")


def _check_stl_size(path: Path) -> None:
    """A binary STL's triangle count must match its size; anything else must be ASCII (``solid``)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(84)
    if len(head) == 84 and 84 + 50 * int.from_bytes(head[80:84], "little") == size:
        return
    if head.lstrip()[:5].lower() == b"solid":
        return  # ASCII STL; trimesh parses it
    if len(head) < 84:
        raise CorruptFileError(path, f"not an STL: {size} bytes is shorter than a binary STL header (84 bytes) "
                                     "and there is no ASCII 'solid' keyword")
    n = int.from_bytes(head[80:84], "little")
    raise CorruptFileError(path, f"binary STL declares {n} triangles ({84 + 50 * n} bytes) but the file has "
                                 f"{size} bytes (truncated or corrupt)")


def _check_glb_chunks(path: Path) -> None:
    """GLB: the declared total and chunk lengths must fit in the file.

    trimesh reads each chunk with ``read(declared length)``, which allocates the declared
    size up front: a 40-byte file declaring a 4 GB chunk would allocate 4 GB.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"glTF":
            return  # trimesh reports a bad header
        total = int.from_bytes(head[8:12], "little")
        if total > size:
            raise CorruptFileError(path, f"GLB header declares {total} bytes but the file has {size} "
                                         "(truncated or corrupt)")
        # Chunks trimesh will read: the first one always, later ones while inside the declared total.
        pos, index = 12, 0
        while pos + 8 <= size and (index == 0 or pos < total):
            fh.seek(pos)
            length = int.from_bytes(fh.read(4), "little")
            if pos + 8 + length > size:
                raise CorruptFileError(path, f"GLB chunk {index} declares {length} bytes but only "
                                             f"{size - pos - 8} remain (truncated or corrupt)")
            pos += 8 + length
            index += 1


def _read_with_trimesh(path: Path, ext: str) -> tuple[np.ndarray, np.ndarray]:
    if ext == ".ply":
        _check_ply_header(path)
    elif ext == ".stl":
        _check_stl_size(path)
    elif ext == ".glb":
        _check_glb_chunks(path)
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
    if ext == ".off":
        vertices, faces = read_off(path)
    else:
        vertices, faces = _read_with_trimesh(path, ext)
    return clean_mesh(vertices, faces, path=path)


def _points_from_array(path: Path, arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind not in "fiu":
        raise CorruptFileError(path, f"expected a numeric array, got dtype {arr.dtype}")
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


def _check_npy_member(path: Path, fh, available: int, what: str) -> None:
    """Read an .npy header from ``fh``; refuse object arrays and shapes bigger than the bytes that follow.

    numpy allocates the whole declared array before reading, so a 100-byte file declaring
    terabytes must be refused here.
    """
    try:
        version = np.lib.format.read_magic(fh)
        start = fh.tell()
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            return
    except Exception:
        return  # np.load reports the malformed header itself
    if dtype.hasobject:
        raise CorruptFileError(path, f"{what} holds pickled objects (dtype {dtype}); refusing to load it")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    left = available - (fh.tell() - start) - 8  # magic (6) + version (2) precede ``start``
    if nbytes > left:
        raise CorruptFileError(path, f"{what} declares shape {tuple(shape)} of {dtype} ({nbytes} bytes) but only "
                                     f"{max(left, 0)} bytes of data follow (truncated or corrupt)")


def _read_numpy(path: Path, ext: str) -> np.ndarray:
    if ext == ".npy":
        with open(path, "rb") as fh:
            _check_npy_member(path, fh, path.stat().st_size, "NPY header")
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
        try:
            with loaded.zip.open(member) as fh:
                size = loaded.zip.getinfo(member).file_size
                _check_npy_member(path, fh, size, f"NPZ array {key!r}")
        except CorruptFileError:
            raise
        except Exception as e:  # zipfile and zlib raise many types for damaged members
            raise CorruptFileError(path, f"could not read array {key!r} ({e.__class__.__name__}: {e})") from None
        try:
            arr = loaded[key]
        except Exception as e:
            raise CorruptFileError(path, f"could not read array {key!r} ({e.__class__.__name__}: {e})") from None
    return _points_from_array(path, arr)


def load_points(path: str | os.PathLike) -> np.ndarray:
    """Load a point cloud -> (N, 3) float64 from PCD, PLY, XYZ/TXT/PTS, NPY or NPZ.

    A PLY holding a mesh yields its vertices. NPZ: the array named ``points`` (or
    ``xyz``/``pos``/``vertices``), or the only array.
    """
    path, ext = _check_file(path, POINT_EXTENSIONS, "point cloud")
    if ext == ".pcd":
        pts = read_pcd(path)
    elif ext == ".ply":
        _check_ply_header(path)
        try:
            loaded = trimesh.load(str(path), file_type="ply", process=False)
        except Exception as e:
            raise CorruptFileError(path, f"could not parse PLY ({e.__class__.__name__}: {e})") from None
        if not hasattr(loaded, "vertices"):
            raise CorruptFileError(path, f"unexpected PLY content {type(loaded).__name__}")
        pts = np.asarray(loaded.vertices, dtype=np.float64)
    elif ext in (".npy", ".npz"):
        pts = _read_numpy(path, ext)
    else:
        pts = _read_xyz(path)
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
