"""``shapes3d vis``: what the networks see -- feature inversion, DeepDream, class and unit visualisation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shapes3d.cli.common import add_config_args, examples, float_range, int_range, resolve_config
from shapes3d.geometry.limits import MAX_IMAGE_SIZE, MAX_VIEWS
from shapes3d.style.vis_config import ClassVizConfig, DreamConfig, InversionConfig


def _flag(key: str, value) -> list[str]:
    """A ``--set`` override for a flag the user gave (JSON literals are valid TOML for str, int, float, lists)."""
    if value is None:
        return []
    return [f"{key}={json.dumps(list(value) if isinstance(value, (tuple, list)) else value)}"]


STEPS = int_range(1, 1_000_000)  # optimiser iterations
SIZE = int_range(16, MAX_IMAGE_SIZE)  # image sides in pixels, as the configs require
POSITIVE = float_range(0, 1e6, open_ends=True)  # step sizes and blur widths
FRACTION = float_range(0, 1)  # clip_small / clip_grad (the config also refuses exactly 1)


def register(sub) -> None:
    inv, drm, cvz = InversionConfig(), DreamConfig(), ClassVizConfig()
    p = sub.add_parser("vis", help="feature inversion, DeepDream, class/unit visualisation",
                       description="Visualise what VGG and VoxNet respond to, by optimising the input.",
                       epilog=examples(
                           "shapes3d vis invert skimage:astronaut --out runs/invert",
                           "shapes3d vis classviz runs/voxnet/best.pt --out runs/classviz"))
    vsub = p.add_subparsers(dest="vis_command", metavar="ACTION", required=True)

    i = vsub.add_parser("invert", help="reconstruct an image from its VGG features at several layers",
                        description="Feature inversion (Mahendran & Vedaldi): from noise, an image whose features at "
                                    "one layer match IMAGE's, with a TV^beta regulariser; one reconstruction per "
                                    "layer. Writes inversion.png (input + reconstructions with SSIM), <layer>.png, "
                                    "losses.csv, losses.png, config.toml.",
                        epilog=examples(
                            "shapes3d vis invert skimage:astronaut --out runs/invert",
                            "shapes3d vis invert photo.png --layer relu3_3 --layer relu4_3 --steps 300",
                            config=InversionConfig))
    i.add_argument("image", help="input image (PNG/JPEG), or skimage:NAME (e.g. skimage:astronaut)")
    i.add_argument("--layer", dest="layers", action="append", default=None, metavar="TAP",
                   help=f"layer to invert (repeatable; default: {', '.join(inv.layers)})")
    i.add_argument("--size", type=SIZE, default=None, help=f"longer image side in pixels (default: {inv.size})")
    i.add_argument("--steps", type=STEPS, default=None, help=f"optimiser iterations per layer (default: {inv.steps})")
    i.add_argument("--weights", default=None, help=f"VGG weights: auto, a file, or random (default: {inv.weights})")
    i.add_argument("--out", type=Path, default=Path("runs/invert"), help="output folder (default: runs/invert)")
    add_config_args(i, None)
    i.set_defaults(handler=run_invert)

    d = vsub.add_parser("dream", help="DeepDream an image, or renders of a mesh",
                        description="Gradient ascent on 1/2 ||f_layer||^2 over octaves with random jitter. With "
                                    "--shape, the mesh is rendered from a few cameras and each view is dreamed "
                                    "(views.png); otherwise IMAGE is (dream.png, sheet.png).",
                        epilog=examples(
                            "shapes3d vis dream skimage:astronaut --layer relu4_3 --out runs/dream",
                            "shapes3d vis dream --shape data/chair_0890.off --views 6 --out runs/dream-chair",
                            config=DreamConfig))
    d.add_argument("image", nargs="?", default=None,
                   help="input image, or skimage:NAME (default: none; omit with --shape)")
    d.add_argument("--shape", type=Path, default=None, metavar="MESH",
                   help="dream on renders of this mesh (OFF/OBJ/PLY/STL/GLB) instead of an image (default: none)")
    d.add_argument("--layer", default=None, help=f"layer to amplify (default: {drm.layer})")
    d.add_argument("--octaves", type=int_range(1, 16), default=None, help=f"number of scales (default: {drm.octaves})")
    d.add_argument("--steps", type=STEPS, default=None, help=f"ascent steps per octave (default: {drm.steps})")
    d.add_argument("--size", type=SIZE, default=None, help=f"finest image side in pixels (default: {drm.size})")
    d.add_argument("--views", type=int_range(1, MAX_VIEWS), default=None, help=f"cameras around the mesh, with --shape "
                                                           f"(default: {drm.views})")
    d.add_argument("--weights", default=None, help=f"VGG weights: auto, a file, or random (default: {drm.weights})")
    d.add_argument("--out", type=Path, default=Path("runs/dream"), help="output folder (default: runs/dream)")
    add_config_args(d, None)
    d.set_defaults(handler=run_dream)

    c = vsub.add_parser("classviz", help="gradient-ascent images of VoxNet classes or VGG units/classes",
                        description="With CHECKPOINT (a VoxNet from 'classify train'): a 32^3 occupancy field per "
                                    "class maximising its score, meshed, rendered and sliced (classviz.png). With "
                                    "--vgg: images maximising channels of a VGG layer, or ImageNet classes when "
                                    "--classifier names torchvision's full VGG file. The VoxNet options are the "
                                    "flags below; the VGG ones are also config keys (--set).",
                        epilog=examples(
                            "shapes3d vis classviz runs/voxnet/best.pt --classes chair table --out runs/classviz",
                            "shapes3d vis classviz --vgg --layer relu4_3 --channels 0 1 2 3",
                            config=ClassVizConfig))
    c.add_argument("checkpoint", nargs="?", type=Path, default=None,
                   help="VoxNet checkpoint (default: none; omit with --vgg)")
    c.add_argument("--vgg", action="store_true", help="visualise VGG units / ImageNet classes (default: off)")
    c.add_argument("--classes", nargs="+", default=None, metavar="CLASS",
                   help="VoxNet: class names or indices (default: all); --vgg: ImageNet class indices "
                        "(default: none, units)")
    c.add_argument("--layer", default=None, help=f"--vgg: tap whose channels are units (default: {cvz.layer})")
    c.add_argument("--channels", nargs="+", type=int_range(0, 65535), default=None,
                   help=f"--vgg: channels of --layer (default: {' '.join(map(str, cvz.channels))})")
    c.add_argument("--classifier", default=None, help="--vgg: torchvision VGG file with classifier.0/3/6 layers "
                                                      "(default: none)")
    c.add_argument("--weights", default=None, help=f"--vgg: VGG weights: auto, a file, or random "
                                                   f"(default: {cvz.weights})")
    c.add_argument("--steps", type=STEPS, default=None, help=f"ascent steps (default: 200 VoxNet, {cvz.steps} VGG)")
    c.add_argument("--lr", type=POSITIVE, default=None,
                   help=f"step per unit mean |gradient| (default: 0.05 VoxNet, {cvz.lr} VGG)")
    c.add_argument("--l2", type=float_range(0, 1e6), default=None,
                   help=f"lambda of the L2 penalty (default: 0.05 VoxNet, {cvz.l2} VGG)")
    c.add_argument("--blur-every", type=int_range(0, 1_000_000), default=None,
                   help=f"Gaussian blur every N steps, 0 off (default: 4 VoxNet, {cvz.blur_every} VGG)")
    c.add_argument("--blur-sigma", type=POSITIVE, default=None,
                   help=f"blur sigma in voxels/pixels (default: 1.0 VoxNet, {cvz.blur_sigma} VGG)")
    c.add_argument("--clip-small", type=FRACTION, default=None,
                   help="VoxNet: zero voxels below this occupancy; VGG: zero this fraction of smallest-norm pixels "
                        f"(default: 0.1 VoxNet, {cvz.clip_small} VGG)")
    c.add_argument("--clip-grad", type=FRACTION, default=None,
                   help=f"zero this fraction of voxels/pixels with the smallest |I * grad| (default: 0, "
                        f"{cvz.clip_grad})")
    c.add_argument("--size", type=SIZE, default=None, help=f"--vgg: image side in pixels (default: {cvz.size})")
    c.add_argument("--device", default=None, help="cpu, cuda[:N] or auto (default: cpu VoxNet, "
                                                  f"{cvz.device} VGG)")
    c.add_argument("--out", type=Path, default=Path("runs/classviz"), help="output folder (default: runs/classviz)")
    add_config_args(c, None)
    c.set_defaults(handler=run_classviz)


def run_invert(args: argparse.Namespace) -> int:
    from shapes3d.style.inversion import invert

    extra = _flag("layers", args.layers) + _flag("size", args.size) \
        + _flag("steps", args.steps) + _flag("weights", args.weights)
    cfg = resolve_config(InversionConfig, args, extra=extra)
    report = invert(args.image, out=args.out, cfg=cfg)
    print(f"wrote {report.sheet}; SSIM to the input: "
          + ", ".join(f"{k} {v:.3f}" for k, v in report.ssim.items()))
    return 0


def run_dream(args: argparse.Namespace) -> int:
    from shapes3d.errors import Shapes3DError
    from shapes3d.style.dream import dream, dream_views

    if (args.image is None) == (args.shape is None):
        raise Shapes3DError("give either IMAGE or --shape MESH (exactly one)")
    extra = _flag("layer", args.layer) + _flag("octaves", args.octaves) + _flag("steps", args.steps) \
        + _flag("size", args.size) + _flag("views", args.views) + _flag("weights", args.weights)
    cfg = resolve_config(DreamConfig, args, extra=extra)
    if args.shape is not None:
        r = dream_views(args.shape, out=args.out, cfg=cfg)
        print(f"wrote {r.sheet}; 1/2 mean f^2 per view: "
              + ", ".join(f"{a:.3g} -> {b:.3g}" for a, b in zip(r.objective_before, r.objective_after)))
    else:
        r = dream(args.image, out=args.out, cfg=cfg)
        print(f"wrote {r.image} and {r.sheet}; 1/2 mean f^2 {r.objective_before:.4g} -> {r.objective_after:.4g}")
    return 0


def run_classviz(args: argparse.Namespace) -> int:
    from shapes3d.errors import Shapes3DError

    if args.vgg == (args.checkpoint is not None):
        raise Shapes3DError("give either a VoxNet CHECKPOINT or --vgg (exactly one)")
    if args.vgg:
        from shapes3d.style.classviz import classviz_vgg

        try:
            classes = None if args.classes is None else tuple(int(c) for c in args.classes)
        except ValueError:
            raise Shapes3DError(f"--vgg --classes takes ImageNet class indices, got {args.classes}") from None
        extra = _flag("classes", classes) + _flag("layer", args.layer) + _flag("channels", args.channels) \
            + _flag("classifier", args.classifier) + _flag("weights", args.weights) + _flag("steps", args.steps) \
            + _flag("lr", args.lr) + _flag("l2", args.l2) + _flag("blur_every", args.blur_every) \
            + _flag("blur_sigma", args.blur_sigma) + _flag("clip_small", args.clip_small) \
            + _flag("clip_grad", args.clip_grad) + _flag("size", args.size) + _flag("device", args.device)
        cfg = resolve_config(ClassVizConfig, args, extra=extra)
        r = classviz_vgg(out=args.out, cfg=cfg)
        print(f"wrote {r.sheet} ({r.mode}); score start -> final: "
              + ", ".join(f"{k} {r.start_scores[k]:.3g} -> {v:.3g}" for k, v in r.final_scores.items()))
        return 0
    from shapes3d.classify.visualize import classviz_voxnet

    given = {"steps": args.steps, "lr": args.lr, "l2": args.l2, "blur_every": args.blur_every,
             "blur_sigma": args.blur_sigma, "clip_small": args.clip_small, "clip_grad": args.clip_grad,
             "device": args.device}
    r = classviz_voxnet(args.checkpoint, out=args.out, classes=args.classes,
                        **{k: v for k, v in given.items() if v is not None})
    print(f"wrote {r.sheet}; logit start -> final (p): "
          + ", ".join(f"{k} {r.start_scores[k]:.3g} -> {v:.3g} ({r.start_probs[k]:.2f} -> {r.final_probs[k]:.2f})"
                      for k, v in r.final_scores.items()))
    if r.empty:
        print(f"  no 0.5 surface for: {', '.join(r.empty)}")
    return 0
