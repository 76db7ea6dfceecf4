"""Size and structure checks that run before a file is handed to a parser (ours or trimesh's).

Each check reads only headers and declared sizes, and refuses a file whose declared counts, chunk lengths or
buffers do not fit the file (or exceed :mod:`shapes3d.geometry.limits`) before anything is allocated: a
47-byte GLB once made trimesh reserve 4 GB.
"""

from __future__ import annotations

import json
import logging
import stat
import urllib.parse
from pathlib import Path

import numpy as np

from shapes3d.errors import (
    CorruptFileError,
)
from shapes3d.geometry.limits import check_declared, max_uncompressed_bytes, too_large

log = logging.getLogger(__name__)

_PLY_SIZES = {"char": 1, "int8": 1, "uchar": 1, "uint8": 1, "short": 2, "int16": 2, "ushort": 2, "uint16": 2,
              "int": 4, "int32": 4, "uint": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}


_MAX_PLY_HEADER = 1 << 16


def check_ply_header(path: Path) -> None:
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


def check_stl_size(path: Path) -> None:
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


def check_glb_chunks(path: Path) -> None:
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


def check_gltf_resources(path: Path, doc) -> None:
    """glTF buffers and images: declared sizes, embedded (base64) sizes and external files within the limit.

    External files must be regular files (not a FIFO or device such as ``/dev/zero``, which a
    reader would wait on or read forever). Called on a ``.gltf`` document and on a GLB's JSON chunk.
    """
    if not isinstance(doc, dict):
        return  # trimesh reports a malformed document
    limit = max_uncompressed_bytes()
    total = 0
    for kind in ("buffers", "images"):
        items = doc.get(kind)
        for i, item in enumerate(items if isinstance(items, list) else []):
            if not isinstance(item, dict):
                continue
            what = f"glTF {kind[:-1]} {i}"
            declared = item.get("byteLength")
            if isinstance(declared, int) and not isinstance(declared, bool):
                check_declared(path, what, declared)
            uri = item.get("uri")
            if not isinstance(uri, str):
                continue
            if uri.startswith("data:"):
                size = len(uri) * 3 // 4  # base64 inflates 3 bytes to 4 characters
            else:
                target = path.parent / urllib.parse.unquote(uri)
                try:
                    info = target.stat()
                except OSError:
                    continue  # missing: trimesh names the absent file
                if not stat.S_ISREG(info.st_mode):
                    raise CorruptFileError(path, f"{what} refers to {uri!r}, which is not a regular file")
                size = info.st_size
            total += size
            if size > limit or total > limit:
                raise too_large(path, f"{what} ({uri[:40]!r})", size if size > limit else total, limit)


def check_gltf(path: Path) -> None:
    check_declared(path, "glTF JSON document", path.stat().st_size)
    try:
        doc = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return  # trimesh reports the malformed JSON
    check_gltf_resources(path, doc)


def check_glb_json(path: Path) -> None:
    """The resources a GLB's JSON chunk (chunk 0, sized by :func:`check_glb_chunks`) refers to."""
    with open(path, "rb") as fh:
        head = fh.read(20)
        if len(head) < 20 or head[:4] != b"glTF" or head[16:20] != b"JSON":
            return
        try:
            doc = json.loads(fh.read(int.from_bytes(head[12:16], "little")))
        except (ValueError, UnicodeDecodeError):
            return
    check_gltf_resources(path, doc)


def check_npy_member(path: Path, fh, available: int, what: str, *, compressed: bool = False) -> None:
    """Read an .npy header from ``fh``; refuse object arrays and shapes bigger than the bytes that follow.

    numpy allocates the whole declared array before reading, so a 100-byte file declaring
    terabytes must be refused here. ``compressed``: ``available`` is a zip member's declared
    size, which a bomb can make as large as it likes, so the declared array size is also held
    to :func:`~shapes3d.geometry.limits.max_uncompressed_bytes`.
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
    if compressed:  # the member's declared size is the bomb's to choose: the limit bounds it
        check_declared(path, f"{what} (shape {tuple(shape)} of {dtype})", nbytes)
