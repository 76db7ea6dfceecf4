"""The DeepSDF test protocol in one job: fit every test shape with the decoder frozen, extract, score, summarise.

For each shape of ``split`` (a split name or a DeepSDF split file) of a data set (meshes, ShapeNet, or official
``SdfSamples`` npz files), :func:`reconstruct`

1. builds the observations: the mesh's SDF samples (the checkpoint's ``[samples]`` recipe), the official npz
   samples as they are, or a partial observation (``depth``: one depth view, ``crop``: its half z >= 0; meshes
   only);
2. fits a code with the frozen decoder (:func:`~shapes3d.deepsdf.fitting.fit_code`, the checkpoint's ``[fit]``
   settings, best of ``fit.restarts``), seeded from ``fit.seed`` and the shape's id, so every shape's result is
   the same whatever the order or subset of shapes;
3. extracts the surface at ``resolution`` (256^3 by default) in ``[-bound, bound]^3``, closing surfaces at the box;
4. scores it against the ground truth on ``points`` (30 000) surface points per side: Chamfer as DeepSDF reports
   it (squared distances, mean per direction, summed; also x10^3), EMD on 1 024-point subsamples of those points
   (exact matching), F-score at 0.01/0.02/0.05, normal consistency, IoU (watertight pairs, 32^3 cells), mesh
   accuracy (90th percentile of reconstruction -> ground-truth distances) and mesh completion (fraction of
   ground-truth points within 0.01 of the reconstruction). ``frame="unit"`` scores in the unit-sphere frame the
   network sees; ``frame="mesh"`` in the ground truth's own coordinates, as the official ``evaluate.py``.

Official samples have no mesh: the ground truth is ``SurfaceSamples/<dataset>/<class>/<id>.ply`` of the same data
source (points in the mesh's coordinates; no normals, so no normal consistency or IoU), else the shape is skipped.

Outputs in ``out``: ``protocol.json`` (the settings), per shape ``shapes/<id>.json`` (written as each finishes, so
a killed run resumes with the shapes not yet done), ``meshes/<id>.ply`` (the mesh's coordinates) and
``codes/<id>.pt``; at the end ``metrics.csv`` (one row per shape), ``summary.json`` (mean and median of every metric
overall and per class, the skipped shapes and why) and ``summary_by_class.csv``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shapes3d.deepsdf.codes import save_code
from shapes3d.deepsdf.fitting import fit_code, fit_options
from shapes3d.deepsdf.reconstruction import extract_shape
from shapes3d.deepsdf.trainer import _mix, load_deepsdf
from shapes3d.errors import Shapes3DError
from shapes3d.geometry.extract import DEFAULT_SAFETY
from shapes3d.utils.io import atomic_write_csv, atomic_write_text, safe_child
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)
FRAMES = ("unit", "mesh")
PARTIAL = ("none", "depth", "crop")


@dataclass
class ReconstructResult:
    """Per-shape rows (all done shapes, resumed ones included), the summary, the skipped shapes and why."""

    out: Path
    rows: list[dict]
    summary: dict
    skipped: list[tuple[str, str]]
    resumed: int


def _test_entries(data, split):
    from shapes3d.data.discovery import apply_split_file, is_split_file
    from shapes3d.engine.jobs import load_manifest, split_entries

    manifest = load_manifest(data)
    if is_split_file(split):
        return list(apply_split_file(manifest, split).entries)
    if split and not any(e.split for e in manifest.entries):
        log.warning("%s has no split labels: reconstructing all %d shapes (give a split file to choose)", data,
                    len(manifest))
    return split_entries(manifest, split, data)


def _settings(checkpoint: Path, cfg, **options) -> dict:
    from shapes3d.data.cache import input_identity

    return {"checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": input_identity(checkpoint)[0],
            "fit": dataclasses.asdict(cfg.fit), "samples": cfg.samples.to_dict(), **options}


def _check_resume(out: Path, settings: dict) -> None:
    path = out / "protocol.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if changed:
            raise Shapes3DError(f"{out} holds a reconstruction run with other settings ({', '.join(changed)}); "
                                "choose another --out or remove it")
    atomic_write_text(path, json.dumps(settings, indent=2))


def _observations(entry_path: Path, cfg, partial: str, seed: int):
    """(observations, Transform, ground truth: mesh, (points, None) or None, why none)."""
    from shapes3d.data.deepsdf_layout import surface_samples_path
    from shapes3d.data.sdf_dataset import is_official_samples, read_official
    from shapes3d.deepsdf.jobs import _partial_observation
    from shapes3d.geometry.io import load_mesh, load_points
    from shapes3d.geometry.normalize import Transform
    from shapes3d.geometry.sampling import sample_sdf

    if is_official_samples(entry_path):
        if partial != "none":
            return None, None, None, "partial observations need meshes, not official SDF samples"
        obs = read_official(entry_path)
        t = Transform(obs.offset, obs.scale)
        gt_path = surface_samples_path(entry_path)
        if gt_path is None or not gt_path.is_file():
            return None, None, None, f"no ground-truth surface ({gt_path} does not exist)"
        return obs, t, (load_points(gt_path), None), ""
    gt = load_mesh(entry_path)
    samples = sample_sdf(gt, config=cfg.samples)
    t = Transform(tuple(samples.offset.tolist()), float(samples.scale))
    obs = samples if partial == "none" else _partial_observation(gt, t, partial, seed=seed)
    return obs, t, gt, ""


def _score(pred, gt, t, *, frame: str, points: int, seed: int) -> dict:
    """Metrics of the reconstruction ``pred`` (unit frame) against ``gt`` (a mesh or (points, None), mesh frame)."""
    import trimesh

    from shapes3d.metrics.shape import cloud_metrics, mesh_metrics, sample_surface

    if frame == "mesh":
        pred = trimesh.Trimesh(t.invert(pred.vertices), pred.faces, process=False)
    if isinstance(gt, tuple):
        g = np.asarray(gt[0], dtype=np.float64)
        g = t.apply(g) if frame == "unit" else g
        if len(g) > points:
            g = g[np.random.default_rng(seed + 1).choice(len(g), points, replace=False)]
        a, na = sample_surface(pred, points, seed)
        m = {**cloud_metrics(a, na, g, None, seed=seed), "iou": float("nan")}
    else:
        if frame == "unit":
            gt = trimesh.Trimesh(t.apply(gt.vertices), gt.faces, process=False)
        m = mesh_metrics(pred, gt, n_points=points, seed=seed)
    m["chamfer_deepsdf_x1e3"] = 1e3 * m["chamfer_deepsdf"]
    return {k: float(v) for k, v in m.items()}


def _one_shape(model, cfg, name: str, cls: str, path: Path, out: Path, *, partial, resolution, bound, safety,
               frame, points) -> dict:
    """Fit, extract and score one shape; the row (``reason`` set when it has no result) or Shapes3DError."""
    from shapes3d.geometry.export import export_mesh

    t0 = time.perf_counter()
    seed = _mix(cfg.fit.seed, zlib.crc32(name.encode("utf-8"))) % (2**31)
    obs, t, gt, why = _observations(path, cfg, partial, seed)
    if obs is None:
        raise Shapes3DError(why)
    res = fit_code(model.decoder, obs, **{**fit_options(cfg), "seed": seed})
    save_code(safe_child(out / "codes", f"{name}.pt", what="shape id", nested=True), res.code, t, loss=res.loss,
              source=str(path), partial=partial, label=name)
    ext = extract_shape(model.decoder, res.code.detach(), resolution=resolution, transform=None, bound=bound,
                        safety=safety)
    row = {"shape": name, "class": cls, "source": str(path), "fit_loss": res.loss, "touches_box": ext.touches_box}
    if ext.empty:
        return {**row, "reason": f"reconstruction has no surface ({ext.reason})",
                "seconds": time.perf_counter() - t0}
    import trimesh

    export_mesh(trimesh.Trimesh(t.invert(ext.mesh.vertices), ext.mesh.faces, process=False),
                safe_child(out / "meshes", f"{name}.ply", what="shape id", nested=True))
    row.update(_score(ext.mesh, gt, t, frame=frame, points=points, seed=0))
    row["seconds"] = time.perf_counter() - t0
    return row


def reconstruct(checkpoint: str | os.PathLike, data: str | os.PathLike, *, split: str | None = "test",
                partial: str = "none", out: str | os.PathLike | None = None, resolution: int = 256,
                points: int = 30000, bound: float = 1.0, safety: float = DEFAULT_SAFETY, frame: str = "unit",
                limit: int | None = None, overrides=()) -> ReconstructResult:
    """The test protocol (module notes) on the shapes of ``split`` of ``data``; resumable in ``out`` (default
    ``reconstruct-<split>[-<partial>]/`` beside the checkpoint). ``overrides``: ``fit.*`` keys for this run."""
    from shapes3d.config import apply_overrides
    from shapes3d.data.discovery import ManifestEntry
    from shapes3d.data.shape_ids import shape_names

    if partial not in PARTIAL or frame not in FRAMES:
        raise ValueError(f"partial must be one of {PARTIAL} and frame one of {FRAMES}, got {partial!r}, {frame!r}")
    checkpoint = Path(checkpoint)
    model = load_deepsdf(checkpoint)
    if model.config.model.latent_size == 0:
        raise Shapes3DError(f"{checkpoint}: a single-shape decoder (latent_size 0) has no codes to fit")
    cfg = apply_overrides(model.config, overrides)
    entries = _test_entries(data, split)[:limit]
    paths = [Path(e.path if isinstance(e, ManifestEntry) else e) for e in entries]
    names = shape_names(paths)  # a clash is an error here, before anything is written
    classes = [(e.class_name if isinstance(e, ManifestEntry) else "") or "(none)" for e in entries]
    tag = Path(str(split)).stem if split else "all"
    out = Path(out) if out is not None else safe_child(
        checkpoint.parent, f"reconstruct-{tag}" + (f"-{partial}" if partial != "none" else ""), what="split name")
    _check_resume(out, _settings(checkpoint, cfg, partial=partial, resolution=resolution, points=points,
                                 bound=bound, safety=safety, frame=frame))
    rows, skipped, resumed = [], [], 0
    for name, cls, path in progress(list(zip(names, classes, paths)), desc="reconstruct", unit="shape"):
        done = safe_child(out / "shapes", f"{name}.json", what="shape id", nested=True)
        if done.is_file():
            row, resumed = json.loads(done.read_text(encoding="utf-8")), resumed + 1
        else:
            try:
                row = _one_shape(model, cfg, name, cls, path, out, partial=partial, resolution=resolution,
                                 bound=bound, safety=safety, frame=frame, points=points)
            except Shapes3DError as exc:
                log.warning("reconstruct: skipping %s: %s", name, exc)
                skipped.append((name, str(exc)))
                continue
            atomic_write_text(done, json.dumps(row, indent=2))
        if row.get("reason"):
            skipped.append((name, row["reason"]))
        else:
            rows.append(row)
    if not rows:
        raise Shapes3DError("no shape could be reconstructed: " + "; ".join(f"{n}: {r}" for n, r in skipped[:5]))
    summary = summarise(rows, skipped)
    atomic_write_csv(out / "metrics.csv", rows)
    atomic_write_csv(out / "summary_by_class.csv",
                     [{"class": c, "n": s["n"], **{f"{k}_{stat}": v[stat] for k, v in s.items() if isinstance(v, dict)
                                                    for stat in ("mean", "median")}}
                      for c, s in summary["classes"].items()])
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return ReconstructResult(out, rows, summary, skipped, resumed)


METRIC_SKIP = ("shape", "class", "source", "reason")


def _stats(rows: list[dict]) -> dict:
    out: dict = {"n": len(rows)}
    for key in (k for k in rows[0] if k not in METRIC_SKIP):
        vals = np.asarray([r.get(key, np.nan) for r in rows], dtype=float)
        vals = vals[np.isfinite(vals)]  # IoU and normal consistency are NaN where undefined
        out[key] = {"mean": float(vals.mean()) if len(vals) else None,
                    "median": float(np.median(vals)) if len(vals) else None, "n": int(len(vals))}
    return out


def summarise(rows: list[dict], skipped: list[tuple[str, str]]) -> dict:
    """Mean, median and count of every metric over all rows and per class, plus the skipped shapes and why."""
    by_class: dict[str, list[dict]] = {}
    for r in rows:
        by_class.setdefault(r.get("class", ""), []).append(r)
    return {"overall": _stats(rows), "classes": {c: _stats(rs) for c, rs in sorted(by_class.items())},
            "n": len(rows), "skipped": [[n, r] for n, r in skipped]}
