"""Mesh extraction from any signed-distance callable: dense or coarse-to-fine marching cubes.

``sdf_fn`` maps points (N, 3) to values (N,), negative inside. It is either a numpy
callable (receives float64 points) or a torch callable / ``nn.Module`` (receives float32
points on ``device``, evaluated under ``torch.no_grad()``). Geometry never imports models.

The grid is a corners :class:`~shapes3d.geometry.conventions.Grid` (R samples per axis,
``±bound`` exact); marching cubes runs in index space and vertices are mapped to world
with ``Grid.index_to_world``.

The coarse-to-fine mode and its guarantee are described in :mod:`shapes3d.geometry.coarse_to_fine`.

**Whole meshes.** A field that is still inside (<= level) on the box's faces would be cut open there. By default
(``close=True``) the volume is padded outside the box with a large positive value, so such surfaces close with a
cap lying on the box face; ``ExtractedMesh.touches_box`` counts the box corners that were inside (0 for a shape
well within the box) and a warning names them, since a cap usually means the box (``bound``) is too small.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import trimesh
from skimage.measure import marching_cubes

from shapes3d.errors import Shapes3DError
from shapes3d.geometry.coarse_to_fine import _coarse_to_fine_volume, surface_cells_mask
from shapes3d.geometry.conventions import Grid
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)

Mode = Literal["coarse_to_fine", "dense"]
DEFAULT_SAFETY = 1.0


class NonFiniteFieldError(Shapes3DError, ValueError):
    """The signed-distance callable returned NaN or infinity."""


@dataclass(frozen=True)
class ExtractedMesh:
    """Result of :func:`extract_mesh`.

    ``mesh``: the surface in world coordinates (0 vertices when ``empty``).
    ``empty``: True when the field has no zero crossing in the box; ``reason`` says why.
    ``n_evaluated``: how many grid corners ``sdf_fn`` was evaluated at.
    ``seconds``: wall time of the whole extraction.
    """

    mesh: trimesh.Trimesh
    empty: bool
    reason: str
    n_evaluated: int
    seconds: float
    grid: Grid
    touches_box: int = 0  #: grid corners on the box faces at or below level (closed by caps when ``close``)


class _GridField:
    """Evaluates ``sdf_fn`` at integer corner indices of ``grid``, in chunks.

    World coordinates come from a lookup into ``grid.axes()``, so the same index gives
    bit-identical points whichever mode asks for it.
    """

    def __init__(self, sdf_fn: Callable, grid: Grid, *, device, chunk_size: int, dtype: torch.dtype) -> None:
        self.fn = sdf_fn
        self.grid = grid
        self.axes = grid.axes()
        self.chunk_size = chunk_size
        self.device = device
        self.dtype = dtype
        self.n_evaluated = 0

    def world(self, idx: np.ndarray) -> np.ndarray:
        """Integer indices (N, 3) -> world points (N, 3) float64."""
        return np.stack([self.axes[a][idx[:, a]] for a in range(3)], axis=1)

    def _eval_chunk(self, pts: np.ndarray) -> np.ndarray:
        n = len(pts)
        if self.device is None:
            out = self.fn(pts)
            if isinstance(out, torch.Tensor):
                out = out.detach().float().cpu().numpy()
        else:
            with torch.no_grad():
                t = torch.from_numpy(pts).to(device=self.device, dtype=self.dtype)
                out = self.fn(t)
                if not isinstance(out, torch.Tensor):
                    raise TypeError(f"sdf_fn must return a torch.Tensor when device is set, got {type(out).__name__}")
                out = out.detach().float().cpu().numpy()
        out = np.asarray(out)
        if out.size != n or out.ndim > 2:
            raise ValueError(f"sdf_fn must map ({n}, 3) points to ({n},) values, got shape {out.shape}")
        out = out.reshape(n).astype(np.float32, copy=False)
        bad = ~np.isfinite(out)
        if bad.any():
            first = pts[np.argmax(bad)]
            raise NonFiniteFieldError(
                f"sdf_fn returned {int(bad.sum())} non-finite values (NaN/inf) among {n} points, "
                f"first at {first.tolist()}; expected finite signed distances"
            )
        return out

    def __call__(self, idx: np.ndarray, *, desc: str = "sdf") -> np.ndarray:
        """Evaluate at integer indices (N, 3) -> values (N,) float32."""
        n = len(idx)
        out = np.empty(n, dtype=np.float32)
        starts = range(0, n, self.chunk_size)
        for a in progress(starts, total=len(starts), desc=desc, unit="chunk", leave=False):
            sl = slice(a, min(a + self.chunk_size, n))
            out[sl] = self._eval_chunk(self.world(idx[sl]))
        self.n_evaluated += n
        return out


def _dense_volume(field: _GridField, r: int) -> np.ndarray:
    """Evaluate every corner; never materialises all R**3 points at once."""
    vol = np.empty((r, r, r), dtype=np.float32)
    flat = vol.reshape(-1)
    total = r**3
    step = field.chunk_size
    starts = range(0, total, step)
    for a in progress(starts, total=len(starts), desc="sdf dense", unit="chunk", leave=False):
        lin = np.arange(a, min(a + step, total), dtype=np.int64)
        idx = np.stack(np.unravel_index(lin, vol.shape), axis=1)
        flat[a : a + len(lin)] = field._eval_chunk(field.world(idx))
    field.n_evaluated += total
    return vol


# Corner offsets of a cell/block (8, 3) and the 3x3x3 lattice of a block's 8 children (27, 3).
def _resolve_device(sdf_fn: Callable, device):
    if device is not None:
        return torch.device(device)
    if isinstance(sdf_fn, torch.nn.Module):
        p = next(sdf_fn.parameters(), None)
        return p.device if p is not None else torch.device("cpu")
    return None


def _empty_mesh() -> trimesh.Trimesh:
    return trimesh.Trimesh(vertices=np.zeros((0, 3)), faces=np.zeros((0, 3), dtype=np.int64), process=False)


def _checked_grid(sdf_fn, *, resolution, bound, box, mode, chunk_size, level, safety) -> Grid:
    """Validate :func:`extract_mesh`'s options (one message per fault) and return its corners grid."""
    if not callable(sdf_fn):
        raise TypeError(f"sdf_fn must be callable, got {type(sdf_fn).__name__}")
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}")
    if mode not in ("coarse_to_fine", "dense"):
        raise ValueError(f"mode must be 'coarse_to_fine' or 'dense', got {mode!r}")
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if not np.isfinite(level):
        raise ValueError(f"level must be finite, got {level!r}")
    if not safety > 0:
        raise ValueError(f"safety must be > 0, got {safety!r}")
    if box is None:
        if not bound > 0:
            raise ValueError(f"bound must be > 0, got {bound!r}")
        return Grid.cube(int(resolution), float(bound))
    return Grid(int(resolution), tuple(box[0]), tuple(box[1]))


