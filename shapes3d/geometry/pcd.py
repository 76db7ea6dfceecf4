"""Our own PCD (Point Cloud Library) reader: ASCII, binary and binary_compressed.

Only the x, y, z fields are returned; other fields (normals, rgb, ...) are skipped
using the declared SIZE/TYPE/COUNT so any field layout parses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shapes3d.errors import CorruptFileError, EmptyMeshError

_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8",
          ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}
_MAX_HEADER_LINES = 64


def _lzf_decompress(data: bytes, out_len: int) -> bytes:
    """LZF decompression (the codec PCL uses for binary_compressed)."""
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
            ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
            i += 1
            if ref < 0:
                raise ValueError("back reference before start of output")
            for _ in range(length + 2):  # may overlap itself, so copy byte by byte
                out.append(out[ref])
                ref += 1
        if len(out) > out_len:
            raise ValueError("decompressed data longer than declared")
    if len(out) != out_len:
        raise ValueError(f"decompressed {len(out)} bytes, header declares {out_len}")
    return bytes(out)


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
    if len(body) - 8 < csize:
        raise CorruptFileError(path, f"truncated: compressed block of {csize} bytes, file has {len(body) - 8}")
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
