"""``shapes3d demo``: the main job end to end on the built-in dataset."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from shapes3d.cli.common import resolve_config


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the pipelines end to end on the built-in synthetic dataset",
                       description="Write the built-in dataset, voxelize it through the preprocessing framework, "
                                   "train and evaluate a VoxNet classifier on it; results land in --out.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--per-class", type=int, default=16, help="shapes per family (default 16)")
    p.add_argument("--workers", type=int, default=1, help="preprocessing worker processes (default 1)")
    p.add_argument("--config", default="voxnet.toml", help="classification config (default configs/voxnet.toml)")
    p.add_argument("--set", dest="overrides", action="append",
                   default=["data.rotations=8", "train.epochs=20", "train.val_fraction=0.0"],
                   metavar="KEY=VALUE", help="classification config overrides (demo defaults: 8 rotations, 20 epochs)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from shapes3d.data.discovery import discover
    from shapes3d.data.synth import FAMILIES, write_dataset
    from shapes3d.data.voxel_dataset import build_voxel_set
    from shapes3d.training.classify import evaluate, train
    from shapes3d.training.classify_config import ClassifyConfig

    t0 = time.perf_counter()
    out: Path = args.out
    data_dir = out / "data"
    print(f"[1/3] built-in dataset: {args.per_class} shapes x {len(FAMILIES)} families -> {data_dir}")
    write_dataset(data_dir, per_class=args.per_class, seed=0, families=FAMILIES, test_fraction=0.25, resolution=64)
    manifest = discover(data_dir)
    manifest.save_csv(out / "manifest.csv")
    cfg = resolve_config(ClassifyConfig, args)
    print(f"[2/3] voxelize {len(manifest)} shapes ({cfg.data.rotations} rotations each) and train VoxNet "
          f"for {cfg.train.epochs} epochs -> {out / 'classify'}")
    cache = out / "cache"
    train_set, _ = build_voxel_set(manifest.filter(split="train").entries, cfg.data, cache_dir=cache,
                                   workers=args.workers, desc="voxelize train")
    result = train(cfg, train_set, out / "classify")
    print(f"[3/3] evaluate on the test split with voting over {cfg.data.rotations} rotations")
    test_set, _ = build_voxel_set(manifest.filter(split="test").entries, cfg.data, cache_dir=cache,
                                  classes=train_set.classes, workers=args.workers, desc="voxelize test")
    from shapes3d.training.classify import load_classifier

    model, cfg, _ = load_classifier(result.last_path)
    metrics = evaluate(model, cfg, test_set, out / "classify" / "eval-test")
    print(f"    test accuracy {metrics['overall_accuracy']:.3f} (mean class {metrics['mean_class_accuracy']:.3f}) "
          f"on {metrics['n']} shapes; confusion matrix {out / 'classify' / 'eval-test' / 'confusion.png'}")
    print(f"done in {time.perf_counter() - t0:.0f} s; outputs in {out}")
    return 0
