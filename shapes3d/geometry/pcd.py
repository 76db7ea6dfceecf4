"""Our own PCD (Point Cloud Library) reader: ASCII, binary and binary_compressed.

Only the x, y, z fields are returned; other fields (normals, rgb, ...) are skipped
using the declared SIZE/TYPE/COUNT so any field layout parses.

``binary_compressed`` blocks are checked against the header first (the declared
uncompressed size must equal what the declared points and fields take, and stay within
:func:`~shapes3d.geometry.limits.max_uncompressed_bytes`), then decoded: large blocks by
open3d's PCD reader (native LZF, ~30x faster than Python), small ones, and any block
open3d refuses, by :func:`_lzf_decompress`, which also produces the precise error.

Why the rest is not open3d's reader (``o3d.io.read_point_cloud``), measured with open3d 0.20: it reads
``SIZE 8 TYPE F`` (float64) x/y/z as zeros, pads truncated ASCII data with zero points, and turns
non-numeric ASCII tokens into 0, all without an error, while ours decodes float64 exactly and names
the damage (``tests/test_interop.py`` keeps these cases). It also costs ~1.2 s to import, where the
numpy decoders below need nothing; its native LZF is the one part worth that, so it is used there.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shapes3d.errors import CorruptFileError, EmptyMeshError
from shapes3d.geometry.limits import check_declared

_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8",
          ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}
_MAX_HEADER_LINES = 64
#: Compressed blocks at least this large are decoded by open3d (when it imports); smaller ones in
#: Python, where importing open3d (~2 s) would cost more than it saves. Once open3d is imported, always.
OPEN3D_MIN_COMPRESSED = 256 << 10


def _lzf_decompress(data: bytes, out_len: int) -> bytes:
    """LZF decompression (the codec PCL uses for binary_compressed), never producing more than ``out_len``.

    One Python step per LZF token (literal run or back reference), each copied as a slice; an
    overlapping back reference (distance shorter than its length) repeats its period.
    """
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        ctrl = data[i]
        i += 1
        if ctrl < 32:  # literal run of ctrl+1 bytes
            run = ctrl + 1
            if i + run > n:
                raise ValueError("literal run past end of input")
            out += data[i:i + run]
            i += run
        else:  # back reference
            length = ctrl >> 5
            if length == 7:
                if i >= n:
                    raise ValueError("truncated back reference")
                length += data[i]
                i += 1
            if i >= n:
                raise ValueError("truncated back reference")
            dist = ((ctrl & 0x1F) << 8) + data[i] + 1
            i += 1
            ref = len(out) - dist
            if ref < 0:
                raise ValueError("back reference before start of output")
            length += 2
            if dist >= length:
                out += out[ref:ref + length]
            else:  # overlaps the bytes it produces: the last ``dist`` bytes, repeated
                period = out[ref:]
                q, r = divmod(length, dist)
                out += period * q + period[:r]
        if len(out) > out_len:
            raise ValueError("decompressed data longer than declared")
    if len(out) != out_len:
        raise ValueError(f"decompressed {len(out)} bytes, header declares {out_len}")
    return bytes(out)


def _read_with_open3d(path: Path, npts: int) -> np.ndarray | None:
    """xyz through open3d's native PCD reader; None if open3d is missing or refuses the file."""
    try:
        import open3d as o3d
    except ImportError:
        return None
    try:
        with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
            cloud = o3d.io.read_point_cloud(str(path), format="pcd", remove_nan_points=False,
                                            remove_infinite_points=False)
        pts = np.asarray(cloud.points, dtype=np.float64)
    except Exception:  # any failure: our decoder runs and says what is wrong
        return None
    return pts if pts.shape == (npts, 3) else None


def _read_header(path: Path, raw: bytes) -> tuple[dict[str, list[str]], int]:
    """Header fields (upper-case keys) and the offset of the first data byte."""
    header: dict[str, list[str]] = {}
    pos = 0
    for _ in range(_MAX_HEADER_LINES):
        end = raw.find(b"\n", pos)
        if end < 0:
            raise CorruptFileError(path, "truncated PCD header (no DATA line)")
        line = raw[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if not line or line.startswith("#"):
            continue
        key, *vals = line.split()
        header[key.upper()] = vals
        if key.upper() == "DATA":
            return header, pos
    raise CorruptFileError(path, f"no DATA line in the first {_MAX_HEADER_LINES} header lines")


@dataclass(frozen=True)
class _Layout:
    """What the header says about the data: field names, numpy types, counts per point, points, DATA kind."""

    fields: list[str]
    dtypes: list[np.dtype]
    counts: list[int]
    npts: int
    kind: str

    def column(self, name: str) -> int:
        return self.fields.index(name)


def _layout(path: Path, header: dict[str, list[str]]) -> _Layout:
    try:
        fields = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = [t.upper() for t in header["TYPE"]]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(fields))]
        npts = int(header["POINTS"][0]) if "POINTS" in header else int(header["WIDTH"][0]) * int(header["HEIGHT"][0])
        data_kind = header["DATA"][0].lower()
    except (KeyError, ValueError, IndexError) as e:
        raise CorruptFileError(path, f"bad PCD header ({e.__class__.__name__}: {e})") from None
    if not (len(fields) == len(sizes) == len(types) == len(counts)):
        raise CorruptFileError(path, "PCD header FIELDS/SIZE/TYPE/COUNT have different lengths")
    missing = [c for c in "xyz" if c not in fields]
    if missing:
        raise CorruptFileError(path, f"PCD has no {'/'.join(missing)} field (fields: {' '.join(fields)})")
    if npts < 0 or npts > 2_000_000_000:
        raise CorruptFileError(path, f"implausible point count {npts}")
    if npts == 0:
        raise EmptyMeshError(path, "point cloud contains no points")
    try:
        dtypes = [np.dtype(_TYPES[(t, s)]) for t, s in zip(types, sizes)]
    except KeyError:
        raise CorruptFileError(path, f"unsupported PCD TYPE/SIZE combination {list(zip(types, sizes))}") from None
    return _Layout(fields, dtypes, counts, npts, data_kind)


