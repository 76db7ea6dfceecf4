"""LPIPS-VGG perceptual distance (Zhang et al. 2018) on top of :class:`VGGFeatures`.

d(x, y) = sum over layers l of mean over pixels of sum_c w_lc * (f_l(x) - f_l(y))_c^2,
where f_l are the relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 maps of VGG16, each unit
normalised along channels, and w_l are the learned non-negative 1x1 "linear layers".

Input range follows the reference ``lpips`` package: ``forward(x, y)`` takes RGB in [-1, 1];
``forward(x, y, normalize=True)`` takes RGB in [0, 1] (the rest of the suite's range) and maps it
by ``2x - 1`` first, as ``lpips.LPIPS(...)(x, y, normalize=True)`` does. The reference shifts and
scales [-1, 1] images with constants that equal the ImageNet mean/std applied to [0, 1] images, so
both ranges reach :class:`VGGFeatures` as ``(x + 1) / 2`` in [0, 1]. Weights are loaded by
:func:`shapes3d.pretrained.load_lpips_vgg`; this module reads no files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from shapes3d.models.vgg import VGGFeatures

log = logging.getLogger(__name__)

LPIPS_TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
_EPS = 1e-10  # as the reference: added to the norm, not under the square root


def _unit_normalize(f: torch.Tensor) -> torch.Tensor:
    return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS)


def lpips_from_features(
    features_x: Mapping[str, torch.Tensor],
    features_y: Mapping[str, torch.Tensor],
    lin: Sequence[torch.Tensor],
) -> torch.Tensor:
    """LPIPS from precomputed LPIPS_TAPS feature maps {tap: (B, C, H, W)} -> (B,).

    ``lin``: one (C,) weight vector per tap, in LPIPS_TAPS order.
    """
    if len(lin) != len(LPIPS_TAPS):
        raise ValueError(f"lin must hold {len(LPIPS_TAPS)} weight vectors, got {len(lin)}")
    total = None
    for tap, w in zip(LPIPS_TAPS, lin, strict=True):
        fx, fy = features_x[tap], features_y[tap]
        if fx.shape != fy.shape or fx.shape[1] != w.numel():
            raise ValueError(f"{tap}: features {tuple(fx.shape)} and {tuple(fy.shape)} with {w.numel()} weights; "
                             "expected equal shapes with C equal to the number of weights")
        d = (_unit_normalize(fx) - _unit_normalize(fy)).pow(2)
        term = (d * w.view(1, -1, 1, 1).to(d.dtype)).sum(dim=1).flatten(1).mean(dim=1)
        total = term if total is None else total + term
    return total


def _looks_like_unit_range(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Cheap guess that default-mode (``[-1, 1]``) inputs are really [0, 1] images: no value of either
    image is below 0 while both have values above 0.5 (two min/max reductions, no copies)."""
    with torch.no_grad():
        lo = torch.minimum(x.detach().amin(), y.detach().amin())
        hi = torch.minimum(x.detach().amax(), y.detach().amax())
    return bool(lo >= 0) and bool(hi > 0.5)


class LPIPSVGG(nn.Module):
    """LPIPS-VGG distance: forward(x, y), both (B, 3, H, W) RGB in [-1, 1] -> (B,), as the reference ``lpips``.

    ``forward(x, y, normalize=True)`` takes RGB in [0, 1] instead (``2x - 1`` first). The first default-mode
    call of a module checks its inputs (two min/max reductions) and logs a warning when neither image has a
    negative value and both exceed 0.5: most likely [0, 1] images that need ``normalize=True``. Frozen; gradients
    flow to the images. Images should be at least 16x16 (four poolings before relu5_3).
    """

    def __init__(self, vgg: VGGFeatures, lin: Sequence[torch.Tensor]) -> None:
        super().__init__()
        if vgg.arch != "vgg16" or not set(LPIPS_TAPS) <= set(vgg.taps):
            raise ValueError(f"LPIPS-VGG needs a vgg16 with taps {LPIPS_TAPS}, got {vgg.arch} with {vgg.taps}")
        shapes = tuple(int(w.numel()) for w in lin)
        if shapes != LPIPS_CHANNELS:
            raise ValueError(f"lin weights must have sizes {LPIPS_CHANNELS}, got {shapes}")
        self.vgg = vgg
        # One flat buffer (split on use) instead of five attributes built by name.
        self.register_buffer("lin", torch.cat([w.detach().reshape(-1).float() for w in lin]))
        self.requires_grad_(False)
        self.eval()
        self._range_checked = False  # the one-time [0, 1] input check (forward)

    def train(self, mode: bool = True) -> LPIPSVGG:
        return super().train(False)  # frozen metric: stays in eval mode

    def forward(self, x: torch.Tensor, y: torch.Tensor, *, normalize: bool = False) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"x and y must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
        if normalize:  # [0, 1] is what VGGFeatures takes
            both = self.vgg(torch.cat([x, y], dim=0))
        else:
            if not self._range_checked:
                self._range_checked = True
                if _looks_like_unit_range(x, y):
                    log.warning("LPIPS inputs have no negative values: they look like [0, 1] images, but the default "
                                "range is [-1, 1] (as the reference lpips package); pass normalize=True for [0, 1]")
            both = self.vgg((torch.cat([x, y], dim=0) + 1.0) * 0.5)
        b = x.shape[0]
        fx = {t: f[:b] for t, f in both.items()}
        fy = {t: f[b:] for t, f in both.items()}
        return lpips_from_features(fx, fy, self.lin.split(list(LPIPS_CHANNELS)))
