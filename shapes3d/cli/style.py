"""``shapes3d style``: texture synthesis and style transfer on images (Gram or MRF style), stylised DeepSDF shapes,
and view-consistent style on multi-view renders of a mesh."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shapes3d.cli.common import add_config_args, examples, int_range, require_inputs, resolve_config
from shapes3d.deepsdf.views_config import ViewsConfig
from shapes3d.geometry.limits import MAX_IMAGE_SIZE, MAX_VIEWS
from shapes3d.style.config import StyleConfig
from shapes3d.style.views_config import StyleViewsConfig

MAX_STEPS = 1_000_000  # optimiser iterations a flag accepts (the configs' own checks apply too)


def register(sub) -> None:
    p = sub.add_parser("style", help="texture synthesis, style transfer, stylised shapes",
                       description="Image optimisation with VGG features: Gram-matrix (or MRF) texture synthesis "
                                   "and content + style transfer (Gatys et al.), on images, DeepSDF shapes and "
                                   "multi-view renders of a mesh.",
                       epilog=examples(
                           "shapes3d style texture skimage:brick --out runs/texture",
                           "shapes3d style transfer skimage:astronaut skimage:brick --out runs/transfer"))
    ssub = p.add_subparsers(dest="style_command", metavar="ACTION", required=True)
    t = ssub.add_parser("texture", help="synthesise a new texture from an example image",
                        description="Optimise noise until its VGG Gram matrices match the example's.",
                        epilog=examples(
                            "shapes3d style texture skimage:brick --out runs/texture",
                            "shapes3d style texture photos/bark.png --set steps=400 --out runs/bark",
                            config=StyleConfig))
    t.add_argument("image", help="example texture (PNG/JPEG), or skimage:NAME for scikit-image's samples "
                                 "(e.g. skimage:brick, skimage:grass, skimage:gravel)")
    t.add_argument("--out", type=Path, default=Path("runs/texture"), help="output folder")
    add_config_args(t, "style.toml")
    t.set_defaults(handler=run_texture)
    x = ssub.add_parser("transfer", help="render a content image in the style of another",
                        description="Optimise an image for VGG content features of CONTENT and Gram statistics "
                                    "of STYLE, with optional TV regularisation.",
                        epilog=examples(
                            "shapes3d style transfer skimage:astronaut skimage:brick --out runs/transfer",
                            "shapes3d style transfer photo.jpg painting.png --set tv_weight=1e-4",
                            config=StyleConfig))
    x.add_argument("content", help="content image, or skimage:NAME")
    x.add_argument("style", help="style image, or skimage:NAME")
    x.add_argument("--out", type=Path, default=Path("runs/transfer"), help="output folder")
    add_config_args(x, "style.toml")
    x.set_defaults(handler=run_transfer)
    h = ssub.add_parser("shape", help="give a DeepSDF shape a style image's Gram statistics",
                        description="Optimise a shape's latent code (or a copy of the decoder) so that its "
                                    "sphere-traced multi-view renders take on the Gram statistics of STYLE's "
                                    "luminance, while the SDF on fixed points near the original surface stays close "
                                    "to the original. Writes sheet.png (before/after), the stylised mesh, the code "
                                    "(and decoder weights with --optimise decoder), loss.png, log.csv, config.toml.",
                        epilog=examples(
                            "shapes3d style shape runs/chairs/last.pt --shape 0 --style skimage:brick",
                            "shapes3d style shape runs/chairs/last.pt --shape chair_0003 --style skimage:grass "
                            "--optimise decoder",
                            config=ViewsConfig))
    h.add_argument("checkpoint", type=Path, help="DeepSDF checkpoint (from 'sdf train')")
    h.add_argument("--shape", required=True, metavar="NAME_OR_INDEX",
                   help="training shape (name or index) or a code file from 'sdf fit' / 'sdf fit-views'")
    h.add_argument("--style", required=True, help="style image (PNG/JPEG), or skimage:NAME")
    h.add_argument("--out", type=Path, default=Path("runs/style-shape"), help="output folder")
    h.add_argument("--optimise", choices=("code", "decoder"), default=None,
                   help="what to optimise (default: style.optimise of the config, 'code')")
    h.add_argument("--resolution", type=int_range(2, 1024), default=96,
                   help="extraction resolution of the stylised mesh (default 96)")
    h.add_argument("--format", choices=("ply", "obj", "off", "glb"), default="ply", help="mesh file format (default: ply)")
    add_config_args(h, "views.toml")
    h.set_defaults(handler=run_shape)
    _register_views(ssub)


def _register_views(ssub) -> None:
    d = StyleViewsConfig()
    v = ssub.add_parser("views", help="stylise multi-view renders of a mesh jointly, consistent across views",
                        description="Render MESH (normalised into the unit sphere) from --views cameras on a circle "
                                    "and optimise all views jointly for content (the shading), STYLE (Gram or MRF: "
                                    "--set kind=\"mrf\") and a multi-view consistency term: each view's neighbours, "
                                    "warped into it through the renderer's depth and cameras, must agree where "
                                    "both see the surface (Ruder et al.'s temporal loss). Also runs gamma = 0 and "
                                    "reports both runs' warped difference at matched style loss. Writes "
                                    "view_<i>.png, sheet.png (content, stylised, gamma 0), log.csv, "
                                    "consistency.json, config.toml.",
                        epilog=examples(
                            "shapes3d style views data/chair_0890.off skimage:brick --out runs/style-views",
                            "shapes3d style views data/chair_0890.off skimage:grass --views 6 --set kind=\"mrf\"",
                            config=StyleViewsConfig))
    v.add_argument("mesh", type=Path, help="mesh file (OFF/OBJ/PLY/STL/GLB)")
    v.add_argument("style", help="style image (PNG/JPEG), or skimage:NAME")
    v.add_argument("--views", type=int_range(2, MAX_VIEWS), default=None,
                   help=f"cameras on the circle (default: {d.views})")
    v.add_argument("--size", type=int_range(16, MAX_IMAGE_SIZE), default=None,
                   help=f"image side in pixels (default: {d.size})")
    v.add_argument("--steps", type=int_range(1, MAX_STEPS), default=None,
                   help=f"L-BFGS iterations per run (default: {d.steps})")
    v.add_argument("--weights", default=None, help=f"VGG weights: auto, a file, or random (default: {d.weights})")
    v.add_argument("--out", type=Path, default=Path("runs/style-views"), help="output folder")
    add_config_args(v, None)
    v.set_defaults(handler=run_views)


def _report(job) -> None:
    print(f"wrote {job.path} (loss {job.first_loss:.4g} -> {job.last_loss:.4g}, {job.reduction:.1f}x lower)")


def run_texture(args: argparse.Namespace) -> int:
    from shapes3d.style.jobs import texture

    _report(texture(args.image, resolve_config(StyleConfig, args), args.out))
    return 0


def run_transfer(args: argparse.Namespace) -> int:
    from shapes3d.style.jobs import transfer

    _report(transfer(args.content, args.style, resolve_config(StyleConfig, args), args.out))
    return 0


def run_shape(args: argparse.Namespace) -> int:
    require_inputs(args.checkpoint)
    from shapes3d.deepsdf.view_jobs import stylize

    extra = [f'style.optimise="{args.optimise}"'] if args.optimise else []
    cfg = resolve_config(ViewsConfig, args, extra=extra)
    r = stylize(args.checkpoint, args.shape, args.style, cfg=cfg, out=args.out, resolution=args.resolution,
                format=args.format)
    if r.model_path is not None:
        print(f"  stylised model {r.model_path} (e.g. shapes3d render {r.model_path} --shape {r.label})")
    first, final = r.style.history[0], r.style.final
    print(f"stylised {r.label} ({r.optimise}) in {r.seconds:.1f} s: style {first['style']:.4g} -> "
          f"{final['style']:.4g}, mean |SDF change| near the surface {final['mean_abs_sdf_change']:.4f}; "
          f"{r.sheet_path}")
    if r.mesh_path is None:
        print(f"  the stylised shape has no surface ({r.reason})")
    else:
        print(f"  mesh {r.mesh_path}")
    return 0


def run_views(args: argparse.Namespace) -> int:
    require_inputs(args.mesh)
    extra = [f"{k}={json.dumps(v)}" for k, v in (("views", args.views), ("size", args.size), ("steps", args.steps),
                                                  ("weights", args.weights)) if v is not None]
    cfg = resolve_config(StyleViewsConfig, args, extra=extra)
    from shapes3d.style.view_consistency import views

    r = views(args.mesh, args.style, out=args.out, cfg=cfg)
    m, c = r.metrics, r.metrics["consistent"]
    print(f"wrote {r.sheet} and {len(r.images)} views; warped difference between neighbours: content "
          f"{m['content_warped_difference']:.4g}, stylised {c['final_warped_difference']:.4g} "
          f"(style {c['final_style']:.4g})")
    if "ratio_at_matched_style" in m:
        p = m["plain"]
        print(f"  at matched style loss {m['matched_style']:.4g}: {c['matched_warped_difference']:.4g} with gamma "
              f"{c['gamma']:g} vs {p['matched_warped_difference']:.4g} with gamma 0 (ratio "
              f"{m['ratio_at_matched_style']:.3f}; style {c['matched_style']:.4g} vs {p['matched_style']:.4g})")
    return 0
