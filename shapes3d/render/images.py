"""Images of shapes for people and for 2D losses: one row of views per mode, from a mesh or an SDF; image files
in and out; contact sheets of labelled rows.

A *row* is a numpy array (V, H, W) or (V, H, W, 3) in [0, 1], one image per camera; contact sheets stack rows.
A *labelled row* is ``(label, row)``; the label captions the row's first image. Cameras for sheets sit on a
sphere around the unit-sphere frame that shapes are normalised to.

Imports of torch, trimesh and the renderers happen inside the functions: the CLI imports :data:`MODES` at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: A caption and one (V, H, W[, 3]) row of images in [0, 1].
LabelledRow = tuple[str, np.ndarray]

#: The image kinds of a sheet row: Lambert shading, depth, normals as RGB, silhouette (dark inside).
MODES = ("shaded", "depth", "normals", "silhouette")


CAMERA_DISTANCE = 3.2  # the shape lies in the unit sphere; 40 deg of view then frame it with a little air


FOV_DEG = 40.0


def sheet_cameras(*, views: int, elevations, size: int, up: str):
    from shapes3d.render.cameras import cameras_on_sphere

    return cameras_on_sphere(elevations_deg=elevations, azimuths_deg=np.arange(views) * 360.0 / views,
                             distance=CAMERA_DISTANCE, up=up, fov_deg=FOV_DEG, width=size, height=size)


def render_rows(mesh, *, views: int, elevations, size: int, up: str, modes) -> list[np.ndarray]:
    """Normalise ``mesh`` into the unit sphere and render one (V, H, W[, 3]) row per mode.

    ``mesh`` may also be (N, 3) points: they are drawn as splats (:mod:`shapes3d.render.points`); having no
    surface, their ``shaded`` and ``normals`` rows show depth-cued coverage."""
    if isinstance(mesh, np.ndarray):
        return _point_rows(mesh, views=views, elevations=elevations, size=size, up=up, modes=modes)
    from shapes3d.geometry.normalize import normalize
    from shapes3d.render.mesh import render_mesh
    from shapes3d.render.sheet import depth_to_image

    unit, _ = normalize(mesh, mode="sphere", margin=0.0)
    r = render_mesh(unit, sheet_cameras(views=views, elevations=elevations, size=size, up=up))
    images = {
        "shaded": r.shaded,
        "depth": depth_to_image(r.depth),
        "normals": np.where(r.silhouette[..., None], (r.normals + 1) / 2, 1.0),
        "silhouette": 1.0 - r.silhouette.astype(np.float64),
    }
    return [images[m] for m in modes]


def _point_rows(points: np.ndarray, *, views: int, elevations, size: int, up: str, modes) -> list[np.ndarray]:
    from shapes3d.geometry.normalize import normalize
    from shapes3d.render.points import render_points
    from shapes3d.render.sheet import depth_to_image

    unit, _ = normalize(points, mode="sphere", margin=0.0)
    r = render_points(unit, sheet_cameras(views=views, elevations=elevations, size=size, up=up),
                      radius=max(1, size // 96))
    cued = depth_to_image(r.depth)
    images = {"shaded": cued, "depth": cued, "normals": np.repeat(cued[..., None], 3, -1),
              "silhouette": 1.0 - r.coverage.astype(np.float64)}
    return [images[m] for m in modes]


def sdf_images(renders, modes, *, soft_silhouette: bool = False) -> list[np.ndarray]:
    """:class:`~shapes3d.render.sdf_render.SDFRenders` -> one (V, H, W[, 3]) numpy row per mode, as :func:`render_rows`.

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

    from shapes3d.render.sdf_render import render_sdf

    reach = 3.0 ** 0.5 + 0.05  # the decoder's box [-1, 1]^3 lies within this distance of the origin
    device = next(decoder.parameters()).device
    with torch.no_grad():
        r = render_sdf(decoder.freeze(code), sheet_cameras(views=views, elevations=elevations, size=size, up=up),
                       near=CAMERA_DISTANCE - reach, far=CAMERA_DISTANCE + reach, silhouette_samples=16,
                       device=device, announce=True)
    return sdf_images(r, modes)


