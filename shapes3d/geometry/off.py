"""Our own OFF reader: strict counts, precise errors, and ModelNet's malformed header.

Many ModelNet files start with ``OFF1046 900 0`` (the counts glued to the magic word
on the first line) instead of ``OFF`` followed by a counts line. Both are accepted.
Polygon faces are fan-triangulated; per-vertex / per-face colours (integers or floats,
with or without alpha) after the coordinates / indices are ignored. A UTF-8 byte-order
mark before ``OFF`` is skipped, and ``#`` comments may hold any bytes (Latin-1 author
names, ...); everything outside comments must be UTF-8 text.

The vertex and face blocks are parsed by numpy (``loadtxt`` on the block's lines), so a
multi-million-face file reads in seconds; only when that fast path refuses a block (a
malformed line) does a per-line parser run, and it produces the exact error.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import numpy as np

from shapes3d.errors import CorruptFileError, EmptyMeshError

_MAGIC = re.compile(r"^(ST)?(C)?(N)?(4)?(n)?OFF")
# A comment runs to the end of its line; the class holds every boundary str.splitlines knows.
_COMMENT = re.compile("#[^\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]*")
_COMMENT_BYTES = re.compile(rb"#[^\n\r]*")


def _decode(path: Path, raw: bytes) -> str:
    """The file's text: BOM skipped; bytes that are not UTF-8 are allowed only inside ``#`` comments."""
    start = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    body = raw[start:] if start else raw
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return _COMMENT_BYTES.sub(b"", body).decode("utf-8")
    except UnicodeDecodeError:
        pass
    offset = start
    for line in body.splitlines(keepends=True):
        try:
            line.split(b"#", 1)[0].decode("utf-8")
        except UnicodeDecodeError as e:
            offset += e.start
            break
        offset += len(line)
    raise CorruptFileError(path, f"not a text OFF file (undecodable byte at offset {offset})")


def _lines(text: str) -> list[str]:
    """Non-empty lines with comments and surrounding whitespace removed."""
    if "#" in text:
        text = _COMMENT.sub("", text)
    return [line for line in map(str.strip, text.splitlines()) if line]


