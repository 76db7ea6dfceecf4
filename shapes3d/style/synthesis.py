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
    color: str = "full"  #: how colour was handled: full or luminance (``cfg.color`` resolved)


#: RGB -> YIQ (NTSC): Y the luminance, I and Q the chroma; the colour space of Gatys et al. 2016's luminance-only
#: transfer.
_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
GREY_TOLERANCE = 1.0 / 255  #: an image is grey when every pixel's max - min over R, G, B is at most this


def rgb_to_yiq(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> YIQ, channel 0 the luminance."""
    return torch.einsum("ij,bjhw->bihw", torch.tensor(_YIQ, dtype=x.dtype, device=x.device), x)


def yiq_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) YIQ -> RGB (not clamped)."""
    m = torch.linalg.inv(torch.tensor(_YIQ, dtype=torch.float64)).to(dtype=x.dtype, device=x.device)
    return torch.einsum("ij,bjhw->bihw", m, x)


def is_grey(image: torch.Tensor, tol: float = GREY_TOLERANCE) -> bool:
    """Whether every pixel of (B, 3, H, W) has R = G = B within ``tol``."""
    return bool((image.amax(1) - image.amin(1)).max() <= tol)


def resolve_color(cfg: StyleConfig, style_image: torch.Tensor) -> str:
    """``cfg.color`` with ``auto`` decided: luminance for a grey style image, else full."""
    if cfg.color == "auto":
        return "luminance" if is_grey(style_image) else "full"
    return cfg.color


def _grey3(y: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 3, H, W) with R = G = B = y."""
    return y.expand(-1, 3, -1, -1)


def _match_luminance(style_y: torch.Tensor, content_y: torch.Tensor) -> torch.Tensor:
    """The style's luminance shifted and scaled to the content's mean and standard deviation (Gatys et al. 2016)."""
    s_mean, s_std = style_y.mean(), style_y.std().clamp_min(1e-6)
    return ((style_y - s_mean) * (content_y.std() / s_std) + content_y.mean()).clamp(0.0, 1.0)


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
    from noise. With ``cfg.color`` luminance (auto: for a grey exemplar) the exemplar's luminance is matched by a
    one-channel image, so the texture is exactly grey (R = G = B)."""
    device = pick_device(cfg.device)
    vgg = vgg or feature_net(cfg, device)
    style_image = style_image.to(device)
    color = resolve_color(cfg, style_image)
    if color == "luminance":
        style_image = _grey3(rgb_to_yiq(style_image)[:, :1])
    with torch.no_grad():
        term = style_term_for(cfg, vgg(style_image))
    h, w = out_size or style_image.shape[-2:]
    g = torch.Generator().manual_seed(cfg.seed)
    x0 = torch.rand(1, 1 if color == "luminance" else 3, h, w, generator=g).to(device)

    def objective(x):
        rgb = _grey3(x) if color == "luminance" else x
        terms = {"style": cfg.style_weight * term(vgg(rgb)).sum()}
        if cfg.tv_weight:
            terms["tv"] = cfg.tv_weight * total_variation(rgb).sum()
        return terms

    res = _optimise(x0, objective, cfg.steps, "texture")
    return StyleResult(_grey3(res.image) if color == "luminance" else res.image, res.history, color)


def style_transfer(content_image: torch.Tensor, style_image: torch.Tensor, cfg: StyleConfig, *,
                   vgg: VGGFeatures | None = None) -> StyleResult:
    """``content_image`` (1, 3, H, W) re-rendered with the Gram statistics (or MRF patches) of ``style_image``.

    With ``cfg.color`` luminance (auto: for a grey style image) only the luminance is optimised, against the
    style's luminance matched to the content's mean and spread, and the result keeps the content's chroma (YIQ;
    Gatys et al. 2016): a grey content and a grey style give a grey result."""
    device = pick_device(cfg.device)
    vgg = vgg or feature_net(cfg, device)
    content_image, style_image = content_image.to(device), style_image.to(device)
    color = resolve_color(cfg, style_image)
    chroma = None
    if color == "luminance":
        content_yiq = rgb_to_yiq(content_image)
        chroma = content_yiq[:, 1:]
        style_image = _grey3(_match_luminance(rgb_to_yiq(style_image)[:, :1], content_yiq[:, :1]))
        content_image = content_yiq[:, :1].clamp(0.0, 1.0)
    to_rgb = _grey3 if color == "luminance" else (lambda x: x)
    with torch.no_grad():
        term = style_term_for(cfg, vgg(style_image))
        content = {k: v for k, v in vgg(to_rgb(content_image)).items() if k in cfg.content_layers}
    cw = _energy_weights(content, cfg.content_layers)
    if cfg.init == "content":
        x0 = content_image.clone()
    else:
        x0 = torch.rand(content_image.shape, generator=torch.Generator().manual_seed(cfg.seed)).to(device)

    def objective(x):
        rgb = to_rgb(x)
        f = vgg(rgb)
        terms = {"style": cfg.style_weight * term(f).sum(),
                 "content": cfg.content_weight * content_loss(f, content, layers=cfg.content_layers,
                                                              weights=cw).sum()}
        if cfg.tv_weight:
            terms["tv"] = cfg.tv_weight * total_variation(rgb).sum()
        return terms

    res = _optimise(x0, objective, cfg.steps, "transfer")
    if chroma is None:
        return StyleResult(res.image, res.history, color)
    image = yiq_to_rgb(torch.cat([res.image, chroma], 1)).clamp(0.0, 1.0)
    return StyleResult(image, res.history, color)