def read_image(spec: str):
    """A path or ``skimage:NAME`` -> numpy image."""
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


def to_image_tensor(array: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) or (H, W, 3|4) uint8/float image -> (1, 3, H', W') in [0, 1], longer side resized to ``size``."""
    import torch

    a = np.asarray(array)
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a.astype(np.float32)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    a = a[..., :3]
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]
    h, w = t.shape[-2:]
    scale = size / max(h, w)
    new = (max(int(round(h * scale)), 16), max(int(round(w * scale)), 16))
    return torch.nn.functional.interpolate(t, size=new, mode="area" if scale < 1 else "bilinear").clamp(0, 1)


def write_image(path: str | Path, image) -> Path:
    """An image in [0, 1] as an 8-bit PNG, atomically: a torch tensor (1, 3, H, W) or (3, H, W) (channels first),
    or a numpy array (H, W) or (H, W, 3) (channels last)."""
    from PIL import Image

    from shapes3d.utils.io import atomic_write

    if hasattr(image, "detach"):  # torch: channels first
        a = image.detach().cpu().numpy()
        a = np.moveaxis(a[0] if a.ndim == 4 else a, 0, -1)
    else:
        a = np.asarray(image)
    a = (np.clip(a, 0.0, 1.0) * 255).round().astype(np.uint8)
    with atomic_write(path, "wb") as f:
        Image.fromarray(a).save(f, format="PNG")
    return Path(path)


def label_rows(name: str, modes: Sequence[str], rows: Sequence[np.ndarray]) -> list[LabelledRow]:
    """One labelled row ``"NAME MODE"`` per mode."""
    return [(f"{name} {mode}", row) for mode, row in zip(modes, rows)]


def write_sheet(rows: Sequence[LabelledRow], path: str | Path, *, cols: int | None = None,
                title: str | None = None, col_labels: Sequence[str] | None = None,
                min_size: int | None = None) -> Path:
    """Labelled rows -> one PNG contact sheet (grey rows as RGB), ``cols`` tiles per line (default: one line per
    row, one column per view). With one line per row the labels name the rows in a left margin, else each captions
    its row's first image; ``col_labels`` name the columns; ``min_size`` scales smaller tiles up to it (pixels)."""
    from shapes3d.render.sheet import contact_sheet

    images = np.concatenate([np.repeat(r[..., None], 3, -1) if r.ndim == 3 else r for _, r in rows])
    cols = cols or len(rows[0][1])
    if all(len(r) == cols for _, r in rows):
        contact_sheet(images, path, cols=cols, row_labels=[label for label, _ in rows], title=title,
                      col_labels=col_labels, min_size=min_size)
    else:
        labels = [text for label, r in rows for text in [label] + [""] * (len(r) - 1)]
        contact_sheet(images, path, cols=cols, labels=labels, title=title, col_labels=col_labels, min_size=min_size)
    return Path(path)


def view_labels(views: int, *, elevation: float | None = None) -> list[str]:
    """Column names of a sheet of ``views`` cameras evenly spaced in azimuth (as :func:`sheet_cameras`)."""
    at = f", el {elevation:g}\u00b0" if elevation is not None else ""
    return [f"az {k * 360.0 / views:g}\u00b0{at}" for k in range(views)]


@dataclass
class SheetResult:
    """What :func:`mesh_sheet` drew: the PNG, its rows x views, and the inputs it skipped (one reason each)."""

    path: Path
    rows: int
    views: int
    skipped: list[str] = field(default_factory=list)
    inputs: int = 0  #: inputs given (each drawn or skipped)


