"""Coarse-to-fine evaluation of a signed-distance field on a corners grid (used by :mod:`.extract`).

Coarse-to-fine ("c2f") evaluates blocks of ``s x s x s`` cells at strides
``s0, s0/2, ..., 1``. A block is refined when its corners change sign or when some corner
has ``|f - level| <= safety * half_diagonal(block)``. For a field that is Lipschitz with
constant <= ``safety`` (an exact SDF has constant 1) an unrefined block cannot contain the
surface, so its unevaluated fine corners get a placeholder of the block's sign. Marching
cubes then sees the same sign at every corner as the dense grid, and identical values in
every cell the surface crosses, so it returns the same vertices and faces.

A refined block's children are not all evaluated: the same Lipschitz bound, taken from the
block's 8 known corners to each point of its 3x3x3 lattice, often proves a child empty
before any of its new corners is evaluated (a child whose corners are all proven on one
side by more than its own half diagonal; for the last level's cells, which have no
interior, on one side at all). Only the other children's corners are evaluated. At the last
level that leaves little more than the corners of the cells the surface crosses, the
minimum any method giving the dense surface must evaluate (sphere and torus at 256^3:
~1.0x that minimum at the last level, ~1.7x in total; ~0.5x the evaluations of refining
every child).

A network is not an exact SDF (its slope can exceed 1). A repair pass therefore
evaluates, for real, every cell that changes sign and touches a placeholder, until none
is left (a warning reports it). That makes every connected piece of surface that has one
evaluated cell come out whole and identical to dense; only a piece lying wholly inside
an unrefined block can be missed, and a larger ``safety`` (default 1.0) shrinks that risk
at the cost of more evaluations (safety 2 costs ~1.4x the evaluations of safety 1).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from shapes3d.geometry.extract import _GridField

log = logging.getLogger(__name__)

_CORNERS = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=np.int64)
_LATTICE = np.array([[a, b, c] for a in (0, 1, 2) for b in (0, 1, 2) for c in (0, 1, 2)], dtype=np.int64)


def _default_stride(r: int) -> int:
    """Largest power of two leaving at least 16 blocks per axis at the first level."""
    s = 1
    while (r - 1) / (2 * s) >= 16:
        s *= 2
    return s


class _SparseVolume:
    """An (R, R, R) float32 volume filled on demand: NaN until evaluated or given a placeholder.

    ``known`` marks corners holding real ``sdf_fn`` values (placeholders are not known).
    """

    def __init__(self, field: _GridField, r: int) -> None:
        self.field, self.r, self.shape = field, r, (r, r, r)
        self.vol = np.full(self.shape, np.nan, dtype=np.float32)
        self.known = np.zeros(self.shape, dtype=bool)
        self.flat, self.kflat = self.vol.reshape(-1), self.known.reshape(-1)
        self._pending = None

    def lin(self, idx: np.ndarray) -> np.ndarray:
        """Integer indices (..., 3) -> linear indices (...)."""
        return (idx[..., 0] * self.r + idx[..., 1]) * self.r + idx[..., 2]

    def request(self, lin: np.ndarray, desc: str) -> np.ndarray:
        """Evaluate the not-yet-known corners among ``lin`` (duplicates allowed); returns them (M, 3)."""
        lin = lin.reshape(-1)
        lin = lin[~self.kflat[lin]]
        if len(lin) < 100_000:
            new = np.unique(lin)
        else:  # a bitmap beats sorting/hashing millions of duplicated indices
            if self._pending is None:
                self._pending = np.zeros(self.r**3, dtype=bool)
            self._pending[lin] = True
            new = np.flatnonzero(self._pending)
            self._pending[new] = False
        ijk = np.stack(np.unravel_index(new, self.shape), axis=1)
        if len(new):
            self.flat[new] = self.field(ijk, desc=desc)
            self.kflat[new] = True
        return ijk


def _cell_reduce(a: np.ndarray, op) -> np.ndarray:
    """Per-cell reduction over the 8 corners of a corner array (X, Y, Z) -> (X-1, Y-1, Z-1)."""
    a = op(a[:-1], a[1:])
    a = op(a[:, :-1], a[:, 1:])
    return op(a[:, :, :-1], a[:, :, 1:])


def surface_cells_mask(vol: np.ndarray, level: np.float32) -> np.ndarray:
    """Corners (R, R, R) bool of every cell whose corners straddle ``level``.

    Handed to marching cubes as ``mask`` it skips the empty cells (3x faster at 256^3)
    and leaves vertices and faces bit-identical; marking all 8 corners of each such cell
    does not depend on which corner skimage tests.
    """
    r = vol.shape[0]
    mask = np.zeros(vol.shape, dtype=bool)
    for x0 in range(0, r - 1, 32):  # slabs keep the boolean temporaries small at 512^3
        p = vol[x0 : x0 + 33] > level
        ch = _cell_reduce(p, np.logical_or) & ~_cell_reduce(p, np.logical_and)
        n = ch.shape[0]
        for dx, dy, dz in _CORNERS:
            mask[x0 + dx : x0 + dx + n, dy : dy + r - 1, dz : dz + r - 1] |= ch
    return mask


def _fill_placeholders(sv: _SparseVolume, unrefined: list, level: np.float32) -> None:
    """Give every unevaluated corner the sign of the unrefined block that holds it.

    Fine corner ``x`` belongs to block ``min(x // s, nb - 1)`` at stride ``s``; along that
    chain of blocks the first unrefined one decides, and a corner whose chain is refined
    down to stride 1 has been evaluated.
    """
    r = sv.r
    ph = np.float32(max(1.0, abs(float(level))))
    values = np.array([level - ph, level, level + ph], dtype=np.float32)  # indexed by sign + 1
    for s, blocks, signs in unrefined:
        if not len(blocks):
            continue
        nb = -(-(r - 1) // s)
        sign_blocks = np.zeros((nb, nb, nb), dtype=np.int8)
        sign_blocks[tuple(blocks.T)] = signs
        bmap = np.minimum(np.arange(r) // s, nb - 1)
        for bi in np.unique(blocks[:, 0]):
            plane = sign_blocks[bi][np.ix_(bmap, bmap)]
            x0, x1 = bi * s, (r if bi == nb - 1 else (bi + 1) * s)
            sub = sv.vol[x0:x1]
            np.copyto(sub, values[plane + 1][None], where=np.isnan(sub) & (plane != 0)[None])
    if np.isnan(sv.vol).any():  # every corner lies in an unrefined block or an evaluated cell
        raise RuntimeError("coarse-to-fine left corners without a value; this is a bug in extract.py")


def _repair(sv: _SparseVolume, level: np.float32) -> tuple[int, int]:
    """Evaluate every cell that changes sign and touches a placeholder, until none is left.

    Known corners hold true values, so a cell whose corners are all known is a cell of the
    dense surface; the dense surface passes from such a cell to its neighbour through a
    shared face whose (known) corners change sign, so the neighbour is found here too.
    Hence every connected piece of the dense surface with one evaluated cell comes out
    whole and identical. Returns (corners evaluated, rounds).
    """
    r = sv.r
    found = []
    for x0 in range(0, r - 1, 32):  # slabs keep the boolean temporaries small at 512^3
        p, u = sv.vol[x0 : x0 + 33] > level, ~sv.known[x0 : x0 + 33]
        hit = _cell_reduce(p, np.logical_or) & ~_cell_reduce(p, np.logical_and) & _cell_reduce(u, np.logical_or)
        cells = np.argwhere(hit)
        cells[:, 0] += x0
        found.append(cells)
    cells = np.concatenate(found)
    rounds = extra = 0
    while len(cells):
        rounds += 1
        ijk = sv.request(sv.lin(cells[:, None, :] + _CORNERS), desc="sdf repair")
        extra += len(ijk)
        cand = (ijk[:, None, :] - _CORNERS).reshape(-1, 3)
        cand = cand[((cand >= 0) & (cand <= r - 2)).all(1)]
        cand = np.stack(np.unravel_index(np.unique(sv.lin(cand)), sv.shape), axis=1)
        corners = sv.lin(cand[:, None, :] + _CORNERS)
        pos = sv.flat[corners] > level
        cells = cand[pos.any(1) & ~pos.all(1) & ~sv.kflat[corners].all(1)]
    return extra, rounds


# Which of a block's 27 lattice points (_LATTICE order) are the 8 corners of each of its
# 8 children (8 children x 8 corners), and which lattice points are the block's own corners.
_CHILD_CORNERS = ((_CORNERS[:, None, :] + _CORNERS[None]) @ np.array([9, 3, 1])).astype(np.int64)
_BLOCK_CORNERS = (2 * _CORNERS) @ np.array([9, 3, 1])
_SPLIT_PER_PASS = 1 << 14  # bounds the (P, 27, 8) float64 temporaries to ~28 MB


def _split_children(sv: _SparseVolume, parents: np.ndarray, *, s: int, margin: float, level: np.float32,
                    safety: float, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate only the children (stride ``s``) of the refined ``parents`` that may hold the surface.

    A lattice point ``x`` of a parent is proven above ``level + margin`` when one of the
    parent's (known) corners ``c`` has ``f(c) - level - safety * |x - c| > margin`` (below
    likewise): a field with that Lipschitz constant cannot get closer on the way. A child
    whose 8 corners are all known or proven on one side, by more than ``margin``, cannot
    hold the surface, exactly as an unrefined block (``margin`` is the child's half diagonal
    times ``safety``; 0 for cells, which have no interior). Only the other children's corners
    are evaluated: at the last level that skips ~40 % of a full 3x3x3 lattice per parent.
    Parents clipped by the grid's far end are evaluated whole.

    Returns (proven children (M, 3), their signs (M,) int8, the other children (K, 3)).
    """
    if not len(parents):
        empty = np.zeros((0, 3), dtype=np.int64)
        return empty, np.zeros(0, dtype=np.int8), empty
    r = sv.r
    # Distances from the 27 lattice points to the 8 parent corners; the 1e-5 margin absorbs
    # float32 rounding of the values and the last-bit unevenness of linspace axes.
    offsets = (_LATTICE[:, None, :] - 2 * _CORNERS[None]) * s * np.asarray(spacing, dtype=np.float64)
    slack = safety * np.linalg.norm(offsets, axis=-1) * (1 + 1e-5) + margin  # (27, 8)
    whole = ((parents + 1) * 2 * s <= r - 1).all(1)  # the parent's lattice lies inside the grid
    proven, signs, rest, needed = [], [], [], []
    for a in range(0, len(parents), _SPLIT_PER_PASS):
        par, inner = parents[a : a + _SPLIT_PER_PASS], whole[a : a + _SPLIT_PER_PASS]
        lin = sv.lin(np.minimum(par[:, None, :] * 2 * s + _LATTICE * s, r - 1))  # (P, 27)
        val, known = sv.flat[lin], sv.kflat[lin]
        pval = val[:, _BLOCK_CORNERS].astype(np.float64) - float(level)  # (P, 8), all known
        above = (pval[:, None, :] > slack).any(-1)
        below = (-pval[:, None, :] > slack).any(-1)
        sign = np.where(above & ~below, 1, np.where(below & ~above, -1, 0)).astype(np.int8)
        sign[~inner] = 0
        d = val.astype(np.float64) - float(level)  # known values decide themselves
        sign = np.where(known, np.where(d > margin, 1, np.where(-d > margin, -1, 0)).astype(np.int8), sign)
        corner_sign = sign[:, _CHILD_CORNERS]  # (P, 8 children, 8 corners)
        safe = (corner_sign == corner_sign[..., :1]).all(-1) & (corner_sign[..., 0] != 0)
        children = par[:, None, :] * 2 + _CORNERS  # (P, 8, 3)
        exists = (children * s < r - 1).all(-1)
        proven.append(children[safe & exists])
        signs.append(corner_sign[..., 0][safe & exists])
        open_ = ~safe & exists
        rest.append(children[open_])
        need = np.zeros(lin.shape, dtype=bool)
        for k in range(8):
            need[:, _CHILD_CORNERS[k]] |= open_[:, k : k + 1]
        needed.append(lin[need])
    sv.request(np.concatenate(needed), desc=f"sdf c2f s={s}")
    return np.concatenate(proven), np.concatenate(signs), np.concatenate(rest)


def _coarse_to_fine_volume(
    field: _GridField, r: int, *, level: np.float32, safety: float, half_diag: float, coarse_stride: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(R, R, R) float32 volume (true values where the surface may be, sign placeholders
    elsewhere) and the (R, R, R) bool mask of true values."""
    s = _default_stride(r) if coarse_stride is None else coarse_stride
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 or s & (s - 1):
        raise ValueError(f"coarse_stride must be a power of two >= 1, got {coarse_stride!r}")
    sv = _SparseVolume(field, r)
    nb = -(-(r - 1) // s)
    blocks = np.stack(np.meshgrid(*(np.arange(nb),) * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    sv.request(sv.lin(np.minimum((blocks[:, None, :] + _CORNERS) * s, r - 1)), desc=f"sdf c2f s={s}")
    unrefined = []
    while s > 1:
        vals = sv.flat[sv.lin(np.minimum((blocks[:, None, :] + _CORNERS) * s, r - 1))]
        pos = vals > level
        all_pos = pos.all(1)
        refine = (pos.any(1) & ~all_pos) | (np.abs(vals - level).min(1) <= safety * s * half_diag)
        unrefined.append((s, blocks[~refine], np.where(all_pos[~refine], 1, -1).astype(np.int8)))
        parents = blocks[refine]
        s //= 2
        # Cells (s == 1) have no interior: only their corners' signs matter.
        margin = safety * s * half_diag if s > 1 else 0.0
        proven, signs, blocks = _split_children(
            sv, parents, s=s, margin=margin, level=level, safety=safety, spacing=field.grid.spacing
        )
        unrefined.append((s, proven, signs))
    _fill_placeholders(sv, unrefined, level)
    extra, rounds = _repair(sv, level)
    if extra:
        log.warning(
            "coarse-to-fine: the field is steeper than safety=%g allows; the repair pass evaluated %d more "
            "corners in %d rounds (raise safety if small surface pieces go missing)", safety, extra, rounds,
        )
    return sv.vol, sv.known
