"""``shapes3d render``: multi-view contact sheets of meshes."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

MODES = ("shaded", "depth", "normals", "silhouette")


def register(sub) -> None:
    p = sub.add_parser("render", help="multi-view contact sheet of meshes",
                       description="Render meshes from cameras on a sphere (CPU ray casting) into one PNG: "
                                   "one row per mesh and mode, one column per view.")
    p.add_argument("paths", nargs="+", type=Path, help="mesh files")
    p.add_argument("--out", type=Path, default=Path("renders.png"), help="PNG to write (default renders.png)")
    p.add_argument("--views", type=int, default=6, help="azimuths, evenly spaced (default 6)")
    p.add_argument("--elevations", type=float, nargs="+", default=[25.0], help="camera elevations in degrees")
    p.add_argument("--size", type=int, default=128, help="image width and height in pixels")
    p.add_argument("--up", default="z", choices=("x", "y", "z"), help="up axis (ModelNet z, ShapeNet y)")
    p.add_argument("--modes", nargs="+", default=["shaded"], choices=(*MODES, "all"))
    p.set_defaults(handler=run)


def render_rows(mesh, *, views: int, elevations, size: int, up: str, modes) -> list[np.ndarray]:
    """Normalise ``mesh`` into the unit sphere and render one (V, H, W[, 3]) row per mode."""
    from shapes3d.geometry.normalize import normalize
    from shapes3d.render.cameras import cameras_on_sphere
    from shapes3d.render.mesh import render_mesh
    from shapes3d.render.sheet import depth_to_image

    unit, _ = normalize(mesh, mode="sphere", margin=0.0)
    cams = cameras_on_sphere(elevations_deg=elevations, azimuths_deg=np.arange(views) * 360.0 / views,
                             distance=3.2, up=up, fov_deg=40.0, width=size, height=size)
    r = render_mesh(unit, cams)
    images = {
        "shaded": r.shaded,
        "depth": depth_to_image(r.depth),
        "normals": np.where(r.silhouette[..., None], (r.normals + 1) / 2, 1.0),
        "silhouette": 1.0 - r.silhouette.astype(np.float64),
    }
    return [images[m] for m in modes]


def run(args: argparse.Namespace) -> int:
    from shapes3d.errors import Shapes3DError
    from shapes3d.geometry.io import load_mesh
    from shapes3d.render.sheet import contact_sheet
    from shapes3d.utils.progress import progress

    modes = list(MODES) if "all" in args.modes else args.modes
    rows, labels, skipped = [], [], []
    for path in progress(args.paths, desc="render", unit="mesh"):
        try:
            mesh = load_mesh(path)
        except Shapes3DError as e:
            skipped.append(str(e))
            continue
        for mode, row in zip(modes, render_rows(mesh, views=args.views, elevations=args.elevations,
                                                 size=args.size, up=args.up, modes=modes)):
            rows.append(np.repeat(row[..., None], 3, -1) if row.ndim == 3 else row)
            labels += [f"{path.stem} {mode}"] + [""] * (len(row) - 1)
    for reason in skipped:
        print(f"  skipped: {reason}")
    if not rows:
        raise Shapes3DError("nothing to render: every input was skipped")
    images = np.concatenate(rows)
    contact_sheet(images, args.out, cols=len(rows[0]), labels=labels)
    print(f"wrote {args.out} ({len(rows)} rows x {len(rows[0])} views)")
    return 0
