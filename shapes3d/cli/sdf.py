"""``shapes3d sdf``: DeepSDF training, code fitting, interpolation, extraction and evaluation."""

from __future__ import annotations

import argparse
from pathlib import Path

from shapes3d.cli.common import (
    DEFAULT_CACHE,
    add_config_args,
    batch_exit,
    examples,
    float_range,
    int_range,
    output_folder,
    print_skipped,
    report_interrupted,
    require_inputs,
    resolve_config,
)
from shapes3d.deepsdf.config import DeepSDFConfig
from shapes3d.deepsdf.views_config import ViewsConfig
from shapes3d.geometry.limits import MAX_EXTRACT_RESOLUTION, MAX_POINTS


def register(sub) -> None:  # long only because it declares every action's options, one block each
    p = sub.add_parser("sdf", help="DeepSDF: train, fit, interpolate, extract, evaluate",
                       description="DeepSDF auto-decoder: one network for a collection of shapes, one latent code "
                                   "per shape; fit codes to new or partly seen shapes; walk between codes; meshes out.",
                       epilog=examples(
                           "shapes3d sdf train --data data/ShapeNetV2/03001627 --config deepsdf --out runs/chairs",
                           "shapes3d sdf extract runs/chairs/last.pt 0 1 --resolution 128"))
    s = p.add_subparsers(dest="sdf_command", metavar="ACTION", required=True)

    t = s.add_parser("train", help="train decoder and codes on a folder of meshes",
                     description="Sample SDFs from every mesh (cached), then train; writes last.pt, log.csv, "
                                 "curves.png, config.toml.",
                     epilog=examples(
                         "shapes3d sdf train --data data/ShapeNetV2/03001627 --config deepsdf --out runs/chairs",
                         "shapes3d sdf train --data data/ShapeNetV2/03001627 --out runs/chairs --resume",
                         config=DeepSDFConfig))
    t.add_argument("--data", required=True, type=Path, help="dataset folder or manifest CSV (meshes)")
    t.add_argument("--split", default="train", help="split to train on when the dataset has splits")
    t.add_argument("--out", type=output_folder, default=Path("runs/deepsdf"),
                   help="run folder (default runs/deepsdf); one that holds a run needs --resume or --overwrite")
    t.add_argument("--cache", type=output_folder, default=DEFAULT_CACHE / "sdf",
                   help="SDF sample cache, shared across runs (set $SHAPES3D_CACHE to move it)")
    mode = t.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in OUT from OUT/last.pt")
    mode.add_argument("--overwrite", action="store_true",
                      help="replace the run in OUT (its last.pt and best.pt are deleted first)")
    t.add_argument("--stop-after", type=int_range(1), default=None, metavar="N",
                   help="stop after N epochs of this call (default: run to train.epochs)")
    add_config_args(t, "deepsdf.toml")
    t.set_defaults(handler=run_train)

    f = s.add_parser("fit", help="fit a code to a new mesh, fully or from one depth view",
                     description="Freeze the decoder and optimise a new code for MESH from its full SDF samples, "
                                 "from one depth view (--partial depth) or a cropped view (--partial crop).",
                     epilog=examples(
                         "shapes3d sdf fit runs/chairs/last.pt data/chair_0890.off",
                         "shapes3d sdf fit runs/chairs/last.pt data/chair_0890.off --partial depth"))
    f.add_argument("checkpoint", type=Path, help="DeepSDF checkpoint (from 'sdf train')")
    f.add_argument("mesh", type=Path, help="mesh to fit a code to (OFF/OBJ/PLY/STL/GLB)")
    f.add_argument("--partial", choices=("none", "depth", "crop"), default="none",
                   help="fit to full SDF samples (none), to one depth view, or to a cropped depth view")
    f.add_argument("--out", type=Path, default=None, help="output folder (default: CHECKPOINT_DIR/fits)")
    f.add_argument("--resolution", type=int_range(2, MAX_EXTRACT_RESOLUTION), default=128,
                   help="extraction resolution")
    f.add_argument("--format", choices=("ply", "obj", "off", "glb"), default="ply", help="mesh file format")
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override fit.* keys of the checkpoint's config, e.g. --set fit.iterations=200 "
                        "(repeatable; default: none)")
    add_extraction_args(f)
    f.set_defaults(handler=run_fit)

    i = s.add_parser("interpolate", help="meshes and an image strip between two codes",
                     description="Walk from code A to code B (training shape names or indices, or code files from "
                                 "'sdf fit'), linearly or spherically, and extract a mesh at every step.",
                     epilog=examples(
                         "shapes3d sdf interpolate runs/chairs/last.pt 0 5 --steps 7",
                         "shapes3d sdf interpolate runs/chairs/last.pt chair_0001 runs/chairs/fits/a.pt --mode linear"))
    i.add_argument("checkpoint", type=Path, help="DeepSDF checkpoint (from 'sdf train')")
    i.add_argument("a", help="start: a training shape's name or index, or a code file")
    i.add_argument("b", help="end: a training shape's name or index, or a code file")
    i.add_argument("--steps", type=int_range(2, 1000), default=5, help="meshes from A to B, both included (default 5)")
    i.add_argument("--mode", choices=("linear", "slerp"), default="slerp",
                   help="straight line between the codes, or spherical (keeps the code norm)")
    i.add_argument("--resolution", type=int_range(2, MAX_EXTRACT_RESOLUTION), default=96,
                   help="extraction resolution of each mesh")
    i.add_argument("--out", type=Path, default=None, help="output folder (default: CHECKPOINT_DIR/interp-A-B)")
    i.add_argument("--format", choices=("ply", "obj", "off", "glb"), default="ply", help="mesh file format")
    add_extraction_args(i)
    i.set_defaults(handler=run_interpolate)

    e = s.add_parser("extract", help="code -> mesh in the original mesh's coordinates",
                     description="Extract training shapes (by name or index) or fitted codes as meshes.",
                     epilog=examples(
                         "shapes3d sdf extract runs/chairs/last.pt",
                         "shapes3d sdf extract runs/chairs/last.pt 0 chair_0003 --resolution 256 --format obj"))
    e.add_argument("checkpoint", type=Path, help="DeepSDF checkpoint (from 'sdf train')")
    e.add_argument("shapes", nargs="*", help="names, indices or code files (default: all training shapes)")
    e.add_argument("--resolution", type=int_range(2, MAX_EXTRACT_RESOLUTION), default=128,
                   help="marching-cubes grid points per axis")
    e.add_argument("--mode", choices=("coarse_to_fine", "dense"), default="coarse_to_fine",
                   help="evaluate the SDF only near the surface (fast), or on the full grid")
    e.add_argument("--format", choices=("ply", "obj", "off", "glb"), default="ply", help="mesh file format")
    e.add_argument("--out", type=Path, default=None, help="output folder (default: CHECKPOINT_DIR/meshes)")
    add_extraction_args(e)
    e.set_defaults(handler=run_extract)

    w = s.add_parser("fit-views", help="fit a code to multi-view renders of a mesh (2D losses only)",
                     description="Freeze the decoder and optimise a code so that its sphere-traced renders match "
                                 "target views (silhouette BCE/L2, 1 - SSIM and VGG perceptual losses on shaded and "
                                 "normal images): a shape from images alone. Targets are rendered from a mesh, "
                                 "normalised like the training shapes, or read from a folder written by an earlier "
                                 "run (cameras.json + PNGs). Writes the code (.pt), the mesh, sheet.png (target vs "
                                 "fitted), loss.png, log.csv, config.toml.",
                     epilog=examples(
                         "shapes3d sdf fit-views runs/chairs/last.pt --targets data/chair_0890.off",
                         "shapes3d sdf fit-views runs/chairs/last.pt --targets runs/fv/targets --set fit.steps=50",
                         config=ViewsConfig))
    w.add_argument("checkpoint", type=Path, help="DeepSDF checkpoint (from 'sdf train')")
    w.add_argument("--targets", required=True, type=Path,
                   help="mesh file, or a targets folder (cameras.json or a NeRF transforms.json, and PNG images, as "
                        "written into OUT/targets)")
    w.add_argument("--out", type=Path, default=None, help="output folder (default: CHECKPOINT_DIR/fit-views/NAME)")
    w.add_argument("--resolution", type=int_range(2, MAX_EXTRACT_RESOLUTION), default=96,
                   help="extraction resolution of the fitted mesh")
    w.add_argument("--format", choices=("ply", "obj", "off", "glb"), default="ply", help="mesh file format")
    add_config_args(w, "views.toml")
    w.set_defaults(handler=run_fit_views)

    v = s.add_parser("evaluate", help="reconstructions of the training shapes vs their meshes",
                     description="Extract every training shape and compare with its source mesh in the unit-sphere "
                                 "frame: Chamfer (DeepSDF convention, x10^3), F-score, normal consistency, IoU.",
                     epilog=examples(
                         "shapes3d sdf evaluate runs/chairs/last.pt",
                         "shapes3d sdf evaluate runs/chairs/last.pt --limit 10 --resolution 256"))
    v.add_argument("checkpoint", type=Path, help="DeepSDF checkpoint (from 'sdf train')")
    v.add_argument("--resolution", type=int_range(2, MAX_EXTRACT_RESOLUTION), default=128,
                   help="extraction resolution")
    v.add_argument("--points", type=int_range(1, MAX_POINTS), default=30000,
                   help="surface points per mesh for the metrics (DeepSDF: 30 000)")
    v.add_argument("--limit", type=int_range(1), default=None, metavar="N",
                   help="evaluate only the first N shapes (default: all)")
    v.add_argument("--out", type=Path, default=None, help="output folder (default: CHECKPOINT_DIR/evaluate)")
    add_extraction_args(v)
    v.set_defaults(handler=run_evaluate)
    register_protocol(s)


