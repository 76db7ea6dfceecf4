"""``shapes3d info``: versions, compute device, data root, pretrained weights."""

from __future__ import annotations

import argparse
import importlib
import platform

from shapes3d.cli.common import examples


def register(sub) -> None:
    p = sub.add_parser("info", help="versions, compute device, data root, pretrained weights",
                       description="Print library versions, the compute device, the real-data root and "
                                   "whether pretrained VGG weights can be found.",
                       epilog=examples(
                           "shapes3d info"))
    p.set_defaults(handler=run)


def _version(module: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # open3d fails to import without libusb-1.0
        return f"not importable ({e.__class__.__name__}: {e})"
    return getattr(mod, "__version__", "unknown")


def run(args: argparse.Namespace) -> int:
    import torch

    from shapes3d import __version__
    from shapes3d.utils.io import data_root

    print(f"shapes3d     {__version__}")
    print(f"python       {platform.python_version()} ({platform.machine()})")
    for mod in ("torch", "numpy", "scipy", "trimesh", "skimage", "open3d"):
        print(f"{mod:<12} {_version(mod)}")
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        print(f"device       cuda ({names})")
    else:
        print(f"device       cpu ({torch.get_num_threads()} threads; no CUDA device)")
    root = data_root()
    if root.is_dir():
        sets = sorted(p.name for p in root.iterdir() if p.is_dir())
        print(f"data root    {root} ({len(sets)} sets: {', '.join(sets)})")
    else:
        print(f"data root    {root} (absent; set SHAPES3D_DATA_ROOT)")
    try:
        from shapes3d.pretrained import find_vgg_weights
    except ImportError:
        print("vgg weights  (weight discovery not available in this build)")
        return 0
    for arch in ("vgg16", "vgg19"):
        print(f"{arch:<12} {_describe_weights(find_vgg_weights(arch))}")
    return 0


def _describe_weights(found) -> str:
    sources = found if isinstance(found, (list, tuple)) else [found]
    hits = [c for c in sources if c is not None and getattr(c, "found", True)]
    if hits:
        c = hits[0]
        return f"found: {getattr(c, 'name', '')} ({getattr(c, 'path', c)})"
    looked = "; ".join(f"{getattr(c, 'name', '')} {getattr(c, 'path', '')}".strip() for c in sources if c is not None)
    return f"not found (looked in: {looked})"
