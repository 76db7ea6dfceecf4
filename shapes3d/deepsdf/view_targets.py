"""View targets on disk: the images a code is fitted to (``sdf fit-views``), with their cameras.

A targets folder holds ``cameras.json`` and one PNG per view and kind (silhouette, shaded, normals), plus the same
cameras as a NeRF / Blender ``transforms.json`` (:mod:`shapes3d.render.nerf_transforms`; ``file_path`` the shaded
image, ``mask_path`` the silhouette, ``normals_path`` the normals). A folder with only a ``transforms.json`` is read
too: its frames' ``file_path`` images are the shaded targets and their ``mask_path`` images the silhouettes.
"""

from __future__ import annotations

import json
from pathlib import Path

TARGET_FILES = {"silhouette": "silhouette_{:02d}.png", "shaded": "shaded_{:02d}.png", "normals": "normals_{:02d}.png"}


def write_view_targets(folder: Path, targets, cameras, transform=None) -> Path:
    """Targets as PNGs plus ``cameras.json`` (cameras, file names, the mesh's normalisation) in ``folder``."""
    import dataclasses

    import numpy as np
    from PIL import Image

    from shapes3d.utils.io import atomic_write, atomic_write_text

    entries = []
    for i, cam in enumerate(cameras):
        entry = {"camera": dataclasses.asdict(cam)}
        for kind, pattern in TARGET_FILES.items():
            img = getattr(targets, kind)
            if img is None:
                continue
            a = img[i].numpy()
            if kind == "normals":
                a = np.where(np.abs(a).sum(-1, keepdims=True) > 0, (a + 1) / 2, 1.0)
            with atomic_write(folder / pattern.format(i), "wb") as f:
                Image.fromarray(np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)).save(f, format="PNG")
            entry[kind] = pattern.format(i)
        entries.append(entry)
    doc = {"views": entries, "transform": None if transform is None else transform.to_dict()}
    atomic_write_text(folder / "cameras.json", json.dumps(doc, indent=1))
    _write_transforms(folder, cameras, entries)
    return folder / "cameras.json"


def _write_transforms(folder: Path, cameras, entries: list[dict]) -> None:
    """The views' cameras as ``transforms.json`` (shaded image as ``file_path``, silhouette as ``mask_path``)."""
    from shapes3d.render.nerf_transforms import TRANSFORMS_FILE, write_transforms

    keys = {"silhouette": "mask_path", "normals": "normals_path"}
    paths = [e.get("shaded", e.get("silhouette", e.get("normals"))) for e in entries]
    extras = [{keys[k]: e[k] for k in keys if k in e} for e in entries]
    write_transforms(folder / TRANSFORMS_FILE, cameras, paths, extras)


def _views_from_transforms(path: Path):
    """(cameras, views as in cameras.json) from a ``transforms.json``: file_path -> shaded (unless it is the
    mask), mask_path -> silhouette, normals_path -> normals."""
    from shapes3d.render.nerf_transforms import read_transforms

    cams, frames = read_transforms(path)
    views = []
    for f in frames:
        v = {"silhouette": f.get("mask_path"), "normals": f.get("normals_path")}
        if f.get("file_path") not in (v["silhouette"], v["normals"]):
            v["shaded"] = f["file_path"]
        views.append({k: str(name) for k, name in v.items() if name is not None})
    return cams, views


def read_view_targets(folder: Path):
    """``(ViewTargets, cameras, Transform or None)`` from a folder written by :func:`write_view_targets`.

    ``cameras.json``: ``{"views": [{"camera": {Camera fields}, "silhouette": PNG, "shaded": PNG,
    "normals": PNG}, ...], "transform": {"offset", "scale"} or null}``; every view names the same kinds.
    Silhouettes are white inside; normals are RGB ``(n + 1) / 2``, white where missed.
    """
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from shapes3d.deepsdf.views import ViewTargets
    from shapes3d.errors import InputFileError, MissingFileError
    from shapes3d.geometry.normalize import Transform
    from shapes3d.render.cameras import Camera

    index, doc = folder / "cameras.json", {}
    if not index.is_file() and (folder / "transforms.json").is_file():
        index = folder / "transforms.json"
        cams, views = _views_from_transforms(index)  # errors name the file
    elif not index.is_file():
        raise MissingFileError(index, "file does not exist (a targets folder needs cameras.json or transforms.json)")
    try:
        if index.name == "cameras.json":
            doc = json.loads(index.read_text())
            views = doc["views"]
            cams = [Camera(**{k: tuple(v) if isinstance(v, list) else v for k, v in e["camera"].items()})
                    for e in views]
        kinds = [k for k in TARGET_FILES if k in views[0]]
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise InputFileError(index, f"not a valid targets index ({type(e).__name__}: {e})") from None
    if not kinds:
        raise InputFileError(index, f"views name none of {', '.join(TARGET_FILES)}")
    images: dict[str, list] = {k: [] for k in kinds}
    for e in views:
        for k in kinds:
            if k not in e:
                raise InputFileError(index, f"every view must name the same images; one lacks {k!r}")
            path = folder / e[k]
            if not path.is_file():
                raise MissingFileError(path)
            try:
                with Image.open(path) as im:
                    a = np.asarray(im.convert("RGB" if k == "normals" else "L"), dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as err:
                raise InputFileError(path, f"not a readable image ({err})") from None
            images[k].append(a)
    arrays = {k: np.stack(v) for k, v in images.items()}
    if "normals" in arrays:
        n = arrays["normals"] * 2 - 1
        inside = arrays["silhouette"] > 0.5 if "silhouette" in arrays else np.abs(arrays["normals"] - 1).sum(-1) > 0.02
        n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
        arrays["normals"] = np.where(inside[..., None], n, 0.0)
    try:
        targets = ViewTargets(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
    except ValueError as e:
        raise InputFileError(index, str(e)) from None
    t = doc.get("transform")
    return targets, cams, (None if t is None else Transform.from_dict(t))
