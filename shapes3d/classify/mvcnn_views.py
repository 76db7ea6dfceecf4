"""A sheet of one shape's views with the per-view class evidence of a trained multi-view CNN.

Each view is drawn as the network sees it (one row per image channel), and under each view of the first row
the class that view alone would predict (the head applied to that view's features, before view pooling) with
its probability. The title gives the pooled prediction, the one ``classify predict`` reports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shapes3d.classify import mvcnn_data
from shapes3d.classify.config import ClassifyConfig
from shapes3d.errors import Shapes3DError
from shapes3d.models.mvcnn import MVCNN
from shapes3d.render.multiview import CHANNELS, views_task
from shapes3d.render.sheet import contact_sheet

__all__ = ["ViewEvidence", "view_evidence", "write_view_sheet"]
PathLike = str | os.PathLike


@dataclass
class ViewEvidence:
    """What one shape's views say: the pooled top class and, per view, the class it alone predicts."""

    path: Path  #: the shape file
    predicted: tuple[str, float]  #: the pooled prediction (class, probability)
    per_view: list[tuple[str, float]]  #: per view: (class, probability) of that view alone
    sheet: Path | None = None  #: the PNG written, if any


@torch.no_grad()
def view_evidence(model: MVCNN, cfg: ClassifyConfig, classes: list[str], views: np.ndarray,
                  extractor: mvcnn_data.FeatureExtractor | None) -> tuple[tuple[str, float], list[tuple[str, float]]]:
    """uint8 views (V, C, H, W) -> (pooled (class, p), per-view [(class, p)]) of a trained multi-view model."""
    dev = next(model.parameters()).device
    if extractor is not None:
        x = torch.from_numpy(extractor(views[None])).to(dev)
    else:
        x = torch.from_numpy(np.ascontiguousarray(views[None])).to(dev).float().div(255)
    model.eval()
    pooled = F.softmax(model(x), dim=1)[0].cpu().numpy()
    per_view = F.softmax(model.view_logits(x), dim=2)[0].cpu().numpy()
    best = int(pooled.argmax())
    return (classes[best], float(pooled[best])), [(classes[int(p.argmax())], float(p.max())) for p in per_view]


def write_view_sheet(views: np.ndarray, evidence: ViewEvidence, out: PathLike, *, channels: str,
                     name: str) -> Path:
    """The sheet of ``views`` (V, C, H, W) uint8: one row per channel, each view captioned with its evidence."""
    v, c = views.shape[:2]
    images = np.concatenate([views[:, k] for k in range(c)])  # channel-major: row k is channel k
    captions = [f"{cls} {p:.2f}" for cls, p in evidence.per_view] + [""] * (v * (c - 1))
    cls, p = evidence.predicted
    rows = f"; rows: {', '.join(CHANNELS[channels])}" if c > 1 else ""
    title = f"{name}: pooled over {v} views -> {cls} ({p:.2f}); under each view: the class it alone predicts{rows}"
    return contact_sheet(images, out, cols=v, labels=captions, title=title, min_size=96)


def shape_views(path: PathLike, cfg: ClassifyConfig) -> np.ndarray:
    """The uint8 views (V, C, H, W) of one shape file, rendered as the model's config says."""
    try:
        return views_task(path, **mvcnn_data.view_params(cfg))["views"]
    except ValueError as e:  # renderer refusals (degenerate geometry) as one-line errors naming the file
        raise Shapes3DError(f"{path}: cannot render its views ({e})") from None


def evidence_sheets(model: MVCNN, cfg: ClassifyConfig, classes: list[str], paths: list[Path], names: list[str],
                    folder: PathLike, extractor: mvcnn_data.FeatureExtractor | None) -> list[ViewEvidence]:
    """One sheet ``folder/<name>.png`` per shape (names from :func:`~shapes3d.utils.names.unique_names`)."""
    from shapes3d.utils.io import safe_child

    folder = Path(folder)
    outs = [safe_child(folder, f"{n}.png", what="shape name", nested=True) for n in names]  # all checked first
    done = []
    for path, name, out in zip(paths, names, outs):
        views = shape_views(path, cfg)
        pooled, per_view = view_evidence(model, cfg, classes, views, extractor)
        ev = ViewEvidence(Path(path), pooled, per_view)
        out.parent.mkdir(parents=True, exist_ok=True)
        ev.sheet = write_view_sheet(views, ev, out, channels=cfg.model.mvcnn.channels, name=name)
        done.append(ev)
    return done
