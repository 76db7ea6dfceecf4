"""``shapes3d render``: multi-view contact sheets of meshes and of DeepSDF codes."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

MODES = ("shaded", "depth", "normals", "silhouette")
CAMERA_DISTANCE = 3.2  # the shape lies in the unit sphere; 40 deg of view then frame it with a little air
FOV_DEG = 40.0


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


def _cameras(*, views: int, elevations, size: int, up: str):
    from shapes3d.render.cameras import cameras_on_sphere

    return cameras_on_sphere(elevations_deg=elevations, azimuths_deg=np.arange(views) * 360.0 / views,
                             distance=CAMERA_DISTANCE, up=up, fov_deg=FOV_DEG, width=size, height=size)


def render_rows(mesh, *, views: int, elevations, size: int, up: str, modes) -> list[np.ndarray]:
    """Normalise ``mesh`` into the unit sphere and render one (V, H, W[, 3]) row per mode."""
    from shapes3d.geometry.normalize import normalize
    from shapes3d.render.mesh import render_mesh
    from shapes3d.render.sheet import depth_to_image

    unit, _ = normalize(mesh, mode="sphere", margin=0.0)
    r = render_mesh(unit, _cameras(views=views, elevations=elevations, size=size, up=up))
    images = {
        "shaded": r.shaded,
        "depth": depth_to_image(r.depth),
        "normals": np.where(r.silhouette[..., None], (r.normals + 1) / 2, 1.0),
        "silhouette": 1.0 - r.silhouette.astype(np.float64),
    }
    return [images[m] for m in modes]


def sdf_images(renders, modes, *, soft_silhouette: bool = False) -> list[np.ndarray]:
    """:class:`~shapes3d.render.sdf.SDFRenders` -> one (V, H, W[, 3]) numpy row per mode, as :func:`render_rows`.

    ``silhouette`` is dark where the shape is: the hit mask, or ``1 - silhouette_soft``.
    """
    from shapes3d.render.sheet import depth_to_image

    hit = renders.hit.detach().cpu().numpy()
    normals = renders.normals.detach().cpu().numpy()
    sil = 1.0 - (renders.silhouette_soft.detach().cpu().numpy() if soft_silhouette else hit.astype(np.float64))
    images = {
        "shaded": renders.shaded.detach().cpu().numpy(),
        "depth": depth_to_image(renders.depth.detach().cpu().numpy()),
        "normals": np.where(hit[..., None], (normals + 1) / 2, 1.0),
        "silhouette": sil,
    }
    return [images[m] for m in modes]


def render_code_rows(decoder, code, *, views: int, elevations, size: int, up: str, modes) -> list[np.ndarray]:
    """Sphere-trace ``decoder`` with ``code`` (L,) or None (its frame is the unit sphere) and render rows per mode."""
    import torch

    from shapes3d.render.sdf import render_sdf

    reach = 3.0 ** 0.5 + 0.05  # the decoder's box [-1, 1]^3 lies within this distance of the origin
    device = next(decoder.parameters()).device
    with torch.no_grad():
        r = render_sdf(decoder.freeze(code), _cameras(views=views, elevations=elevations, size=size, up=up),
                       near=CAMERA_DISTANCE - reach, far=CAMERA_DISTANCE + reach, silhouette_samples=16,
                       device=device)
    return sdf_images(r, modes)


def _checkpoint_rows(path: Path, args, modes) -> tuple[list[np.ndarray], list[str]]:
    from shapes3d.cli.sdf import code_or_none, shape_code
    from shapes3d.errors import Shapes3DError
    from shapes3d.training.sdf import load_deepsdf

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
