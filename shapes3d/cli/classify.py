"""``shapes3d classify``: train, evaluate, predict and inspect VoxNet and multi-view classifiers."""

from __future__ import annotations

import argparse
from pathlib import Path

from shapes3d.classify.config import ClassifyConfig
from shapes3d.cli.common import (
    DEFAULT_CACHE,
    add_config_args,
    batch_exit,
    examples,
    float_range,
    int_range,
    output_file,
    output_folder,
    print_skipped,
    report_interrupted,
    require_inputs,
    resolve_config,
)


def register(sub) -> None:
    p = sub.add_parser("classify", help="VoxNet and multi-view classifiers: train, evaluate, predict",
                       epilog=examples(
                           "shapes3d classify train --data data/ModelNet10 --config modelnet10 --out runs/voxnet",
                           "shapes3d classify predict runs/voxnet/best.pt scans/chair.ply"),
                       description="Train a VoxNet classifier on a folder of meshes or point clouds, evaluate it "
                                   "with rotation voting, and classify new files.")
    csub = p.add_subparsers(dest="classify_command", metavar="ACTION", required=True)

    t = csub.add_parser("train", help="train on the train split of a dataset folder",
                        description="Voxelize the dataset (cached), carve a validation split from train, train "
                                    "VoxNet with augmentation; writes best.pt, last.pt, log.csv, curves.png.",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=examples(
                            "shapes3d classify train --data data/ModelNet10 --config modelnet10 --out runs/voxnet",
                            "shapes3d classify train --data data/ModelNet10 --out runs/voxnet --resume",
                            config=ClassifyConfig))
    t.add_argument("--data", required=True, type=Path, help="dataset folder (ModelNet-style) or manifest CSV")
    t.add_argument("--out", type=output_folder, default=Path("runs/classify"),
                   help="run folder (default runs/classify); one that holds a run needs --resume or --overwrite")
    t.add_argument("--cache", type=output_folder, default=DEFAULT_CACHE / "voxels",
                   help="voxel cache folder, shared across runs (set $SHAPES3D_CACHE to move it)")
    t.add_argument("--split", default="train", help="split to train on when the dataset has splits (default train)")
    mode = t.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in OUT from OUT/last.pt")
    mode.add_argument("--overwrite", action="store_true",
                      help="replace the run in OUT (its last.pt and best.pt are deleted first)")
    t.add_argument("--stop-after", type=int_range(1), default=None, metavar="N",
                   help="stop after N epochs of this invocation (resume later with --resume; default: run to "
                        "train.epochs)")
    add_config_args(t, "voxnet.toml")
    t.set_defaults(handler=run_train)

    e = csub.add_parser("evaluate", help="accuracy, per-class table and confusion matrix on the test split",
                        description="Evaluate a checkpoint on a dataset's test split with test-time voting over "
                                    "the cached rotations (a multi-view model pools its views); writes "
                                    "metrics.json and confusion.png. Several checkpoints are an ensemble: their "
                                    "class probabilities are averaged.",
                        epilog=examples(
                            "shapes3d classify evaluate runs/voxnet/best.pt --data data/ModelNet10",
                            "shapes3d classify evaluate runs/voxnet/best.pt --data data/ModelNet10 --mirror-vote",
                            "shapes3d classify evaluate runs/voxnet/best.pt runs/mvcnn/best.pt --data data/ModelNet10 "
                            "--split val --prior-tau 0.5"))
    e.add_argument("checkpoint", type=Path, nargs="+",
                   help="checkpoint(s) from 'classify train' (VoxNet or multi-view); several: an ensemble")
    e.add_argument("--data", required=True, type=Path, help="dataset folder or manifest CSV")
    e.add_argument("--split", default="test",
                   help="split to evaluate (default test; 'val': the validation split training carved from train, "
                        "where ensembles and --prior-tau are chosen)")
    e.add_argument("--prior-tau", type=float_range(0.0, 2.0), default=None, metavar="TAU",
                   help="divide the probabilities by the training class frequencies^TAU before the argmax "
                        "(0: none; 1: Bayes' rule for balanced test classes; default: the checkpoint's prior_tau)")
    e.add_argument("--out", type=output_folder, default=None, help="output folder (default: beside the checkpoint)")
    e.add_argument("--cache", type=output_folder, action="append", default=None, metavar="DIR",
                   help="voxel (or view) cache folder, shared across runs; give it once per checkpoint for members "
                        f"with their own caches (default {DEFAULT_CACHE / 'voxels'}; set $SHAPES3D_CACHE to move it)")
    e.add_argument("--workers", type=int_range(1, 1024), default=1,
                   help="processes voxelizing shapes missing from the cache (default 1)")
    vote = e.add_mutually_exclusive_group()
    vote.add_argument("--no-vote", action="store_true",
                      help="use only the unrotated copy (default: vote over the rotations)")
    vote.add_argument("--mirror-vote", action="store_true",
                      help="also average over each rotation's mirror image (default: the config's mirror_vote)")
    e.set_defaults(handler=run_evaluate)

    pr = csub.add_parser("predict", help="top-k classes for files or folders",
                         description="Classify meshes or point clouds (files or folders, recursively).",
                         epilog=examples(
                             "shapes3d classify predict runs/voxnet/best.pt scans/chair.ply",
                             "shapes3d classify predict runs/voxnet/best.pt scans/ --top-k 1 --json pred.json",
                             "shapes3d classify predict runs/voxnet/best.pt scans/ --ensemble runs/mvcnn/best.pt"))
    pr.add_argument("checkpoint", type=Path, help="checkpoint from 'classify train' (VoxNet or multi-view)")
    pr.add_argument("paths", nargs="+", type=Path, help="mesh or point-cloud files, or folders of them")
    pr.add_argument("--ensemble", type=Path, action="append", default=[], metavar="CHECKPOINT",
                    help="another checkpoint to average with (repeat for more; default: none, the one checkpoint)")
    pr.add_argument("--prior-tau", type=float_range(0.0, 2.0), default=None, metavar="TAU",
                    help="divide the probabilities by the training class frequencies^TAU (default: the "
                         "checkpoint's prior_tau; see 'classify evaluate')")
    pr.add_argument("--top-k", type=int_range(1, 1000), default=3, help="classes shown per input (default 3)")
    pr.add_argument("--json", type=output_file, default=None,
                    help="also write the predictions as JSON (default: print only)")
    pr.add_argument("--views-sheets", type=Path, default=None, metavar="DIR",
                    help="multi-view checkpoints: write DIR/NAME.png per shape, its views each captioned with the "
                         "class it alone predicts (default: none)")
    pr.set_defaults(handler=run_predict)

    f = csub.add_parser("filters", help="PNG of the first-layer 5^3 filters as slices",
                        description="Draw each first-layer filter as a row of its 5 depth slices.",
                        epilog=examples(
                            "shapes3d classify filters runs/voxnet/best.pt",
                            "shapes3d classify filters runs/voxnet/best.pt --out figures/filters.png"))
    f.add_argument("checkpoint", type=Path, help="VoxNet checkpoint (from 'classify train')")
    f.add_argument("--out", type=output_file, default=None,
                   help="PNG path (default: filters.png beside the checkpoint)")
    f.set_defaults(handler=run_filters)


