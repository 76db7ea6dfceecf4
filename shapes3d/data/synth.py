"""Built-in synthetic dataset: seeded parametric shape families with exact analytic SDFs.

Each family (chair, table, lamp, mug, ...) is a CSG composition of analytic primitives
(:mod:`shapes3d.data.shapes_sdf`) driven by a small table of independent parameters
drawn uniformly from ranges, plus a pose: a rotation ``yaw`` about the up axis z and a
uniform ``scale``. Shapes fit in ``[-1, 1]^3`` before the pose. Because the SDF is known
in closed form (negative inside), every mesh comes with exact ground truth, rebuilt from
the JSON parameters written beside it.

Meshes are extracted with marching cubes on a corner :class:`~shapes3d.geometry.conventions.Grid`
around the shape with a margin of empty cells, so the surface never touches the grid
boundary and every mesh is closed (watertight).
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh
from skimage import measure

from shapes3d.data import synth_families
from shapes3d.data.shapes_sdf import rotate_z
from shapes3d.errors import CorruptFileError, MissingFileError
from shapes3d.geometry.conventions import Grid
from shapes3d.utils.io import atomic_write, atomic_write_text
from shapes3d.utils.progress import progress

logger = logging.getLogger(__name__)

# Independent parameters of each family, sampled uniformly: float ranges (lo, hi) or
# integer ranges (lo, hi) inclusive (choices such as "round legs or square legs").
# Sizes are in the family's own frame, which fits in [-1, 1]^3 (checked by a test).
PARAM_RANGES: dict[str, dict[str, tuple]] = {
    "chair": {
        "seat_w": (0.7, 1.0), "seat_d": (0.65, 0.95), "seat_h": (0.75, 0.95), "seat_t": (0.08, 0.14),
        "leg_r": (0.04, 0.07), "leg_inset": (0.0, 0.06), "round_legs": (0, 1),
        "back_h": (0.7, 0.95), "back_t": (0.08, 0.12), "back_tilt": (0.0, 0.25), "back_frame": (0, 1),
        "arms": (0, 1), "arm_h": (0.2, 0.3),
    },
    "table": {
        "top_w": (1.4, 1.95), "top_d": (0.8, 1.6), "top_t": (0.06, 0.12), "height": (0.8, 1.25),
        "corner": (0.0, 1.0), "leg_r": (0.04, 0.08), "leg_inset": (0.02, 0.12), "round_legs": (0, 1),
        "pedestal": (0, 1),
    },
    "lamp": {
        "height": (1.6, 1.95), "base_r": (0.3, 0.5), "base_t": (0.06, 0.12), "pole_r": (0.04, 0.065),
        "shade_r": (0.45, 0.7), "shade_top": (0.5, 1.0), "shade_h": (0.35, 0.6), "shade_t": (0.06, 0.08),
        "bulb_r": (0.08, 0.13),
    },
    "mug": {
        "radius": (0.4, 0.62), "height": (0.9, 1.5), "wall_t": (0.06, 0.1), "bottom_t": (0.08, 0.14),
        "handle_frac": (0.45, 0.7), "handle_r": (0.06, 0.09), "handle_z": (-0.05, 0.05),
    },
    "bottle": {
        "body_r": (0.28, 0.45), "body_h": (0.7, 1.0), "shoulder_h": (0.2, 0.4), "shoulder_e": (1.0, 3.0),
        "neck_r": (0.09, 0.15), "neck_h": (0.2, 0.4), "lip_dr": (0.015, 0.04), "lip_h": (0.04, 0.08),
        "round": (0.01, 0.03),
    },
    "bowl": {
        "radius": (0.75, 0.98), "wall_t": (0.06, 0.09), "rim": (-0.35, 0.05), "flat": (0.8, 0.95),
        "bottom_t": (0.06, 0.1), "foot": (0, 1), "foot_h": (0.05, 0.1),
    },
    "ring": {"major_r": (0.55, 0.78), "half_w": (0.06, 0.18), "half_h": (0.06, 0.25), "roundness": (0.2, 1.0)},
    "rocket": {
        "body_r": (0.14, 0.24), "body_h": (0.8, 1.1), "nose_h": (0.3, 0.5), "nose_e": (1.0, 2.5),
        "nozzle_h": (0.08, 0.18), "nozzle_r": (0.6, 0.9), "n_fins": (3, 4), "fin_span": (0.18, 0.35),
        "fin_h": (0.25, 0.45), "fin_sweep": (0.0, 0.2), "fin_t": (0.06, 0.09),
    },
    "sofa": {
        "width": (1.5, 1.95), "depth": (0.75, 1.0), "seat_h": (0.35, 0.5), "back_h": (0.3, 0.55),
        "back_t": (0.15, 0.28), "arm_w": (0.1, 0.22), "arm_h": (0.1, 0.28), "leg_h": (0.04, 0.1),
        "round": (0.03, 0.07),
    },
    "bed": {
        "width": (0.9, 1.5), "length": (1.6, 1.95), "leg_h": (0.04, 0.1), "frame_top": (0.2, 0.35),
        "mattress_t": (0.12, 0.22), "head_h": (0.35, 0.7), "head_t": (0.08, 0.12), "foot_h": (0.05, 0.35),
        "pillow": (0, 1),
    },
    "monitor": {
        "screen_w": (1.3, 1.9), "screen_h": (0.75, 1.1), "screen_t": (0.06, 0.08), "back_t": (0.04, 0.12),
        "back_frac": (0.5, 0.8), "neck_h": (0.15, 0.4), "neck_w": (0.08, 0.2), "neck_t": (0.06, 0.09),
        "base_w": (0.4, 0.8), "base_d": (0.3, 0.5), "base_t": (0.06, 0.08), "round": (0.01, 0.025),
    },
}
# Pose jitter shared by all families: yaw about +z, then uniform scale.
_POSE: dict[str, tuple] = {"yaw": (0.0, 2.0 * math.pi), "scale": (0.85, 1.0)}

FAMILIES: tuple[str, ...] = tuple(PARAM_RANGES)
"""Names of the built-in shape families, in dataset order."""

FORMATS: tuple[str, ...] = ("off", "ply", "obj", "stl")
"""Mesh file formats :func:`write_dataset` can write."""

_COARSE = Grid.cube(25, bound=1.8)  # holds any posed shape: |xy| <= sqrt(2), scale <= 1
_COARSE_POINTS = _COARSE.points()
_PAD_CELLS = 3  # empty cells between the surface's bounding box and the grid boundary
_CHUNK = 1 << 16  # points per SDF evaluation: bounds temporaries at high resolutions


def _check_family(family: str) -> None:
    if family not in PARAM_RANGES:
        raise ValueError(f"unknown shape family {family!r}; expected one of {', '.join(FAMILIES)}")


def _param_keys(family: str) -> tuple[str, ...]:
    return (*PARAM_RANGES[family], *_POSE)


@dataclass(frozen=True)
class SynthShape:
    """One synthetic shape: its family and every number needed to rebuild its SDF.

    ``params`` is a flat JSON-serialisable dict of floats/ints: the family's parameters
    (see :data:`PARAM_RANGES`) plus the pose ``yaw`` (radians about +z) and ``scale``. It is
    validated and copied on construction, so a shape never shares it with the caller.
    """

    family: str
    params: dict = field(compare=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _validated_params(self.family, self.params))

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """Analytic signed distance, negative inside: points (N, 3) -> (N,) float64.

        The sign is exact; the magnitude is a lower bound of the distance to the surface
        (exact near simple parts), and the function is 1-Lipschitz.
        """
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points must have shape (N, 3), got {p.shape}")
        out = np.empty(len(p))
        for start in range(0, len(p), _CHUNK):
            out[start : start + _CHUNK] = self._sdf_chunk(p[start : start + _CHUNK])
        return out

    def _sdf_chunk(self, p: np.ndarray) -> np.ndarray:
        s = self.params["scale"]
        local = rotate_z(p, -self.params["yaw"]) / s
        return s * synth_families.FAMILY_SDFS[self.family](local, self.params)

    def mesh_grid(self, *, resolution: int = 64) -> Grid:
        """The cubic corner grid (R, R, R) that :meth:`mesh` samples: the shape's bounding box plus a margin.

        A coarse pass finds every sample within half a coarse diagonal of the surface;
        since the SDF is 1-Lipschitz, the coarse sample nearest to any surface point is one
        of them, so their box grown by half a coarse cell holds the whole shape.
        """
        if int(resolution) != resolution or resolution < 2 * _PAD_CELLS + 4:
            raise ValueError(f"resolution must be an integer >= {2 * _PAD_CELLS + 4}, got {resolution!r}")
        step = _COARSE.spacing
        near = (self.sdf(_COARSE_POINTS) <= 0.5 * np.linalg.norm(step)).reshape(_COARSE.shape)
        idx = np.argwhere(near)
        if len(idx) == 0:
            raise ValueError(f"{self.family} shape with params {self.params} is empty")
        lo_i, hi_i = idx.min(axis=0), idx.max(axis=0)
        if lo_i.min() == 0 or hi_i.max() == _COARSE.resolution - 1:
            raise ValueError(f"{self.family} shape does not fit in [-{_COARSE.hi[0]}, {_COARSE.hi[0]}]^3")
        lo, hi = _COARSE.index_to_world(lo_i - 0.5), _COARSE.index_to_world(hi_i + 0.5)
        centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2
        # Choose the spacing so that exactly _PAD_CELLS cells lie beyond the box on each side.
        half_grid = half * (resolution - 1) / (resolution - 1 - 2 * _PAD_CELLS)
        return Grid(int(resolution), tuple(centre - half_grid), tuple(centre + half_grid))

    def mesh(self, *, resolution: int = 64) -> trimesh.Trimesh:
        """Watertight triangle mesh of the zero level set, via marching cubes on :meth:`mesh_grid`.

        Vertices (V, 3) are in world coordinates; faces (F, 3) wind outward.
        """
        grid = self.mesh_grid(resolution=resolution)
        values, exact = _sample_near_surface(self.sdf, grid)
        if values[[0, -1]].min() <= 0 or values[:, [0, -1]].min() <= 0 or values[:, :, [0, -1]].min() <= 0:
            raise RuntimeError(f"{self.family} surface touches the mesh grid boundary (bug in mesh_grid)")
        if values.min() >= 0:
            raise ValueError(f"resolution {resolution} is too coarse: no grid sample falls inside this {self.family}")
        # Cells away from the exactly evaluated samples hold no surface; masking them out
        # only saves time.
        verts, faces, _, _ = measure.marching_cubes(values, 0.0, mask=exact)
        vertices = grid.index_to_world(verts.astype(np.float64))
        return trimesh.Trimesh(vertices, faces.astype(np.int64), process=False)


def _sample_near_surface(sdf, grid: Grid, *, coarsest: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """SDF values (R, R, R) on ``grid``, exact wherever marching cubes reads them, and the
    mask (R, R, R) of samples evaluated exactly.

    Coarse to fine over blocks of ``b``^3 samples (b = 8, 4, 2, 1): the SDF is evaluated
    at the centre of each candidate block. Where that value exceeds the distance to the
    block's farthest sample plus one cell diagonal, the 1-Lipschitz bound guarantees that
    every sample of the block has the same sign and lies more than a cell diagonal from
    the surface, so no cell that marching cubes triangulates has it as a corner: the
    block keeps the centre value. Only the other blocks are split further, so about a
    tenth of the samples are evaluated at R=64.
    """
    r = grid.resolution
    h = float(grid.spacing.max())
    b = coarsest
    nb = -(-r // b)
    values = np.zeros((nb,) * 3)
    candidates = np.ones((nb,) * 3, dtype=bool)
    while b > 1:
        idx = np.argwhere(candidates)
        # Centres of partial blocks at the far end may lie outside the grid; the reach
        # below still bounds the distance to the samples they do hold.
        centre_vals = sdf(grid.index_to_world(idx * b + (b - 1) / 2.0))
        values[candidates] = centre_vals
        near = np.zeros_like(candidates)
        near[candidates] = np.abs(centre_vals) <= np.sqrt(3.0) * ((b - 1) / 2.0 + 1.0) * h
        b //= 2
        nb = -(-r // b)
        values, candidates = _upsample2(values, nb), _upsample2(near, nb)
    values[candidates] = sdf(grid.index_to_world(np.argwhere(candidates).astype(np.float64)))
    return values, candidates


def _upsample2(a: np.ndarray, size: int) -> np.ndarray:
    """Repeat each entry of a cubic array twice per axis, cropped to ``size``^3."""
    n = a.shape[0]
    # One broadcast copy instead of three chained repeats.
    up = np.broadcast_to(a[:, None, :, None, :, None], (n, 2, n, 2, n, 2)).reshape(2 * n, 2 * n, 2 * n)
    return up[:size, :size, :size]


def _validated_params(family: str, params: Mapping) -> dict:
    _check_family(family)
    if not isinstance(params, Mapping):
        raise ValueError(f"params for {family!r} must be a mapping, got {type(params).__name__}")
    expected = set(_param_keys(family))
    missing, unexpected = sorted(expected - set(params)), sorted(set(params) - expected)
    if missing or unexpected:
        raise ValueError(f"params for {family!r}: missing {missing}, unexpected {unexpected}")
    out = {}
    for key in _param_keys(family):
        value = params[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"params for {family!r}: {key} must be a finite number, got {value!r}")
        out[key] = value
    if out["scale"] <= 0:
        raise ValueError(f"params for {family!r}: scale must be > 0, got {out['scale']!r}")
    return out


def shape_from_params(family: str, params: Mapping) -> SynthShape:
    """Rebuild a shape from its family and parameters (e.g. read back from JSON).

    Raises ValueError naming the family, and the missing, unexpected or non-finite keys.
    """
    return SynthShape(family, params)


def sample_shape(family: str, rng: np.random.Generator) -> SynthShape:
    """Draw one shape of ``family`` with random proportions and pose from ``rng``."""
    _check_family(family)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    params: dict = {}
    for key, (lo, hi) in {**PARAM_RANGES[family], **_POSE}.items():
        if isinstance(lo, int) and isinstance(hi, int):
            params[key] = int(rng.integers(lo, hi + 1))
        else:
            params[key] = float(rng.uniform(lo, hi))
    return SynthShape(family, params)


def shape_rng(seed: int, family: str, index: int) -> np.random.Generator:
    """The generator for shape ``index`` of ``family``: independent of other families and indices."""
    # crc32, not hash(): Python salts str hashes per process.
    return np.random.default_rng([int(seed), zlib.crc32(family.encode()), int(index)])


def load_synth_params(json_path: str | os.PathLike) -> SynthShape:
    """Read the ``.json`` written beside a dataset mesh and rebuild its :class:`SynthShape`."""
    path = Path(json_path)
    if not path.is_file():
        raise MissingFileError(path)
    try:
        record = json.loads(path.read_text())
        return shape_from_params(record["family"], record["params"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise CorruptFileError(path, f"not a synthetic shape record: {err}") from err


def _off_text(mesh: trimesh.Trimesh) -> str:
    """OFF with fixed formatting, so the same mesh always gives the same bytes."""
    v, f = mesh.vertices, mesh.faces
    # One %-format over all numbers: ~5x faster than np.savetxt, which formats row by row.
    # Nine decimals keep distinct marching-cubes vertices distinct after a reload.
    return (
        f"OFF\n{len(v)} {len(f)} 0\n"
        + ("%.9f %.9f %.9f\n" * len(v)) % tuple(v.ravel().tolist())
        + ("3 %d %d %d\n" * len(f)) % tuple(f.ravel().tolist())
    )


def _write_mesh(mesh: trimesh.Trimesh, path: Path, fmt: str) -> None:
    if fmt == "off":
        atomic_write_text(path, _off_text(mesh))
        return
    data = mesh.export(file_type=fmt)
    with atomic_write(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def write_dataset(
    out_dir: str | os.PathLike,
    *,
    per_class: int,
    seed: int = 0,
    families: Sequence[str] = FAMILIES,
    test_fraction: float = 0.2,
    resolution: int = 64,
    fmt: str = "off",
) -> Path:
    """Write a ModelNet-style synthetic dataset and return ``out_dir``.

    Layout: ``<out>/<family>/{train,test}/<family>_0001.<fmt>`` with a ``.json`` beside
    each mesh (family, params, seed, index; see :func:`load_synth_params`), and
    ``<out>/manifest.csv`` with columns ``class,split,path`` (path relative to ``out``).
    Indices run 1..per_class per family; the last ``round(per_class * test_fraction)``
    are the test split. Shape ``i`` of a family depends only on (seed, family, i), so the
    output is byte-identical for the same arguments and adding families changes nothing
    else. Existing files at those paths are replaced; other files are left alone.
    """
    families = tuple(families)
    for fam in families:
        _check_family(fam)
    if len(set(families)) != len(families) or not families:
        raise ValueError(f"families must be a non-empty list without repeats, got {list(families)}")
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    if fmt not in FORMATS:
        raise ValueError(f"unsupported mesh format {fmt!r}; expected one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    per_class = int(per_class)
    n_test = int(round(per_class * test_fraction))
    jobs = [(fam, i) for fam in families for i in range(1, per_class + 1)]
    rows = ["class,split,path"]
    for fam, i in progress(jobs, total=len(jobs), desc="synthetic shapes", unit="shape"):
        split = "test" if i > per_class - n_test else "train"
        shape = sample_shape(fam, shape_rng(seed, fam, i))
        stem = out / fam / split / f"{fam}_{i:04d}"
        _write_mesh(shape.mesh(resolution=resolution), stem.with_suffix(f".{fmt}"), fmt)
        record = {"family": fam, "params": shape.params, "seed": int(seed), "index": i, "resolution": resolution}
        atomic_write_text(stem.with_suffix(".json"), json.dumps(record, indent=2, sort_keys=True) + "\n")
        rows.append(f"{fam},{split},{stem.relative_to(out).as_posix()}.{fmt}")
    atomic_write_text(out / "manifest.csv", "\n".join(rows) + "\n")
    logger.debug("wrote %d synthetic shapes (%d families) to %s", len(jobs), len(families), out)  # callers print it
    return out

