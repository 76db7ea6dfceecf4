"""Feature inversion (Mahendran & Vedaldi 2015, seed 000): which image has these VGG features?

For one layer l and an input x0 (1, 3, H, W) in [0, 1]:

    x* = argmin_x  ||Phi_l(x) - Phi_l(x0)||^2 / ||Phi_l(x0)||^2  +  lambda * R_beta(x)
    R_beta(x) = mean_{c,i,j} ((x[c,i,j+1] - x[c,i,j])^2 + (x[c,i+1,j] - x[c,i,j])^2)^(beta/2)

Dividing the feature term by the target energy makes it 1 for x = 0 and comparable
across layers and weight conventions; taking the mean (not the sum) in R_beta makes
lambda independent of the image size. Shallow layers give near-copies of the input,
deep layers keep the layout and lose the colours and fine detail.

Optimiser: L-BFGS by default (deterministic objective, smooth for beta >= 1; it reaches a
given loss in far fewer network evaluations than Adam, as in Gatys-style pixel
optimisation), the image clamped to [0, 1] after every iteration. Adam is offered for
beta < 1, where R_beta is not smooth and L-BFGS's line search stalls.

Also the helpers the other VGG visualisation jobs share: :func:`as_image`, :func:`tap_net`,
:func:`vgg_for`, :func:`write_config`, :func:`plot_series`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from shapes3d.config import config_to_toml
from shapes3d.losses.image import ssim
from shapes3d.models.vgg import VGGFeatures
from shapes3d.pretrained import load_vgg
from shapes3d.style.vis_config import InversionConfig
from shapes3d.utils.device import pick_device
from shapes3d.utils.io import atomic_write_bytes, atomic_write_csv, atomic_write_text
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)

ImageLike = str | os.PathLike | np.ndarray | torch.Tensor


# ------------------------------------------------------------------ shared helpers
def as_image(image: ImageLike, size: int) -> torch.Tensor:
    """A path / ``skimage:NAME`` / numpy image (H, W[, 3]) / tensor (1, 3, H, W) -> (1, 3, H', W') in [0, 1],
    the longer side resized to ``size``."""
    from shapes3d.render.images import read_image, to_image_tensor

    if isinstance(image, torch.Tensor):
        t = image.detach().float()
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4 or t.shape[:2] != (1, 3):
            raise ValueError(f"an image tensor must have shape (1, 3, H, W), got {tuple(image.shape)}")
        image = t[0].permute(1, 2, 0).cpu().numpy()
    elif not isinstance(image, np.ndarray):
        image = read_image(str(image))
    return to_image_tensor(image, size)


def tap_net(vgg: VGGFeatures, taps: Sequence[str]) -> VGGFeatures:
    """A copy of ``vgg`` (same weights and input convention) that stops at the deepest of ``taps``."""
    if set(taps) <= set(vgg.taps) and max(vgg._tap_index[t] for t in taps) == vgg._last:
        return vgg
    net = VGGFeatures(vgg.arch, taps=tuple(taps), pool=vgg.pool)
    net.load_state_dict(vgg.state_dict())
    net.set_preprocess(vgg.preprocess)
    return net.to(vgg.mean.device)


def vgg_for(cfg, taps: Sequence[str], device: torch.device, vgg: VGGFeatures | None = None) -> VGGFeatures:
    """``vgg`` cut to ``taps``, or a network loaded as ``cfg`` (arch, weights, pool) says, on ``device``."""
    if vgg is None:
        vgg = load_vgg(cfg.arch, weights=cfg.weights, taps=tuple(taps), pool=cfg.pool)
    return tap_net(vgg.to(device), taps)


def write_config(cfg, out: Path, name: str = "config.toml") -> Path:
    path = out / name
    atomic_write_text(path, config_to_toml(cfg, header="Resolved configuration written by shapes3d."))
    return path


def plot_series(series: Mapping[str, Sequence[float]], path: Path, *, xlabel: str, ylabel: str, title: str = "",
                log_y: bool = True) -> Path:
    """One line per named series (values per step) in one panel, as a PNG written atomically."""
    import io

    from shapes3d.engine.plots import plt  # sets the Agg backend

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, ys in series.items():
        ys = np.asarray(ys, dtype=float)
        ax.plot(np.arange(1, len(ys) + 1), np.where(ys > 0, ys, np.nan) if log_y else ys, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def to_numpy_image(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) tensor -> (H, W, 3) float numpy in [0, 1]."""
    return x.detach()[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float64)


