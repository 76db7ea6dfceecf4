"""The DeepSDF jobs as functions: train, fit, interpolate, extract, evaluate, and the rows ``render`` draws.

Each job takes paths and options, returns a result dataclass and writes exactly the files its
``shapes3d sdf`` command writes (atomically; names taken from shapes or files go through
:func:`~shapes3d.utils.io.safe_child`). The jobs on multi-view renders (``fit_views``, ``stylize``)
live in :mod:`shapes3d.deepsdf.view_jobs`. Nothing here prints; the CLI reports the results.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shapes3d.deepsdf.codes import code_or_none, resolve_shapes, save_code, shape_code
from shapes3d.deepsdf.config import DeepSDFConfig
from shapes3d.deepsdf.fitting import FitResult, crop_observation, fit_code, fit_options, interpolate_codes
from shapes3d.deepsdf.reconstruction import depth_view_observation, extract_shape, reconstruction_metrics
from shapes3d.deepsdf.trainer import SDFTrainResult, load_deepsdf
from shapes3d.engine.jobs import check_stop_after, default_cache_dir, input_hashes, load_manifest, split_entries
from shapes3d.errors import Shapes3DError
from shapes3d.geometry.extract import DEFAULT_SAFETY
from shapes3d.utils.io import atomic_write_csv, atomic_write_text, safe_child
from shapes3d.utils.progress import progress

if TYPE_CHECKING:
    from shapes3d.data.preprocess import PreprocessReport
    from shapes3d.render.images import LabelledRow

log = logging.getLogger(__name__)

PARTIAL = ("none", "depth", "crop")
#: The camera of the depth view that ``fit(partial="depth"|"crop")`` observes a mesh from (unit-sphere frame).
DEPTH_CAMERA = (0.0, -2.5, 1.0)


# ----------------------------------------------------------------------------- train
@dataclass
class TrainJobResult:
    """Shapes trained on, the sampling report (computed, cached, skipped files), the training loop's result."""

    shapes: int
    sampling: PreprocessReport
    training: SDFTrainResult
    main: bool  #: this is rank 0 (under torchrun only rank 0 writes and reports)


def _entries(data, split: str | None) -> Sequence:
    """A dataset folder, manifest CSV or Manifest -> its entries of ``split`` (all when it has none; a ``*.json``
    split is a DeepSDF split file, :func:`~shapes3d.data.discovery.apply_split_file`); a sequence of entries or
    mesh paths is used as it is."""
    from shapes3d.data.discovery import Manifest, apply_split_file, is_split_file

    source = data
    if isinstance(data, (str, os.PathLike)):
        data = load_manifest(data)
    if isinstance(data, Manifest) and is_split_file(split):
        return list(apply_split_file(data, split).entries)
    if isinstance(data, Manifest):
        return split_entries(data, split, source if isinstance(source, (str, os.PathLike)) else "data")
    return list(data)


def train(cfg: DeepSDFConfig, data, out: str | Path, *, cache: str | Path | None = None, split: str | None = "train",
          resume: bool = False, stop_after: int | None = None, workers: int = 1,
          on_sampled: Callable[[int, PreprocessReport], None] | None = None, overwrite: bool = False) -> TrainJobResult:
    """Sample every mesh of ``data`` (folder, manifest CSV, Manifest or mesh paths) through the SDF cache, then
    train decoder and codes (:func:`shapes3d.deepsdf.trainer.train`: ``last.pt``, ``log.csv``, ``curves.png``,
    ``config.toml`` in ``out``).

    ``cache``: the SDF sample cache (default ``default_cache_dir("sdf")`` of :mod:`shapes3d.engine.jobs`). ``on_sampled(shapes, report)`` is called
    on rank 0 once the samples are ready, before training starts. Under torchrun rank 0 samples the meshes and the
    other ranks read its cache. A folder ``out`` holding a run is refused unless ``resume`` or ``overwrite``
    (:func:`~shapes3d.engine.run_folder.check_run_folder`), before any mesh is sampled.
    """
    from shapes3d.data.sdf_dataset import build_sdf_dataset
    from shapes3d.deepsdf.trainer import SDFTask
    from shapes3d.deepsdf.trainer import train as train_loop
    from shapes3d.engine.distributed import is_main_process, main_process_first
    from shapes3d.engine.jobs import MAX_WORKERS, check_int
    from shapes3d.engine.run_folder import check_run_folder

    check_stop_after(stop_after)
    check_int("workers", workers, 1, MAX_WORKERS)
    check_run_folder(out, resume=resume, overwrite=overwrite, epochs=cfg.train.epochs, config=cfg,
                     architecture_keys=SDFTask.architecture_keys)
    entries = _entries(data, split)
    main = is_main_process()
    with main_process_first():
        dataset, report = build_sdf_dataset(entries, cfg.samples, cache_dir=cache or default_cache_dir("sdf"),
                                            workers=workers)
    if main and on_sampled is not None:
        on_sampled(len(dataset), report)
    files = getattr(dataset, "paths", None) or dataset.names
    result = train_loop(cfg, dataset, out, resume=resume, stop_after=stop_after,
                        input_sha256=input_hashes(files, report.results))
    return TrainJobResult(len(dataset), report, result, main)


