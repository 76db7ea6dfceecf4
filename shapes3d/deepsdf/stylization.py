"""Stylising a DeepSDF shape: the Gram statistics (Gatys et al.) or MRF patches (Li & Wand; ``style.kind``) of a
style image imposed on its shaded renders (the term: :mod:`shapes3d.losses.style_term`).

The shape's code (decoder frozen) or a copy of the decoder is optimised, while an L1 term keeps
the SDF on fixed points near the original surface where it was; see :mod:`shapes3d.deepsdf.views`
for how views are rendered in groups.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from shapes3d.deepsdf.reconstruction import decoder_field
from shapes3d.deepsdf.views import (
    LUMA,
    FrozenDecoder,
    device_of,
    grey_to_rgb,
    loss_images,
    render_views,
    view_groups,
)
from shapes3d.deepsdf.views_config import ViewsConfig
from shapes3d.losses.image import gram_matrix
from shapes3d.losses.style_term import StyleTerm, style_layers_for, style_term_for
from shapes3d.models.deepsdf import SDFDecoder
from shapes3d.models.vgg import VGGFeatures
from shapes3d.pretrained import load_vgg
from shapes3d.render.cameras import Camera
from shapes3d.render.mesh import as_camera_list
from shapes3d.render.sdf_render import SDFRenders
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)


@dataclass
class StylizeResult:
    """The stylised model (decoder: the caller's, or an optimised copy), before/after renders, history."""

    decoder: SDFDecoder
    code: torch.Tensor | None  #: (L,), or None for a single-shape decoder
    history: list[dict]  #: per step: total, style, preserve (measured before the step)
    before: SDFRenders
    after: SDFRenders
    points: torch.Tensor  #: (N, 3) fixed points of the preservation term
    final: dict = field(default_factory=dict)  #: style and preserve terms after the last step


def style_grams(style_image, vgg: VGGFeatures, layers: Sequence[str], *, size: int,
                device: torch.device) -> dict[str, torch.Tensor]:
    """Gram matrices {tap: (1, C, C)} of the luminance of a style image: numpy (H, W[, 3]) or tensor (1, 3, H, W)."""
    feats = luminance_features(style_image, vgg, size=size, device=device)
    return {k: gram_matrix(feats[k]) for k in layers}


def luminance_features(style_image, vgg: VGGFeatures, *, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """VGG features {tap: (1, C, H, W)} of the luminance of a style image: numpy (H, W[, 3]) or (1, 3, H, W)."""
    from shapes3d.render.images import to_image_tensor

    if isinstance(style_image, torch.Tensor):
        x = style_image.detach().float()
        if x.ndim != 4 or x.shape[:2] != (1, 3):
            raise ValueError(f"a style image tensor must have shape (1, 3, H, W), got {tuple(x.shape)}")
    else:
        x = to_image_tensor(np.asarray(style_image), size)
    luma = (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True).expand(-1, 3, -1, -1)
    with torch.no_grad():
        return vgg(luma.to(device))


@torch.no_grad()
def preservation_points(sdf_fn, n: int, *, band: float, seed: int, device: torch.device,
                        candidates: int | None = None) -> torch.Tensor:
    """(n, 3) points in [-1, 1]^3 where ``|sdf_fn| < band`` (near the surface), topped up with uniform ones."""
    gen = torch.Generator().manual_seed(seed)
    m = candidates or max(16 * n, 65536)
    cand = (torch.rand(m, 3, generator=gen) * 2.0 - 1.0).to(device)
    vals = torch.cat([sdf_fn(cand[s:s + 16384]).reshape(-1) for s in range(0, m, 16384)])
    near = vals.abs() < band
    pts = torch.cat([cand[near], cand[~near]])[:n]
    log.debug("preservation points: %d of %d near the surface", min(int(near.sum()), n), n)
    return pts


@dataclass
class _StyleObjective:
    """The style term of rendered views and the preservation term on fixed points, prepared once."""

    vgg: VGGFeatures
    term: StyleTerm  #: Gram or MRF style of the style image's luminance, scale-free layer weights
    points: torch.Tensor  #: (N, 3)
    f_orig: torch.Tensor  #: (N,) the original SDF at ``points``
    style_weight: float
    preserve_weight: float

    def style(self, renders: SDFRenders) -> torch.Tensor:
        x = grey_to_rgb(renders.shaded)
        return self.style_weight * self.term(self.vgg(x)).mean()

    def change(self, fn) -> torch.Tensor:
        """Mean |f_new(P) - f_orig(P)|."""
        return (fn(self.points) - self.f_orig).abs().mean()

    def preserve(self, fn) -> torch.Tensor:
        return self.preserve_weight * self.change(fn)


def stylize_shape(decoder: SDFDecoder, code: torch.Tensor | None, style_image, cameras: Camera | Sequence[Camera], *,
                  cfg: ViewsConfig, optimise: str | None = None, vgg: VGGFeatures | None = None) -> StylizeResult:
    """Impose ``style_image``'s Gram statistics (or MRF patches: ``style.kind``) on the shaded renders of
    ``decoder``'s shape ``code`` (L,).

    ``optimise``: ``"code"`` (a new code; the decoder frozen) or ``"decoder"`` (the weights
    of a deep copy; the caller's decoder is never modified); default ``cfg.style.optimise``.
    The loss is ``style_weight * style + preserve_weight * mean |f_new(P) - f_orig(P)|``
    over ``preserve_points`` fixed points P near the original surface. ``style_image``:
    numpy (H, W[, 3]) (resized to ``style.style_size``) or a (1, 3, H, W) tensor in [0, 1].
    """
    s, rc = cfg.style, cfg.render
    optimise = optimise or s.optimise
    _check_style_args(decoder, code, optimise)
    cams = as_camera_list(cameras)
    device = device_of(decoder)
    vgg = vgg or load_vgg(s.arch, weights=s.weights, taps=style_layers_for(s), pool=s.pool).to(device)
    term = style_term_for(s, luminance_features(style_image, vgg, size=s.style_size, device=device))
    code0 = None if code is None or decoder.latent_size == 0 else code.detach().to(device).float()
    with FrozenDecoder(decoder):
        field0 = decoder_field(decoder, code0)
        points = preservation_points(field0, s.preserve_points, band=s.preserve_band, seed=s.seed, device=device)
        with torch.no_grad():
            f_orig = field0(points)
            before = loss_images(field0, render_views(field0, cams, rc, device=device), cams, rc)
    objective = _StyleObjective(vgg, term, points, f_orig, s.style_weight, s.preserve_weight)
    if optimise == "decoder":
        model, z = copy.deepcopy(decoder).eval().requires_grad_(True), code0
        opt = torch.optim.Adam(list(model.parameters()), lr=s.lr_decoder)
    else:
        model, z = decoder, code0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=s.lr_code)
    with FrozenDecoder(decoder) if optimise == "code" else contextlib.nullcontext():
        history = _style_steps(model, z, opt, cams, cfg, objective, desc=f"style shape ({optimise})")
        model.requires_grad_(False)
        fn = decoder_field(model, None if z is None else z.detach())
        with torch.no_grad():
            after = loss_images(fn, render_views(fn, cams, rc, device=device), cams, rc)
            final = {"style": float(objective.style(after)), "preserve": float(objective.preserve(fn)),
                     "mean_abs_sdf_change": float(objective.change(fn))}
    log.info("style shape (%s): style %.4g -> %.4g, mean |SDF change| on %d points %.4g", optimise,
             history[0]["style"], final["style"], len(points), final["mean_abs_sdf_change"])
    return StylizeResult(model, None if z is None else z.detach().clone(), history, before, after, points, final)


def _check_style_args(decoder: SDFDecoder, code: torch.Tensor | None, optimise: str) -> None:
    if optimise not in ("code", "decoder"):
        raise ValueError(f"optimise must be 'code' or 'decoder', got {optimise!r}")
    if decoder.latent_size and (code is None or code.shape != (decoder.latent_size,)):
        raise ValueError(f"code must have shape ({decoder.latent_size},), got "
                         f"{None if code is None else tuple(code.shape)}")
    if optimise == "code" and decoder.latent_size == 0:
        raise ValueError("the decoder has latent_size 0 (single-shape mode): optimise the decoder instead")


def _style_steps(model: SDFDecoder, z: torch.Tensor | None, opt: torch.optim.Optimizer, cams: list[Camera],
                 cfg: ViewsConfig, objective: _StyleObjective, *, desc: str) -> list[dict]:
    """``style.steps`` Adam steps of ``opt`` (on ``z`` (L,) or the weights of ``model``); per step the terms
    measured before it."""
    rc = cfg.render
    device = device_of(model)
    groups = view_groups(len(cams), rc.group)
    history: list[dict] = []
    bar = progress(range(cfg.style.steps), desc=desc, unit="step")
    for step in bar:
        opt.zero_grad(set_to_none=True)
        fn = decoder_field(model, z)
        style_sum = 0.0
        for g in groups:  # one group's graph at a time: backward before the next group renders
            term = objective.style(loss_images(fn, render_views(fn, cams[g], rc, device=device), cams[g], rc))
            share = (g.stop - g.start) / len(cams)
            if term.requires_grad:
                (share * term).backward()
            style_sum += share * float(term.detach())
        keep = objective.preserve(fn)
        keep.backward()
        opt.step()
        history.append({"step": step + 1, "total": style_sum + float(keep.detach()), "style": style_sum,
                        "preserve": float(keep.detach())})
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{history[-1]['total']:.4g}")
    return history
