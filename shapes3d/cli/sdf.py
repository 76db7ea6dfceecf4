"""``shapes3d sdf``: DeepSDF training, code fitting, interpolation, extraction and evaluation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shapes3d.cli.common import (
    DEFAULT_CACHE,
    add_config_args,
    config_help,
    load_manifest,
    print_skipped,
    report_interrupted,
    resolve_config,
    write_resolved_config,
)
from shapes3d.deepsdf.codes import code_or_none, shape_code
from shapes3d.deepsdf.config import DeepSDFConfig
from shapes3d.deepsdf.views_config import ViewsConfig
from shapes3d.utils.io import safe_child


def register(sub) -> None:
    p = sub.add_parser("sdf", help="DeepSDF: train, fit, interpolate, extract, evaluate",
                       description="DeepSDF auto-decoder: one network for a collection of shapes, one latent code "
                                   "per shape; fit codes to new or partly seen shapes; walk between codes; meshes out.")
    s = p.add_subparsers(dest="sdf_command", metavar="ACTION", required=True)

    t = s.add_parser("train", help="train decoder and codes on a folder of meshes",
                     description="Sample SDFs from every mesh (cached), then train; writes last.pt, log.csv, "
                                 "curves.png, config.toml.",
                     epilog=config_help(DeepSDFConfig), formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--data", required=True, type=Path, help="dataset folder or manifest CSV (meshes)")
    t.add_argument("--split", default="train", help="split to train on when the dataset has splits")
    t.add_argument("--out", type=Path, default=Path("runs/deepsdf"))
    t.add_argument("--cache", type=Path, default=DEFAULT_CACHE / "sdf")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    t.add_argument("--stop-after", type=int, default=None, metavar="N", help="stop after N epochs of this call")
    add_config_args(t, "deepsdf.toml")
    t.set_defaults(handler=run_train)

    f = s.add_parser("fit", help="fit a code to a new mesh, fully or from one depth view",
                     description="Freeze the decoder and optimise a new code for MESH from its full SDF samples, "
                                 "from one depth view (--partial depth) or a cropped view (--partial crop).")
    f.add_argument("checkpoint", type=Path)
    f.add_argument("mesh", type=Path)
    f.add_argument("--partial", choices=("none", "depth", "crop"), default="none")
    f.add_argument("--out", type=Path, default=None, help="output folder (default: beside the checkpoint)")
    f.add_argument("--resolution", type=int, default=128, help="extraction resolution")
    f.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override fit.* keys of the checkpoint's config, e.g. --set fit.iterations=200")
    f.set_defaults(handler=run_fit)

    i = s.add_parser("interpolate", help="meshes and an image strip between two codes",
                     description="Walk from code A to code B (training shape names or indices, or code files from "
                                 "'sdf fit'), linearly or spherically, and extract a mesh at every step.")
    i.add_argument("checkpoint", type=Path)
    i.add_argument("a")
    i.add_argument("b")
    i.add_argument("--steps", type=int, default=5)
    i.add_argument("--mode", choices=("linear", "slerp"), default="slerp")
    i.add_argument("--resolution", type=int, default=96)
    i.add_argument("--out", type=Path, default=None)
    i.set_defaults(handler=run_interpolate)

    e = s.add_parser("extract", help="code -> mesh in the original mesh's coordinates",
                     description="Extract training shapes (by name or index) or fitted codes as meshes.")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("shapes", nargs="*", help="names, indices or code files (default: all training shapes)")
    e.add_argument("--resolution", type=int, default=128)
    e.add_argument("--mode", choices=("coarse_to_fine", "dense"), default="coarse_to_fine")
    e.add_argument("--format", choices=("ply", "obj", "off"), default="ply")
    e.add_argument("--out", type=Path, default=None)
    e.set_defaults(handler=run_extract)

    w = s.add_parser("fit-views", help="fit a code to multi-view renders of a mesh (2D losses only)",
                     description="Freeze the decoder and optimise a code so that its sphere-traced renders match "
                                 "target views (silhouette BCE/L2, 1 - SSIM and VGG perceptual losses on shaded and "
                                 "normal images): a shape from images alone. Targets are rendered from a mesh, "
                                 "normalised like the training shapes, or read from a folder written by an earlier "
                                 "run (cameras.json + PNGs). Writes the code (.pt), the mesh, sheet.png (target vs "
                                 "fitted), loss.png, log.csv, config.toml.",
                     epilog=config_help(ViewsConfig), formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("checkpoint", type=Path)
    w.add_argument("--targets", required=True, type=Path,
                   help="mesh file, or a targets folder (cameras.json and PNG images, as written into OUT/targets)")
    w.add_argument("--out", type=Path, default=None, help="output folder (default: CHECKPOINT_DIR/fit-views/NAME)")
    w.add_argument("--resolution", type=int, default=96, help="extraction resolution of the fitted mesh")
    add_config_args(w, "views.toml")
    w.set_defaults(handler=run_fit_views)

    v = s.add_parser("evaluate", help="reconstructions of the training shapes vs their meshes",
                     description="Extract every training shape and compare with its source mesh in the unit-sphere "
                                 "frame: Chamfer (DeepSDF convention, x10^3), F-score, normal consistency, IoU.")
    v.add_argument("checkpoint", type=Path)
    v.add_argument("--resolution", type=int, default=128)
    v.add_argument("--points", type=int, default=30000, help="surface points per mesh for the metrics (DeepSDF: 30 000)")
    v.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate only the first N shapes")
    v.add_argument("--out", type=Path, default=None)
    v.set_defaults(handler=run_evaluate)


def run_train(args: argparse.Namespace) -> int:
    from shapes3d.deepsdf.reconstruction import build_sdf_dataset
    from shapes3d.deepsdf.trainer import train
    from shapes3d.engine.distributed import is_main_process, main_process_first

    cfg = resolve_config(DeepSDFConfig, args)
    m = load_manifest(args.data)
    entries = m.filter(split=args.split).entries or m.entries
    main = is_main_process()
    with main_process_first():  # under torchrun, rank 0 samples the meshes and the others read its cache
        data, report = build_sdf_dataset(entries, cfg.samples, cache_dir=args.cache)
    if main:
        print(f"{len(data)} shapes sampled ({report.computed} computed, {report.cached} cached, "
              f"{len(report.skipped)} skipped)")
        print_skipped(report.skipped)
    result = train(cfg, data, args.out, resume=args.resume, stop_after=args.stop_after)
    code = report_interrupted(result, main=main)
    if code is not None:
        return code
    if main and result.history:
        last = result.history[-1]
        print(f"epoch {last['epoch']}: loss {last['train_loss']:.5f}; checkpoint {result.last_path}")
    return 0






def run_extract(args: argparse.Namespace) -> int:
    from shapes3d.deepsdf.reconstruction import extract_shape
    from shapes3d.deepsdf.trainer import load_deepsdf
    from shapes3d.geometry.export import export_mesh

    model = load_deepsdf(args.checkpoint)
    out = args.out or args.checkpoint.parent / "meshes"
    specs = args.shapes or [str(k) for k in range(len(model.names))]
    for spec in specs:
        label, code, t = shape_code(model, spec)
        res = extract_shape(model.decoder, code_or_none(code), resolution=args.resolution, transform=t,
                            mode=args.mode)
        if res.empty:
            print(f"{label}: no surface ({res.reason})")
            continue
        path = export_mesh(res.mesh, safe_child(out, f"{label}.{args.format}", what="shape name"))
        print(f"{label}: {len(res.mesh.faces)} faces, {res.n_evaluated} SDF evaluations, {res.seconds:.1f} s -> {path}")
    return 0


def run_fit(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from shapes3d.config import apply_overrides
    from shapes3d.deepsdf.fitting import crop_observation, fit_code
    from shapes3d.deepsdf.reconstruction import depth_view_observation, extract_shape, reconstruction_metrics
    from shapes3d.deepsdf.trainer import load_deepsdf
    from shapes3d.engine.checkpoint import save_checkpoint
    from shapes3d.geometry.export import export_mesh
    from shapes3d.geometry.io import load_mesh
    from shapes3d.geometry.normalize import Transform
    from shapes3d.geometry.sampling import SDFSampleConfig, sample_sdf

    model = load_deepsdf(args.checkpoint)
    fit_cfg = apply_overrides(model.config, args.overrides).fit
    s = model.config.samples
    mesh = load_mesh(args.mesh)
    samples = sample_sdf(mesh, config=SDFSampleConfig(n_samples=s.n_samples, n_uniform=s.n_uniform,
                                                        variances=s.variances, margin=s.margin,
                                                        sign_method=s.sign_method), seed=s.seed)
    t = Transform(tuple(samples.offset.tolist()), float(samples.scale))
    if args.partial == "none":
        obs = samples
    else:
        import trimesh

        unit = trimesh.Trimesh(t.apply(mesh.vertices), mesh.faces, process=False)
        obs = depth_view_observation(unit, seed=fit_cfg.seed)
        if args.partial == "crop":
            obs = crop_observation(obs.points[obs.sdf == 0], (0.0, -2.5, 1.0), plane_normal=(0, 0, 1),
                                   plane_offset=0.0, seed=fit_cfg.seed)
    res = fit_code(model.decoder, obs, **dataclasses.asdict(fit_cfg))
    out = args.out or args.checkpoint.parent / "fits"
    label = f"{args.mesh.stem}-{args.partial}" if args.partial != "none" else args.mesh.stem
    save_checkpoint(safe_child(out, f"{label}.pt", what="shape name"), {"code": res.code.detach().cpu(), "offset": torch.tensor(t.offset),
                                          "scale": torch.tensor(t.scale), "loss": res.loss,
                                          "source": str(args.mesh), "partial": args.partial})
    ext = extract_shape(model.decoder, res.code.detach(), resolution=args.resolution, transform=t)
    print(f"fitted {label}: loss {res.loss:.5f} (restarts: {', '.join(f'{x:.5f}' for x in res.restart_losses)})")
    if ext.empty:
        print(f"  the fitted code has no surface ({ext.reason})")
        return 0
    path = export_mesh(ext.mesh, safe_child(out, f"{label}.ply", what="shape name"))
    metrics = reconstruction_metrics(ext.mesh, mesh, t)
    safe_child(out, f"{label}.json", what="shape name").write_text(json.dumps(metrics, indent=2))
    print(f"  mesh {path}; Chamfer x1e3 {metrics['chamfer_deepsdf_x1e3']:.3f}, "
          f"F-score@0.01 {metrics.get('fscore@0.01', float('nan')):.3f}")
    return 0


def run_interpolate(args: argparse.Namespace) -> int:
    import numpy as np

    from shapes3d.deepsdf.fitting import interpolate_codes
    from shapes3d.deepsdf.reconstruction import extract_shape
    from shapes3d.deepsdf.trainer import load_deepsdf
    from shapes3d.geometry.export import export_mesh
    from shapes3d.render.images import render_rows
    from shapes3d.render.sheet import contact_sheet

    model = load_deepsdf(args.checkpoint)
    la, za, ta = shape_code(model, args.a)
    lb, zb, _ = shape_code(model, args.b)
    out = args.out or safe_child(args.checkpoint.parent, f"interp-{la}-{lb}", what="shape names")
    codes = interpolate_codes(za, zb, args.steps, mode=args.mode)
    images, labels = [], []
    for k, z in enumerate(codes):
        res = extract_shape(model.decoder, z, resolution=args.resolution, transform=None)
        if res.empty:
            images.append(np.ones((1, 96, 96)))
        else:
            export_mesh(res.mesh, out / f"step{k:02d}.ply")
            images.append(render_rows(res.mesh, views=1, elevations=[25.0], size=96, up="z", modes=["shaded"])[0])
        labels.append(f"t={k / (args.steps - 1):.2f}")
    contact_sheet(np.concatenate(images), out / "strip.png", cols=args.steps, labels=labels)
    n_meshes = sum(1 for _ in out.glob("step*.ply"))
    print(f"wrote {n_meshes} of {args.steps} meshes and {out / 'strip.png'} ({args.mode} from {la} to {lb})")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from shapes3d.deepsdf.reconstruction import extract_shape, reconstruction_metrics
    from shapes3d.deepsdf.trainer import load_deepsdf
    from shapes3d.errors import Shapes3DError
    from shapes3d.geometry.io import load_mesh
    from shapes3d.utils.io import atomic_write_csv, atomic_write_text

    model = load_deepsdf(args.checkpoint)
    out = args.out or args.checkpoint.parent / "evaluate"
    rows, skipped = [], []
    for k, name in enumerate(model.names[: args.limit]):
        label, code, t = shape_code(model, str(k))
        try:
            gt = load_mesh(name)
        except Shapes3DError as e:
            skipped.append((name, str(e)))
            continue
        res = extract_shape(model.decoder, code_or_none(code), resolution=args.resolution, transform=t)
        if res.empty:
            skipped.append((name, f"reconstruction has no surface ({res.reason})"))
            continue
        m = reconstruction_metrics(res.mesh, gt, t, n_points=args.points)
        rows.append({"shape": name, **{k2: v for k2, v in m.items() if np.isscalar(v)}})
        print(f"{label}: Chamfer x1e3 {m['chamfer_deepsdf_x1e3']:.3f}")
    if not rows:
        raise Shapes3DError("no shape could be evaluated")
    atomic_write_csv(out / "metrics.csv", rows)
    keys = [k for k in rows[0] if k != "shape"]
    summary: dict = {}
    for k in keys:
        vals = np.asarray([r[k] for r in rows], dtype=float)
        vals = vals[np.isfinite(vals)]  # IoU is NaN for reconstructions that are not watertight
        summary[k] = {"mean": float(vals.mean()) if len(vals) else None,
                      "median": float(np.median(vals)) if len(vals) else None, "n": int(len(vals))}
    summary["n"] = len(rows)
    summary["skipped"] = [[p, r] for p, r in skipped]
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(f"{len(rows)} shapes: mean Chamfer x1e3 {summary['chamfer_deepsdf_x1e3']['mean']:.3f} "
          f"(median {summary['chamfer_deepsdf_x1e3']['median']:.3f}); {out / 'metrics.csv'}")
    print_skipped(skipped)
    return 0


def run_fit_views(args: argparse.Namespace) -> int:
    import time

    import numpy as np
    import torch

    from shapes3d.deepsdf.reconstruction import extract_shape, reconstruction_metrics
    from shapes3d.deepsdf.trainer import load_deepsdf
    from shapes3d.deepsdf.view_targets import read_view_targets, write_view_targets
    from shapes3d.deepsdf.views import fit_code_to_views, targets_from_mesh, view_cameras
    from shapes3d.engine.checkpoint import save_checkpoint
    from shapes3d.engine.plots import write_step_log
    from shapes3d.geometry.export import export_mesh
    from shapes3d.geometry.io import load_mesh
    from shapes3d.geometry.normalize import normalize
    from shapes3d.render.images import sdf_images
    from shapes3d.render.sheet import contact_sheet

    start = time.perf_counter()
    cfg = resolve_config(ViewsConfig, args)
    model = load_deepsdf(args.checkpoint, device=cfg.fit.device)
    mesh = None
    if args.targets.is_dir():
        targets, cams, t = read_view_targets(args.targets)
        label = args.targets.parent.name if args.targets.name == "targets" else args.targets.name
    else:
        mesh = load_mesh(args.targets)
        # The training shapes' normalisation (sdf sampling): bounding-box centre, unit sphere with a margin.
        unit, t = normalize(mesh, mode="sphere", margin=model.config.samples.margin, center="bbox")
        cams = view_cameras(cfg.render)
        targets = targets_from_mesh(unit, cams, ambient=cfg.render.ambient)
        label = args.targets.stem
    out = args.out or safe_child(args.checkpoint.parent / "fit-views", label, what="target name")
    res = fit_code_to_views(model.decoder, targets, cams, cfg=cfg, codes=model.codes)
    fit_s = time.perf_counter() - start

    if mesh is not None:
        write_view_targets(out / "targets", targets, cams, t)
    offset, scale = (t.offset, t.scale) if t is not None else ((0.0, 0.0, 0.0), 1.0)
    save_checkpoint(safe_child(out, f"{label}.pt", what="target name"), {"code": res.code.detach().cpu(), "offset": torch.tensor(offset),
                                          "scale": torch.tensor(scale), "loss": res.loss,
                                          "source": str(args.targets), "partial": "views"})
    rows, labels = [], []
    fitted = dict(zip(("shaded", "normals", "silhouette"),
                      sdf_images(res.renders, ["shaded", "normals", "silhouette"], soft_silhouette=True)))
    for kind in ("shaded", "normals", "silhouette"):
        tgt = getattr(targets, kind)
        if tgt is None:
            continue
        tgt = tgt.numpy()
        if kind == "normals":
            tgt = np.where(np.abs(tgt).sum(-1, keepdims=True) > 0, (tgt + 1) / 2, 1.0)
        elif kind == "silhouette":
            tgt = 1.0 - tgt
        for name, row in (("target", tgt), ("fitted", fitted[kind])):
            rows.append(np.repeat(row[..., None], 3, -1) if row.ndim == 3 else row)
            labels += [f"{name} {kind}"] + [""] * (len(row) - 1)
    contact_sheet(np.concatenate(rows), out / "sheet.png", cols=len(cams), labels=labels,
                  title=f"{label}: target vs fitted")
    write_step_log(res.history, out, title=f"fit-views {label}",
                  panels={"loss": ["total"], "silhouette": ["silhouette"],
                          "ssim": ["ssim_shaded", "ssim_normals"],
                          "perceptual": ["perceptual_shaded", "perceptual_normals"]})
    write_resolved_config(cfg, out)
    print(f"fitted {label} to {len(cams)} views in {fit_s:.1f} s: loss {res.history[0]['total']:.4f} -> "
          f"{res.loss:.4f} (restarts: {', '.join(f'{x:.4f}' for x in res.restart_losses)}); {out / 'sheet.png'}")
    ext = extract_shape(model.decoder, res.code, resolution=args.resolution, transform=t)
    if ext.empty:
        print(f"  the fitted code has no surface ({ext.reason})")
        return 0
    path = export_mesh(ext.mesh, safe_child(out, f"{label}.ply", what="target name"))
    if mesh is None:
        print(f"  mesh {path}")
        return 0
    metrics = reconstruction_metrics(ext.mesh, mesh, t)
    safe_child(out, f"{label}.json", what="target name").write_text(json.dumps({**metrics, "loss": res.loss, "fit_seconds": fit_s}, indent=2))
    print(f"  mesh {path}; Chamfer x1e3 {metrics['chamfer_deepsdf_x1e3']:.3f}, "
          f"F-score@0.01 {metrics.get('fscore@0.01', float('nan')):.3f}")
    return 0