# ----------------------------------------------------------------------------- fit
@dataclass
class FitJobResult:
    """The fitted code and its files: ``code_path`` always; ``mesh_path`` and ``metrics`` (vs the input mesh, in
    the unit-sphere frame) unless the code has no surface, then ``reason`` says why."""

    label: str
    fit: FitResult
    code_path: Path
    mesh_path: Path | None = None
    metrics: dict | None = None
    reason: str = ""


def _out(folder: Path, label: str, ext: str) -> Path:
    """``folder/<label>.<ext>`` for a shape id (``04379243/1a2b`` -> ``folder/04379243/1a2b.ext``), kept inside."""
    return safe_child(folder, f"{label}.{ext}", what="shape id", nested=True)


def _partial_observation(mesh, transform, partial: str, *, seed: int):
    """One depth view of ``mesh`` (normalised by ``transform``), optionally cropped to the half z >= 0."""
    import trimesh

    unit = trimesh.Trimesh(transform.apply(mesh.vertices), mesh.faces, process=False)
    obs = depth_view_observation(unit, camera_position=DEPTH_CAMERA, seed=seed)
    if partial == "crop":
        obs = crop_observation(obs.points[obs.sdf == 0], DEPTH_CAMERA, plane_normal=(0, 0, 1), plane_offset=0.0,
                               seed=seed)
    return obs


def fit(checkpoint: str | Path, mesh: str | Path, *, partial: str = "none", out: str | Path | None = None,
        resolution: int = 128, overrides: Sequence[str] = (), bound: float = 1.0,
        safety: float = DEFAULT_SAFETY, format: str = "ply") -> FitJobResult:
    """Fit a code to ``mesh`` with the decoder frozen: from its full SDF samples, one depth view (``depth``) or
    a cropped one (``crop``). The objective is the checkpoint's (``train.clamp``, ``train.code_reg``) with its
    ``[fit]`` settings; ``overrides`` (``key=value``) change the checkpoint's config for this fit.

    Writes ``LABEL.pt`` (the code file), ``LABEL.FORMAT`` (ply, obj, off or glb) and ``LABEL.json`` (metrics) into
    ``out`` (default: ``fits/`` beside the checkpoint); LABEL is the mesh's shape id
    (:func:`~shapes3d.data.shape_ids.shape_names`: ``<synset>/<id>`` for a ShapeNet mesh, written to
    ``fits/<synset>/<id>.pt``), plus ``-depth``/``-crop`` for partial fits. ``bound``, ``safety``: the extraction
    box and trust of :func:`extract_shape`.
    """
    from shapes3d.config import apply_overrides
    from shapes3d.data.shape_ids import shape_names
    from shapes3d.geometry.export import export_mesh
    from shapes3d.geometry.io import load_mesh
    from shapes3d.geometry.normalize import Transform
    from shapes3d.geometry.sampling import sample_sdf

    if partial not in PARTIAL:
        raise ValueError(f"partial must be one of {PARTIAL}, got {partial!r}")
    checkpoint, mesh = Path(checkpoint), Path(mesh)
    model = load_deepsdf(checkpoint)
    cfg = apply_overrides(model.config, overrides)
    gt = load_mesh(mesh)
    samples = sample_sdf(gt, config=cfg.samples)  # normalised as the training shapes were
    t = Transform(tuple(samples.offset.tolist()), float(samples.scale))
    obs = samples if partial == "none" else _partial_observation(gt, t, partial, seed=cfg.fit.seed)
    res = fit_code(model.decoder, obs, **fit_options(cfg))
    out = Path(out) if out is not None else checkpoint.parent / "fits"
    label = shape_names([mesh])[0] + (f"-{partial}" if partial != "none" else "")
    code_path = save_code(_out(out, label, "pt"), res.code, t, loss=res.loss, source=str(mesh.resolve()),
                          partial=partial, label=label)
    result = FitJobResult(label, res, code_path)
    ext = extract_shape(model.decoder, res.code.detach(), resolution=resolution, transform=t, bound=bound,
                        safety=safety)
    if ext.empty:
        result.reason = ext.reason
        return result
    result.mesh_path = export_mesh(ext.mesh, _out(out, label, format))
    result.metrics = reconstruction_metrics(ext.mesh, gt, t)
    atomic_write_text(_out(out, label, "json"), json.dumps(result.metrics, indent=2))
    return result