def add_extraction_args(p) -> None:
    """``--bound`` and ``--safety``: every command that extracts meshes takes them."""
    p.add_argument("--bound", type=float_range(0, 100, open_ends=True), default=1.0,
                   help="half side of the extraction box in the unit-sphere frame (default 1; a surface reaching "
                        "the box is closed there and reported)")
    p.add_argument("--safety", type=float_range(0, 100, open_ends=True), default=1.0,
                   help="Lipschitz bound coarse-to-fine extraction trusts (default 1; larger is slower and safer "
                        "for steep networks)")


def register_protocol(s) -> None:
    """``reconstruct`` (the test protocol), ``import-official`` and ``export-official``."""
    r = s.add_parser("reconstruct", help="the DeepSDF test protocol: fit, extract and score every test shape",
                     description="Fit a code to every shape of --split with the decoder frozen (seeded per shape, "
                                 "best of fit.restarts), extract at --resolution, and score against the ground "
                                 "truth: Chamfer x10^3 (DeepSDF convention, 30 000 points), EMD (1 024-point "
                                 "subsamples), F-score, normal consistency, IoU, mesh accuracy (90th percentile) and "
                                 "completion (within 0.01). Writes per-shape results as they finish (a rerun "
                                 "resumes), metrics.csv, summary.json and summary_by_class.csv.",
                     epilog=examples(
                         "shapes3d sdf reconstruct runs/chairs/last.pt --data data/ShapeNetV2/03001627",
                         "shapes3d sdf reconstruct runs/chairs/last.pt --data data/sdf --split chairs_test.json "
                         "--frame mesh"))
    r.add_argument("checkpoint", type=Path, help="DeepSDF checkpoint (from 'sdf train' or 'sdf import-official')")
    r.add_argument("--data", required=True, type=Path,
                   help="dataset folder or manifest CSV: meshes, ShapeNet, or an official SdfSamples data source")
    r.add_argument("--split", default="test", help="split name, or a DeepSDF split file (.json)")
    r.add_argument("--partial", choices=("none", "depth", "crop"), default="none",
                   help="fit to one depth view or its crop instead of full SDF samples (meshes only)")
    r.add_argument("--resolution", type=int_range(2, MAX_EXTRACT_RESOLUTION), default=256,
                   help="extraction resolution (DeepSDF: 256)")
    r.add_argument("--points", type=int_range(1, MAX_POINTS), default=30000,
                   help="surface points per side for the metrics")
    r.add_argument("--frame", choices=("unit", "mesh"), default="unit",
                   help="score in the unit-sphere frame (default) or the mesh's own coordinates (official)")
    r.add_argument("--limit", type=int_range(1), default=None, metavar="N",
                   help="only the first N shapes of the split (default: all)")
    r.add_argument("--out", type=Path, default=None,
                   help="output folder (default: CHECKPOINT_DIR/reconstruct-SPLIT[-PARTIAL])")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override fit.* keys of the checkpoint's config (repeatable; default: none)")
    add_extraction_args(r)
    r.set_defaults(handler=run_reconstruct)

    im = s.add_parser("import-official", help="an official DeepSDF experiment -> a shapes3d checkpoint",
                      description="Convert specs.json, ModelParameters/EPOCH.pth and LatentCodes/EPOCH.pth of an "
                                  "official DeepSDF experiment into a shapes3d checkpoint (same SDF values).",
                      epilog=examples(
                          "shapes3d sdf import-official experiments/chairs",
                          "shapes3d sdf import-official experiments/chairs --epoch 2000 --data data/sdf"))
    im.add_argument("experiment", type=Path, help="official experiment folder (with specs.json)")
    im.add_argument("--epoch", default="latest", help="N or latest (default)")
    im.add_argument("--split", type=Path, default=None, help="training split file (default: the specs' TrainSplit)")
    im.add_argument("--data", type=Path, default=None,
                    help="data source with NormalizationParameters (default: none, codes only in the "
                         "normalised frame)")
    im.add_argument("--out", type=Path, default=None, help="checkpoint to write (default EXPERIMENT/shapes3d/last.pt)")
    im.set_defaults(handler=run_import_official)

    ex = s.add_parser("export-official", help="a shapes3d checkpoint -> an official DeepSDF experiment folder",
                      description="Write specs.json, ModelParameters/latest.pth, LatentCodes/latest.pth (and "
                                  "split.json) that the official code loads.",
                      epilog=examples(
                          "shapes3d sdf export-official runs/chairs/last.pt experiments/chairs-shapes3d"))
    ex.add_argument("checkpoint", type=Path, help="shapes3d DeepSDF checkpoint")
    ex.add_argument("folder", type=Path, help="experiment folder to write")
    ex.set_defaults(handler=run_export_official)


