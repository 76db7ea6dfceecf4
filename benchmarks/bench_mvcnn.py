"""Multi-view CNN (frozen VGG features) on a shared data set: validation and test accuracy, wall time, throughput.

    OMP_NUM_THREADS=1 python benchmarks/bench_mvcnn.py shrec11 [--set key=value ...] [--no-test]

Trains ``configs/mvcnn-<name>.toml`` (plus ``--set`` overrides) through ``classify.jobs.train`` on the train
split (a seeded, stratified validation split carved from it, as every classify run does), reports overall and
mean-class accuracy on that validation split and, unless ``--no-test``, on the official test split. The views
and VGG features are cached under ``--cache`` (a second run only trains the head). Writes a JSON beside the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from shapes3d.classify import jobs, members
from shapes3d.classify.config import ClassifyConfig
from shapes3d.classify.evaluation import confusion_matrix, load_classifier, predict_proba
from shapes3d.config import load_config
from shapes3d.data.voxel_dataset import stratified_split
from shapes3d.engine.jobs import load_manifest, split_entries
from shapes3d.utils.io import data_root

DATASETS = {"shrec11": "shrec11_meshcnn", "modelnet10": "modelnet10_pcd1024", "modelnet40": "modelnet40_npy1024"}


def _accuracies(p: np.ndarray, labels: np.ndarray, k: int) -> dict:
    conf = confusion_matrix(labels, p.argmax(1), k)
    support = conf.sum(1)
    per = [conf[i, i] / support[i] for i in range(k) if support[i]]
    return {"overall": float((p.argmax(1) == labels).mean()), "mean_class": float(np.mean(per)), "n": int(len(labels))}


def _validation(run: Path, data: Path, cache: Path) -> dict:
    """Accuracy of best.pt on the validation split it was chosen on (the same seeded split as training)."""
    model, cfg, classes = load_classifier(run / "best.pt", device="cpu")
    entries = split_entries(load_manifest(data), "train", data)
    extractor = members.extractor(cfg, "cpu", model.feature_source)
    train_set, _ = jobs._build_set(entries, cfg, cache=cache, workers=1, desc="train", classes=classes,
                                   extractor=extractor)
    _, va = stratified_split(train_set.labels, cfg.train.val_fraction, seed=cfg.train.val_seed,
                             mix=jobs.validation_mix(cfg, load_manifest(data), classes, data))
    val = train_set.subset(va)
    p = predict_proba(model, val.grids, vote=False, device=torch.device("cpu"))
    return _accuracies(p, val.labels, len(classes))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--config", default=None, help="preset or TOML file (default mvcnn-<dataset>)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, default=None, help="run folder (default runs/bench-mvcnn-<dataset>)")
    ap.add_argument("--cache", type=Path, default=Path("cache/mvcnn"))
    ap.add_argument("--no-test", action="store_true", help="validation only (choose settings on it)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = data_root() / DATASETS[args.dataset]
    out = args.out or Path("runs") / f"bench-mvcnn-{args.dataset}"
    cfg = load_config(ClassifyConfig, args.config or f"mvcnn-{args.dataset}", overrides=args.set)
    t0 = time.perf_counter()
    res = jobs.train(cfg, data, out, cache=args.cache, overwrite=True)
    wall = time.perf_counter() - t0
    train_s = sum(h["seconds"] for h in res.history)
    n_fit = round(res.n_shapes * (1 - cfg.train.val_fraction))
    row = {"dataset": args.dataset, "config": args.config or f"mvcnn-{args.dataset}", "overrides": args.set, "n_train": res.n_shapes, "epochs": cfg.train.epochs,
           "wall_seconds_train_job": wall, "head_training_seconds": train_s,
           "head_samples_per_second": cfg.train.epochs * n_fit / max(train_s, 1e-9),
           "preprocess_seconds": wall - train_s, "val": _validation(out, data, args.cache)}
    if not args.no_test:
        t1 = time.perf_counter()
        ev = jobs.evaluate(res.best_path, data, cache=args.cache, out=out / "eval-test")
        row["test"] = {"overall": ev.metrics["overall_accuracy"], "mean_class": ev.metrics["mean_class_accuracy"],
                       "n": ev.metrics["n"], "seconds": time.perf_counter() - t1}
    (out / "bench.json").write_text(json.dumps(row, indent=2))
    json.dump(row, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