# ----------------------------------------------------------------------------- interpolate
@dataclass
class InterpolateResult:
    """The strip image, one mesh path per step (None where the code has no surface), the endpoints' labels."""

    out: Path
    strip: Path
    meshes: list[Path | None]
    labels: tuple[str, str]

    @property
    def n_meshes(self) -> int:
        return sum(p is not None for p in self.meshes)


def interpolate(checkpoint: str | Path, a: str, b: str, *, steps: int = 5, mode: str = "slerp",
                resolution: int = 96, out: str | Path | None = None, bound: float = 1.0,
                safety: float = DEFAULT_SAFETY, format: str = "ply") -> InterpolateResult:
    """Walk from code ``a`` to code ``b`` (training shape names or indices, or code files) in ``steps`` steps,
    ``linear`` or ``slerp``; writes ``stepKK.FORMAT`` (ply, obj, off or glb) per step with a surface and
    ``strip.png`` (one column per step, labelled with its weight w from a to b; :data:`INTERP_VIEWS` shaded views
    per step as rows, at :data:`INTERP_SIZE` px) into ``out`` (default: ``interp-A-B/`` beside the checkpoint).
    Meshes stay in the decoder's frame."""
    from shapes3d.geometry.export import export_mesh

    checkpoint = Path(checkpoint)
    model = load_deepsdf(checkpoint)
    la, za, _ = shape_code(model, str(a))
    lb, zb, _ = shape_code(model, str(b))
    folder = f"interp-{la}-{lb}".replace("/", "_")
    out = Path(out) if out is not None else safe_child(checkpoint.parent, folder, what="shape names")
    columns, meshes = [], []
    for z in interpolate_codes(za, zb, steps, mode=mode):
        res = extract_shape(model.decoder, z, resolution=resolution, transform=None, bound=bound, safety=safety)
        meshes.append(None if res.empty else export_mesh(res.mesh, out / f"step{len(meshes):02d}.{format}"))
        columns.append(np.ones((INTERP_VIEWS, INTERP_SIZE, INTERP_SIZE)) if res.empty else _interp_views(res.mesh))
    strip = _write_strip(columns, out / "strip.png", (la, lb), title=f"DeepSDF {mode} interpolation {la} -> {lb} "
                                                                    f"({checkpoint.parent.name}/{checkpoint.name})")
    return InterpolateResult(out, strip, meshes, (la, lb))


INTERP_VIEWS = 3  #: shaded views per interpolation step (rows of the strip)
INTERP_SIZE = 128  #: pixels per view of the strip
INTERP_ELEVATION = 25.0