def run_train(args: argparse.Namespace) -> int:
    require_inputs(args.data)
    from shapes3d.deepsdf.jobs import train

    def sampled(n, report) -> None:
        print(f"{n} shapes sampled ({report.computed} computed, {report.cached} cached, "
              f"{len(report.skipped)} skipped)")
        print_skipped(report.skipped)

    cfg = resolve_config(DeepSDFConfig, args)
    job = train(cfg, args.data, args.out, cache=args.cache, split=args.split, resume=args.resume,
                stop_after=args.stop_after, on_sampled=sampled, overwrite=args.overwrite)
    result = job.training
    code = report_interrupted(result, main=job.main)
    if code is not None:
        return code
    if job.main and result.history:
        last = result.history[-1]
        print(f"epoch {last['epoch']}: loss {last['train_loss']:.5f}; checkpoint {result.last_path}")
    return 0


def run_extract(args: argparse.Namespace) -> int:
    require_inputs(args.checkpoint)
    from shapes3d.deepsdf.jobs import extract

    result = extract(args.checkpoint, args.shapes, resolution=args.resolution, mode=args.mode, format=args.format,
                     out=args.out, bound=args.bound, safety=args.safety)
    for s in result.shapes:
        if s.path is None:
            print(f"{s.label}: no surface ({s.reason})")
        else:
            print(f"{s.label}: {s.faces} faces, {s.n_evaluated} SDF evaluations, {s.seconds:.1f} s -> {s.path}")
    return 0


