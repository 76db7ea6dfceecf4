"""``shapes3d render``: multi-view contact sheets of meshes and of DeepSDF codes."""

from __future__ import annotations

import argparse
from pathlib import Path

from shapes3d.cli.common import batch_exit, examples, float_range, int_range, output_file
from shapes3d.geometry.limits import MAX_IMAGE_SIZE, MAX_VIEWS
from shapes3d.render.images import MODES


def register(sub) -> None:
    p = sub.add_parser("render", help="multi-view contact sheet of meshes or DeepSDF codes",
                       description="Render meshes (CPU ray casting), point clouds (splats), voxel grids (cubes) or shapes of a DeepSDF checkpoint (sphere "
                                   "tracing of the decoder) from cameras on a sphere into one PNG: one row per "
                                   "shape and mode, one column per view.",
                       epilog=examples(
                           "shapes3d render data/ModelNet10/chair/test/chair_0890.off --views 8 --out chair.png",
                           "shapes3d render runs/chairs/last.pt --shape 0 1 2 --modes all --out codes.png"))
    p.add_argument("paths", nargs="+", type=Path,
                   help="mesh files, point clouds (drawn as splats), voxel grids (.npy/.npz occupancy (R, R, R), "
                        "drawn as cubes), or a DeepSDF checkpoint (.pt) with --shape and/or --code")
    p.add_argument("--shape", nargs="+", default=[], metavar="NAME_OR_INDEX",
                   help="training shapes of the checkpoint to render (names or indices; default: none)")
    p.add_argument("--code", nargs="+", default=[], type=Path, metavar="FILE",
                   help="code files (from 'sdf fit' or 'sdf fit-views') to render with the checkpoint's decoder "
                        "(default: none)")
    p.add_argument("--out", type=output_file, default=Path("renders.png"), help="PNG to write (default renders.png)")
    p.add_argument("--views", type=int_range(1, MAX_VIEWS), default=6, help="azimuths, evenly spaced (default 6)")
    p.add_argument("--elevations", type=float_range(-90, 90, open_ends=True), nargs="+", default=[25.0],
                   help="camera elevations in degrees, in (-90, 90) (default 25)")
    p.add_argument("--size", type=int_range(16, MAX_IMAGE_SIZE), default=128,
                   help="image width and height in pixels (default 128)")
    p.add_argument("--up", default="z", choices=("x", "y", "z"), help="up axis (ModelNet z, ShapeNet y)")
    p.add_argument("--modes", nargs="+", default=["shaded"], choices=(*MODES, "all"),
                   help="image kinds, one row each (all: every kind)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from functools import partial

    from shapes3d.errors import Shapes3DError
    from shapes3d.render.images import mesh_sheet

    modes = list(MODES) if "all" in args.modes else args.modes
    checkpoints = [p for p in args.paths if p.suffix.lower() == ".pt"]
    specs = [*args.shape, *(str(c) for c in args.code)]
    if specs and not checkpoints:
        raise Shapes3DError("--shape and --code need a DeepSDF checkpoint (.pt) among the inputs")
    if checkpoints and not specs:
        raise Shapes3DError(f"{checkpoints[0]}: a DeepSDF checkpoint needs --shape NAME_OR_INDEX or --code FILE to "
                            f"say what to render")
    options = dict(views=args.views, elevations=args.elevations, size=args.size, up=args.up, modes=modes)
    code_rows = None
    if checkpoints:
        from shapes3d.deepsdf.jobs import render_codes

        code_rows = partial(render_codes, specs=specs, **options)
    r = mesh_sheet(args.paths, args.out, other_rows=code_rows, **options)
    for reason in r.skipped:
        print(f"  skipped: {reason}")
    print(f"wrote {r.path} ({r.rows} rows x {r.views} views)")
    return batch_exit(r.inputs, len(r.skipped))
