"""Classification jobs: train, evaluate, predict (:mod:`~shapes3d.classify.prediction`), filters. Each writes its
files and returns a result.

These are what ``shapes3d classify ...`` runs; the CLI only parses arguments and prints
the results. ``data`` arguments are a dataset folder (ModelNet-style, discovered) or a
manifest CSV; ``cache`` is the content-keyed voxel cache (default
:func:`~shapes3d.engine.jobs.default_cache_dir` ``("voxels")``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shapes3d.classify import evaluation, mvcnn_data, trainer
from shapes3d.classify.config import ClassifyConfig
from shapes3d.classify.members import Member, as_list, load_members, training_prior
from shapes3d.classify.members import extractor as feature_extractor
from shapes3d.classify.prediction import PredictResult, predict  # noqa: F401 (re-exported: every job in one place)
from shapes3d.config import load_config
from shapes3d.data.voxel_dataset import build_voxel_set, stratified_split
from shapes3d.engine.distributed import main_process_first
from shapes3d.engine.jobs import (
    MAX_WORKERS,
    check_file_path,
    check_folder,
    check_int,
    check_stop_after,
    default_cache_dir,
    input_hashes,
    load_manifest,
    split_entries,
)
from shapes3d.engine.plots import plot_filters
from shapes3d.engine.run_folder import check_run_folder
from shapes3d.errors import CheckpointError, Shapes3DError

log = logging.getLogger(__name__)
PathLike = str | os.PathLike
Skipped = list[tuple[Path, str]]


def _cache(cache: PathLike | None, cfg: ClassifyConfig | None = None) -> Path:
    if cache is not None:
        return Path(cache)
    return default_cache_dir("views" if cfg is not None and cfg.model.kind == "mvcnn" else "voxels")


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
        extractor = feature_extractor(cfg, cfg.train.device)
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
    caches = as_list(cache) if cache is not None and not isinstance(cache, (str, os.PathLike)) else None
    check_int("workers", workers, 1, MAX_WORKERS)
    members, prior_tau = load_members(checkpoint, prior_tau=prior_tau, job="evaluate")
    caches = caches if caches is not None else [cache] * len(members)
    if len(caches) != len(members):
        raise Shapes3DError(f"evaluate: {len(caches)} caches for {len(members)} checkpoints (give one, or one per "
                            "checkpoint)")
    first = members[0].checkpoint
    out = Path(out) if out is not None else first.parent / _eval_folder_name(members, split, prior_tau)
    check_folder(out, "--out")
    manifest = load_manifest(data)
    t0 = time.perf_counter()
    sets, probas, protocols = [], [], []
    for m, member_cache in zip(members, caches):
        sets.append(_evaluation_set(m, manifest, data, split, member_cache, workers))
        p, how = evaluation.member_proba(m.model, m.cfg, sets[-1], vote=vote, mirror_vote=mirror_vote)
        probas.append(p)
        protocols.append(how)
    seconds = time.perf_counter() - t0
    # the shapes every member evaluated, in the first member's order; a shape one member skipped is skipped for all
    index = [{Path(q): i for i, q in enumerate(ds.paths)} for ds in sets]
    if split == VAL_SPLIT:
        for m, ix in zip(members[1:], index[1:]):
            if set(ix) != set(index[0]):
                raise CheckpointError(m.checkpoint, f"carved another validation split from train than {first} "
                                                    "(train.split_seed, train.seed or train.val_fraction differ): "
                                                    "choose an ensemble on one split")
    keep = [q for q in index[0] if all(q in ix for ix in index)]
    skipped = {Path(q): r for ds in sets for q, r in ds.skipped}
    kept = set(keep)
    for m, ix in zip(members, index):
        for q in ix:
            if q not in kept and q not in skipped:
                skipped[q] = f"not evaluated: another member of the ensemble could not read it (beside {m.checkpoint})"
    if not keep:
        raise Shapes3DError(f"{data}: no shape of split {split!r} could be evaluated by every member")
    rows = [[ix[q] for q in keep] for ix in index]
    labels = sets[0].labels[rows[0]]
    for m, ds, r in zip(members, sets, rows):
        if not np.array_equal(ds.labels[r], labels):
            raise CheckpointError(m.checkpoint, f"labels its shapes differently from {first}")
    member_p = [p[r] for p, r in zip(probas, rows)]
    prior = training_prior(members, prior_tau)
    classes = members[0].classes
    res = evaluation.scores(evaluation.prior_corrected(np.mean(member_p, axis=0), prior, prior_tau), labels, classes)
    member_rows = []
    for m, how, p in zip(members, protocols, member_p):
        own = evaluation.scores(evaluation.prior_corrected(p, prior, prior_tau), labels, classes)
        member_rows.append({"checkpoint": str(m.checkpoint), **how, "overall_accuracy": own["overall_accuracy"],
                            "mean_class_accuracy": own["mean_class_accuracy"]})
    result = {**{k: res[k] for k in ("overall_accuracy", "mean_class_accuracy", "n")},
              **(protocols[0] if len(members) == 1 else {"model": "ensemble"}),
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


def _eval_folder_name(members: list[Member], split: str, prior_tau: float) -> str:
    name = f"eval-{split}"
    if len(members) > 1:
        key = hashlib.sha256("\n".join(str(m.checkpoint.resolve()) for m in members).encode()).hexdigest()[:8]
        name += f"-ensemble{len(members)}-{key}"
    return name + (f"-tau{prior_tau:g}" if prior_tau else "")


def _evaluation_set(member: Member, manifest, data: PathLike, split: str, cache: PathLike | None, workers: int):
    """The member's inputs of ``split`` (``val``: the validation split carved from ``train`` as the trainer did)."""
    cfg, classes = member.cfg, member.classes
    carved = split == VAL_SPLIT and not any(e.split == VAL_SPLIT for e in manifest.entries)
    entries = split_entries(manifest, "train" if carved else split, data, fallback=carved)
    data_set, _ = _build_set(entries, cfg, cache=cache, workers=workers, desc="train" if carved else split,
                             classes=classes, extractor=member.extractor())
    if carved:
        if not cfg.train.val_fraction:
            raise CheckpointError(member.checkpoint, "was trained without a validation split (train.val_fraction = 0), so there "
                                      f"is no {VAL_SPLIT!r} split to evaluate")
        skipped = data_set.skipped
        _, va = stratified_split(data_set.labels, cfg.train.val_fraction, seed=cfg.train.val_seed,
                                 mix=validation_mix(cfg, manifest, classes, data))
        data_set = data_set.subset(va)
        data_set.skipped = list(skipped)
    return data_set


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