def _print_metrics(path, metrics) -> None:
    print(f"  mesh {path}; Chamfer x1e3 {metrics['chamfer_deepsdf_x1e3']:.3f}, "
          f"F-score@0.01 {metrics.get('fscore@0.01', float('nan')):.3f}")


def run_fit(args: argparse.Namespace) -> int:
    require_inputs(args.checkpoint, args.mesh)
    from shapes3d.deepsdf.jobs import fit

    r = fit(args.checkpoint, args.mesh, partial=args.partial, out=args.out, resolution=args.resolution,
            overrides=args.overrides, bound=args.bound, safety=args.safety, format=args.format)
    print(f"fitted {r.label}: loss {r.fit.loss:.5f} (restarts: {', '.join(f'{x:.5f}' for x in r.fit.restart_losses)})")
    if r.mesh_path is None:
        print(f"  the fitted code has no surface ({r.reason})")
    else:
        _print_metrics(r.mesh_path, r.metrics)
    return 0


def run_interpolate(args: argparse.Namespace) -> int:
    require_inputs(args.checkpoint)
    from shapes3d.deepsdf.jobs import interpolate

    r = interpolate(args.checkpoint, args.a, args.b, steps=args.steps, mode=args.mode, resolution=args.resolution,
                    out=args.out, bound=args.bound, safety=args.safety, format=args.format)
    print(f"wrote {r.n_meshes} of {args.steps} meshes and {r.strip} ({args.mode} from {r.labels[0]} to {r.labels[1]})")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    require_inputs(args.checkpoint)
    from shapes3d.deepsdf.jobs import evaluate

    r = evaluate(args.checkpoint, resolution=args.resolution, points=args.points, limit=args.limit, out=args.out,
                 bound=args.bound, safety=args.safety)
    for label, row in zip(r.labels, r.rows):
        print(f"{label}: Chamfer x1e3 {row['chamfer_deepsdf_x1e3']:.3f}")
    chamfer = r.summary["chamfer_deepsdf_x1e3"]
    print(f"{len(r.rows)} shapes: mean Chamfer x1e3 {chamfer['mean']:.3f} (median {chamfer['median']:.3f}); "
          f"{r.out / 'metrics.csv'}")
    print_skipped(r.skipped)
    return batch_exit(len(r.rows) + len(r.skipped), len(r.skipped), "shapes")


