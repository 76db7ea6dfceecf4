"""Classify files or folders with a trained VoxNet."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shapes3d.classify.trainer import load_classifier, predict_proba
from shapes3d.data.tasks import voxel_task
from shapes3d.errors import Shapes3DError
from shapes3d.geometry.io import MESH_EXTENSIONS, POINT_EXTENSIONS
from shapes3d.utils.progress import progress

_EXTS = set(MESH_EXTENSIONS) | set(POINT_EXTENSIONS)


def _expand(paths: Sequence[Path]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in _EXTS
                          and not any(part.startswith(".") for part in q.parts))
        else:
            out.append(p)
    return out


def predict_files(checkpoint: str | Path, paths: Sequence[str | Path], *, top_k: int = 3, device: str = "auto"
                  ) -> tuple[list[tuple[Path, list[tuple[str, float]]]], list[tuple[Path, str]]]:
    """([(path, [(class, probability), ...top_k])], [(path, reason) skipped])."""
    model, cfg, classes = load_classifier(checkpoint, device=device)
    dev = next(model.parameters()).device
    params = dataclasses.asdict(cfg.data)
    if not cfg.vote:
        params["rotations"] = 1
    results, skipped = [], []
    for path in progress(_expand(paths), desc="predict", unit="shape"):
        try:
            grids = voxel_task(path, **params)["occupancy"][None]
        except Shapes3DError as e:
            skipped.append((path, str(e)))
            continue
        p = predict_proba(model, grids, vote=cfg.vote, device=dev, up_axis=cfg.data.up_axis,
                          mirror_vote=cfg.mirror_vote)[0]
        order = np.argsort(-p)[:top_k]
        results.append((path, [(classes[i], float(p[i])) for i in order]))
    return results, skipped