# ------------------------------------------------------------------ the regulariser and one inversion
def tv_beta(images: torch.Tensor, *, beta: float = 2.0, eps: float = 1e-8) -> torch.Tensor:
    """R_beta per image: mean over c, i, j of (dx^2 + dy^2)^(beta / 2) -> (B,).

    ``images`` (B, C, H, W), H, W >= 2; dx, dy are forward differences on the (H-1) x (W-1)
    pixels that have both. For beta < 2, ``eps`` inside the power keeps the gradient finite
    where the image is flat.
    """
    if images.ndim != 4 or min(images.shape[-2:]) < 2:
        raise ValueError(f"images must have shape (B, C, H, W) with H, W >= 2, got {tuple(images.shape)}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    dx = images[..., :-1, 1:] - images[..., :-1, :-1]
    dy = images[..., 1:, :-1] - images[..., :-1, :-1]
    s = dx.pow(2) + dy.pow(2)
    r = s if beta == 2.0 else (s + eps).pow(beta / 2.0)
    return r.flatten(1).mean(dim=1)


@dataclass
class Inversion:
    """One layer's reconstruction: the image (1, 3, H, W) in [0, 1] and per-step loss terms."""

    layer: str
    image: torch.Tensor
    history: list[dict]
    ssim: float


def invert_layer(target: torch.Tensor, layer: str, cfg: InversionConfig, vgg: VGGFeatures) -> Inversion:
    """Reconstruct ``target`` (1, 3, H, W) from its features at ``layer`` (``vgg`` must have that tap)."""
    device = vgg.mean.device
    net = tap_net(vgg, (layer,))
    target = target.to(device)
    with torch.no_grad():
        phi0 = net(target)[layer]
    energy = max(float(phi0.pow(2).sum()), 1e-12)
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.rand(target.shape, generator=g).to(device).requires_grad_(True)
    if cfg.optimizer == "lbfgs":
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=20)
    else:
        opt = torch.optim.Adam([x], lr=cfg.lr)

    def terms(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = (net(img)[layer] - phi0).pow(2).sum() / energy
        return feat, cfg.tv_weight * tv_beta(img, beta=cfg.tv_beta).sum()

    def closure():
        opt.zero_grad()
        total = sum(terms(x))
        total.backward()
        return total

    # Clamping after each iteration is a projection L-BFGS's curvature pairs do not know about; it can throw
    # the iterate off late in a run. The loss is therefore measured at every projected iterate, and the best
    # one is returned.
    history: list[dict] = []
    best, best_x = float("inf"), x.detach().clone()
    for step in progress(range(cfg.steps), desc=f"invert {layer}", unit="step", leave=False):
        opt.step(closure)
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
            feat, reg = terms(x)
        total = float(feat + reg)
        history.append({"layer": layer, "step": step + 1, "feature": float(feat), "tv": float(reg), "total": total})
        if total < best:
            best, best_x = total, x.detach().clone()
    image = best_x
    score = float(ssim(image.cpu().double(), target.cpu().double())[0])
    log.info("inverted %s: loss %.4g -> %.4g (best), SSIM %.3f", layer, history[0]["total"], best, score)
    return Inversion(layer, image.cpu(), history, score)


@dataclass
class InversionReport:
    """What :func:`invert` wrote and measured: SSIM of each reconstruction against the input."""

    ssim: dict[str, float]
    sheet: Path
    losses_csv: Path
    losses_png: Path
    images: dict[str, Path] = field(default_factory=dict)
    final_feature_loss: dict[str, float] = field(default_factory=dict)


def invert(image: ImageLike, *, out: str | os.PathLike, layers: Sequence[str] | None = None, size: int | None = None,
           steps: int | None = None, weights: str | None = None, cfg: InversionConfig | None = None,
           vgg: VGGFeatures | None = None) -> InversionReport:
    """Invert ``image`` at every layer of ``cfg.layers`` and write the results into ``out``.

    ``layers``, ``size``, ``steps``, ``weights``: override the config's values (None: keep).
    ``vgg``: a loaded network to use instead of loading ``cfg.arch`` / ``cfg.weights``.
    Writes ``inversion.png`` (input, then one reconstruction per layer, captioned with its
    SSIM), ``<layer>.png`` each, ``losses.csv`` (layer, step, feature, tv, total),
    ``losses.png`` and ``config.toml``.
    """
    cfg = cfg or InversionConfig()
    given = {"layers": None if layers is None else tuple(layers), "size": size, "steps": steps, "weights": weights}
    cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    target = as_image(image, cfg.size)
    net = vgg_for(cfg, cfg.layers, device, vgg)
    results = [invert_layer(target, layer, cfg, net) for layer in cfg.layers]

    from shapes3d.render.images import write_image
    from shapes3d.render.sheet import contact_sheet

    paths = {r.layer: write_image(out / f"{r.layer}.png", r.image) for r in results}
    tiles = np.stack([to_numpy_image(target)] + [to_numpy_image(r.image) for r in results])
    labels = ["input"] + [f"{r.layer} {r.ssim:.2f}" for r in results]
    sheet = contact_sheet(tiles, out / "inversion.png", cols=len(tiles), labels=labels,
                          title=f"feature inversion ({cfg.arch}, beta={cfg.tv_beta:g}); SSIM")
    rows = [h for r in results for h in r.history]
    atomic_write_csv(out / "losses.csv", rows)
    plot_series({r.layer: [h["total"] for h in r.history] for r in results}, out / "losses.png",
                xlabel=f"{cfg.optimizer} step", ylabel="loss", title="feature inversion: total loss")
    write_config(cfg, out)
    return InversionReport({r.layer: r.ssim for r in results}, sheet, out / "losses.csv", out / "losses.png", paths,
                           {r.layer: min(r.history, key=lambda h: h["total"])["feature"] for r in results})