def run_fit_views(args: argparse.Namespace) -> int:
    require_inputs(args.checkpoint, args.targets)
    from shapes3d.deepsdf.view_jobs import fit_views

    cfg = resolve_config(ViewsConfig, args)
    r = fit_views(args.checkpoint, args.targets, cfg=cfg, out=args.out, resolution=args.resolution,
                  format=args.format)
    print(f"fitted {r.label} to {r.views} views in {r.seconds:.1f} s: loss {r.fit.history[0]['total']:.4f} -> "
          f"{r.fit.loss:.4f} (restarts: {', '.join(f'{x:.4f}' for x in r.fit.restart_losses)}); {r.sheet_path}")
    if r.mesh_path is None:
        print(f"  the fitted code has no surface ({r.reason})")
    elif r.metrics is None:
        print(f"  mesh {r.mesh_path}")
    else:
        _print_metrics(r.mesh_path, r.metrics)
    return 0


def run_reconstruct(args: argparse.Namespace) -> int:
    require_inputs(args.checkpoint, args.data)
    from shapes3d.deepsdf.protocol import reconstruct

    r = reconstruct(args.checkpoint, args.data, split=args.split, partial=args.partial, out=args.out,
                    resolution=args.resolution, points=args.points, bound=args.bound, safety=args.safety,
                    frame=args.frame, limit=args.limit, overrides=args.overrides)
    o = r.summary["overall"]
    c = o["chamfer_deepsdf_x1e3"]
    print(f"{len(r.rows)} shapes ({r.resumed} resumed): Chamfer x1e3 mean {c['mean']:.3f}, median {c['median']:.3f}; "
          f"EMD mean {o['emd_approx']['mean']:.4f}; F-score@0.01 mean {o['fscore@0.01']['mean']:.3f}; "
          f"accuracy@90 mean {o['accuracy@90']['mean']:.4f}; completion@0.01 mean {o['completion@0.01']['mean']:.3f}")
    for cls, s in r.summary["classes"].items():
        print(f"  {cls}: {s['n']} shapes, Chamfer x1e3 mean {s['chamfer_deepsdf_x1e3']['mean']:.3f}")
    print(f"  {r.out / 'metrics.csv'}, {r.out / 'summary.json'}")
    print_skipped(r.skipped)
    return 0


def run_import_official(args: argparse.Namespace) -> int:
    require_inputs(args.experiment)
    from shapes3d.deepsdf.official import import_official

    r = import_official(args.experiment, args.out, epoch=args.epoch, split=args.split, data=args.data)
    print(f"imported epoch {r.epoch} with {r.shapes} codes -> {r.checkpoint}")
    return 0


def run_export_official(args: argparse.Namespace) -> int:
    require_inputs(args.checkpoint)
    from shapes3d.deepsdf.official import export_official

    r = export_official(args.checkpoint, args.folder)
    print(f"wrote {', '.join(str(p) for p in r.files)}")
    return 0