def _interp_views(mesh) -> np.ndarray:
    from shapes3d.render.images import render_rows

    return render_rows(mesh, views=INTERP_VIEWS, elevations=[INTERP_ELEVATION], size=INTERP_SIZE, up="z",
                       modes=["shaded"])[0]


def _write_strip(columns: list[np.ndarray], path: Path, labels: tuple[str, str], *, title: str) -> Path:
    """Columns (V, H, W) per step -> a sheet with views as rows and steps as columns, labelled w = k / (n - 1)."""
    from shapes3d.render.images import view_labels
    from shapes3d.render.sheet import contact_sheet

    n = len(columns)
    weights = [k / max(n - 1, 1) for k in range(n)]
    heads = [f"w={w:.2f}" + (f" ({labels[0]})" if k == 0 else f" ({labels[1]})" if k == n - 1 else "")
             for k, w in enumerate(weights)]
    tiles = np.stack([columns[k][v] for v in range(INTERP_VIEWS) for k in range(n)])
    return contact_sheet(tiles, path, cols=n, col_labels=heads, title=title,
                         row_labels=view_labels(INTERP_VIEWS, elevation=INTERP_ELEVATION))


# ----------------------------------------------------------------------------- extract
@dataclass
class ExtractedShape:
    """One extracted code: the mesh file (None when there is no surface; ``reason`` says why) and its cost."""

    label: str
    path: Path | None
    faces: int
    n_evaluated: int
    seconds: float
    reason: str = ""


@dataclass
class ExtractResult:
    out: Path
    shapes: list[ExtractedShape] = field(default_factory=list)


def extract(checkpoint: str | Path, shapes: Sequence[str] = (), *, resolution: int = 128,
            mode: str = "coarse_to_fine", format: str = "ply", out: str | Path | None = None, bound: float = 1.0,
            safety: float = DEFAULT_SAFETY) -> ExtractResult:
    """Marching cubes of training shapes (ids, indices or source files; default all) or code files, mapped back to
    their meshes' coordinates; writes ``LABEL.FORMAT`` (ply, obj, off or glb; LABEL the shape id, so ShapeNet shapes go
    to ``<synset>/<id>.ply``) into ``out`` (default: ``meshes/`` beside the checkpoint). A shape asked for twice is
    written once; two inputs with one label are an error before anything is written."""
    from shapes3d.geometry.export import export_mesh

    checkpoint = Path(checkpoint)
    model = load_deepsdf(checkpoint)
    result = ExtractResult(Path(out) if out is not None else checkpoint.parent / "meshes")
    todo = resolve_shapes(model, list(shapes) or [str(k) for k in range(len(model.names))])
    for label, code, t in progress(todo, desc="extract", unit="shape"):
        res = extract_shape(model.decoder, code_or_none(code), resolution=resolution, transform=t, mode=mode,
                            bound=bound, safety=safety)
        path = None
        if not res.empty:
            path = export_mesh(res.mesh, _out(result.out, label, format))
        result.shapes.append(ExtractedShape(label, path, len(res.mesh.faces), res.n_evaluated, res.seconds,
                                            res.reason if res.empty else ""))
    return result


# ----------------------------------------------------------------------------- evaluate
@dataclass
class EvaluateResult:
    """Per-shape scalar metrics (``metrics.csv``; ``labels`` name the rows), their ``summary`` (``summary.json``:
    mean, median and count per metric, ``n``, ``skipped``) and the shapes that could not be evaluated."""

    out: Path
    rows: list[dict]
    labels: list[str]
    summary: dict
    skipped: list[tuple[str, str]]


