"""The classifier of the pipeline built from a :class:`ClassifyConfig` (VoxNet or a multi-view CNN), and its
checkpoint format."""

from __future__ import annotations

import torch

from shapes3d.classify.config import ClassifyConfig, MVCNNConfig
from shapes3d.models.mvcnn import MVCNN, spatial_width
from shapes3d.models.vgg import CFGS, VGGFeatures, tap_names
from shapes3d.models.voxnet import VoxNet

FORMAT = "shapes3d-classify-v1"
# Channels-last 3D activations: oneDNN's conv3d kernels ran a VoxNet training step ~20 % faster
# on this CPU (1.30 s vs 1.70 s per batch of 32, one thread); the maths is unchanged.
CL3D = torch.channels_last_3d


def memory_format(cfg: ClassifyConfig) -> torch.memory_format:
    """The memory format the model and its inputs use: channels-last 3D for VoxNet, the default otherwise."""
    return CL3D if cfg.model.kind == "voxnet" else torch.contiguous_format


def feature_dim(m: MVCNNConfig) -> int:
    """Width D of one view's features: the tap's channels, x spatial_width (2 for both, k^2 for gridk), x the
    image channels."""
    index = tap_names(m.arch).get(m.tap)
    if index is None:
        raise ValueError(f"model.mvcnn.tap={m.tap!r} is not a layer of {m.arch}")
    channels, i = 3, 0
    for v in CFGS[m.arch]:
        if i > index:
            break
        if v != "M":
            channels = int(v)
        i += 1 if v == "M" else 2
    return channels * spatial_width(m.spatial) * (2 if m.channels == "both" else 1)


def build_model(cfg: ClassifyConfig, n_classes: int, *, backbone: VGGFeatures | None = None) -> VoxNet | MVCNN:
    """The untrained network of ``cfg``. A multi-view model that fine-tunes (``frozen = false``) holds a VGG: the
    given ``backbone`` (pretrained) or an uninitialised one (to load a checkpoint into)."""
    m = cfg.model
    if m.kind == "mvcnn":
        mv = m.mvcnn
        if not mv.frozen:
            backbone = backbone if backbone is not None else VGGFeatures(mv.arch, taps=[mv.tap])
            backbone.requires_grad_(True)
        return MVCNN(n_classes, feature_dim(mv), hidden=mv.hidden, dropout=mv.dropout,
                     backbone=None if mv.frozen else backbone, tap=mv.tap, spatial=mv.spatial)
    return VoxNet(n_classes, resolution=cfg.data.resolution, filters=m.filters, hidden=m.hidden,
                  dropout=m.dropout, batch_norm=m.batch_norm)