def run_train(args: argparse.Namespace) -> int:
    require_inputs(args.data)
    from shapes3d.classify.jobs import train
    from shapes3d.engine.distributed import is_main_process

    cfg = resolve_config(ClassifyConfig, args)
    res = train(cfg, args.data, args.out, cache=args.cache, split=args.split, resume=args.resume,
                stop_after=args.stop_after, overwrite=args.overwrite)
    main = is_main_process()
    if main:
        print(f"train set: {res.n_shapes} shapes, {len(res.classes)} classes; {len(res.skipped)} skipped")
        print_skipped(res.skipped)
    code = report_interrupted(res, main=main)
    if code is not None:
        return code
    if main:
        print(f"best validation accuracy {res.best_val_acc:.4f}; checkpoints {res.best_path}, {res.last_path}")
        print(f"log {res.log_path}, curves {res.curves_path}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    require_inputs(*args.checkpoint, args.data)
    from shapes3d.classify.jobs import evaluate

    caches = args.cache or [DEFAULT_CACHE / "voxels"]
    res = evaluate(args.checkpoint, args.data, out=args.out, split=args.split,
                   cache=caches[0] if len(caches) == 1 else caches,
                   vote=not args.no_vote, mirror_vote=True if args.mirror_vote else None, workers=args.workers,
                   prior_tau=args.prior_tau)
    m = res.metrics
    width = max(len(c) for c in m["classes"])
    print(f"{'class':<{width}}  accuracy  support")
    for c, v in m["per_class"].items():
        acc = "   -  " if v["accuracy"] is None else f"{v['accuracy']:.4f}"
        print(f"{c:<{width}}  {acc:>8}  {v['support']:>7}")
    members = m["members"]
    if len(members) > 1:
        for r in members:
            print(f"member {r['checkpoint']} ({_protocol(r)}): overall {r['overall_accuracy']:.4f}, "
                  f"mean class {r['mean_class_accuracy']:.4f}")
    how = _protocol(members[0]) if len(members) == 1 else f"ensemble of {len(members)}, probabilities averaged"
    tau = f", prior tau {m['prior_tau']:g}" if m["prior_tau"] else ""
    print(f"overall accuracy {m['overall_accuracy']:.4f}, mean class accuracy {m['mean_class_accuracy']:.4f} "
          f"({m['n']} shapes of split {m['split']}, {how}{tau})")
    print_skipped(res.skipped)
    print(f"results: {res.metrics_path}, {res.confusion_path}")
    return 0


def _protocol(member: dict) -> str:
    if member["model"] == "mvcnn":
        return f"{member['views']} views pooled"
    mirror = " and their mirror images" if member["mirror_vote"] else ""
    return f"voting over {member['rotations']} rotations{mirror}" if member["vote"] else "no voting"


def run_predict(args: argparse.Namespace) -> int:
    require_inputs(args.checkpoint, *args.ensemble)
    from shapes3d.classify.jobs import predict

    res = predict([args.checkpoint, *args.ensemble], args.paths, top_k=args.top_k, out=args.json,
                  views_sheets=args.views_sheets, prior_tau=args.prior_tau)
    for path, top in res.predictions:
        print(f"{path}: " + ", ".join(f"{c} {p:.3f}" for c, p in top))
    print_skipped(res.skipped)
    if res.json_path is not None:
        print(f"predictions written to {res.json_path}")
    if res.sheets:
        print(f"{len(res.sheets)} view sheet(s) written to {args.views_sheets}")
    return batch_exit(res.inputs, len(res.skipped))


def run_filters(args: argparse.Namespace) -> int:
    require_inputs(args.checkpoint)
    from shapes3d.classify.jobs import filters

    res = filters(args.checkpoint, out=args.out)
    print(f"wrote {res.path}")
    return 0
