"""Gradient-ascent visualisation of VGG units and ImageNet classes (Simonyan et al. 2014, Yosinski et al. 2015).

I* = argmax_I S(I) - l2 * ||I||^2 (seeds 001-003), I the image minus the ImageNet mean colour,
started at I = 0 (plus 1e-3 noise so that symmetric units get a direction). S is

* a unit: the mean activation of one channel of a VGG tap (always available);
* an ImageNet class: the class logit (before the softmax) of torchvision's VGG head
  Linear(25088, 4096)-ReLU-Dropout-Linear(4096, 4096)-ReLU-Dropout-Linear(4096, 1000) on
  the 7 x 7 adaptive average of pool5, read from a torchvision file's
  ``classifier.0/3/6.weight/bias`` (hidden sizes from the shapes). Only when such a file is
  given: the weights this project finds offline carry no classifier.

Each step adds ``lr`` times the score's gradient divided by its mean absolute value, with
the L2 term as the matching decay ``- lr * 2 * l2 * I``, keeps mean + I inside [0, 1], and
applies the regularisers of Yosinski et al.: a Gaussian blur every ``blur_every`` steps,
zeroing the ``clip_small`` fraction of pixels with the smallest norm and the ``clip_grad``
fraction with the smallest contribution |sum_c I * dS/dI|.
"""

from __future__ import annotations

import logging
import math
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shapes3d.errors import CheckpointError, MissingFileError
from shapes3d.models.vgg import IMAGENET_MEAN, VGGFeatures
from shapes3d.pretrained import TORCH_LEGACY_MAGIC, load_numpy_pickle, load_vgg
from shapes3d.style.inversion import plot_series, tap_net, to_numpy_image, write_config
from shapes3d.style.vis_config import ClassVizConfig
from shapes3d.utils.device import pick_device
from shapes3d.utils.io import atomic_write_csv
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)

HEAD_KEYS = ("classifier.0", "classifier.3", "classifier.6")
POOL_GRID = 7  # torchvision's AdaptiveAvgPool2d((7, 7)) before the head


