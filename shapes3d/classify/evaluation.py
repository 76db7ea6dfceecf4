"""Using a trained classifier: load it, class probabilities (VoxNet: with rotation voting; the multi-view CNN
pools its views itself), test-set metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shapes3d.classify.config import ClassifyConfig
from shapes3d.classify.model import CL3D, FORMAT, build_model
from shapes3d.config import config_from_dict
from shapes3d.data.voxel_dataset import VoxelSet
from shapes3d.engine.checkpoint import load_checkpoint, require_keys
from shapes3d.engine.plots import plot_confusion
from shapes3d.errors import CheckpointError
from shapes3d.models.mvcnn import MVCNN
from shapes3d.models.voxnet import VoxNet
from shapes3d.utils.device import pick_device
from shapes3d.utils.io import atomic_write_text


@torch.no_grad()
def predict_proba(model: VoxNet, grids: np.ndarray, *, vote: bool, device: torch.device,
                  batch_size: int = 64, mirror_vote: bool = False, up_axis: str = "z") -> np.ndarray:
    """uint8 grids (S, K, R, R, R) -> class probabilities (S, K_classes).

    With ``vote`` the softmax is averaged over all K cached rotations (and, with
    ``mirror_vote``, their mirror images); otherwise only rotation 0 is used. A multi-view model takes its
    per-view features (S, V, D) or views (S, V, C, H, W) instead and ignores ``vote`` and ``mirror_vote``.
    """
    if isinstance(model, MVCNN):
        return _mvcnn_proba(model, grids, device=device, batch_size=batch_size)
    model.eval()
    out = []
    flip_axis = [a for a in range(3) if a != {"x": 0, "y": 1, "z": 2}[up_axis]][0] + 2
    for start in range(0, len(grids), batch_size):
        g = torch.as_tensor(np.asarray(grids[start:start + batch_size]))
        if not vote:
            g = g[:, :1]
        b, k = g.shape[:2]
        x = g.reshape(b * k, 1, *g.shape[2:]).float().to(device).contiguous(memory_format=CL3D)
        p = F.softmax(model(x), dim=1)
        if mirror_vote:
            p = (p + F.softmax(model(x.flip(flip_axis)), dim=1)) / 2
        out.append(p.reshape(b, k, -1).mean(1).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def _mvcnn_proba(model: MVCNN, inputs, *, device: torch.device, batch_size: int) -> np.ndarray:
    """Per-view features (S, V, D) or uint8 views (S, V, C, H, W) -> class probabilities (S, K_classes)."""
    model.eval()
    out = []
    for start in range(0, len(inputs), batch_size):
        x = torch.as_tensor(np.asarray(inputs[start:start + batch_size])).to(device)
        x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
        out.append(F.softmax(model(x), dim=1).cpu())
    return torch.cat(out).numpy()


def load_classifier(path: str | Path, *, device: str = "auto") -> tuple[VoxNet | MVCNN, ClassifyConfig, list[str]]:
    """A trained model (eval mode, on the device), its config and class names from a checkpoint.

    A multi-view model carries ``feature_source`` (the identity of the VGG its features come from, as recorded in
    the checkpoint), which the jobs check against the VGG they find.
    """
    ck = load_checkpoint(path)
    require_keys(path, ck, ("format", "model", "config", "classes"))
    if ck["format"] != FORMAT:
        raise CheckpointError(path, f"format {ck['format']!r} is not a classification checkpoint ({FORMAT})")
    cfg = config_from_dict(ClassifyConfig, ck["config"], source=f"{path} (config)")
    model = build_model(cfg, len(ck["classes"]))
    model.load_state_dict(ck["model"])
    if isinstance(model, MVCNN):
        model.feature_source = ck.get("feature_source")
        if model.backbone is not None and model.feature_source:
            model.backbone.set_preprocess(model.feature_source.get("preprocess", "imagenet"))
    dev = pick_device(device)
    return model.to(dev).eval(), cfg, list(ck["classes"])


def evaluate(model: VoxNet, cfg: ClassifyConfig, test_set: VoxelSet, out_dir: str | Path, *,
             vote: bool | None = None, mirror_vote: bool | None = None, device: str = "auto") -> dict:
    """Overall and mean-class accuracy, per-class table, confusion matrix PNG and JSON in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vote = cfg.vote if vote is None else vote
    mirror_vote = cfg.mirror_vote if mirror_vote is None else mirror_vote
    if cfg.model.kind == "mvcnn":
        vote = mirror_vote = False  # the views are pooled inside the model: nothing to vote over
    dev = next(model.parameters()).device if device == "auto" else pick_device(device)
    t0 = time.perf_counter()
    p = predict_proba(model, test_set.grids, vote=vote, device=dev, up_axis=cfg.data.up_axis, mirror_vote=mirror_vote)
    seconds = time.perf_counter() - t0
    pred = p.argmax(1)
    conf = confusion_matrix(test_set.labels, pred, len(test_set.classes))
    support = conf.sum(1)
    per_class = {c: {"accuracy": float(conf[i, i] / support[i]) if support[i] else None, "support": int(support[i])}
                 for i, c in enumerate(test_set.classes)}
    accs = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    result = {
        "overall_accuracy": float((pred == test_set.labels).mean()),
        "mean_class_accuracy": float(np.mean(accs)),
        "n": int(len(test_set)),
        "vote": bool(vote),
        "rotations": int(test_set.grids.shape[1]) if vote and cfg.model.kind == "voxnet" else 1,
        "model": cfg.model.kind,
        **({"views": cfg.model.mvcnn.views} if cfg.model.kind == "mvcnn" else {}),
        "mirror_vote": bool(mirror_vote),
        "per_class": per_class,
        "confusion": conf.tolist(),
        "classes": list(test_set.classes),
        "inference_shapes_per_second": float(len(test_set) / seconds),
        "skipped": [[str(p), r] for p, r in test_set.skipped],
    }
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2))
    plot_confusion(conf, test_set.classes, out / "confusion.png",
                   title=f"accuracy {result['overall_accuracy']:.3f} (mean class {result['mean_class_accuracy']:.3f})")
    return result


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (K, K): row = true class, column = predicted class, from labels and predictions (S,)."""
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(conf, (labels, pred), 1)
    return conf
