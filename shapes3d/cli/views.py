"""``shapes3d sdf fit-views`` (a code from multi-view renders) and the view-target files it reads and writes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shapes3d.cli.common import resolve_config, write_resolved_config
from shapes3d.training.sdf_views_config import ViewsConfig
from shapes3d.utils.io import safe_child

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
    return folder / "cameras.json"


def read_view_targets(folder: Path):
    """``(ViewTargets, cameras, Transform or None)`` from a folder written by :func:`write_view_targets`.

    ``cameras.json``: ``{"views": [{"camera": {Camera fields}, "silhouette": PNG, "shaded": PNG,
    "normals": PNG}, ...], "transform": {"offset", "scale"} or null}``; every view names the same kinds.
    Silhouettes are white inside; normals are RGB ``(n + 1) / 2``, white where missed.
    """
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from shapes3d.errors import InputFileError, MissingFileError
    from shapes3d.geometry.normalize import Transform
    from shapes3d.render.cameras import Camera
    from shapes3d.training.sdf_views import ViewTargets

    index = folder / "cameras.json"
    if not index.is_file():
        raise MissingFileError(index, "file does not exist (a targets folder needs cameras.json)")
    try:
        doc = json.loads(index.read_text())
        views = doc["views"]
        cams = [Camera(**{k: tuple(v) if isinstance(v, list) else v for k, v in e["camera"].items()}) for e in views]
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


def write_history(history: list[dict], out: Path, *, title: str, panels: dict[str, list[str]]) -> None:
    """``log.csv`` (every term per step) and ``loss.png`` (one panel per group of summed terms)."""
    from shapes3d.training.plots import plot_curves
    from shapes3d.utils.io import atomic_write_csv

    atomic_write_csv(out / "log.csv", history)
    rows = [{"epoch": h["step"], **{f"train_{name}": sum(h.get(k, 0.0) for k in keys)
                                    for name, keys in panels.items() if any(k in h for k in keys)}}
            for h in history]
    plot_curves(rows, out / "loss.png", title=title)


def run_fit_views(args: argparse.Namespace) -> int:
    import time

    import numpy as np
    import torch

    from shapes3d.cli.render import sdf_images
    from shapes3d.geometry.export import export_mesh
    from shapes3d.geometry.io import load_mesh
    from shapes3d.geometry.normalize import normalize
    from shapes3d.render.sheet import contact_sheet
    from shapes3d.training.checkpoint import save_checkpoint
    from shapes3d.training.sdf import load_deepsdf
    from shapes3d.training.sdf_pipeline import extract_shape, reconstruction_metrics
    from shapes3d.training.sdf_views import fit_code_to_views, targets_from_mesh, view_cameras

    start = time.perf_counter()
    cfg = resolve_config(ViewsConfig, args)
    model = load_deepsdf(args.checkpoint, device=cfg.fit.device)
    mesh = None
    if args.targets.is_dir():
        targets, cams, t = read_view_targets(args.targets)
        label = args.targets.parent.name if args.targets.name == "targets" else args.targets.name
    else:
        mesh = load_mesh(args.targets)
        # The training shapes' normalisation (sdf sampling): bounding-box centre, unit sphere with a margin.
        unit, t = normalize(mesh, mode="sphere", margin=model.config.samples.margin, center="bbox")
        cams = view_cameras(cfg.render)
        targets = targets_from_mesh(unit, cams, ambient=cfg.render.ambient)
        label = args.targets.stem
    out = args.out or safe_child(args.checkpoint.parent / "fit-views", label, what="target name")
    res = fit_code_to_views(model.decoder, targets, cams, cfg=cfg, codes=model.codes)
    fit_s = time.perf_counter() - start

    if mesh is not None:
        write_view_targets(out / "targets", targets, cams, t)
    offset, scale = (t.offset, t.scale) if t is not None else ((0.0, 0.0, 0.0), 1.0)
    save_checkpoint(safe_child(out, f"{label}.pt", what="target name"), {"code": res.code.detach().cpu(), "offset": torch.tensor(offset),
                                          "scale": torch.tensor(scale), "loss": res.loss,
                                          "source": str(args.targets), "partial": "views"})
    rows, labels = [], []
    fitted = dict(zip(("shaded", "normals", "silhouette"),
                      sdf_images(res.renders, ["shaded", "normals", "silhouette"], soft_silhouette=True)))
    for kind in ("shaded", "normals", "silhouette"):
        tgt = getattr(targets, kind)
        if tgt is None:
            continue
        tgt = tgt.numpy()
        if kind == "normals":
            tgt = np.where(np.abs(tgt).sum(-1, keepdims=True) > 0, (tgt + 1) / 2, 1.0)
        elif kind == "silhouette":
            tgt = 1.0 - tgt
        for name, row in (("target", tgt), ("fitted", fitted[kind])):
            rows.append(np.repeat(row[..., None], 3, -1) if row.ndim == 3 else row)
            labels += [f"{name} {kind}"] + [""] * (len(row) - 1)
    contact_sheet(np.concatenate(rows), out / "sheet.png", cols=len(cams), labels=labels,
                  title=f"{label}: target vs fitted")
    write_history(res.history, out, title=f"fit-views {label}",
                  panels={"loss": ["total"], "silhouette": ["silhouette"],
                          "ssim": ["ssim_shaded", "ssim_normals"],
                          "perceptual": ["perceptual_shaded", "perceptual_normals"]})
    write_resolved_config(cfg, out)
    print(f"fitted {label} to {len(cams)} views in {fit_s:.1f} s: loss {res.history[0]['total']:.4f} -> "
          f"{res.loss:.4f} (restarts: {', '.join(f'{x:.4f}' for x in res.restart_losses)}); {out / 'sheet.png'}")
    ext = extract_shape(model.decoder, res.code, resolution=args.resolution, transform=t)
    if ext.empty:
        print(f"  the fitted code has no surface ({ext.reason})")
        return 0
    path = export_mesh(ext.mesh, safe_child(out, f"{label}.ply", what="target name"))
    if mesh is None:
        print(f"  mesh {path}")
        return 0
    metrics = reconstruction_metrics(ext.mesh, mesh, t)
    safe_child(out, f"{label}.json", what="target name").write_text(json.dumps({**metrics, "loss": res.loss, "fit_seconds": fit_s}, indent=2))
    print(f"  mesh {path}; Chamfer x1e3 {metrics['chamfer_deepsdf_x1e3']:.3f}, "
          f"F-score@0.01 {metrics.get('fscore@0.01', float('nan')):.3f}")
    return 0