#: Value of the padding outside the box: so large that a closing cap's vertices land exactly on the box corners
#: (marching cubes interpolates (level - v) / (PAD - v), which rounds to 0 for any |v| < 1e13).
PAD_VALUE = 1.0e30


def _boundary_inside(vol: np.ndarray, level: np.float32) -> int:
    """How many corners on the volume's six faces are at or below ``level``."""
    inside = vol <= level
    inner = inside[1:-1, 1:-1, 1:-1].sum() if min(vol.shape) > 2 else 0
    return int(inside.sum() - inner)


def _no_crossing_reason(vol: np.ndarray, known: np.ndarray | None, level: float) -> str:
    values = vol if known is None else vol[known]  # placeholders would fake the range
    lo, hi = float(values.min()), float(values.max())
    side = "above" if lo > level else "at or below"
    reason = f"no zero crossing: every value is {side} level {level} (min {lo:.4g}, max {hi:.4g})"
    if known is not None:
        reason += f" over the {len(values)} corners evaluated"
    return reason


def extract_mesh(
    sdf_fn: Callable,
    *,
    resolution: int = 256,
    bound: float = 1.0,
    box: tuple | None = None,
    mode: Mode = "coarse_to_fine",
    level: float = 0.0,
    chunk_size: int = 16384,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    safety: float = DEFAULT_SAFETY,
    coarse_stride: int | None = None,
    close: bool = True,
) -> ExtractedMesh:
    """Extract the ``level`` set of ``sdf_fn`` with marching cubes on an R**3 corners grid.

    ``sdf_fn``: points (N, 3) -> values (N,) (or (N, 1)), negative inside. Called with
    float64 numpy arrays, unless ``device`` is given or ``sdf_fn`` is an ``nn.Module``
    (then tensors of ``dtype`` on ``device`` or the module's device, under no_grad).
    ``resolution``: R corners per axis over ``[-bound, bound]^3``, or over ``box=(lo, hi)``.
    ``mode``: ``"dense"`` evaluates all R**3 corners; ``"coarse_to_fine"`` only blocks that
    may hold the surface (see module doc), giving the same surface for fields whose
    Lipschitz constant is at most ``safety`` (exact SDF: 1), and for steeper fields (networks)
    whenever a repair pass reaches the surface piece. ``coarse_stride``: power of two, the
    block size of the first level (default: 16 to 32 blocks per axis). ``chunk_size``:
    points per ``sdf_fn`` call (16k suits CPU inference; on GPU larger is faster).

    Faces wind outward (normals point to increasing values). A field with no crossing gives
    ``empty=True`` with a reason and a logged warning; NaN/inf raises NonFiniteFieldError.
    ``close``: pad the volume outside the box with positive values so a surface reaching the box closes there
    (see the module notes; ``touches_box`` reports it either way).
    """
    t0 = time.perf_counter()
    grid = _checked_grid(sdf_fn, resolution=resolution, bound=bound, box=box, mode=mode, chunk_size=chunk_size,
                         level=level, safety=safety)
    r = int(grid.resolution)
    field = _GridField(sdf_fn, grid, device=_resolve_device(sdf_fn, device), chunk_size=int(chunk_size), dtype=dtype)
    level32 = np.float32(level)

    if mode == "dense":
        vol, known = _dense_volume(field, r), None
    else:
        half_diag = 0.5 * float(np.linalg.norm(grid.spacing))
        vol, known = _coarse_to_fine_volume(
            field, r, level=level32, safety=float(safety), half_diag=half_diag, coarse_stride=coarse_stride
        )

    mask = surface_cells_mask(vol, level32)
    if not mask.any():  # a field inside everywhere is no shape either: nothing to close
        reason = _no_crossing_reason(vol, known, level)
        log.warning("extract_mesh: %s; returning an empty mesh", reason)
        return ExtractedMesh(_empty_mesh(), True, reason, field.n_evaluated, time.perf_counter() - t0, grid)
    touches = _boundary_inside(vol, level32)
    shift = 0
    if touches:
        log.warning("extract_mesh: the field is inside at %d corners of the box faces (box %s..%s); %s", touches,
                    grid.lo, grid.hi, "closing the surface at the box" if close else "the surface is cut open there")
        if close:
            vol = np.pad(vol, 1, constant_values=np.float32(level32 + PAD_VALUE))
            mask = surface_cells_mask(vol, level32)
            shift = 1

    del known
    # skimage flips its right-handed faces for "descent"; with values increasing
    # outward (negative inside) that is the choice whose normals point outside.
    verts, faces, _, _ = marching_cubes(
        vol, level=float(level32), gradient_direction="descent", allow_degenerate=False, mask=mask
    )
    del vol, mask
    if len(faces) == 0:
        reason = "no surface: the only crossings are degenerate (values exactly at level)"
        log.warning("extract_mesh: %s; returning an empty mesh", reason)
        return ExtractedMesh(_empty_mesh(), True, reason, field.n_evaluated, time.perf_counter() - t0, grid)
    world = grid.index_to_world(verts.astype(np.float64) - shift)
    mesh = trimesh.Trimesh(vertices=world, faces=faces.astype(np.int64), process=False)
    seconds = time.perf_counter() - t0
    log.info(
        "extract_mesh (%s, R=%d): %d vertices, %d faces; evaluated %d of %d corners (%.2f%%) in %.2f s",
        mode, r, len(world), len(faces), field.n_evaluated, r**3, 100.0 * field.n_evaluated / r**3, seconds,
    )
    return ExtractedMesh(mesh, False, "", field.n_evaluated, seconds, grid, touches)
