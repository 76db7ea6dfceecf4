"""VoxNet (Maturana & Scherer, IROS 2015): a small 3D CNN on occupancy grids.

As published: conv(32 filters, 5^3, stride 2) -> conv(32, 3^3) -> max-pool 2 ->
fully connected 128 -> K classes, leaky ReLU (slope 0.1), dropout 0.2 / 0.3 / 0.4
after the first conv, the pool and the first fully connected layer. With a 32^3
input the feature map is 14^3 -> 12^3 -> 6^3, so the FC layer sees 32 * 6^3 = 6912
features. ``batch_norm=True`` adds BatchNorm after each conv and the hidden FC
(not in the paper; it trains faster and tolerates larger learning rates).

``forward`` computes the same function as the plain layer-by-layer path
(:meth:`VoxNet.forward_reference`, ``classifier(features(x))``) with the same parameters,
rearranged where that measurably helps on a CPU (``benchmarks/bench_voxnet_speed.py``):

* the weight gradient of the 5^3 stride-2 first conv is that of a 3^3 stride-1 conv over the
  2x2x2 space-to-depth input (8 channels of 16^3) with the kernel zero-padded to 6^3 and folded
  the same way: one input channel is oneDNN's slow case for the weight gradient (the forward
  pass stays the direct convolution, faster for it);
* max-pooling comes before the leaky ReLU (the two commute: the activation is increasing),
  so the activation and the dropout after it touch 8x fewer values;
* inference (eval mode, no autograd) runs in chunks of ``EVAL_CHUNK`` samples;
* dropout masks come from 16 random bits per value (``torch.Tensor.random_`` on int64 words:
  one draw per four values, arithmetic on floats instead of boolean kernels); the drop
  probability is rounded to a multiple of 2^-15 and the kept values scaled by the exact inverse.

The parameters and the ``state_dict`` keys are those of the plain modules, so checkpoints of
either path load into both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Random bits per dropout decision: the drop probability is rounded to a multiple of 2**-BITS.
_MASK_BITS = 15
#: Samples per forward pass in inference (eval mode, no autograd): larger batches spill the activations
#: out of the caches (a 768-grid batch ran ~25 % slower per grid than chunks of 32-128 on one CPU thread).
EVAL_CHUNK = 64


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


class VoxNet(nn.Module):
    """Occupancy grids (B, C, R, R, R) -> logits (B, K)."""

    def __init__(
        self,
        num_classes: int,
        *,
        resolution: int = 32,
        in_channels: int = 1,
        filters: tuple[int, int] = (32, 32),
        hidden: int = 128,
        dropout: tuple[float, float, float] = (0.2, 0.3, 0.4),
        batch_norm: bool = False,
        negative_slope: float = 0.1,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        s = _conv_out(_conv_out(resolution, 5, 2), 3, 1) // 2
        if s < 1:
            raise ValueError(f"resolution {resolution} is too small for VoxNet (needs >= 14)")
        self.resolution = resolution
        self.in_channels = in_channels
        act = lambda: nn.LeakyReLU(negative_slope)  # noqa: E731
        norm3d = (lambda c: nn.BatchNorm3d(c)) if batch_norm else (lambda c: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv3d(in_channels, filters[0], kernel_size=5, stride=2),
            norm3d(filters[0]),
            act(),
            nn.Dropout(dropout[0]),
            nn.Conv3d(filters[0], filters[1], kernel_size=3),
            norm3d(filters[1]),
            act(),
            nn.MaxPool3d(2),
            nn.Dropout(dropout[1]),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(filters[1] * s**3, hidden),
            nn.BatchNorm1d(hidden) if batch_norm else nn.Identity(),
            act(),
            nn.Dropout(dropout[2]),
            nn.Linear(hidden, num_classes),
        )
        self.reset_parameters(negative_slope)

    def reset_parameters(self, negative_slope: float) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=negative_slope, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)

    @property
    def first_layer_filters(self) -> torch.Tensor:
        """The first conv's weights (F, C, 5, 5, 5), for visualisation."""
        return self.features[0].weight.detach()

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_channels or x.shape[2:] != (self.resolution,) * 3:
            raise ValueError(
                f"VoxNet expects (B, {self.in_channels}, {self.resolution}, {self.resolution}, {self.resolution}), "
                f"got {tuple(x.shape)}")

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The plain layer-by-layer path (the modules in order): what :meth:`forward` must equal."""
        self._check(x)
        return self.classifier(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Grids (B, C, R, R, R) -> logits (B, K); the fast arrangement of :meth:`forward_reference`."""
        self._check(x)
        if not self.training and not torch.is_grad_enabled() and len(x) > EVAL_CHUNK:
            return torch.cat([self._fast(chunk) for chunk in x.split(EVAL_CHUNK)])
        return self._fast(x)

    def _fast(self, x: torch.Tensor) -> torch.Tensor:
        conv1, norm1, act, drop1, conv2, norm2, _, pool, drop2 = self.features
        slope = act.negative_slope
        h = norm1(_conv5_stride2(x, conv1.weight, conv1.bias))
        h = _dropout(F.leaky_relu(h, slope), drop1.p, self.training)
        h = pool(norm2(conv2(h)))  # pool first: max-pool and the increasing leaky ReLU commute
        h = _dropout(F.leaky_relu(h, slope), drop2.p, self.training)
        flatten, fc1, norm3, _, drop3, fc2 = self.classifier
        h = _dropout(F.leaky_relu(norm3(fc1(flatten(h))), slope), drop3.p, self.training)
        return fc2(h)


