"""A shape from images alone: a latent code (decoder frozen) whose multi-view renders match target images.

Losses: a silhouette loss (BCE or L2 on the soft silhouette), 1 - SSIM and a VGG perceptual
(content) loss on shaded images and normal maps, plus the code regulariser; see
:mod:`shapes3d.deepsdf.views` for how views are rendered in groups.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from shapes3d.deepsdf.reconstruction import decoder_field
from shapes3d.deepsdf.views import (
    FrozenDecoder,
    ViewTargets,
    device_of,
    energy_weights,
    grey_to_rgb,
    loss_images,
    normal_image,
    render_views,
    soft_normal_image,
    view_groups,
)
from shapes3d.deepsdf.views_config import ViewsConfig
from shapes3d.losses.image import content_loss, ssim
from shapes3d.models.deepsdf import SDFDecoder
from shapes3d.models.vgg import VGGFeatures
from shapes3d.pretrained import load_vgg
from shapes3d.render.cameras import Camera
from shapes3d.render.mesh import as_camera_list
from shapes3d.render.sdf_render import SDFRenders
from shapes3d.utils.progress import format_duration, progress

log = logging.getLogger(__name__)


@dataclass
class ViewsFitResult:
    """The best code (L,), its final loss, per-step history of the winning restart, its final renders."""

    code: torch.Tensor
    loss: float
    history: list[dict]
    renders: SDFRenders
    restart_losses: list[float] = field(default_factory=list)
    final: dict = field(default_factory=dict)  #: loss terms of the final renders


class _ViewObjective:
    """The fit-views loss terms of one group of views (targets and target features prepared once)."""

    def __init__(self, targets: ViewTargets, cfg: ViewsConfig, vgg: VGGFeatures | None, device: torch.device):
        f = cfg.fit
        self.cfg = f
        self.sil = None if targets.silhouette is None or f.silhouette_weight == 0 else targets.silhouette.to(device)
        mask = targets.mask()
        self.images: dict[str, torch.Tensor] = {}
        if targets.shaded is not None:
            self.images["shaded"] = grey_to_rgb(targets.shaded).to(device)
        if targets.normals is not None:
            hit = mask if mask is not None else targets.normals.abs().sum(-1) > 0
            self.images["normals"] = normal_image(targets.normals, hit).to(device)
        self.vgg = vgg if f.perceptual_weight > 0 and self.images else None
        self.feats: dict[str, dict[str, torch.Tensor]] = {}
        self.weights: dict[str, dict[str, float]] = {}
        if self.vgg is not None:
            with torch.no_grad():
                for kind, img in self.images.items():
                    self.feats[kind] = {k: v for k, v in self.vgg(img).items() if k in f.perceptual_layers}
                    self.weights[kind] = energy_weights(self.feats[kind], f.perceptual_layers)

    def __call__(self, r: SDFRenders, views: slice) -> dict[str, torch.Tensor]:
        f = self.cfg
        terms: dict[str, torch.Tensor] = {}
        if self.sil is not None:
            p, t = r.silhouette_soft, self.sil[views]
            if f.silhouette_loss == "bce":
                loss = F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), t)
            else:
                loss = (p - t).pow(2).mean()
            terms["silhouette"] = f.silhouette_weight * loss
        pred = {"shaded": lambda: grey_to_rgb(r.shaded), "normals": lambda: soft_normal_image(r)}
        for kind, target in self.images.items():
            x, y = pred[kind](), target[views]
            if f.ssim_weight > 0:
                terms[f"ssim_{kind}"] = f.ssim_weight * (1.0 - ssim(x, y)).mean()
            if self.vgg is not None:
                feats = {k: v[views] for k, v in self.feats[kind].items()}
                terms[f"perceptual_{kind}"] = f.perceptual_weight * content_loss(
                    self.vgg(x), feats, layers=f.perceptual_layers, weights=self.weights[kind]).mean()
        return terms


def _check_views(targets: ViewTargets, cams: list[Camera]) -> None:
    v, h, w = targets.shape
    if (v, h, w) != (len(cams), cams[0].height, cams[0].width):
        raise ValueError(f"targets are {v} views of {h}x{w} but there are {len(cams)} cameras of "
                         f"{cams[0].height}x{cams[0].width}")


def _start_code(decoder: SDFDecoder, codes: torch.Tensor | None, init: str) -> torch.Tensor:
    device = device_of(decoder)
    if init == "mean" and codes is not None and codes.numel():
        if codes.ndim != 2 or codes.shape[1] != decoder.latent_size:
            raise ValueError(f"codes must have shape (S, {decoder.latent_size}), got {tuple(codes.shape)}")
        return codes.detach().float().mean(0).to(device)
    if init == "mean":
        log.info("no trained codes given: starting from the zero code")
    return torch.zeros(decoder.latent_size, device=device)


def fit_code_to_views(decoder: SDFDecoder, targets: ViewTargets, cameras: Camera | Sequence[Camera], *,
                      cfg: ViewsConfig, codes: torch.Tensor | None = None,
                      vgg: VGGFeatures | None = None) -> ViewsFitResult:
    """A code (L,) whose renders from ``cameras`` match ``targets``; the decoder stays frozen.

    ``cfg.render`` sets the renderer (``size``/``views`` are not used: the cameras are
    given), ``cfg.fit`` the losses and Adam. ``codes`` (S, L): the trained codes, whose
    mean is the start (``fit.init = "mean"``; zeros when not given). ``vgg``: a feature
    network with the ``fit.perceptual_layers`` taps (built from ``fit.arch``/``weights``
    when needed and not given). Restart ``r > 0`` starts from the start code plus
    N(0, ``init_std``^2) noise; the restart with the lowest final loss wins.
    """
    if decoder.latent_size == 0:
        raise ValueError("the decoder has latent_size 0 (single-shape mode): there is no code to fit")
    cams = as_camera_list(cameras)
    _check_views(targets, cams)
    f, rc = cfg.fit, cfg.render
    device = device_of(decoder)
    if vgg is None and f.perceptual_weight > 0 and (targets.shaded is not None or targets.normals is not None):
        vgg = load_vgg(f.arch, weights=f.weights, taps=f.perceptual_layers).to(device)
    objective = _ViewObjective(targets, cfg, vgg, device)
    start = _start_code(decoder, codes, f.init)
    gen = torch.Generator().manual_seed(f.seed)
    best: ViewsFitResult | None = None
    restart_losses = []
    with FrozenDecoder(decoder):
        for r in range(f.restarts):
            noise = torch.randn(decoder.latent_size, generator=gen).to(device) * f.init_std if r else 0.0
            code = (start + noise).clone().requires_grad_(True)
            history = _optimise_code(decoder, code, cams, cfg, objective, desc=f"fit-views {r + 1}/{f.restarts}")
            final_code = code.detach().clone()
            renders, final = _final(decoder, final_code, cams, rc, objective, f.code_reg, device)
            restart_losses.append(final["total"])
            log.info("fit-views restart %d/%d: final loss %.5f", r + 1, f.restarts, final["total"])
            if best is None or final["total"] < best.loss:
                best = ViewsFitResult(final_code, final["total"], history, renders, final=final)
    assert best is not None
    best.restart_losses = restart_losses
    return best


def _optimise_code(decoder: SDFDecoder, code: torch.Tensor, cams: list[Camera], cfg: ViewsConfig,
                   objective: _ViewObjective, *, desc: str) -> list[dict]:
    """``fit.steps`` Adam steps on ``code`` (L,) (in place); per step the loss terms, summed over view groups."""
    f, rc = cfg.fit, cfg.render
    device = device_of(decoder)
    groups = view_groups(len(cams), rc.group)
    opt = torch.optim.Adam([code], lr=f.lr)
    history: list[dict] = []
    bar = progress(range(f.steps), desc=desc, unit="step")
    start = time.perf_counter()
    for step in bar:
        if step == 1:  # the first step is done: say what the rest will take
            _announce_steps(desc, time.perf_counter() - start, f.steps)
        opt.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for g in groups:  # one group's graph at a time: backward before the next group renders
            fn = decoder_field(decoder, code)
            out = loss_images(fn, render_views(fn, cams[g], rc, device=device), cams[g], rc)
            terms = objective(out, g)
            share = (g.stop - g.start) / len(cams)
            total = sum(terms.values())
            if isinstance(total, torch.Tensor) and total.requires_grad:
                (share * total).backward()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + share * float(v.detach())
        reg = f.code_reg * code.pow(2).sum()
        reg.backward()
        opt.step()
        sums["code"] = float(reg.detach())
        history.append({"step": step + 1, "total": sum(sums.values()), **sums})
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{history[-1]['total']:.4g}")
    return history


def _announce_steps(desc: str, seconds: float, steps: int) -> None:
    log.info("%s: %.3g s per step (measured on the first); about %s for all %d steps", desc, seconds,
             format_duration(seconds * steps), steps)


@torch.no_grad()
def _final(decoder, code, cams, rc, objective, code_reg, device) -> tuple[SDFRenders, dict]:
    fn = decoder_field(decoder, code)
    out = loss_images(fn, render_views(fn, cams, rc, device=device), cams, rc)
    terms = {k: float(v) for k, v in objective(out, slice(0, len(cams))).items()}
    terms["code"] = float(code_reg * code.pow(2).sum())
    terms["total"] = sum(terms.values())
    return out, terms


