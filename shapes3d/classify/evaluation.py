"""Using a trained classifier: load it, class probabilities (VoxNet: with rotation voting; the multi-view CNN
pools its views itself), test-set metrics."""

from __future__ import annotations

import json
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

    The model carries ``train_class_counts`` (per class, the shapes it was fitted on; None in checkpoints written
    before they were recorded), which the prior correction needs. A multi-view model also carries ``feature_source`` (the identity of the VGG its features come from, as recorded in
    the checkpoint), which the jobs check against the VGG they find.
    """
    ck = load_checkpoint(path)
    require_keys(path, ck, ("format", "model", "config", "classes"))
    if ck["format"] != FORMAT:
        raise CheckpointError(path, f"format {ck['format']!r} is not a classification checkpoint ({FORMAT})")
    cfg = config_from_dict(ClassifyConfig, ck["config"], source=f"{path} (config)")
    model = build_model(cfg, len(ck["classes"]))
    model.load_state_dict(ck["model"])
    counts = ck.get("train_class_counts")  # checkpoints from before they were recorded have none
    model.train_class_counts = [int(c) for c in counts] if counts is not None else None
    if isinstance(model, MVCNN):
        model.feature_source = ck.get("feature_source")
        if model.backbone is not None and model.feature_source:
            model.backbone.set_preprocess(model.feature_source.get("preprocess", "imagenet"))
    dev = pick_device(device)
    return model.to(dev).eval(), cfg, list(ck["classes"])


def member_proba(model: VoxNet | MVCNN, cfg: ClassifyConfig, data_set: VoxelSet, *, vote: bool | None = None,
                 mirror_vote: bool | None = None) -> tuple[np.ndarray, dict]:
    """Class probabilities (S, K) of one model on a data set, and how they were made (``vote``, ``rotations``, ...).

    ``vote`` / ``mirror_vote`` default to the model's config; a multi-view model pools its views instead.
    """
    vote = cfg.vote if vote is None else vote
    mirror_vote = cfg.mirror_vote if mirror_vote is None else mirror_vote
    if cfg.model.kind == "mvcnn":
        vote = mirror_vote = False  # the views are pooled inside the model: nothing to vote over
    dev = next(model.parameters()).device
    p = predict_proba(model, data_set.grids, vote=vote, device=dev, up_axis=cfg.data.up_axis, mirror_vote=mirror_vote)
    how = {"model": cfg.model.kind, "vote": bool(vote),
           "rotations": int(data_set.grids.shape[1]) if vote and cfg.model.kind == "voxnet" else 1,
           **({"views": cfg.model.mvcnn.views} if cfg.model.kind == "mvcnn" else {}),
           "mirror_vote": bool(mirror_vote)}
    return p, how


def prior_corrected(proba: np.ndarray, prior: np.ndarray, tau: float) -> np.ndarray:
    """Probabilities divided by the training class frequencies ``prior`` to the power ``tau``, renormalised.

    tau 1 is Bayes' rule for a test set with balanced classes when the model learnt the training mix; tau 0 leaves
    ``proba`` as it is. A class absent from training keeps probability 0.
    """
    if not tau:
        return proba
    prior = np.asarray(prior, dtype=np.float64)
    q = np.where(prior > 0, proba / np.where(prior > 0, prior, 1.0) ** tau, 0.0)
    return q / np.maximum(q.sum(1, keepdims=True), 1e-300)


def training_prior(counts: list[list[int]] | list[int]) -> np.ndarray:
    """Class frequencies from the fitted split's class counts (several members' counts: the mean of their frequencies)."""
    c = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    return (c / np.maximum(c.sum(1, keepdims=True), 1)).mean(0)


def scores(proba: np.ndarray, labels: np.ndarray, classes: list[str]) -> dict:
    """Overall and mean-class accuracy, the per-class table and the confusion matrix of probabilities (S, K)."""
    pred = proba.argmax(1)
    conf = confusion_matrix(labels, pred, len(classes))
    support = conf.sum(1)
    per_class = {c: {"accuracy": float(conf[i, i] / support[i]) if support[i] else None, "support": int(support[i])}
                 for i, c in enumerate(classes)}
    accs = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    return {"overall_accuracy": float((pred == labels).mean()), "mean_class_accuracy": float(np.mean(accs)),
            "n": int(len(labels)), "per_class": per_class, "confusion": conf.tolist()}


def write_metrics(result: dict, classes: list[str], out_dir: str | Path) -> dict:
    """``metrics.json`` and ``confusion.png`` of a result of :func:`scores` (plus run details) in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2))
    plot_confusion(np.asarray(result["confusion"]), classes, out / "confusion.png",
                   title=f"accuracy {result['overall_accuracy']:.3f} (mean class {result['mean_class_accuracy']:.3f})")
    return result


def confusion_matrix(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts (K, K): row = true class, column = predicted class, from labels and predictions (S,)."""
    conf = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(conf, (labels, pred), 1)
    return conf
