"""Classification jobs: train, evaluate, predict, filters. Each writes its files and returns a result.

These are what ``shapes3d classify ...`` runs; the CLI only parses arguments and prints
the results. ``data`` arguments are a dataset folder (ModelNet-style, discovered) or a
manifest CSV; ``cache`` is the content-keyed voxel cache (default
:func:`~shapes3d.engine.jobs.default_cache_dir` ``("voxels")``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shapes3d.classify import evaluation, mvcnn_data, trainer
from shapes3d.classify.config import ClassifyConfig
from shapes3d.config import load_config
from shapes3d.data.cache import load_cached
from shapes3d.data.preprocess import run_preprocess
from shapes3d.data.tasks import VOXELS_VERSION, voxel_task
from shapes3d.data.voxel_dataset import build_voxel_set, stratified_split
from shapes3d.engine.distributed import main_process_first
from shapes3d.engine.jobs import (
    MAX_WORKERS,
    check_file_path,
    check_folder,
    check_int,
    check_stop_after,
    default_cache_dir,
    expand_shape_paths,
    input_hashes,
    load_manifest,
    split_entries,
    unique_names,
)
from shapes3d.engine.plots import plot_filters
from shapes3d.engine.run_folder import check_run_folder
from shapes3d.errors import CheckpointError, MissingFileError, Shapes3DError
from shapes3d.utils.io import atomic_write_text
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)
PathLike = str | os.PathLike
Skipped = list[tuple[Path, str]]


def _cache(cache: PathLike | None, cfg: ClassifyConfig | None = None) -> Path:
    if cache is not None:
        return Path(cache)
    return default_cache_dir("views" if cfg is not None and cfg.model.kind == "mvcnn" else "voxels")


def _extractor(cfg: ClassifyConfig, device, expect: dict | None = None, where: PathLike = "checkpoint"):
    """The frozen VGG of a multi-view config (None for VoxNet and fine-tuned models), checked against ``expect``."""
    if cfg.model.kind != "mvcnn" or not cfg.model.mvcnn.frozen:
        return None
    ex = mvcnn_data.feature_extractor(cfg, device)
    mvcnn_data.check_source(ex.source, expect, str(where))
    return ex


def _build_set(entries, cfg: ClassifyConfig, *, cache, workers: int, desc: str, classes=None, extractor=None):
    """Voxel grids (VoxNet) or per-view features / views (multi-view CNN) of ``entries``, through the cache."""
    if cfg.model.kind == "mvcnn":
        return mvcnn_data.build_view_set(entries, cfg, cache_dir=_cache(cache, cfg), classes=classes,
                                         workers=workers, desc=desc, extractor=extractor)
    return build_voxel_set(entries, cfg.data, cache_dir=_cache(cache, cfg), classes=classes, workers=workers,
                           desc=f"voxelize {desc}")


@dataclass
class TrainJobResult:
    """What :func:`train` wrote (``best.pt``, ``last.pt``, ``log.csv``, ``curves.png``, ``config.toml`` in ``out``)."""

    out: Path
    best_val_acc: float
    history: list[dict]
    best_path: Path
    last_path: Path
    n_shapes: int
    classes: list[str]
    skipped: Skipped = field(default_factory=list)  # training files that could not be voxelized
    interrupted: str | None = None  # name of the signal that stopped training early (position saved)

    @property
    def log_path(self) -> Path:
        return self.out / "log.csv"

    @property
    def curves_path(self) -> Path:
        return self.out / "curves.png"


def train(cfg: ClassifyConfig | PathLike, data: PathLike, out: PathLike, *, cache: PathLike | None = None,
          split: str = "train", resume: bool = False, stop_after: int | None = None,
          overwrite: bool = False) -> TrainJobResult:
    """Voxelize the ``split`` of ``data`` (all shapes if it has none) through the cache, then train VoxNet.

    ``cfg`` is a config or a TOML file. Under ``torchrun`` rank 0 fills the cache first and
    the other ranks read it. See :func:`shapes3d.classify.trainer.train` for ``resume`` and
    ``stop_after``. A folder ``out`` holding a run is refused unless ``resume`` or ``overwrite``
    (:func:`~shapes3d.engine.run_folder.check_run_folder`), before anything is voxelized.
    """
    cfg = cfg if isinstance(cfg, ClassifyConfig) else load_config(ClassifyConfig, cfg)
    check_stop_after(stop_after)
    check_run_folder(out, resume=resume, overwrite=overwrite, epochs=cfg.train.epochs, config=cfg,
                     architecture_keys=trainer.ARCHITECTURE_KEYS)
    manifest = load_manifest(data)
    entries = split_entries(manifest, split, data)
    validation_mix(cfg, manifest, manifest.classes, data)  # refuses val_mix = "test" without a test split, early
    with main_process_first():
        extractor = _extractor(cfg, cfg.train.device)
        voxels, report = _build_set(entries, cfg, cache=cache, workers=cfg.train.workers, desc=split,
                                    extractor=extractor)
    log.debug("train set: %d shapes, %d classes; %d skipped", len(voxels), len(voxels.classes),
              len(voxels.skipped))  # the CLI prints it, once
    res = trainer.train(cfg, voxels, out, resume=resume, stop_after=stop_after,
                        input_sha256=input_hashes(voxels.paths, report.results),
                        feature_source=extractor.source if extractor is not None else None,
                        val_mix=validation_mix(cfg, manifest, voxels.classes, data))
    return TrainJobResult(Path(out), res.best_val_acc, res.history, res.best_path, res.last_path, len(voxels),
                          list(voxels.classes), list(voxels.skipped), res.interrupted)


@dataclass
class EvaluateResult:
    """Metrics of :func:`evaluate` (as in ``metrics.json``) and the files it wrote."""

    metrics: dict
    out: Path
    skipped: Skipped = field(default_factory=list)  # test files not evaluated (failed, or unknown class)

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.json"

    @property
    def confusion_path(self) -> Path:
        return self.out / "confusion.png"


#: ``split`` of :func:`evaluate` for the validation split the trainer carved from ``train`` (when the data set has
#: no split of that name itself).
VAL_SPLIT = "val"


def evaluate(checkpoint: PathLike | Sequence[PathLike], data: PathLike, *, out: PathLike | None = None,
             split: str = "test", cache: PathLike | Sequence[PathLike] | None = None, vote: bool | None = None,
             mirror_vote: bool | None = None, workers: int = 1, prior_tau: float | None = None) -> EvaluateResult:
    """Accuracy, per-class table and confusion matrix of a checkpoint, or of an ensemble, on the ``split`` of ``data``.

    Several checkpoints (VoxNet and multi-view models alike, trained on the same classes) are an ensemble: each
    member makes its class probabilities its own way (rotation voting, view pooling) and the ensemble averages
    them; ``metrics.json`` also holds each member's own figures on the same shapes. A shape some member could not
    read is skipped for all. ``prior_tau`` divides the probabilities by the training class frequencies^tau (as
    recorded in the checkpoints) before the argmax: a correction for a skewed training mix, 1 being Bayes' rule
    for balanced test classes (default: the first checkpoint's config ``prior_tau``). ``split = "val"`` (on a
    data set without a split of that name) is the seeded validation split the trainer carved from ``train``:
    choose members and ``prior_tau`` there, not on test.

    Writes ``metrics.json`` and ``confusion.png`` into ``out`` (default: ``eval-SPLIT`` beside the first
    checkpoint; with several members or a prior correction ``eval-SPLIT-ensemble<N>-<hash>`` / ``-tau<T>``, so
    no evaluation overwrites another's). ``cache``: one folder for all members, or one per member.
    ``vote`` / ``mirror_vote`` default to each checkpoint's config;
    ``workers`` processes voxelize or render shapes missing from the cache.
    """
    members = [Path(c) for c in _as_list(checkpoint)]
    if not members:
        raise Shapes3DError("evaluate: no checkpoint given")
    caches = [cache] * len(members) if cache is None or isinstance(cache, (str, os.PathLike)) else list(cache)
    if len(caches) != len(members):
        raise Shapes3DError(f"evaluate: {len(caches)} caches for {len(members)} checkpoints (give one, or one per "
                            "checkpoint)")
    check_int("workers", workers, 1, MAX_WORKERS)
    if prior_tau is not None:
        _check_prior_tau(prior_tau)
    loaded = [(ck, *evaluation.load_classifier(ck)) for ck in members]
    prior_tau = loaded[0][2].prior_tau if prior_tau is None else prior_tau
    out = Path(out) if out is not None else members[0].parent / _eval_folder_name(members, split, prior_tau)
    check_folder(out, "--out")
    manifest = load_manifest(data)
    runs, classes, t0 = [], None, time.perf_counter()
    for (ck, model, cfg, names), member_cache in zip(loaded, caches):
        if classes is not None and names != classes:
            raise CheckpointError(ck, f"its classes {names} differ from those of {members[0]} ({classes}); "
                                      "an ensemble needs members trained on the same classes")
        classes = names
        if prior_tau and model.train_class_counts is None:
            raise CheckpointError(ck, "records no training class counts (written before they were), so --prior-tau "
                                      "cannot correct for them; evaluate it with --prior-tau 0")
        data_set = _evaluation_set(ck, model, cfg, classes, manifest, data, split, member_cache, workers)
        p, how = evaluation.member_proba(model, cfg, data_set, vote=vote, mirror_vote=mirror_vote)
        runs.append((ck, model, data_set, p, how))
    seconds = time.perf_counter() - t0
    # the shapes every member evaluated, in the first member's order; a shape one member skipped is skipped for all
    index = [{Path(q): i for i, q in enumerate(ds.paths)} for _, _, ds, _, _ in runs]
    keep = [Path(q) for q in runs[0][2].paths if all(Path(q) in ix for ix in index)]
    skipped = {Path(q): r for _, _, ds, _, _ in runs for q, r in ds.skipped}
    kept = set(keep)
    for (ck, _, _, _, _), ix in zip(runs, index):
        for q in ix:
            if q not in kept and q not in skipped:
                skipped[q] = f"not evaluated: another member of the ensemble could not read it (beside {ck})"
    if split == VAL_SPLIT:
        for (ck, _, _, _, _), ix in zip(runs[1:], index[1:]):
            if set(ix) != set(index[0]):
                raise CheckpointError(ck, f"carved another validation split from train than {members[0]} "
                                          "(train.split_seed, train.seed or train.val_fraction differ): choose an ensemble on one split")
    if not keep:
        raise Shapes3DError(f"{data}: no shape of split {split!r} could be evaluated by every member")
    rows = [[ix[q] for q in keep] for ix in index]
    labels = runs[0][2].labels[rows[0]]
    for (ck, _, ds, _, _), r in zip(runs, rows):
        if not np.array_equal(ds.labels[r], labels):
            raise CheckpointError(ck, f"labels its shapes differently from {members[0]}")
    member_p = [p[r] for (_, _, _, p, _), r in zip(runs, rows)]
    prior = (evaluation.training_prior([m.train_class_counts for _, m, _, _, _ in runs]) if prior_tau else None)
    proba = evaluation.prior_corrected(np.mean(member_p, axis=0), prior, prior_tau)
    res = evaluation.scores(proba, labels, classes)
    member_rows = []
    for (ck, _, _, _, how), p in zip(runs, member_p):
        own = evaluation.scores(evaluation.prior_corrected(p, prior, prior_tau), labels, classes)
        member_rows.append({"checkpoint": str(ck), **how, "overall_accuracy": own["overall_accuracy"],
                            "mean_class_accuracy": own["mean_class_accuracy"]})
    single = len(runs) == 1
    result = {**{k: res[k] for k in ("overall_accuracy", "mean_class_accuracy", "n")},
              **(runs[0][4] if single else {"model": "ensemble"}),
              "split": split, "prior_tau": float(prior_tau),
              **({"prior": prior.tolist()} if prior is not None else {}),
              "members": member_rows, "per_class": res["per_class"], "confusion": res["confusion"],
              "classes": list(classes), "inference_shapes_per_second": float(len(labels) / max(seconds, 1e-9)),
              "skipped": [[str(q), r] for q, r in skipped.items()]}
    evaluation.write_metrics(result, list(classes), out)
    return EvaluateResult(result, out, list(skipped.items()))


def validation_mix(cfg: ClassifyConfig, manifest, classes: Sequence[str], data: PathLike = "data") -> np.ndarray | None:
    """Class weights of the carved validation split: the test split's class counts (``train.val_mix = "test"``,
    in ``classes`` order), or None (``"train"``: each class's ``val_fraction``)."""
    if cfg.train.val_mix != "test" or not cfg.train.val_fraction:
        return None
    try:
        test = split_entries(manifest, "test", data, fallback=False)
    except Shapes3DError as e:
        raise Shapes3DError(f"train.val_mix = 'test' needs a test split: {e}") from None
    counts = {}
    for e in test:
        counts[e.class_name] = counts.get(e.class_name, 0) + 1
    return np.array([counts.get(c, 0) for c in classes], dtype=np.float64)


def _eval_folder_name(members: list[Path], split: str, prior_tau: float) -> str:
    name = f"eval-{split}"
    if len(members) > 1:
        key = hashlib.sha256("\n".join(str(m.resolve()) for m in members).encode()).hexdigest()[:8]
        name += f"-ensemble{len(members)}-{key}"
    return name + (f"-tau{prior_tau:g}" if prior_tau else "")


def _evaluation_set(ck: Path, model, cfg: ClassifyConfig, classes: list[str], manifest, data: PathLike, split: str,
                    cache: PathLike | None, workers: int):
    """The model inputs of ``split`` (``val``: the validation split carved from ``train`` as the trainer did)."""
    extractor = _extractor(cfg, next(model.parameters()).device, getattr(model, "feature_source", None), ck)
    carved = split == VAL_SPLIT and not any(e.split == VAL_SPLIT for e in manifest.entries)
    entries = split_entries(manifest, "train" if carved else split, data, fallback=carved)
    data_set, _ = _build_set(entries, cfg, cache=cache, workers=workers, desc="train" if carved else split,
                             classes=classes, extractor=extractor)
    if carved:
        if not cfg.train.val_fraction:
            raise CheckpointError(ck, "was trained without a validation split (train.val_fraction = 0), so there "
                                      f"is no {VAL_SPLIT!r} split to evaluate")
        skipped = data_set.skipped
        _, va = stratified_split(data_set.labels, cfg.train.val_fraction, seed=cfg.train.val_seed,
                                 mix=validation_mix(cfg, manifest, classes, data))
        data_set = data_set.subset(va)
        data_set.skipped = list(skipped)
    return data_set


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
    :func:`evaluate` (probabilities averaged; a file one member cannot read is skipped), and ``prior_tau``
    corrects for the training class mix the same way (default: the first checkpoint's config). ``views_sheets`` (one multi-view checkpoint only): a
    folder that gets, per predicted shape, a sheet of its views with the class each view alone predicts
    (:mod:`shapes3d.classify.mvcnn_views`).
    """
    members = [Path(c) for c in _as_list(checkpoint)]
    if not members:
        raise Shapes3DError("predict: no checkpoint given")
    check_int("top_k", top_k, 1, None)
    if prior_tau is not None:
        _check_prior_tau(prior_tau)
    json_path = Path(out) if out is not None else None
    if json_path is not None:
        check_file_path(json_path, "--json")
    given = _as_list(paths)
    if given and not any(Path(p).exists() for p in given):
        raise MissingFileError(given[0], "file does not exist" + (f" (nor do the other {len(given) - 1} inputs)"
                                                                  if len(given) > 1 else ""))
    files = expand_shape_paths(given)
    if not files:
        raise Shapes3DError(f"no mesh or point-cloud files in {', '.join(map(str, _as_list(paths)))}")
    loaded = [(ck, *evaluation.load_classifier(ck, device=device)) for ck in members]
    classes = loaded[0][3]
    prior_tau = loaded[0][2].prior_tau if prior_tau is None else prior_tau
    for ck, _, _, names in loaded[1:]:
        if names != classes:
            raise CheckpointError(ck, f"its classes {names} differ from those of {members[0]} ({classes}); "
                                      "an ensemble needs members trained on the same classes")
    if prior_tau:
        for ck, model, _, _ in loaded:
            if model.train_class_counts is None:
                raise CheckpointError(ck, "records no training class counts (written before they were), so "
                                          "--prior-tau cannot correct for them; predict with --prior-tau 0")
    if views_sheets is not None:
        if len(members) > 1:
            raise Shapes3DError("--views-sheets takes one multi-view checkpoint, not an ensemble")
        if loaded[0][2].model.kind != "mvcnn":
            raise Shapes3DError(f"{members[0]}: --views-sheets needs a multi-view checkpoint (model.kind = "
                                f"'mvcnn'), this one is {loaded[0][2].model.kind!r}")
        check_folder(views_sheets, "--views-sheets")
    names = dict(zip(files, unique_names(files)))
    proba: dict[Path, list[np.ndarray]] = {}
    reasons: dict[Path, str] = {}
    for ck, model, cfg, _ in loaded:
        dev = next(model.parameters()).device
        for path, grids in _predict_inputs(files, model, cfg, cache, ck):
            if isinstance(grids, str):
                reasons.setdefault(path, grids)
                continue
            proba.setdefault(path, []).append(evaluation.predict_proba(
                model, grids[None], vote=cfg.vote, device=dev, up_axis=cfg.data.up_axis,
                mirror_vote=cfg.mirror_vote)[0])
    prior = evaluation.training_prior([m.train_class_counts for _, m, _, _ in loaded]) if prior_tau else None
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

        ck, model, cfg, _ = loaded[0]
        done = [p for p, _ in predictions]
        extractor = _extractor(cfg, next(model.parameters()).device, getattr(model, "feature_source", None), ck)
        sheets = [e.sheet for e in evidence_sheets(model, cfg, classes, done, [names[p] for p in done],
                                                   views_sheets, extractor)]
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(
            {"predictions": [{"name": names[p], "path": str(p), "top": t} for p, t in predictions],
             "skipped": [[str(p), r] for p, r in skipped], "inputs": len(files),
             "members": [str(m) for m in members], "prior_tau": float(prior_tau)}, indent=2))
    return PredictResult(predictions, skipped, json_path, len(files), [names[p] for p, _ in predictions], sheets)


def _check_prior_tau(prior_tau) -> None:
    if isinstance(prior_tau, bool) or not isinstance(prior_tau, (int, float)) or not 0 <= prior_tau <= 2:
        raise Shapes3DError(f"--prior-tau: {prior_tau!r} is out of range [0, 2]")


def _predict_inputs(files: list[Path], model, cfg: ClassifyConfig, cache: PathLike | None, checkpoint: PathLike):
    """(path, the model's input for one shape or the reason it failed) per file."""
    if cfg.model.kind == "mvcnn":
        dev = next(model.parameters()).device
        extractor = _extractor(cfg, dev, getattr(model, "feature_source", None), checkpoint)
        for path, x in mvcnn_data.shape_inputs(files, cfg, cache=cache, extractor=extractor):
            yield path, x if isinstance(x, str) else np.asarray(x)
        return
    params = dataclasses.asdict(cfg.data)
    if not cfg.vote:
        params["rotations"] = 1
    yield from (_cached_grids(files, params, cache) if cache is not None else _computed_grids(files, params))


def _as_list(paths) -> list:
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


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


@dataclass
class FiltersResult:
    """The PNG :func:`filters` wrote and how many first-layer filters it shows."""

    path: Path
    n_filters: int


def filters(checkpoint: PathLike, *, out: PathLike | None = None) -> FiltersResult:
    """Draw each first-layer 5^3 filter as a row of its depth slices (default ``filters.png`` beside the checkpoint)."""
    checkpoint = Path(checkpoint)
    path = Path(out) if out is not None else checkpoint.parent / "filters.png"
    check_file_path(path, "--out")
    model, _, _ = evaluation.load_classifier(checkpoint, device="cpu")
    weights = model.first_layer_filters.numpy()
    plot_filters(weights, path, title=f"first-layer filters of {checkpoint.parent.name}/{checkpoint.name}")
    return FiltersResult(path, int(weights.shape[0]))
