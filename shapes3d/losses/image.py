"""2D image losses and metrics over batches of images or VGG feature maps.

All functions are pure, work on any device and dtype the inputs have, keep the graph
for autograd, and return one value per image: a tensor of shape (B,), where B counts
every image (for multi-view renders B = batch * V). Call ``.mean()`` for a scalar.

Images are (B, 3, H, W) (any C works for the pixel losses) with values in
``[0, data_range]``. Feature dicts are ``{tap: (B, C, H, W)}`` as returned by
:class:`shapes3d.models.vgg.VGGFeatures`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

# SSIM constants of Wang et al. 2004, as scikit-image uses them with gaussian_weights=True.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # scikit-image: int(truncate * sigma + 0.5) with truncate 3.5 -> an 11x11 window
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(x: torch.Tensor, y: torch.Tensor, what: str = "images") -> None:
    if x.ndim != 4:
        raise ValueError(f"{what} must have shape (B, C, H, W), got {tuple(x.shape)}")
    if x.shape != y.shape:
        raise ValueError(f"{what} must have equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Gram matrix per image: (B, C, H, W) -> (B, C, C), G = F F^T / (C * H * W).

    F is the (C, H*W) feature matrix of one image. Dividing by C*H*W (not only H*W)
    keeps values comparable across layers and image sizes.
    """
    if features.ndim != 4:
        raise ValueError(f"features must have shape (B, C, H, W), got {tuple(features.shape)}")
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def style_loss(
    features: Mapping[str, torch.Tensor],
    target_grams: Mapping[str, torch.Tensor],
    *,
    weights: Mapping[str, float],
) -> torch.Tensor:
    """Gram style loss: sum over layers l of w_l * mean((G_l(x) - G_l(y))^2) -> (B,).

    ``features``: {tap: (B, C, H, W)}; ``target_grams``: {tap: (B, C, C) or (1, C, C)}
    (e.g. from :func:`gram_matrix` of a style image, broadcast over the batch);
    ``weights``: {tap: w_l}, the layers used. The mean is over the C*C entries.
    """
    if not weights:
        raise ValueError("weights must name at least one layer, got an empty mapping")
    total = None
    for tap, w in weights.items():
        if tap not in features or tap not in target_grams:
            raise KeyError(f"layer {tap!r} missing: features have {sorted(features)}, "
                           f"target grams have {sorted(target_grams)}")
        g, t = gram_matrix(features[tap]), target_grams[tap]
        if t.ndim != 3 or t.shape[-2:] != g.shape[-2:] or t.shape[0] not in (1, g.shape[0]):
            raise ValueError(f"target gram for {tap!r} has shape {tuple(t.shape)}, expected "
                             f"(1 or {g.shape[0]}, {g.shape[1]}, {g.shape[2]})")
        term = w * (g - t).pow(2).mean(dim=(1, 2))
        total = term if total is None else total + term
    return total


def content_loss(
    features: Mapping[str, torch.Tensor],
    target_features: Mapping[str, torch.Tensor],
    *,
    layers: Sequence[str],
    weights: Mapping[str, float] | None = None,
) -> torch.Tensor:
    """Content / perceptual loss: sum over ``layers`` of w_l * mean((F_l(x) - F_l(y))^2) -> (B,).

    Weights default to 1 per layer; the mean is over C*H*W of each image.
    """
    if isinstance(layers, str) or len(layers) == 0:
        raise ValueError(f"layers must be a non-empty sequence of tap names, got {layers!r}")
    total = None
    for tap in layers:
        if tap not in features or tap not in target_features:
            raise KeyError(f"layer {tap!r} missing: features have {sorted(features)}, "
                           f"targets have {sorted(target_features)}")
        _check_pair(features[tap], target_features[tap], f"features[{tap!r}]")
        w = 1.0 if weights is None else weights[tap]
        term = w * (features[tap] - target_features[tap]).pow(2).flatten(1).mean(dim=1)
        total = term if total is None else total + term
    return total


def total_variation(images: torch.Tensor, *, kind: str = "l1") -> torch.Tensor:
    """Anisotropic total variation per image -> (B,).

    ``kind="l1"``: mean |x[i, j+1] - x[i, j]| + mean |x[i+1, j] - x[i, j]|;
    ``kind="squared"``: the same with squared differences. Means are over the
    C*H*(W-1) horizontal and C*(H-1)*W vertical differences, so the value does not
    grow with image size.
    """
    if images.ndim != 4 or min(images.shape[-2:]) < 2:
        raise ValueError(f"images must have shape (B, C, H, W) with H, W >= 2, got {tuple(images.shape)}")
    if kind not in ("l1", "squared"):
        raise ValueError(f"kind must be 'l1' or 'squared', got {kind!r}")
    dx = images[..., :, 1:] - images[..., :, :-1]
    dy = images[..., 1:, :] - images[..., :-1, :]
    if kind == "l1":
        dx, dy = dx.abs(), dy.abs()
    else:
        dx, dy = dx.pow(2), dy.pow(2)
    return dx.flatten(1).mean(dim=1) + dy.flatten(1).mean(dim=1)


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def _blur_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    # Separable depthwise Gaussian, "valid" only: scikit-image filters with reflect
    # padding and then crops (win_size - 1) // 2 pixels per side, which removes
    # exactly the pixels the padding touched.
    c = x.shape[1]
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity per image (Wang et al. 2004) -> (B,).

    11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population (not sample)
    covariances, mean over channels and the interior pixels (5 from each border).
    Matches ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range, channel_axis=0)``.
    Half-precision inputs are computed in float32.
    """
    _check_pair(x, y)
    if min(x.shape[-2:]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"images must be at least {2 * SSIM_RADIUS + 1}x{2 * SSIM_RADIUS + 1} for SSIM, "
                         f"got {tuple(x.shape[-2:])}")
    if data_range <= 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    x, y = x.to(dtype), y.to(dtype)
    g = _gaussian_window(dtype, x.device)
    b = x.shape[0]
    # One blur call for the five moments: stack them along the channel axis.
    moments = _blur_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), g)
    ux, uy, uxx, uyy, uxy = moments.chunk(5, dim=1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(b, -1).mean(dim=1)


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image -> (B,)."""
    _check_pair(x, y)
    return (x - y).pow(2).flatten(1).mean(dim=1)


def rmse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Root mean squared error per image -> (B,)."""
    return mse(x, y).sqrt()


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image -> (B,)."""
    _check_pair(x, y)
    return (x - y).abs().flatten(1).mean(dim=1)


def l2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of the difference per image, sqrt(sum (x - y)^2) -> (B,) (not a mean)."""
    _check_pair(x, y)
    return (x - y).flatten(1).norm(dim=1)


def psnr(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, 10 log10(data_range^2 / mse) -> (B,).

    Identical images give +inf.
    """
    if data_range <= 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    return 10.0 * (2 * math.log10(data_range) - torch.log10(mse(x, y)))
