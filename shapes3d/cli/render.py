"""``shapes3d render``: multi-view contact sheets of meshes and of DeepSDF codes."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from shapes3d.render.images import MODES, render_code_rows, render_rows


def register(sub) -> None:
    p = sub.add_parser("render", help="multi-view contact sheet of meshes or DeepSDF codes",
                       description="Render meshes (CPU ray casting) or shapes of a DeepSDF checkpoint (sphere "
                                   "tracing of the decoder) from cameras on a sphere into one PNG: one row per "
                                   "shape and mode, one column per view.")
    p.add_argument("paths", nargs="+", type=Path,
                   help="mesh files, or a DeepSDF checkpoint (.pt) with --shape and/or --code")
    p.add_argument("--shape", nargs="+", default=[], metavar="NAME_OR_INDEX",
                   help="training shapes of the checkpoint to render (names or indices)")
    p.add_argument("--code", nargs="+", default=[], type=Path, metavar="FILE",
                   help="code files (from 'sdf fit' or 'sdf fit-views') to render with the checkpoint's decoder")
    p.add_argument("--out", type=Path, default=Path("renders.png"), help="PNG to write (default renders.png)")
    p.add_argument("--views", type=int, default=6, help="azimuths, evenly spaced (default 6)")
    p.add_argument("--elevations", type=float, nargs="+", default=[25.0], help="camera elevations in degrees")
    p.add_argument("--size", type=int, default=128, help="image width and height in pixels")
    p.add_argument("--up", default="z", choices=("x", "y", "z"), help="up axis (ModelNet z, ShapeNet y)")
    p.add_argument("--modes", nargs="+", default=["shaded"], choices=(*MODES, "all"))
    p.set_defaults(handler=run)


def _checkpoint_rows(path: Path, args, modes) -> tuple[list[np.ndarray], list[str]]:
    from shapes3d.deepsdf.codes import code_or_none, shape_code
    from shapes3d.deepsdf.trainer import load_deepsdf
    from shapes3d.errors import Shapes3DError

    specs = [*args.shape, *(str(c) for c in args.code)]
    if not specs:
        raise Shapes3DError(f"{path}: a DeepSDF checkpoint needs --shape NAME_OR_INDEX or --code FILE to say "
                            f"what to render")
    model = load_deepsdf(path)
    rows, labels = [], []
    for spec in specs:
        label, code, _ = shape_code(model, spec)
        for mode, row in zip(modes, render_code_rows(model.decoder, code_or_none(code), views=args.views,
                                                      elevations=args.elevations, size=args.size, up=args.up,
                                                      modes=modes)):
            rows.append(row)
            labels += [f"{label} {mode}"] + [""] * (len(row) - 1)
    return rows, labels


def run(args: argparse.Namespace) -> int:
    from shapes3d.errors import Shapes3DError
    from shapes3d.geometry.io import load_mesh
    from shapes3d.render.sheet import contact_sheet
    from shapes3d.utils.progress import progress

    modes = list(MODES) if "all" in args.modes else args.modes
    rows, labels, skipped = [], [], []
    meshes = [p for p in args.paths if p.suffix.lower() != ".pt"]
    if (args.shape or args.code) and len(meshes) == len(args.paths):
        raise Shapes3DError("--shape and --code need a DeepSDF checkpoint (.pt) among the inputs")
    for path in progress(args.paths, desc="render", unit="input"):
        if path.suffix.lower() == ".pt":
            new_rows, new_labels = _checkpoint_rows(path, args, modes)
            rows += new_rows
            labels += new_labels
            continue
        try:
            mesh = load_mesh(path)
        except Shapes3DError as e:
            skipped.append(str(e))
            continue
        for mode, row in zip(modes, render_rows(mesh, views=args.views, elevations=args.elevations,
                                                 size=args.size, up=args.up, modes=modes)):
            rows.append(row)
            labels += [f"{path.stem} {mode}"] + [""] * (len(row) - 1)
    for reason in skipped:
        print(f"  skipped: {reason}")
    if not rows:
        raise Shapes3DError("nothing to render: every input was skipped")
    images = np.concatenate([np.repeat(r[..., None], 3, -1) if r.ndim == 3 else r for r in rows])
    contact_sheet(images, args.out, cols=len(rows[0]), labels=labels)
    print(f"wrote {args.out} ({len(rows)} rows x {len(rows[0])} views)")
    return 0