# ------------------------------------------------------------------ the ImageNet head
def build_classifier_head(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """torchvision's VGG classifier from ``classifier.{0,3,6}.{weight,bias}``; layer sizes from the shapes.

    Indices match torchvision (0 Linear, 1 ReLU, 2 Dropout, 3 Linear, 4 ReLU, 5 Dropout, 6 Linear), so the
    state dict loads as is. The first layer must take 512 * 7 * 7 = 25088 inputs.
    """
    try:
        w = [state[f"{k}.weight"] for k in HEAD_KEYS]
        b = [state[f"{k}.bias"] for k in HEAD_KEYS]
    except KeyError as e:
        raise KeyError(f"no classifier layer {e} (expected torchvision keys classifier.0/3/6.weight/bias)") from None
    if w[0].shape[1] != 512 * POOL_GRID**2 or w[1].shape[1] != w[0].shape[0] or w[2].shape[1] != w[1].shape[0]:
        raise ValueError(f"classifier shapes do not chain from 25088 inputs: {[tuple(t.shape) for t in w]}")
    head = nn.Sequential(nn.Linear(w[0].shape[1], w[0].shape[0]), nn.ReLU(), nn.Dropout(),
                         nn.Linear(w[1].shape[1], w[1].shape[0]), nn.ReLU(), nn.Dropout(),
                         nn.Linear(w[2].shape[1], w[2].shape[0]))
    head.load_state_dict({f"{i}.{p}": t for i, (wt, bt) in zip((0, 3, 6), zip(w, b))
                          for p, t in (("weight", wt), ("bias", bt))})
    return head.requires_grad_(False).eval()


class VGGClassifier(nn.Module):
    """Frozen VGG with its ImageNet head: images (B, 3, H, W) RGB in [0, 1] -> logits (B, K)."""

    def __init__(self, features: VGGFeatures, head: nn.Sequential) -> None:
        super().__init__()
        self.features = tap_net(features, ("pool5",))
        self.head = head

    def train(self, mode: bool = True) -> VGGClassifier:  # frozen: dropout stays off
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f = F.adaptive_avg_pool2d(self.features(images)["pool5"], POOL_GRID)
        return self.head(f.flatten(1))


def _read_state(path: Path) -> dict:
    if not path.is_file():
        raise MissingFileError(path)
    try:
        if not zipfile.is_zipfile(path):
            obj = load_numpy_pickle(path)  # refuses anything but arrays; legacy torch files start with a magic int
            if not (isinstance(obj, int) and obj == TORCH_LEGACY_MAGIC):
                raise CheckpointError(path, "not a torchvision VGG file (no classifier.* layers)")
        return torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(path, f"cannot read weights ({type(e).__name__}: {e})") from e


def load_vgg_classifier(path: str | os.PathLike, *, arch: str = "vgg16") -> VGGClassifier:
    """Features and head of a torchvision VGG file (``vgg16-397923af.pth`` layout) as a :class:`VGGClassifier`."""
    path = Path(path)
    state = _read_state(path)
    if not isinstance(state, dict) or f"{HEAD_KEYS[0]}.weight" not in state:
        raise CheckpointError(path, "no classifier.0/3/6 layers: ImageNet classes need torchvision's full VGG file "
                                    "(unit visualisation works without it)")
    try:
        head = build_classifier_head(state)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(path, str(e)) from e
    features = load_vgg(arch, weights=path, taps=("pool5",))
    return VGGClassifier(features, head)


# ------------------------------------------------------------------ gradient ascent on an image
def gaussian_blur2d(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) images with reflect padding."""
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, min(images.shape[-2:]) - 1)
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def high_frequency_energy(images: torch.Tensor) -> float:
    """Mean squared forward difference of (B, C, H, W) images: what a blur removes."""
    x = images.double()
    return float((x.diff(dim=-1).pow(2).mean() + x.diff(dim=-2).pow(2).mean()) / 2)


@dataclass
class Ascent:
    """One target's result: the image (1, 3, H, W) in [0, 1], I = image - mean, and the score per step."""

    label: str
    image: torch.Tensor
    offset: torch.Tensor
    start_score: float
    final_score: float
    history: list[dict]

    @property
    def rise(self) -> float:
        """final / start score (inf when the start is <= 0 and the final > 0)."""
        if self.start_score > 0:
            return self.final_score / self.start_score
        return math.inf if self.final_score > 0 else float("nan")


#: images (1, 3, S, S) -> (objective to differentiate, score to report), both scalars.
Target = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def ascend(target: Target, cfg: ClassVizConfig, *, device: torch.device, label: str = "") -> Ascent:
    """Maximise ``target``'s objective from I = 0 by the regularised ascent of the module doc; report its score."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(cfg.seed)
    offset = (1e-3 * torch.randn(1, 3, cfg.size, cfg.size, generator=gen)).to(device)
    with torch.no_grad():
        s0 = float(target(mean + offset)[1])
    history = []
    for step in progress(range(cfg.steps), desc=f"classviz {label}", unit="step", leave=False):
        x = offset.clone().requires_grad_(True)
        o, s = target(mean + x)
        (grad,) = torch.autograd.grad(o, x)
        g = grad / grad.abs().mean().clamp_min(1e-12)
        with torch.no_grad():
            offset = offset + cfg.lr * (g - 2.0 * cfg.l2 * offset)
            offset = (mean + offset).clamp(0.0, 1.0) - mean
            if cfg.blur_every and (step + 1) % cfg.blur_every == 0:
                offset = gaussian_blur2d(offset, cfg.blur_sigma)
            if cfg.clip_small:
                norm = offset.norm(dim=1, keepdim=True)
                offset = torch.where(norm <= torch.quantile(norm.flatten(), cfg.clip_small), 0.0, offset)
            if cfg.clip_grad:
                contribution = (offset * grad).sum(dim=1, keepdim=True).abs()
                thr = torch.quantile(contribution.flatten(), cfg.clip_grad)
                offset = torch.where(contribution <= thr, 0.0, offset)
        history.append({"target": label, "step": step + 1, "score": float(s.detach()),
                        "l2": float(offset.pow(2).sum())})
    with torch.no_grad():
        s1 = float(target(mean + offset)[1])
    return Ascent(label, (mean + offset).clamp(0, 1).cpu(), offset.cpu(), s0, s1, history)


def unit_target(net: VGGFeatures, layer: str, channel: int) -> Target:
    """``channel`` of tap ``layer``; the score is its mean activation.

    For a ``relu`` tap the objective is the mean of the same channel before the ReLU (the
    ``conv`` tap): on a grey start many units are 0 everywhere, where the ReLU passes no
    gradient; raising the pre-activation raises the activation once it turns positive.
    ``net`` must have both taps for a relu layer.
    """
    pre = "conv" + layer[4:] if layer.startswith("relu") else layer

    def target(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = net(images)
        return f[pre][:, channel].mean(), f[layer][:, channel].mean()

    return target


def class_target(model: VGGClassifier, index: int) -> Target:
    """Logit ``index`` of the ImageNet head (objective and score)."""
    def target(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = model(images)[0, index]
        return s, s

    return target


@dataclass
class VGGClassVizReport:
    """What :func:`classviz_vgg` wrote and measured: start and final score per target."""

    sheet: Path
    mode: str  # "units" or "classes"
    start_scores: dict[str, float]
    final_scores: dict[str, float]
    images: dict[str, Path] = field(default_factory=dict)


def classviz_vgg(*, out: str | os.PathLike, layer: str | None = None, channels=None, classes=None,
                 classifier: str | None = None, steps: int | None = None, size: int | None = None,
                 weights: str | None = None, cfg: ClassVizConfig | None = None,
                 vgg: VGGFeatures | None = None) -> VGGClassVizReport:
    """Visualise VGG units (channels of ``layer``), or ImageNet ``classes`` when a ``classifier`` file is given.

    Keyword options override the config's (None: keep). Writes one ``<target>.png`` per target,
    ``classviz.png`` (all targets, captioned with the final score), ``log.csv``, ``scores.png``
    and ``config.toml``.
    """
    from shapes3d.errors import Shapes3DError
    from shapes3d.render.images import write_image
    from shapes3d.render.sheet import contact_sheet

    given = {"layer": layer, "channels": None if channels is None else tuple(channels),
             "classes": None if classes is None else tuple(classes), "classifier": classifier, "steps": steps,
             "size": size, "weights": weights}
    cfg = replace(cfg or ClassVizConfig(), **{k: v for k, v in given.items() if v is not None})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    targets: list[tuple[str, Target]] = []
    if cfg.classes:
        if not cfg.classifier:
            raise Shapes3DError("ImageNet classes need a torchvision VGG file with its classifier layers "
                                "(classifier=PATH); without one only units (channels of a layer) can be visualised")
        model = load_vgg_classifier(cfg.classifier, arch=cfg.arch).to(device)
        k = model.head[6].out_features
        for c in cfg.classes:
            if c >= k:
                raise Shapes3DError(f"class {c} out of range: the classifier has {k} classes")
            targets.append((f"class{c}", class_target(model, c)))
        mode = "classes"
    else:
        if vgg is None:
            vgg = load_vgg(cfg.arch, weights=cfg.classifier or cfg.weights, taps=(cfg.layer,))
        pre = "conv" + cfg.layer[4:] if cfg.layer.startswith("relu") else cfg.layer
        net = tap_net(vgg.to(device), tuple(dict.fromkeys((pre, cfg.layer))))
        convs = [m for m in net.features[: net._tap_index[cfg.layer] + 1] if isinstance(m, nn.Conv2d)]
        n = convs[-1].out_channels
        for c in cfg.channels:
            if c >= n:
                raise Shapes3DError(f"channel {c} out of range: {cfg.layer} has {n} channels")
            targets.append((f"{cfg.layer}:{c}", unit_target(net, cfg.layer, c)))
        mode = "units"
    results = [ascend(fn, cfg, device=device, label=name) for name, fn in targets]
    paths = {r.label: write_image(out / f"{r.label.replace(':', '-')}.png", r.image) for r in results}
    sheet = contact_sheet(np.stack([to_numpy_image(r.image) for r in results]), out / "classviz.png",
                          labels=[f"{r.label.rsplit(':', 1)[-1]}: {r.final_score:.3g}" for r in results],
                          title=f"{cfg.arch} {cfg.layer if mode == 'units' else 'classes'}: final score")
    atomic_write_csv(out / "log.csv", [h for r in results for h in r.history])
    plot_series({r.label: [h["score"] for h in r.history] for r in results}, out / "scores.png", xlabel="step",
                ylabel="score", title=f"gradient ascent on {mode}", log_y=False)
    write_config(cfg, out)
    for r in results:
        log.info("classviz %s: score %.4g -> %.4g", r.label, r.start_score, r.final_score)
    return VGGClassVizReport(sheet, mode, {r.label: r.start_score for r in results},
                             {r.label: r.final_score for r in results}, paths)