def evaluate(checkpoint: str | Path, *, resolution: int = 128, points: int = 30000, limit: int | None = None,
             out: str | Path | None = None, bound: float = 1.0, safety: float = DEFAULT_SAFETY) -> EvaluateResult:
    """Extract the training shapes (the first ``limit``) and compare each with its source mesh in the unit-sphere
    frame (Chamfer as DeepSDF reports it, also x10^3; F-score; normal consistency; IoU), on ``points`` surface
    points; writes ``metrics.csv`` and ``summary.json`` into ``out`` (default: ``evaluate/`` beside the checkpoint).
    Source meshes are found by the absolute paths the checkpoint stores (so any working folder works); a shape
    whose file is missing, unreadable, changed since training (content hash) or not a mesh is skipped with its
    reason, logged at once; when none is left the error lists every reason.
    """
    checkpoint = Path(checkpoint)
    model = load_deepsdf(checkpoint)
    out = Path(out) if out is not None else checkpoint.parent / "evaluate"
    rows, labels, skipped = [], [], []
    for k, name in enumerate(progress(model.names[:limit], desc="evaluate", unit="shape")):
        label, code, t = shape_code(model, str(k))
        gt, why = _source_mesh(model, k)
        if gt is None:
            log.warning("evaluate: skipping %s: %s", name, why)
            skipped.append((name, why))
            continue
        res = extract_shape(model.decoder, code_or_none(code), resolution=resolution, transform=t, bound=bound,
                            safety=safety)
        if res.empty:
            skipped.append((name, f"reconstruction has no surface ({res.reason})"))
            log.warning("evaluate: skipping %s: %s", name, skipped[-1][1])
            continue
        m = reconstruction_metrics(res.mesh, gt, t, n_points=points)
        rows.append({"shape": name, **{key: v for key, v in m.items() if np.isscalar(v)}})
        labels.append(label)
    if not rows:
        raise Shapes3DError("no shape could be evaluated: " + "; ".join(f"{n}: {r}" for n, r in skipped[:5])
                            + (f"; ... ({len(skipped)} in all)" if len(skipped) > 5 else ""))
    summary = _summary(rows, skipped)
    atomic_write_csv(out / "metrics.csv", rows)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return EvaluateResult(out, rows, labels, summary, skipped)


def _source_mesh(model, k: int):
    """(mesh, "") for training shape k from its stored path, or (None, why not)."""
    from shapes3d.data.sdf_dataset import is_official_samples
    from shapes3d.geometry.io import load_mesh

    path = Path(model.paths[k]) if model.paths else Path(model.names[k])
    if is_official_samples(path):
        return None, f"trained on official SDF samples ({path}): no mesh to compare with (use 'sdf reconstruct')"
    if not path.is_file():
        return None, f"source mesh {path} does not exist"
    sha = model.sha256[k] if k < len(model.sha256) else None
    if sha is not None:
        from shapes3d.data.cache import input_identity

        if input_identity(path)[0] != sha:
            return None, f"{path} changed since training (content hash differs)"
    try:
        return load_mesh(path), ""
    except Shapes3DError as e:
        return None, str(e)


def _summary(rows: list[dict], skipped: list[tuple[str, str]]) -> dict:
    summary: dict = {}
    for key in (k for k in rows[0] if k != "shape"):
        vals = np.asarray([r[key] for r in rows], dtype=float)
        vals = vals[np.isfinite(vals)]  # IoU is NaN for reconstructions that are not watertight
        summary[key] = {"mean": float(vals.mean()) if len(vals) else None,
                        "median": float(np.median(vals)) if len(vals) else None, "n": int(len(vals))}
    summary["n"] = len(rows)
    summary["skipped"] = [[p, r] for p, r in skipped]
    return summary


# ----------------------------------------------------------------------------- render
def render_codes(checkpoint: str | Path, specs: Sequence[str], *, views: int = 6, elevations=(25.0,),
                 size: int = 128, up: str = "z", modes: Sequence[str] = ("shaded",)) -> list[LabelledRow]:
    """Sphere-traced rows of a checkpoint's shapes (training shape names or indices, or code files): one labelled
    row ``"LABEL MODE"`` (V, H, W[, 3]) per shape and mode, for :func:`shapes3d.render.images.write_sheet`."""
    from shapes3d.render.images import label_rows, render_code_rows

    if not specs:
        raise ValueError("render_codes needs at least one shape or code file")
    model = load_deepsdf(checkpoint)
    rows: list[LabelledRow] = []
    for label, code, _ in resolve_shapes(model, specs):
        rows += label_rows(label, modes, render_code_rows(model.decoder, code_or_none(code), views=views,
                                                          elevations=elevations, size=size, up=up, modes=modes))
    return rows
