"""``shapes3d style``: Gram-matrix texture synthesis and style transfer on images."""

from __future__ import annotations

import argparse
from pathlib import Path

from shapes3d.cli.common import add_config_args, config_help, resolve_config, write_resolved_config
from shapes3d.training.style_config import StyleConfig


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


def read_image(spec: str):
    """A path or ``skimage:NAME`` -> numpy image."""
    import numpy as np

    from shapes3d.errors import InputFileError, MissingFileError

    if spec.startswith("skimage:"):
        import skimage.data

        name = spec.split(":", 1)[1]
        if not hasattr(skimage.data, name):
            raise InputFileError(spec, f"scikit-image has no sample image {name!r}")
        return getattr(skimage.data, name)()
    from PIL import Image, UnidentifiedImageError

    path = Path(spec)
    if not path.exists():
        raise MissingFileError(path)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise InputFileError(path, f"not a readable image ({e})") from None


def _save(result, out: Path, cfg, name: str) -> None:
    import numpy as np
    from PIL import Image

    from shapes3d.training.plots import plot_curves
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
    from shapes3d.training.style import synthesize_texture, to_image_tensor

    cfg = resolve_config(StyleConfig, args)
    example = to_image_tensor(read_image(args.image), cfg.size)
    result = synthesize_texture(example, cfg)
    _save(result, args.out, cfg, "texture")
    return 0


def run_transfer(args: argparse.Namespace) -> int:
    from shapes3d.training.style import style_transfer, to_image_tensor

    cfg = resolve_config(StyleConfig, args)
    content = to_image_tensor(read_image(args.content), cfg.size)
    style = to_image_tensor(read_image(args.style), cfg.size)
    result = style_transfer(content, style, cfg)
    _save(result, args.out, cfg, "transfer")
    return 0