def read_off(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse an OFF file -> (vertices (N,3) float64, faces (F,3) int64)."""
    path = Path(path)
    lines = _lines(_decode(path, path.read_bytes()))
    if not lines:
        raise EmptyMeshError(path, "file is empty")
    m = _MAGIC.match(lines[0])
    if not m:
        raise CorruptFileError(path, f"missing OFF header (first line starts with {lines[0][:20]!r})")
    if m.group(4) or m.group(5):
        raise CorruptFileError(path, "only 3D OFF files are supported (4OFF/nOFF found)")
    rest = lines[0][m.end():].split()
    body_start = 1
    if not rest:  # standard layout: counts on their own line
        if len(lines) < 2:
            raise CorruptFileError(path, "truncated: header has no vertex/face counts")
        rest = lines[1].split()
        body_start = 2
    try:
        counts = [int(t) for t in rest[:3]]
    except ValueError:
        raise CorruptFileError(path, f"bad counts line {' '.join(rest)!r}: expected 'n_vertices n_faces n_edges'") from None
    if len(counts) < 2:
        raise CorruptFileError(path, f"bad counts line {' '.join(rest)!r}: expected 'n_vertices n_faces n_edges'")
    nv, nf = counts[0], counts[1]
    if nv < 0 or nf < 0:
        raise CorruptFileError(path, f"negative counts: {nv} vertices, {nf} faces")
    n_body = len(lines) - body_start
    if n_body < nv + nf:
        raise CorruptFileError(
            path, f"truncated: header declares {nv} vertices and {nf} faces but only {n_body} data lines follow"
        )
    if nv == 0:
        raise EmptyMeshError(path, "mesh has no vertices")
    vertices = _parse_vertices(path, lines[body_start:body_start + nv])
    faces = _parse_faces(path, lines[body_start + nv:body_start + nv + nf])
    return vertices, faces


def _loadtxt(lines: list[str], dtype, usecols) -> np.ndarray | None:
    """numpy's C parser on whitespace-separated lines, only ``usecols`` converted; None if it refuses."""
    try:
        return np.loadtxt(lines, dtype=dtype, usecols=usecols, ndmin=2, comments=None)
    except (ValueError, OverflowError, IndexError):
        return None


def _parse_vertices(path: Path, lines: list[str]) -> np.ndarray:
    fast = _loadtxt(lines, np.float64, (0, 1, 2))
    if fast is not None and fast.shape == (len(lines), 3):
        return fast
    # Slow path, only for blocks the fast one refused: find the line at fault and say what is wrong.
    try:
        rows = [line.split() for line in lines]
        bad = next((i for i, r in enumerate(rows) if len(r) < 3), None)
        if bad is not None:
            raise CorruptFileError(path, f"vertex {bad} has {len(rows[bad])} coordinates, expected 3")
        return np.array([r[:3] for r in rows], dtype=np.float64)
    except ValueError as e:
        raise CorruptFileError(path, f"non-numeric vertex coordinate ({e})") from None


def _parse_faces(path: Path, lines: list[str]) -> np.ndarray:
    if not lines:
        return np.zeros((0, 3), dtype=np.int64)
    fast = _faces_fast(lines)
    return fast if fast is not None else _faces_slow(path, lines)


def _faces_fast(lines: list[str]) -> np.ndarray | None:
    """Fan-triangulated faces in file order, numpy-parsed per polygon size; None to use the slow path."""
    tri = _loadtxt(lines, np.int64, (0, 1, 2, 3))  # the common case: triangles only, one pass
    if tri is not None and tri.shape == (len(lines), 4) and (tri[:, 0] == 3).all():
        return np.ascontiguousarray(tri[:, 1:])
    sizes = _loadtxt(lines, np.int64, (0,))
    if sizes is None:
        return None
    sizes = sizes[:, 0]
    if len(sizes) != len(lines) or sizes.min() < 3:
        return None
    # n indices take at least 2n+1 characters: a line declaring more than it can hold goes to the
    # slow path (which names it) before any array is sized from the declared counts.
    if (2 * sizes + 1 > np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))).any():
        return None
    n_tris = sizes - 2
    first = np.concatenate([[0], np.cumsum(n_tris)[:-1]])
    out = np.empty((int(n_tris.sum()), 3), dtype=np.int64)
    for n in np.unique(sizes).tolist():
        rows = np.flatnonzero(sizes == n)
        group = lines if len(rows) == len(lines) else [lines[i] for i in rows.tolist()]
        idx = _loadtxt(group, np.int64, tuple(range(1, n + 1)))
        if idx is None or idx.shape != (len(rows), n):
            return None
        start = first[rows]
        for k in range(n - 2):
            out[start + k] = idx[:, [0, k + 1, k + 2]]
    return out


def _faces_slow(path: Path, lines: list[str]) -> np.ndarray:
    """Per-line face parsing with the exact error for the first bad line."""
    tris: list[list[int]] = []
    for i, line in enumerate(lines):
        tokens = line.split()
        try:
            n = int(tokens[0])
            if n < 3 or len(tokens) < n + 1:
                raise CorruptFileError(path, f"face {i} declares {n} vertices but lists {max(len(tokens) - 1, 0)}")
            idx = [int(t) for t in tokens[1:n + 1]]  # tokens after the indices are a colour: ignored
        except ValueError as e:
            raise CorruptFileError(path, f"non-integer face index ({e})") from None
        tris.extend([idx[0], idx[k], idx[k + 1]] for k in range(1, n - 1))
    try:
        return np.asarray(tris, dtype=np.int64).reshape(-1, 3)
    except OverflowError:  # Python parsed an index numpy cannot hold; report it, not a numpy crash
        big = next(i for t in tris for i in t if not -(2**63) <= i < 2**63)
        raise CorruptFileError(path, f"face index {big} is out of the 64-bit integer range") from None


def write_off(path: str | Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Write a triangle mesh as standard OFF (atomically)."""
    from shapes3d.utils.io import atomic_write

    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    with atomic_write(path, "w") as fh:
        fh.write(f"OFF\n{len(v)} {len(f)} 0\n")
        np.savetxt(fh, v, fmt="%.9g")
        if len(f):
            np.savetxt(fh, np.hstack([np.full((len(f), 1), 3, dtype=np.int64), f]), fmt="%d")
