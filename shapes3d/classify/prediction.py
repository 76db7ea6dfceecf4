"""``classify predict``: top-k classes of mesh and point-cloud files from one checkpoint or an ensemble."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shapes3d.classify import evaluation, mvcnn_data
from shapes3d.classify.members import Member, PathLike, as_list, load_members, training_prior
from shapes3d.data.cache import load_cached
from shapes3d.data.preprocess import run_preprocess
from shapes3d.data.tasks import VOXELS_VERSION, voxel_task
from shapes3d.engine.jobs import check_file_path, check_folder, check_int, expand_shape_paths, unique_names
from shapes3d.errors import MissingFileError, Shapes3DError
from shapes3d.utils.io import atomic_write_text
from shapes3d.utils.progress import progress

Skipped = list[tuple[Path, str]]


@dataclass
class PredictResult:
    """Top-k classes per input file of :func:`predict`, the inputs skipped, and the JSON written (if any)."""

    predictions: list[tuple[Path, list[tuple[str, float]]]]
    skipped: Skipped = field(default_factory=list)
    json_path: Path | None = None
    inputs: int = 0  #: input files (after expanding folders): ``len(predictions) + len(skipped)``
    names: list[str] = field(default_factory=list)  #: a distinct name per prediction (the JSON's ``name``)
    sheets: list[Path] = field(default_factory=list)  #: multi-view models with ``views_sheets``: one PNG per shape


def predict(checkpoint: PathLike | Sequence[PathLike], paths: Sequence[PathLike] | PathLike, *, top_k: int = 3,
            cache: PathLike | None = None, out: PathLike | None = None, device: str = "auto",
            views_sheets: PathLike | None = None, prior_tau: float | None = None) -> PredictResult:
    """Classify mesh and point-cloud files (folders: every such file below them, recursively).

    A batch job: a file that cannot be read or voxelized is reported in ``skipped`` and the
    others go on. The voxel grids are computed directly, or read from / written to ``cache``
    when one is given. ``out`` also writes the predictions as JSON. Several checkpoints are an ensemble, as in
    :func:`~shapes3d.classify.jobs.evaluate` (probabilities averaged; a file one member cannot read is skipped),
    and ``prior_tau`` corrects for the training class mix the same way (default: the first checkpoint's config).
    ``views_sheets`` (one multi-view checkpoint only): a folder that gets, per predicted shape, a sheet of its
    views with the class each view alone predicts (:mod:`shapes3d.classify.mvcnn_views`).
    """
    check_int("top_k", top_k, 1, None)
    json_path = Path(out) if out is not None else None
    if json_path is not None:
        check_file_path(json_path, "--json")
    given = as_list(paths)
    if given and not any(Path(p).exists() for p in given):
        raise MissingFileError(given[0], "file does not exist" + (f" (nor do the other {len(given) - 1} inputs)"
                                                                  if len(given) > 1 else ""))
    files = expand_shape_paths(given)
    if not files:
        raise Shapes3DError(f"no mesh or point-cloud files in {', '.join(map(str, given))}")
    members, prior_tau = load_members(checkpoint, prior_tau=prior_tau, job="predict", device=device)
    classes = members[0].classes
    if views_sheets is not None:
        if len(members) > 1:
            raise Shapes3DError("--views-sheets takes one multi-view checkpoint, not an ensemble")
        if members[0].cfg.model.kind != "mvcnn":
            raise Shapes3DError(f"{members[0].checkpoint}: --views-sheets needs a multi-view checkpoint (model.kind "
                                f"= 'mvcnn'), this one is {members[0].cfg.model.kind!r}")
        check_folder(views_sheets, "--views-sheets")
    names = dict(zip(files, unique_names(files)))
    proba: dict[Path, list[np.ndarray]] = {}
    reasons: dict[Path, str] = {}
    for m in members:
        for path, grids in _predict_inputs(files, m, cache):
            if isinstance(grids, str):
                reasons.setdefault(path, grids)
                continue
            proba.setdefault(path, []).append(evaluation.predict_proba(
                m.model, grids[None], vote=m.cfg.vote, device=m.device, up_axis=m.cfg.data.up_axis,
                mirror_vote=m.cfg.mirror_vote)[0])
    prior = training_prior(members, prior_tau)
    predictions, skipped = [], []
    for path in files:
        if path in reasons or len(proba.get(path, ())) < len(members):
            skipped.append((path, reasons.get(path, "not predicted by every member of the ensemble")))
            continue
        p = evaluation.prior_corrected(np.mean(proba[path], axis=0)[None], prior, prior_tau)[0]
        order = np.argsort(-p)[:top_k]
        predictions.append((path, [(classes[i], float(p[i])) for i in order]))
    sheets = []
    if views_sheets is not None and predictions:
        from shapes3d.classify.mvcnn_views import evidence_sheets

        m = members[0]
        done = [p for p, _ in predictions]
        sheets = [e.sheet for e in evidence_sheets(m.model, m.cfg, classes, done, [names[p] for p in done],
                                                   views_sheets, m.extractor())]
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(
            {"predictions": [{"name": names[p], "path": str(p), "top": t} for p, t in predictions],
             "skipped": [[str(p), r] for p, r in skipped], "inputs": len(files),
             "members": [str(m.checkpoint) for m in members], "prior_tau": float(prior_tau)}, indent=2))
    return PredictResult(predictions, skipped, json_path, len(files), [names[p] for p, _ in predictions], sheets)


def _predict_inputs(files: list[Path], member: Member, cache: PathLike | None):
    """(path, the member's input for one shape or the reason it failed) per file."""
    cfg = member.cfg
    if cfg.model.kind == "mvcnn":
        for path, x in mvcnn_data.shape_inputs(files, cfg, cache=cache, extractor=member.extractor()):
            yield path, x if isinstance(x, str) else np.asarray(x)
        return
    params = dataclasses.asdict(cfg.data)
    if not cfg.vote:
        params["rotations"] = 1
    yield from (_cached_grids(files, params, cache) if cache is not None else _computed_grids(files, params))


def _computed_grids(files: list[Path], params: dict):
    """(path, occupancy (K, R, R, R) or the reason it failed) per file, voxelized here."""
    for path in progress(files, desc="predict", unit="shape"):
        try:
            yield path, voxel_task(path, **params)["occupancy"]
        except Shapes3DError as e:
            yield path, str(e)


def _cached_grids(files: list[Path], params: dict, cache: PathLike):
    """As :func:`_computed_grids`, through the voxel cache (one preprocessing pass first)."""
    report = run_preprocess(files, voxel_task, params=params, cache_dir=cache, desc="voxelize",
                            version=VOXELS_VERSION)
    reasons = {Path(p): r for p, r in report.skipped}
    for path in files:
        loc = report.results.get(path)
        yield path, load_cached(loc)["occupancy"] if loc is not None else reasons.get(path, "not voxelized")
