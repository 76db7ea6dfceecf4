"""Real-data VoxNet classification benchmark: cache -> train -> evaluate with rotation voting.

    python benchmarks/bench_classify.py shrec11|modelnet10 [--epochs N] [--set key=value ...]
                                        [--no-test] [--tag NAME] [--cache DIR] [--runs DIR]

Starts from ``configs/voxnet.toml``, applies the data set's preset (below), then the
``--set`` overrides. Trains on the train split with a seeded validation split carved
from it (``train.val_fraction``), then, unless ``--no-test`` (use that while choosing
levers: choices are made on validation, never on test), evaluates the best-validation
checkpoint on the official test split with voting over the cached rotations. Prints
overall and mean-class accuracy, wall time, training and inference samples per second,
and writes ``benchmarks/results/classify_<dataset>[_<tag>].json``.

Data are found through ``shapes3d.utils.io.data_root()`` (``SHAPES3D_DATA_ROOT``,
fallback ``../shared/data``). Timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from shapes3d.config import config_to_dict, load_config
from shapes3d.data.discovery import load_csv
from shapes3d.data.voxel_dataset import augment_batch, build_voxel_set, stratified_split
from shapes3d.training.classify import build_model, evaluate, predict_proba, train, train_step
from shapes3d.training.classify_config import ClassifyConfig
from shapes3d.utils.device import pick_device
from shapes3d.utils.io import atomic_write_text, data_root

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# Per data set: folder under data_root(), and overrides of configs/voxnet.toml chosen on validation.
DATASETS = {
    # SHREC'11 (MeshCNN shrec_16 split): watertight 500-face meshes, 16 train / 4 test per class.
    # Every sampled mesh has its longest extent along x and shortest along z (the meshes look
    # PCA-aligned), so rotating about z keeps the two largest axes in the horizontal plane.
    "shrec11": ("shrec11_meshcnn", ["data.up_axis=z"]),
    # ModelNet10 as 1024-point clouds, z-up. One-voxel dilation closes the holes that 1024
    # points leave in a 24^3 object (the issue measured ~88.5 % -> ~90 % test accuracy with it;
    # not re-measured on validation here for lack of CPU time).
    "modelnet10": ("modelnet10_pcd1024", ["data.up_axis=z", "data.point_dilation=1"]),
}


def _timed_train_rate(cfg: ClassifyConfig, grids: np.ndarray, labels: np.ndarray, *, batches: int = 10) -> float:
    """Training samples/s of a fresh model on real augmented batches (augmentation included)."""
    device = pick_device(cfg.train.device)
    model = build_model(cfg, int(labels.max()) + 1).to(device, memory_format=torch.channels_last_3d)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    gen = torch.Generator().manual_seed(0)
    g, y = torch.from_numpy(grids), torch.from_numpy(labels)
    bs = cfg.train.batch_size
    n = 0
    for i in range(batches + 1):
        idx = torch.randint(0, len(y), (bs,), generator=gen)
        if i == 1:  # the first batch pays one-off allocation costs
            t0, n = time.perf_counter(), 0
        x = augment_batch(g[idx], generator=gen, rotate=cfg.augment.rotate, mirror=cfg.augment.mirror,
                          translate=cfg.augment.translate, up_axis=cfg.data.up_axis)
        x = x.to(device).contiguous(memory_format=torch.channels_last_3d)  # as train() does
        train_step(model, opt, x, y[idx].to(device), label_smoothing=cfg.train.label_smoothing)
        n += bs
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override (repeatable), e.g. --set model.batch_norm=true")
    ap.add_argument("--no-test", action="store_true", help="train and validate only (for choosing levers)")
    ap.add_argument("--tag", default="", help="suffix of the run folder and results file")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("SHAPES3D_CACHE", "/tmp/bench_cls/cache")),
                    help="voxel cache folder (default /tmp/bench_cls/cache or $SHAPES3D_CACHE)")
    ap.add_argument("--runs", type=Path, default=Path("/tmp/bench_cls/runs"), help="parent of the run folder")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the metrics JSON goes")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    folder, preset = DATASETS[args.dataset]
    root = data_root() / folder
    index = root / "index.csv"
    if not index.is_file():
        print(f"data set {args.dataset!r} not found: expected {index} (set SHAPES3D_DATA_ROOT to the folder "
              f"holding {folder}/)", file=sys.stderr)
        return 2
    overrides = [*preset, *args.overrides] + ([f"train.epochs={args.epochs}"] if args.epochs else [])
    cfg = load_config(ClassifyConfig, REPO / "configs" / "voxnet.toml", overrides=overrides)
    name = args.dataset + (f"_{args.tag}" if args.tag else "")
    run_dir = args.runs / name
    manifest = load_csv(index)
    wall0 = time.perf_counter()

    t0 = time.perf_counter()
    train_set, _ = build_voxel_set(manifest.filter(split="train").entries, cfg.data, cache_dir=args.cache,
                                   workers=cfg.train.workers, desc="voxelize train")
    test_set = None
    if not args.no_test:
        test_set, _ = build_voxel_set(manifest.filter(split="test").entries, cfg.data, cache_dir=args.cache,
                                      classes=train_set.classes, workers=cfg.train.workers, desc="voxelize test")
    cache_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = train(cfg, train_set, run_dir)
    train_s = time.perf_counter() - t0
    hist = result.history
    best = max(hist, key=lambda r: r.get("val_acc", r["train_acc"]))
    n_train = len(stratified_split(train_set.labels, cfg.train.val_fraction, seed=cfg.train.seed)[0])
    train_rate = _timed_train_rate(cfg, train_set.grids, train_set.labels)

    metrics: dict = {
        "dataset": args.dataset, "data": str(root), "overrides": overrides, "config": config_to_dict(cfg),
        "n_train_total": len(train_set), "n_train_fit": n_train, "epochs": cfg.train.epochs,
        "best_epoch": best["epoch"], "best_val_acc": result.best_val_acc,
        "final_val_acc": hist[-1].get("val_acc"), "history": hist,
        "cache_seconds": cache_s, "train_seconds": train_s,
        "train_epoch_samples_per_second": n_train * len(hist) / sum(r["seconds"] for r in hist),
        "train_samples_per_second": train_rate,
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.processor()
        or platform.machine(), "cpu_count": os.cpu_count(),
    }
    print(f"{name}: best validation accuracy {result.best_val_acc:.4f} at epoch {best['epoch']}/{cfg.train.epochs}")
    if test_set is not None:
        # The best-validation checkpoint, as `classify evaluate RUN/best.pt` would use.
        from shapes3d.training.classify import load_classifier

        model, ck_cfg, classes = load_classifier(result.best_path, device=cfg.train.device)
        t0 = time.perf_counter()
        res = evaluate(model, ck_cfg, test_set, run_dir / "eval-test")
        eval_s = time.perf_counter() - t0
        k = res["rotations"]
        metrics.update({
            "test_overall_accuracy": res["overall_accuracy"], "test_mean_class_accuracy": res["mean_class_accuracy"],
            "test_n": res["n"], "vote_rotations": k, "eval_seconds": eval_s,
            "inference_shapes_per_second": res["inference_shapes_per_second"],
            "inference_grids_per_second": res["inference_shapes_per_second"] * k,
            "per_class": {c: v["accuracy"] for c, v in res["per_class"].items()},
            "confusion": res["confusion"], "classes": res["classes"],
        })
        print(f"{name}: test overall accuracy {res['overall_accuracy']:.4f}, mean class accuracy "
              f"{res['mean_class_accuracy']:.4f} ({res['n']} shapes, voting over {k} rotations)")
        print(f"inference: {res['inference_shapes_per_second']:.1f} shapes/s "
              f"({res['inference_shapes_per_second'] * k:.1f} grids/s)")
    else:
        # Inference rate on the validation-sized slice of train, so --no-test runs also report it.
        sl = train_set.grids[: min(64, len(train_set))]
        model = build_model(cfg, len(train_set.classes)).to(pick_device(cfg.train.device))
        t0 = time.perf_counter()
        predict_proba(model, sl, vote=cfg.vote, device=next(model.parameters()).device)
        rate = len(sl) / (time.perf_counter() - t0)
        metrics.update({"inference_shapes_per_second": rate, "inference_grids_per_second": rate * sl.shape[1]})
    metrics["wall_seconds"] = time.perf_counter() - wall0
    print(f"wall {metrics['wall_seconds']:.0f} s (cache {cache_s:.0f} s, training {train_s:.0f} s); "
          f"training {train_rate:.1f} samples/s (steps only), "
          f"{metrics['train_epoch_samples_per_second']:.1f} samples/s (epochs incl. validation); "
          f"inference {metrics['inference_shapes_per_second']:.1f} shapes/s with {torch.get_num_threads()} torch "
          f"thread(s)")
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"classify_{name}.json"
    # The per-epoch history is kept (small); the confusion matrix too, for the README table.
    atomic_write_text(out, json.dumps(metrics, indent=1, default=float))
    print(f"metrics: {out}; run folder {run_dir}")
    return 0 if math.isfinite(result.best_val_acc) else 1


if __name__ == "__main__":
    sys.exit(main())