def _read_ascii(path: Path, body: bytes, lay: _Layout) -> np.ndarray:
    text = body.decode("ascii", errors="replace").split()
    width = sum(lay.counts)
    if len(text) < lay.npts * width:
        raise CorruptFileError(path, f"truncated: {lay.npts} points declared, data for {len(text) // max(width, 1)}")
    try:
        table = np.array(text[:lay.npts * width], dtype=np.float64).reshape(lay.npts, width)
    except ValueError as e:
        raise CorruptFileError(path, f"non-numeric value in ASCII data ({e})") from None
    offsets = np.cumsum([0] + lay.counts[:-1])
    return table[:, [offsets[lay.column(c)] for c in "xyz"]]


def _read_binary(path: Path, body: bytes, lay: _Layout) -> np.ndarray:
    # Point-major records: x y z ... for each point.
    rec = np.dtype([(f"f{i}", dt.newbyteorder("<"), (c,)) for i, (dt, c) in enumerate(zip(lay.dtypes, lay.counts))])
    need = lay.npts * rec.itemsize
    if len(body) < need:
        raise CorruptFileError(path, f"truncated: {lay.npts} points need {need} data bytes, file has {len(body)}")
    arr = np.frombuffer(body, dtype=rec, count=lay.npts)
    return np.stack([arr[f"f{lay.column(c)}"][:, 0].astype(np.float64) for c in "xyz"], axis=1)


def _read_binary_compressed(path: Path, body: bytes, lay: _Layout) -> np.ndarray:
    if len(body) < 8:
        raise CorruptFileError(path, "truncated binary_compressed block header")
    csize, usize = struct.unpack("<II", body[:8])
    npts = lay.npts
    expected = npts * sum(dt.itemsize * c for dt, c in zip(lay.dtypes, lay.counts))
    if usize != expected:  # checked before decompressing: the header alone sizes the output
        raise CorruptFileError(path, f"binary_compressed block declares uncompressed size {usize}, but "
                                     f"{npts} points of the declared fields take {expected} bytes")
    check_declared(path, "binary_compressed block", usize)
    if len(body) - 8 < csize:
        raise CorruptFileError(path, f"truncated: compressed block of {csize} bytes, file has {len(body) - 8}")
    if csize >= OPEN3D_MIN_COMPRESSED or "open3d" in sys.modules:
        pts = _read_with_open3d(path, npts)
        if pts is not None:
            return pts
    try:
        data = _lzf_decompress(body[8:8 + csize], usize)
    except ValueError as e:
        raise CorruptFileError(path, f"corrupt LZF data ({e})") from None
    # Field-major layout: all x, then all y, ...
    out, off = {}, 0
    for i, (dt, c) in enumerate(zip(lay.dtypes, lay.counts)):
        nbytes = npts * c * dt.itemsize
        if off + nbytes > len(data):
            raise CorruptFileError(path, "decompressed data shorter than the declared fields")
        out[i] = np.frombuffer(data, dtype=dt.newbyteorder("<"), count=npts * c, offset=off).reshape(npts, c)
        off += nbytes
    return np.stack([out[lay.column(c)][:, 0].astype(np.float64) for c in "xyz"], axis=1)


_READERS = {"ascii": _read_ascii, "binary": _read_binary, "binary_compressed": _read_binary_compressed}


def read_pcd(path: str | Path) -> np.ndarray:
    """Parse a PCD file (DATA ascii, binary or binary_compressed) -> points (N, 3) float64."""
    path = Path(path)
    raw = path.read_bytes()
    header, pos = _read_header(path, raw)
    lay = _layout(path, header)
    reader = _READERS.get(lay.kind)
    if reader is None:
        raise CorruptFileError(path, f"unknown PCD DATA kind {lay.kind!r} (expected ascii, binary, binary_compressed)")
    return reader(path, raw[pos:], lay)
