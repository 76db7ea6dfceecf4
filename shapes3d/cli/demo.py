"""``shapes3d demo``: the main job end to end on the built-in dataset."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the pipelines end to end on the built-in synthetic dataset",
                       description="Write the built-in dataset, voxelize it through the preprocessing "
                                   "framework, and run each pipeline on it; results land in --out.")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--per-class", type=int, default=20, help="shapes per family (default 20)")
    p.add_argument("--workers", type=int, default=2, help="preprocessing worker processes (default 2)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from shapes3d.data.configs import SynthConfig, VoxelCacheConfig
    from shapes3d.data.discovery import discover
    from shapes3d.data.preprocess import run_preprocess
    from shapes3d.data.synth import FAMILIES, write_dataset
    from shapes3d.data.tasks import VOXELS_VERSION, voxel_task

    t0 = time.perf_counter()
    out: Path = args.out
    synth = SynthConfig(per_class=args.per_class)
    data_dir = out / "data"
    print(f"[1] built-in dataset: {synth.per_class} shapes x {len(FAMILIES)} families -> {data_dir}")
    write_dataset(data_dir, per_class=synth.per_class, seed=synth.seed, families=FAMILIES,
                  test_fraction=synth.test_fraction, resolution=synth.resolution)
    manifest = discover(data_dir)
    manifest.save_csv(out / "manifest.csv")
    vox = VoxelCacheConfig()
    print(f"[2] voxelize {len(manifest)} shapes at {vox.resolution}^3 with {args.workers} workers -> {out / 'voxels'}")
    report = run_preprocess(manifest.entries, voxel_task, params=dataclasses.asdict(vox), cache_dir=out / "voxels",
                            workers=args.workers, desc="voxels", version=VOXELS_VERSION)
    report.write(out / "voxels" / "report.json")
    print(f"    {report.summary()}")
    print(f"done in {time.perf_counter() - t0:.1f} s; outputs in {out}")
    return 0