def _space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """(B, C, R, R, R) -> (B, 8C, ceil(R/2), ...): channel ``c*8 + 4a + 2b + e`` holds ``x[c, 2i+a, 2j+b, 2k+e]``.

    An odd R is padded with one zero plane at the end of each axis first.
    """
    if x.shape[-1] % 2:
        x = F.pad(x, (0, 1, 0, 1, 0, 1))
    b, c, d, h, w = x.shape
    y = x.reshape(b, c, d // 2, 2, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return y.reshape(b, c * 8, d // 2, h // 2, w // 2).contiguous(memory_format=torch.channels_last_3d)


def _fold_kernel(weight: torch.Tensor) -> torch.Tensor:
    """A 5^3 kernel (F, C, 5, 5, 5), zero-padded to 6^3, as the (F, 8C, 3, 3, 3) kernel on the space-to-depth input.

    Tap ``k = 2m + r`` of an axis (m in 0..2, r in 0..1) reads ``x[2i + k] = s2d[r][i + m]``.
    """
    f, c = weight.shape[:2]
    w = F.pad(weight, (0, 1, 0, 1, 0, 1)).reshape(f, c, 3, 2, 3, 2, 3, 2)
    return w.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(f, c * 8, 3, 3, 3)


def _unfold_kernel_grad(grad_folded: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The adjoint of :func:`_fold_kernel`: a gradient (F, 8C, 3, 3, 3) back to the 5^3 kernel's (F, C, 5, 5, 5)."""
    f, c = shape[:2]
    g = grad_folded.reshape(f, c, 2, 2, 2, 3, 3, 3).permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(f, c, 6, 6, 6)
    return g[:, :, :5, :5, :5]


class _Conv5Stride2(torch.autograd.Function):
    """``conv3d(x, weight, bias, stride=2)`` whose weight gradient is computed on the space-to-depth input.

    The forward pass is the direct convolution (the fastest for it); the weight gradient of a one-channel,
    stride-2 conv is oneDNN's slow case, so it is taken as the gradient of the equivalent stride-1 3^3 conv over
    ``_space_to_depth(x)`` and mapped back through :func:`_unfold_kernel_grad`.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv3d(x, weight, bias, stride=2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.nn.grad.conv3d_input(x.shape, weight.to(grad.dtype), grad, stride=2).to(x.dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            folded = _fold_kernel(weight).to(grad.dtype)
            _, gf, gb = torch.ops.aten.convolution_backward(
                grad, _space_to_depth(x).to(grad.dtype), folded, [folded.shape[0]] if ctx.has_bias else None,
                [1, 1, 1], [0, 0, 0], [1, 1, 1], False, [0, 0, 0], 1, [False, True, ctx.has_bias])
            gw = _unfold_kernel_grad(gf, weight.shape).to(weight.dtype)
            gb = gb.to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def _conv5_stride2(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv3d(x, weight, bias, stride=2)`` for a 5^3 kernel; the weight gradient through space-to-depth."""
    if torch.is_grad_enabled() and (weight.requires_grad or (bias is not None and bias.requires_grad)):
        return _Conv5Stride2.apply(x, weight, bias)
    return F.conv3d(x, weight, bias, stride=2)


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout with masks from 16-bit random fields (``_MASK_BITS`` of them used), in x's memory layout."""
    if not training or p == 0:
        return x
    if p >= 1:
        return x * 0
    levels = 1 << _MASK_BITS
    cut = round(p * levels)
    if cut == 0:
        return x
    if not x.is_contiguous() and not (x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d)):
        x = x.contiguous()
    n = x.numel()
    # int64 random_() fills 63 random bits: four 16-bit fields with their top bit masked off are uniform.
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_()
    u = words.view(torch.int16)[:n].bitwise_and(levels - 1).float()
    # keep (u >= cut) as 0/1 floats: u is an integer below 2^15 (exact in float32), so clamp(u - cut + 1, 0, 1) is
    # exact; cast to x's dtype (bf16 under autocast) only after
    keep = u.sub_(cut - 1).clamp_(0, 1).mul_(levels / (levels - cut)).to(x.dtype)
    return x * keep.as_strided(x.shape, x.stride())
