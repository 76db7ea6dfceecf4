"""``shapes3d style``: Gram-matrix texture synthesis and style transfer on images, and stylised DeepSDF shapes."""

from __future__ import annotations

import argparse
from pathlib import Path

from shapes3d.cli.common import add_config_args, config_help, resolve_config, write_resolved_config
from shapes3d.deepsdf.views_config import ViewsConfig
from shapes3d.style.config import StyleConfig
from shapes3d.utils.io import safe_child


def register(sub) -> None:
    p = sub.add_parser("style", help="texture synthesis and style transfer with VGG Gram losses",
                       description="Image optimisation with VGG features: Gram-matrix texture synthesis and "
                                   "content + style transfer (Gatys et al.).")
    ssub = p.add_subparsers(dest="style_command", metavar="ACTION", required=True)
    t = ssub.add_parser("texture", help="synthesise a new texture from an example image",
                        description="Optimise noise until its VGG Gram matrices match the example's.",
                        epilog=config_help(StyleConfig), formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("image", help="example texture (PNG/JPEG), or skimage:NAME for scikit-image's samples "
                                 "(e.g. skimage:brick, skimage:grass, skimage:gravel)")
    t.add_argument("--out", type=Path, default=Path("runs/texture"), help="output folder")
    add_config_args(t, "style.toml")
    t.set_defaults(handler=run_texture)
    x = ssub.add_parser("transfer", help="render a content image in the style of another",
                        description="Optimise an image for VGG content features of CONTENT and Gram statistics "
                                    "of STYLE, with optional TV regularisation.",
                        epilog=config_help(StyleConfig), formatter_class=argparse.RawDescriptionHelpFormatter)
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
                        epilog=config_help(ViewsConfig), formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_argument("checkpoint", type=Path, help="DeepSDF checkpoint (from 'sdf train')")
    h.add_argument("--shape", required=True, metavar="NAME_OR_INDEX",
                   help="training shape (name or index) or a code file from 'sdf fit' / 'sdf fit-views'")
    h.add_argument("--style", required=True, help="style image (PNG/JPEG), or skimage:NAME")
    h.add_argument("--out", type=Path, default=Path("runs/style-shape"), help="output folder")
    h.add_argument("--optimise", choices=("code", "decoder"), default=None,
                   help="what to optimise (default: style.optimise of the config, 'code')")
    h.add_argument("--resolution", type=int, default=96, help="extraction resolution of the stylised mesh")
    add_config_args(h, "views.toml")
    h.set_defaults(handler=run_shape)




def _save(result, out: Path, cfg, name: str) -> None:
    import numpy as np
    from PIL import Image

    from shapes3d.engine.plots import plot_curves
    from shapes3d.utils.io import atomic_write

    img = (result.image[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    with atomic_write(out / f"{name}.png", "wb") as f:
        Image.fromarray(img).save(f, format="PNG")
    rows = [{"epoch": h["step"], **{f"train_{k}": v for k, v in h.items() if k != "step"}} for h in result.history]
    plot_curves(rows, out / "loss.png", title=f"{name}: loss per L-BFGS step")
    write_resolved_config(cfg, out)
    first, last = result.history[0]["total"], result.history[-1]["total"]
    print(f"wrote {out / (name + '.png')} (loss {first:.4g} -> {last:.4g}, {first / max(last, 1e-30):.1f}x lower)")


def run_texture(args: argparse.Namespace) -> int:
    from shapes3d.render.images import read_image, to_image_tensor
    from shapes3d.style.synthesis import synthesize_texture

    cfg = resolve_config(StyleConfig, args)
    example = to_image_tensor(read_image(args.image), cfg.size)
    result = synthesize_texture(example, cfg)
    _save(result, args.out, cfg, "texture")
    return 0


def run_transfer(args: argparse.Namespace) -> int:
    from shapes3d.render.images import read_image, to_image_tensor
    from shapes3d.style.synthesis import style_transfer

    cfg = resolve_config(StyleConfig, args)
    content = to_image_tensor(read_image(args.content), cfg.size)
    style = to_image_tensor(read_image(args.style), cfg.size)
    result = style_transfer(content, style, cfg)
    _save(result, args.out, cfg, "transfer")
    return 0


def run_shape(args: argparse.Namespace) -> int:
    import time

    import numpy as np
    import torch

    from shapes3d.deepsdf.codes import code_or_none, shape_code
    from shapes3d.deepsdf.reconstruction import extract_shape
    from shapes3d.deepsdf.trainer import load_deepsdf
    from shapes3d.deepsdf.views import stylize_shape, view_cameras
    from shapes3d.engine.checkpoint import load_checkpoint, save_checkpoint
    from shapes3d.engine.plots import write_step_log
    from shapes3d.geometry.export import export_mesh
    from shapes3d.render.images import read_image, sdf_images
    from shapes3d.render.sheet import contact_sheet

    start = time.perf_counter()
    extra = [f'style.optimise="{args.optimise}"'] if args.optimise else []
    cfg = resolve_config(ViewsConfig, args, extra=extra)
    style = read_image(args.style)
    model = load_deepsdf(args.checkpoint, device=cfg.style.device)
    label, code, t = shape_code(model, args.shape)
    cams = view_cameras(cfg.render)
    res = stylize_shape(model.decoder, code_or_none(code), style, cams, cfg=cfg)
    seconds = time.perf_counter() - start
    out = args.out
    rows, labels = [], []
    for name, renders in (("before", res.before), ("after", res.after)):
        for mode, row in zip(("shaded", "normals"), sdf_images(renders, ["shaded", "normals"])):
            rows.append(np.repeat(row[..., None], 3, -1) if row.ndim == 3 else row)
            labels += [f"{name} {mode}"] + [""] * (len(row) - 1)
    contact_sheet(np.concatenate(rows), out / "sheet.png", cols=len(cams), labels=labels,
                  title=f"{label}: {cfg.style.optimise}")
    write_step_log(res.history, out, title=f"style shape {label} ({cfg.style.optimise})",
                  panels={"loss": ["total"], "style": ["style"], "preserve": ["preserve"]})
    write_resolved_config(cfg, out)
    payload = {"code": None if res.code is None else res.code.cpu(), "offset": torch.tensor(t.offset),
               "scale": torch.tensor(t.scale), "source": str(args.checkpoint), "shape": label, "style": args.style,
               "optimise": cfg.style.optimise}
    save_checkpoint(safe_child(out, f"{label}-styled.pt", what="shape name"), payload)
    if cfg.style.optimise == "decoder":
        # A whole model (the source checkpoint with the tuned decoder), so that `sdf extract`, `render` and
        # `sdf fit` use the stylised decoder with every code; a code file alone would pair with the original.
        model_path = safe_child(out, f"{label}-styled-model.pt", what="shape name")
        source = load_checkpoint(args.checkpoint)
        source["decoder"] = {k: v.detach().cpu() for k, v in res.decoder.state_dict().items()}
        source["optimizer"] = {}
        source["style"] = {"shape": label, "style": args.style}
        save_checkpoint(model_path, source)
        print(f"  stylised model {model_path} (e.g. shapes3d render {model_path} --shape {label})")
    first, final = res.history[0], res.final
    print(f"stylised {label} ({cfg.style.optimise}) in {seconds:.1f} s: style {first['style']:.4g} -> "
          f"{final['style']:.4g}, mean |SDF change| near the surface {final['mean_abs_sdf_change']:.4f}; "
          f"{out / 'sheet.png'}")
    ext = extract_shape(res.decoder, res.code, resolution=args.resolution, transform=t)
    if ext.empty:
        print(f"  the stylised shape has no surface ({ext.reason})")
        return 0
    print(f"  mesh {export_mesh(ext.mesh, safe_child(out, f'{label}-styled.ply', what='shape name'))}")
    return 0

