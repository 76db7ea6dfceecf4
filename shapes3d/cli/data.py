"""``shapes3d data``: the built-in dataset, dataset discovery, preprocessing into caches."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from shapes3d.cli.common import (
    DEFAULT_CACHE,
    add_config_args,
    batch_exit,
    examples,
    int_range,
    output_file,
    output_folder,
    print_skipped,
    require_inputs,
    resolve_config,
    write_resolved_config,
)
from shapes3d.data.configs import SynthConfig, VoxelCacheConfig
from shapes3d.errors import Shapes3DError

log = logging.getLogger("shapes3d.cli")

def _voxel_task(cfg: VoxelCacheConfig):
    from shapes3d.data.tasks import VOXELS_VERSION, voxel_task

    return voxel_task, dataclasses.asdict(cfg), VOXELS_VERSION


def _sdf_task(cfg):
    from shapes3d.data.sdf_dataset import sdf_task_params
    from shapes3d.data.tasks import SDF_VERSION, sdf_task

    return sdf_task, sdf_task_params(cfg.samples), SDF_VERSION


def _deepsdf_config():
    from shapes3d.deepsdf.config import DeepSDFConfig

    return DeepSDFConfig


# task -> (config class, default config file, cfg -> (task function, params, version)); the sdf task reads the
# [samples] section of a DeepSDF config and writes the very cache entries `shapes3d sdf train` reads.
TASKS = {"voxels": (lambda: VoxelCacheConfig, "voxels.toml", _voxel_task),
         "sdf": (_deepsdf_config, "deepsdf.toml", _sdf_task)}


def register(sub) -> None:
    p = sub.add_parser("data", help="built-in dataset, discovery, preprocessing",
                       epilog=examples(
                           "shapes3d data synth --out data/synth",
                           "shapes3d data preprocess data/ModelNet10 --out ~/.cache/shapes3d/voxels --workers 4"),
                       description="Make the built-in dataset, list datasets, and preprocess them into caches.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    s = dsub.add_parser("synth", help="write the built-in synthetic dataset (ModelNet-style folder)",
                        description="Write a seeded synthetic dataset of watertight parametric shapes "
                                    "(chair, table, lamp, mug, ...) as a ModelNet-style folder with a manifest.",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=examples(
                            "shapes3d data synth --out data/synth",
                            "shapes3d data synth --out data/synth-small --per-class 4 --seed 1",
                            config=SynthConfig))
    s.add_argument("--out", required=True, type=output_folder, help="output folder")
    s.add_argument("--per-class", type=int_range(1, 1_000_000),
                   help="shapes per family (default: per_class of the config)")
    s.add_argument("--seed", type=int_range(0, 2**63 - 1), help="master seed (default: seed of the config)")
    add_config_args(s, "synth.toml")
    s.set_defaults(handler=run_synth)

    d = dsub.add_parser("discover", help="list a dataset's shapes as a manifest CSV",
                        description="Find shape files in a ModelNet-style (root/<class>/{train,test}/*), "
                                    "ShapeNet-style (root/<synset>/<id>/models/model_normalized.obj) or flat folder.",
                        epilog=examples(
                            "shapes3d data discover data/ModelNet10",
                            "shapes3d data discover data/ShapeNetV2 --layout shapenet --out shapenet.csv"))
    d.add_argument("root", type=Path, help="dataset folder")
    d.add_argument("--layout", default="auto", choices=("auto", "modelnet", "shapenet", "flat"),
                   help="folder layout; auto recognises ModelNet and ShapeNet folders")
    d.add_argument("--out", type=output_file, help="manifest CSV to write (default: print a summary only)")
    d.set_defaults(handler=run_discover)

    pp = dsub.add_parser("preprocess", help="preprocess a dataset into a cache (parallel, sharded, resumable)",
                         description="Run a per-shape task over a dataset with a progress bar. Results are cached "
                                     "by input file and parameters: a re-run skips finished work, changed parameters "
                                     "recompute. Bad files are skipped and listed in the report.",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog=examples(
                             "shapes3d data preprocess data/ModelNet10 --out ~/.cache/shapes3d/voxels --workers 4",
                             "shapes3d data preprocess data/ShapeNetV2 --task sdf --format deepsdf --out data/sdf",
                             config=VoxelCacheConfig))
    pp.add_argument("root", type=Path, help="dataset folder or manifest CSV")
    pp.add_argument("--task", default="voxels", choices=sorted(TASKS),
                    help="voxels: occupancy grids for 'classify'; sdf: SDF samples for 'sdf train'")
    pp.add_argument("--out", type=output_folder, required=True,
                    help="cache folder (--format cache) or the official data source to write (--format deepsdf)")
    pp.add_argument("--format", choices=("cache", "deepsdf"), default="cache",
                    help="deepsdf (with --task sdf): also write OUT/SdfSamples/<dataset>/<class>/<id>.npz, "
                         "NormalizationParameters (official offset sign: (x + offset) * scale) and split.json; "
                         "the samples are cached in --cache")
    pp.add_argument("--dataset", default="ShapeNetV2", help="dataset folder name of --format deepsdf")
    pp.add_argument("--cache", type=Path, default=None,
                    help="sample cache of --format deepsdf (default: the sdf cache)")
    pp.add_argument("--workers", type=int_range(1, 1024), default=1,
                    help="worker processes (default 1; capped by the CPUs and ~600 MB of memory per worker)")
    pp.add_argument("--shard", default=None, metavar="I/N",
                    help="process only shard I of N (0-based; default: all inputs)")
    pp.add_argument("--layout", default="auto", choices=("auto", "modelnet", "shapenet", "flat"),
                    help="folder layout of ROOT; auto recognises ModelNet and ShapeNet folders")
    add_config_args(pp, None)
    pp.set_defaults(handler=run_preprocess_cmd)

    m = dsub.add_parser("merge", help="merge caches written by shards (e.g. a cluster job array) into one",
                        description="Copy every verified entry of the SOURCE cache folders into --out; entries "
                                    "failing their checksum are left out and listed.",
                        epilog=examples(
                            "shapes3d data merge cache-shard0 cache-shard1 --out ~/.cache/shapes3d/voxels"))
    m.add_argument("sources", nargs="+", type=Path, help="cache folders to merge")
    m.add_argument("--out", required=True, type=output_folder, help="destination cache folder")
    m.set_defaults(handler=run_merge)
    _register_fetch(dsub)


def run_synth(args: argparse.Namespace) -> int:
    from shapes3d.data.synth import FAMILIES, write_dataset

    extra = []
    if args.per_class is not None:
        extra.append(f"per_class={args.per_class}")
    if args.seed is not None:
        extra.append(f"seed={args.seed}")
    cfg = resolve_config(SynthConfig, args, extra=extra)
    families = cfg.families or FAMILIES
    out = write_dataset(args.out, per_class=cfg.per_class, seed=cfg.seed, families=families,
                        test_fraction=cfg.test_fraction, resolution=cfg.resolution)
    write_resolved_config(cfg, out)
    print(f"wrote {cfg.per_class} shapes x {len(families)} families to {out} (manifest: {out / 'manifest.csv'})")
    return 0


def run_discover(args: argparse.Namespace) -> int:
    from shapes3d.engine.jobs import load_manifest

    require_inputs(args.root)
    manifest = load_manifest(args.root, layout=args.layout)
    splits = {}
    for e in manifest.entries:
        splits[e.split or "(none)"] = splits.get(e.split or "(none)", 0) + 1
    print(f"{args.root}: {len(manifest)} shapes, {len(manifest.classes)} classes; "
          + ", ".join(f"{k}: {v}" for k, v in sorted(splits.items())))
    if args.out:
        manifest.save_csv(args.out)
        print(f"manifest written to {args.out}")
    return 0


def run_preprocess_cmd(args: argparse.Namespace) -> int:
    require_inputs(args.root)
    from shapes3d.data.preprocess import run_preprocess
    from shapes3d.engine.jobs import load_manifest

    cls_fn, default_cfg, task_fn = TASKS[args.task]
    if args.config is None:
        args.config = default_cfg
    cfg = resolve_config(cls_fn(), args)
    fn, params, version = task_fn(cfg)
    manifest = load_manifest(args.root, layout=args.layout)
    if args.format == "deepsdf" and args.task != "sdf":
        raise Shapes3DError(f"--format deepsdf writes SDF samples: it needs --task sdf, got --task {args.task}")
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out if args.format == "cache" else (args.cache or DEFAULT_CACHE / "sdf")
    report = run_preprocess(manifest.entries, fn, params=params, cache_dir=cache,
                            workers=args.workers, shard=args.shard, desc=f"{args.task}", version=version)
    if args.format == "deepsdf":
        from shapes3d.data.deepsdf_layout import write_official_dataset

        written = write_official_dataset(manifest.entries, report.results, args.out, dataset=args.dataset,
                                         shard=report.shard)
        print(f"wrote {len(written)} official sample files to {args.out / 'SdfSamples' / args.dataset}")
    write_resolved_config(cfg, args.out)
    suffix = "" if report.shard is None else f"-shard{report.shard[0]}of{report.shard[1]}"
    report_path = args.out / f"report{suffix}.json"
    report.write(report_path)
    print(report.summary({"voxels": "voxels", "sdf": "SDF samples"}[args.task]))
    print_skipped(report.skipped)
    print(f"report written to {report_path}")
    return batch_exit(report.computed + report.cached + len(report.skipped), len(report.skipped))


def run_merge(args: argparse.Namespace) -> int:
    from shapes3d.data.cache import merge_caches

    args.out.mkdir(parents=True, exist_ok=True)
    report = merge_caches(args.sources, args.out)
    print(report.summary())
    for path, reason in report.invalid:
        print(f"  left out: {path}: {reason}")
    return 0 if not report.invalid else 1


def _sha256_hex(text: str) -> str:
    if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a SHA-256 (64 hexadecimal digits)")
    return text.lower()


def _byte_count(text: str) -> int:
    from shapes3d.errors import ConfigError
    from shapes3d.geometry.limits import parse_size

    try:
        return parse_size(text)
    except ConfigError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte count such as 512M, 8G or 1073741824") from None


#: The sets and uncompressed-size ceilings of shapes3d.data.fetch.DATASETS, written out so that building the parser
#: does not import it (CLI start-up is benchmarked); tests/test_data_fetch.py keeps the two equal.
FETCH_SETS = {"modelnet10": "8G", "modelnet40": "32G", "shrec11": "1G"}


def _register_fetch(dsub) -> None:
    ceilings = ", ".join(f"{name} {size}" for name, size in FETCH_SETS.items())
    f = dsub.add_parser("fetch", help="download ModelNet10/40 or SHREC'11 and lay it out for discovery",
                        description="Download a standard data set from its official address (resuming a partial "
                                    "download), verify its SHA-256, extract it safely and lay it out as "
                                    "OUT/<Set>/<class>/{train,test}/<file>. Licences, citations and layouts: "
                                    "data/README.md in the repository.",
                        epilog=examples("shapes3d data fetch modelnet10 --out data",
                                        "shapes3d data fetch shrec11 --out data --archive shrec_16.tar.gz"))
    f.add_argument("dataset", choices=list(FETCH_SETS), metavar="DATASET",
                   help=f"the data set to fetch: {', '.join(FETCH_SETS)}")
    f.add_argument("--out", required=True, type=output_folder,
                   help="folder to put it in: OUT/ModelNet10, OUT/ModelNet40 or OUT/SHREC11, beside the archive")
    source = f.add_mutually_exclusive_group()
    source.add_argument("--url", default=None, help="download from this mirror (http, https or file URL; default: "
                                                    "the official address)")
    source.add_argument("--archive", type=Path, default=None,
                        help="use this archive, already downloaded (default: download it)")
    f.add_argument("--sha256", type=_sha256_hex, default=None, metavar="HEX",
                   help="expected SHA-256 of the archive (default: the one recorded in OUT/<archive>.sha256 by the "
                        "first download; none is published)")
    f.add_argument("--overwrite", action="store_true", help="replace OUT/<Set> if it exists (default: refuse)")
    f.add_argument("--delete-archive", action="store_true",
                   help="delete the downloaded archive once the set is in place (default: keep it)")
    f.add_argument("--max-bytes", type=_byte_count, default=None, metavar="SIZE",
                   help=f"refuse an archive inflating to more than SIZE, e.g. 40G (default: {ceilings})")
    f.set_defaults(handler=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    from shapes3d.data.fetch import fetch_dataset

    require_inputs(args.archive)
    result = fetch_dataset(args.dataset, args.out, url=args.url, archive=args.archive, sha256=args.sha256,
                           overwrite=args.overwrite, keep_archive=not args.delete_archive, max_bytes=args.max_bytes)
    print(result.summary())
    return 0
