"""``shapes3d demo``: the main job end to end on the built-in dataset."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from shapes3d.cli.common import examples, int_range, output_folder, resolve_config


def register(sub) -> None:
    p = sub.add_parser("demo", help="every pipeline end to end on the built-in dataset",
                       epilog=examples(
                           "shapes3d demo --out runs/demo",
                           "shapes3d demo --per-class 8 --skip-sdf --set train.epochs=5"),
                       description="Write the built-in dataset; voxelize it and train + evaluate a VoxNet classifier; "
                                   "train a small DeepSDF on a few shapes, fit a held-out shape from full and partial "
                                   "data, interpolate and extract meshes; render contact sheets; synthesise a texture "
                                   "from a scikit-image sample. Results land in --out.")
    p.add_argument("--out", type=output_folder, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--per-class", type=int_range(4, 10_000), default=16, help="shapes per family (default 16)")
    p.add_argument("--workers", type=int_range(1, 1024), default=1, help="preprocessing worker processes (default 1)")
    p.add_argument("--skip-sdf", action="store_true", help="skip the DeepSDF part (default: run it)")
    p.add_argument("--skip-style", action="store_true", help="skip the texture synthesis (default: run it)")
    p.add_argument("--config", default="demo-voxnet",
                   help="classification config: a TOML file or a shipped preset (default demo-voxnet: 8 rotations, "
                        "20 epochs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="classification config overrides, e.g. --set train.epochs=5 (repeatable; default none)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from shapes3d.data.discovery import discover
    from shapes3d.data.synth import FAMILIES, write_dataset

    t0 = time.perf_counter()
    out: Path = args.out
    data_dir = out / "data"
    print(f"[1/6] built-in dataset: {args.per_class} shapes x {len(FAMILIES)} families -> {data_dir}")
    write_dataset(data_dir, per_class=args.per_class, seed=0, families=FAMILIES, test_fraction=0.25, resolution=64)
    manifest = discover(data_dir)
    manifest.save_csv(out / "manifest.csv")
    _classify_part(args, out, data_dir)
    if not args.skip_sdf:
        _deepsdf_part(out, data_dir)
    _render_part(out, data_dir)
    if not args.skip_style:
        _style_part(out)
    print(f"done in {time.perf_counter() - t0:.0f} s; outputs in {out}")
    return 0


def _classify_part(args: argparse.Namespace, out: Path, data_dir: Path) -> None:
    import dataclasses

    from shapes3d.classify import jobs
    from shapes3d.classify.config import ClassifyConfig

    cfg = resolve_config(ClassifyConfig, args)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, workers=args.workers))
    run, cache = out / "classify", out / "cache"
    print(f"[2/6] voxelize the train split ({cfg.data.rotations} rotations each) and train VoxNet "
          f"for {cfg.train.epochs} epochs -> {run}")
    result = jobs.train(cfg, data_dir, run, cache=cache, overwrite=True)  # a demo re-run starts again
    print(f"[3/6] evaluate on the test split with voting over {cfg.data.rotations} rotations")
    ev = jobs.evaluate(result.last_path, data_dir, out=run / "eval-test", cache=cache, workers=args.workers)
    m = ev.metrics
    print(f"    test accuracy {m['overall_accuracy']:.3f} (mean class {m['mean_class_accuracy']:.3f}) "
          f"on {m['n']} shapes; confusion matrix {ev.confusion_path}")


def _call(*argv: str) -> None:
    """Run one shapes3d command; a failure stops the demo."""
    from shapes3d.cli.main import main
    from shapes3d.errors import Shapes3DError

    if main(list(argv)) != 0:
        raise Shapes3DError(f"demo step failed: shapes3d {' '.join(argv)}")


DEMO_SDF_SHAPES = ("mug", "bowl", "bottle", "ring")


def _deepsdf_part(out: Path, data_dir: Path) -> None:
    run = out / "deepsdf"
    train_dir = out / "deepsdf-data"
    train_dir.mkdir(parents=True, exist_ok=True)
    # two training shapes per family, listed in a manifest (no copies)
    rows = ["class,split,path"] + [f"{fam},train,{(data_dir / fam / 'train' / f'{fam}_{i:04d}.off').resolve()}"
                                   for fam in DEMO_SDF_SHAPES for i in (1, 2)]
    (train_dir / "manifest.csv").write_text("\n".join(rows) + "\n")
    print(f"[4/6] DeepSDF: train on {2 * len(DEMO_SDF_SHAPES)} shapes, fit a held-out mug (full and one depth view), "
          f"interpolate -> {run}")
    _call("sdf", "train", "--data", str(train_dir / "manifest.csv"), "--out", str(run), "--cache",
          str(out / "cache"), "--config", "demo-deepsdf", "--overwrite")
    held_out = next(iter(sorted((data_dir / "mug" / "test").glob("*.off"))))
    _call("sdf", "fit", str(run / "last.pt"), str(held_out), "--resolution", "64")
    _call("sdf", "fit", str(run / "last.pt"), str(held_out), "--partial", "depth", "--resolution", "64")
    _call("sdf", "interpolate", str(run / "last.pt"), "mug_0001", "ring_0001", "--steps", "5", "--resolution", "64")
    _call("sdf", "extract", str(run / "last.pt"), "--resolution", "64")
    _call("sdf", "evaluate", str(run / "last.pt"), "--resolution", "64", "--points", "10000")


def _render_part(out: Path, data_dir: Path) -> None:
    shapes = [next(iter(sorted((data_dir / fam / "train").glob("*.off")))) for fam in sorted(p.name for p in
              data_dir.iterdir() if p.is_dir())]
    print(f"[5/6] render a multi-view sheet of {len(shapes)} shapes -> {out / 'renders.png'}")
    _call("render", *map(str, shapes), "--views", "4", "--size", "96", "--out", str(out / "renders.png"))
    meshes = sorted((out / "deepsdf" / "meshes").glob("*.ply")) + sorted((out / "deepsdf" / "fits").glob("*.ply"))
    if meshes:
        _call("render", *map(str, meshes), "--views", "4", "--size", "96", "--out", str(out / "deepsdf-renders.png"))


def _style_part(out: Path) -> None:
    print(f"[6/6] texture synthesis from scikit-image's brick -> {out / 'texture'}")
    _call("style", "texture", "skimage:brick", "--out", str(out / "texture"), "--config", "demo-style")
