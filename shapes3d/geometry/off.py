"""Our own OFF reader: strict counts, precise errors, and ModelNet's malformed header.

Many ModelNet files start with ``OFF1046 900 0`` (the counts glued to the magic word
on the first line) instead of ``OFF`` followed by a counts line. Both are accepted.
Polygon faces are fan-triangulated; per-vertex / per-face colours are ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from shapes3d.errors import CorruptFileError, EmptyMeshError

_MAGIC = re.compile(r"^(ST)?(C)?(N)?(4)?(n)?OFF")


def _lines(text: str) -> list[str]:
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def read_off(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse an OFF file -> (vertices (N,3) float64, faces (F,3) int64)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptFileError(path, f"not a text OFF file (undecodable byte at offset {e.start})") from None
    lines = _lines(text)
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
    body = lines[body_start:]
    if len(body) < nv + nf:
        raise CorruptFileError(
            path, f"truncated: header declares {nv} vertices and {nf} faces but only {len(body)} data lines follow"
        )
    if nv == 0:
        raise EmptyMeshError(path, "mesh has no vertices")
    vertices = _parse_vertices(path, body[:nv])
    faces = _parse_faces(path, body[nv:nv + nf])
    return vertices, faces


def _parse_vertices(path: Path, lines: list[str]) -> np.ndarray:
    try:
        rows = [line.split() for line in lines]
        if all(len(r) == 3 for r in rows):
            return np.array(" ".join(lines).split(), dtype=np.float64).reshape(-1, 3)
        bad = next((i for i, r in enumerate(rows) if len(r) < 3), None)
        if bad is not None:
            raise CorruptFileError(path, f"vertex {bad} has {len(rows[bad])} coordinates, expected 3")
        return np.array([r[:3] for r in rows], dtype=np.float64)
    except ValueError as e:
        raise CorruptFileError(path, f"non-numeric vertex coordinate ({e})") from None


def _parse_faces(path: Path, lines: list[str]) -> np.ndarray:
    if not lines:
        return np.zeros((0, 3), dtype=np.int64)
    try:
        rows = [[int(t) for t in line.split()] for line in lines]
    except ValueError as e:
        raise CorruptFileError(path, f"non-integer face index ({e})") from None
    tris: list[list[int]] = []
    for i, r in enumerate(rows):
        n = r[0] if r else 0
        if n < 3 or len(r) < n + 1:
            raise CorruptFileError(path, f"face {i} declares {n} vertices but lists {max(len(r) - 1, 0)}")
        idx = r[1:n + 1]
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
