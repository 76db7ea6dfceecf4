"""One style term for every pipeline: Gram statistics (Gatys et al.) or MRF patches (Li & Wand), by config.

The configs of the style jobs (``StyleConfig``, ``StyleShapeConfig``, ``StyleViewsConfig``) share the fields
``kind`` ("gram" or "mrf"), ``style_layers`` (Gram taps), ``mrf_layers``, ``mrf_patch`` and ``mrf_chunk``;
:func:`style_layers_for` says which VGG taps a config's style term reads and :func:`style_term_for` builds the
term from the style image's features. Both kinds are scale-free, so one ``style_weight`` works for either:

* ``gram``: per layer l, ``w_l * mean((G_l(x) - G_l(a))^2)`` with ``w_l = 1 / (mean(G_l(a)^2) * n_layers)``
  (:func:`shapes3d.losses.image.style_loss`);
* ``mrf``: per layer l, ``w_l * mrf_loss(Phi_l(x), bank_l, reduction="mean")`` (the mean squared distance of
  every k x k patch of x to its best-matching style patch, :mod:`shapes3d.losses.mrf`) with
  ``w_l = 1 / (mean(bank_l^2) * n_layers)``, the bank's energy per entry.

Shapes: features ``{tap: (B, C, H, W)}`` (B = views or images); style features ``{tap: (S, C, H_s, W_s)}``
(S style images, pooled); the term returns one loss per image, (B,).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from shapes3d.losses.image import gram_matrix, style_loss
from shapes3d.losses.mrf import mrf_loss, style_patches

StyleKind = Literal["gram", "mrf"]
KINDS: tuple[str, ...] = ("gram", "mrf")


@dataclass
class StyleTerm:
    """A style loss prepared from the style image once: call it on ``{tap: (B, C, H, W)}`` -> (B,).

    ``targets``: per layer the Gram matrix (1, C, C) (``gram``) or the patch bank (N, C, k, k) (``mrf``);
    ``weights``: the scale-free layer weights; ``chunk``: style patches per matching convolution (``mrf``).
    """

    kind: str
    layers: tuple[str, ...]
    targets: dict[str, torch.Tensor]
    weights: dict[str, float]
    chunk: int = 1024

    def __call__(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "gram":
            return style_loss(features, self.targets, weights=self.weights)
        total = None
        for tap, w in self.weights.items():
            if tap not in features:
                raise KeyError(f"layer {tap!r} missing: features have {sorted(features)}")
            term = w * mrf_loss(features[tap], self.targets[tap], chunk=self.chunk, reduction="mean")
            total = term if total is None else total + term
        return total


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"style kind must be 'gram' or 'mrf', got {kind!r}")


def build_style_term(style_features: Mapping[str, torch.Tensor], *, kind: str, layers: Sequence[str],
                     patch: int = 3, style_stride: int = 1, chunk: int = 1024) -> StyleTerm:
    """The :class:`StyleTerm` of ``kind`` on ``layers`` from the style image's ``{tap: (S, C, H, W)}``.

    ``patch``: MRF patch size k; ``style_stride``: stride of the patches in the bank (1: dense, as Li & Wand);
    ``chunk``: style patches per matching convolution. The features are detached.
    """
    check_kind(kind)
    layers = tuple(layers)
    if not layers:
        raise ValueError("a style term needs at least one layer")
    missing = [t for t in layers if t not in style_features]
    if missing:
        raise KeyError(f"style layers {missing} missing: the style features have {sorted(style_features)}")
    targets: dict[str, torch.Tensor] = {}
    for tap in layers:
        f = style_features[tap].detach()
        if kind == "gram":
            targets[tap] = gram_matrix(f).mean(dim=0, keepdim=True)
        else:
            targets[tap] = style_patches(f, patch, style_stride)
    weights = {t: 1.0 / max(float(targets[t].pow(2).mean()), 1e-12) / len(layers) for t in layers}
    return StyleTerm(kind, layers, targets, weights, chunk)


def style_layers_for(cfg) -> tuple[str, ...]:
    """The VGG taps of a config's style term: ``cfg.mrf_layers`` when ``cfg.kind == "mrf"``, else
    ``cfg.style_layers``."""
    return tuple(cfg.mrf_layers) if cfg.kind == "mrf" else tuple(cfg.style_layers)


def style_term_for(cfg, style_features: Mapping[str, torch.Tensor]) -> StyleTerm:
    """:func:`build_style_term` as a style config says (``kind``, its layers, ``mrf_patch``, ``mrf_chunk``)."""
    return build_style_term(style_features, kind=cfg.kind, layers=style_layers_for(cfg), patch=cfg.mrf_patch,
                            chunk=cfg.mrf_chunk)
