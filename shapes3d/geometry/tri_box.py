"""Which grid cells a triangle touches: exact triangle / axis-aligned box overlap.

Separating axis theorem (Akenine-Moeller's 13 axes: the 3 box normals, the triangle
normal, and the 9 cross products of triangle edges with box axes), vectorised over
(triangle, candidate cell) pairs. Cells are closed cubes, so a triangle touching a
cell's face or edge counts for every cell sharing it.
"""

from __future__ import annotations

import numpy as np

from shapes3d.geometry.conventions import Grid

_CHUNK_PAIRS = 1 << 20


def _overlaps(v0: np.ndarray, v1: np.ndarray, v2: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Whether triangles (M, 3, vertices relative to the box centre) meet the box of half-size ``h`` (3,)."""
    ok = np.ones(len(v0), dtype=bool)
    for d in range(3):  # box face normals = bounding-box overlap
        mn = np.minimum(np.minimum(v0[:, d], v1[:, d]), v2[:, d])
        mx = np.maximum(np.maximum(v0[:, d], v1[:, d]), v2[:, d])
        ok &= (mn <= h[d]) & (mx >= -h[d])
    edges = (v1 - v0, v2 - v1, v0 - v2)
    n = np.cross(edges[0], edges[1])
    ok &= np.abs(np.einsum("md,md->m", n, v0)) <= np.abs(n) @ h
    verts = (v0, v1, v2)
    for e in edges:
        for d in range(3):
            # axis = e x unit_d; only the two components other than d are nonzero.
            a, b = (d + 1) % 3, (d + 2) % 3
            # (e x unit_d)[a] = e[b] * 1 (for cyclic a, b), (e x unit_d)[b] = -e[a]
            pa, pb = e[:, b], -e[:, a]
            proj = [pa * v[:, a] + pb * v[:, b] for v in verts]
            r = h[a] * np.abs(pa) + h[b] * np.abs(pb)
            mn = np.minimum(np.minimum(proj[0], proj[1]), proj[2])
            mx = np.maximum(np.maximum(proj[0], proj[1]), proj[2])
            ok &= (mn <= r) & (mx >= -r)
    return ok


def triangle_box_cells(triangles: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices ``(i, j, k)``, each (M,), of the cells of ``grid`` met by any of ``triangles`` (F, 3, 3).

    Cells may repeat (one entry per touching triangle).
    """
    tri = np.asarray(triangles, dtype=np.float64)
    R = grid.resolution
    lo, spacing = np.array(grid.lo), grid.spacing
    centres = np.stack(grid.axes())  # (3, R)
    h = spacing / 2.0
    t_lo = (tri.min(1) - lo) / spacing
    t_hi = (tri.max(1) - lo) / spacing
    # Candidate cells from the bounding box, widened a little so float rounding can only
    # add candidates; the overlap test below makes the decision.
    c0 = np.clip(np.floor(t_lo - 1e-6).astype(np.int64), 0, R)
    c1 = np.clip(np.floor(t_hi + 1e-6).astype(np.int64), -1, R - 1)
    n = np.maximum(c1 - c0 + 1, 0)
    counts = n.prod(1)
    has = np.flatnonzero(counts)
    tri, c0, n, counts = tri[has], c0[has], n[has], counts[has]
    out_i, out_j, out_k = [], [], []
    ends = np.cumsum(counts)
    start = 0
    while start < len(counts):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + _CHUNK_PAIRS, side="right")), start + 1)
        c = counts[start:stop]
        t = np.repeat(np.arange(start, stop), c)
        off = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        nj, nk = n[t, 1], n[t, 2]
        i = c0[t, 0] + off // (nj * nk)
        j = c0[t, 1] + (off // nk) % nj
        k = c0[t, 2] + off % nk
        centre = np.stack([centres[0, i], centres[1, j], centres[2, k]], axis=1)
        ok = _overlaps(tri[t, 0] - centre, tri[t, 1] - centre, tri[t, 2] - centre, h)
        out_i.append(i[ok])
        out_j.append(j[ok])
        out_k.append(k[ok])
        start = stop
    if not out_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_k)
