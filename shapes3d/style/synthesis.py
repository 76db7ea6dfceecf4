"""Texture synthesis and neural style transfer by pixel optimisation (Gatys et al.; MRF patches of Li & Wand).

The image is optimised directly with L-BFGS, one iteration per progress-bar tick,
and clamped to [0, 1] between iterations. Each style layer's loss is divided by its
target Gram energy (and the content loss by the target feature energy), so the
weights are scale-free: the same config works for ImageNet- and Caffe-preprocessed
networks, whose Gram magnitudes differ by ~255^4. ``cfg.kind`` chooses the style term, Gram or MRF
(:mod:`shapes3d.losses.style_term`, shared with the shape and multi-view style jobs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from shapes3d.losses.image import content_loss, total_variation
from shapes3d.losses.style_term import style_layers_for, style_term_for
from shapes3d.models.vgg import VGGFeatures
from shapes3d.pretrained import load_vgg
from shapes3d.style.config import StyleConfig
from shapes3d.utils.device import pick_device
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)


@dataclass
class StyleResult:
    image: torch.Tensor  # (1, 3, H, W) in [0, 1]
    history: list[dict]  # per iteration: total, style, content, tv


def feature_net(cfg: StyleConfig, device: torch.device) -> VGGFeatures:
    taps = tuple(dict.fromkeys((*style_layers_for(cfg), *cfg.content_layers)))
    return load_vgg(cfg.arch, weights=cfg.weights, taps=taps, pool=cfg.pool).to(device)


def _energy_weights(targets: dict[str, torch.Tensor], layers) -> dict[str, float]:
    return {k: 1.0 / max(float(targets[k].pow(2).mean()), 1e-12) / len(layers) for k in layers}


def _optimise(x0: torch.Tensor, objective, steps: int, desc: str) -> StyleResult:
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=20)
    history: list[dict] = []
    last: dict[str, float] = {}

    def closure():
        opt.zero_grad()
        terms = objective(x)
        total = sum(terms.values())
        total.backward()
        last.clear()
        last.update({k: float(v.detach()) for k, v in terms.items()}, total=float(total.detach()))
        return total

    bar = progress(range(steps), desc=desc, unit="step")
    for step in bar:
        opt.step(closure)
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        history.append({"step": step + 1, **last})
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{last['total']:.4g}")
    return StyleResult(x.detach().clamp(0, 1), history)


def synthesize_texture(style_image: torch.Tensor, cfg: StyleConfig, *, vgg: VGGFeatures | None = None,
                       out_size: tuple[int, int] | None = None) -> StyleResult:
    """A new texture (1, 3, H, W) whose Gram statistics (or MRF patches) match ``style_image`` (1, 3, h, w),
    from noise."""
    device = pick_device(cfg.device)
    vgg = vgg or feature_net(cfg, device)
    style_image = style_image.to(device)
    with torch.no_grad():
        term = style_term_for(cfg, vgg(style_image))
    h, w = out_size or style_image.shape[-2:]
    g = torch.Generator().manual_seed(cfg.seed)
    x0 = torch.rand(1, 3, h, w, generator=g).to(device)

    def objective(x):
        terms = {"style": cfg.style_weight * term(vgg(x)).sum()}
        if cfg.tv_weight:
            terms["tv"] = cfg.tv_weight * total_variation(x).sum()
        return terms

    return _optimise(x0, objective, cfg.steps, "texture")


def style_transfer(content_image: torch.Tensor, style_image: torch.Tensor, cfg: StyleConfig, *,
                   vgg: VGGFeatures | None = None) -> StyleResult:
    """``content_image`` (1, 3, H, W) re-rendered with the Gram statistics (or MRF patches) of ``style_image``."""
    device = pick_device(cfg.device)
    vgg = vgg or feature_net(cfg, device)
    content_image, style_image = content_image.to(device), style_image.to(device)
    with torch.no_grad():
        term = style_term_for(cfg, vgg(style_image))
        content = {k: v for k, v in vgg(content_image).items() if k in cfg.content_layers}
    cw = _energy_weights(content, cfg.content_layers)
    if cfg.init == "content":
        x0 = content_image.clone()
    else:
        x0 = torch.rand(content_image.shape, generator=torch.Generator().manual_seed(cfg.seed)).to(device)

    def objective(x):
        f = vgg(x)
        terms = {"style": cfg.style_weight * term(f).sum(),
                 "content": cfg.content_weight * content_loss(f, content, layers=cfg.content_layers,
                                                              weights=cw).sum()}
        if cfg.tv_weight:
            terms["tv"] = cfg.tv_weight * total_variation(x).sum()
        return terms

    return _optimise(x0, objective, cfg.steps, "transfer")