def mesh_sheet(paths: Sequence[str | Path], out: str | Path, *, views: int = 6, elevations=(25.0,), size: int = 128,
               up: str = "z", modes: Sequence[str] = ("shaded",),
               other_rows: Callable[[Path], list[LabelledRow]] | None = None) -> SheetResult:
    """A contact sheet of meshes (CPU ray casting), point clouds (splats) and voxel grids (``.npy``/``.npz``
    occupancy (R, R, R), drawn as cubes), one row per input and mode, one column per view, as ``out``.

    Unreadable meshes are skipped (listed in the result). ``other_rows``: labelled rows for inputs that are not
    meshes (``.pt`` files, e.g. the shapes of a DeepSDF checkpoint), in input order. Rows are labelled by the
    file's stem, or by the shortest distinguishing part of its path where stems clash
    (:func:`~shapes3d.utils.names.unique_names`: ``a/model.obj``, ``b/model.obj`` -> ``a``, ``b``).
    Sizes are checked before anything is rendered.
    """
    from shapes3d.errors import Shapes3DError
    from shapes3d.render.multiview import load_renderable
    from shapes3d.utils.names import unique_names
    from shapes3d.utils.progress import progress

    check_sheet_options(out, views=views, elevations=elevations, size=size, up=up, modes=modes)
    paths = [Path(p) for p in paths]
    if not paths:
        raise Shapes3DError("nothing to render: no inputs given")
    if not any(p.exists() for p in paths):
        from shapes3d.errors import MissingFileError

        raise MissingFileError(paths[0], "file does not exist" + (f" (nor do the other {len(paths) - 1} inputs)"
                                                                  if len(paths) > 1 else ""))
    names = unique_names(paths)
    rows: list[LabelledRow] = []
    skipped = []
    for path, name in progress(list(zip(paths, names)), desc="render", unit="input"):
        if other_rows is not None and path.suffix.lower() == ".pt":
            rows += other_rows(path)
            continue
        try:
            mesh = load_renderable(path)  # meshes, point clouds (splats), voxel grids (.npy/.npz, as cubes)
        except Shapes3DError as e:
            skipped.append(str(e))
            continue
        rows += label_rows(name, modes, render_rows(mesh, views=views, elevations=elevations, size=size, up=up,
                                                    modes=modes))
    if not rows:
        raise Shapes3DError("nothing to render: every input was skipped" + "".join(f"\n  skipped: {r}" for r in skipped))
    elevations = list(elevations)
    heads = view_labels(views, elevation=elevations[0]) if len(elevations) == 1 and len(rows[0][1]) == views else None
    write_sheet(rows, out, col_labels=heads)
    return SheetResult(Path(out), len(rows), len(rows[0][1]), skipped, len(paths))


def check_sheet_options(out: str | Path, *, views: int, elevations, size: int, up: str, modes) -> None:
    """One-line errors naming the option, its value and the valid range, before anything is rendered."""
    import math

    from shapes3d.errors import ConfigError, Shapes3DError
    from shapes3d.geometry.limits import MAX_IMAGE_SIZE, MAX_VIEWS

    for name, value, lo, hi in (("views", views, 1, MAX_VIEWS), ("size", size, 16, MAX_IMAGE_SIZE)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"{name}: {value!r} is out of range [{lo}, {hi}]")
    elevations = list(elevations)
    if not elevations or any(not isinstance(e, (int, float)) or not math.isfinite(e) or not -90 < e < 90
                             for e in elevations):
        raise ConfigError(f"elevations: {elevations!r}: expected one or more angles in (-90, 90) degrees")
    if up not in ("x", "y", "z"):
        raise ConfigError(f"up: {up!r}: expected x, y or z")
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ConfigError(f"modes: {list(modes)!r}: expected one or more of {', '.join(MODES)}")
    out = Path(out)
    if out.is_dir():
        raise Shapes3DError(f"{out}: --out is a folder, expected a PNG file path (e.g. {out / 'renders.png'})")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise Shapes3DError(f"{out}: --out lies inside {parent}, which is a file, not a folder")
            break
