"""MRF (patch) style loss of Li & Wand 2016, "Combining Markov Random Fields and CNNs for Image Synthesis".

Style is matched locally instead of through Gram statistics: every k x k patch of a
layer's feature map of the generated image x is pulled towards its most similar patch
of the style image a (seed 004):

    Psi(Phi(x)) = {Psi_i(Phi(x))}_{i=1..m}   all k x k x C patches of Phi(x)
    NN(i)       = argmax_j  <Psi_i(Phi(x)), Psi_j(Phi(a))> / (|Psi_i(Phi(x))| |Psi_j(Phi(a))|)
    E_s(x, a)   = sum_i || Psi_i(Phi(x)) - Psi_NN(i)(Phi(a)) ||^2

The nearest neighbour maximises the normalised cross-correlation (the lecture slide
writes ``argmin`` and "deviates the most"; Li & Wand, and this module, take the *best*
match, the argmax). |Psi_i(Phi(x))| is the same for every j, so it does not change the
argmax: the scores of all style patches at every position of x are one convolution of
Phi(x) with the L2-normalised style patches used as filters (stride = the patch
stride). The convolution runs over ``chunk`` style patches at a time, keeping a running
maximum, so memory is O(B * chunk * H * W) whatever the number of style patches. The
choice is made without gradient; the loss is differentiable in x through Psi_i(Phi(x)).

Normalisation: :func:`mrf_loss` returns, per image, the plain sum of the formula above
(``reduction="sum"``, the default) or that sum divided by m * C * k * k, the number of
patch entries (``reduction="mean"``), which does not grow with image size or channels.
Callers mixing layers or losses should normalise further, as
:mod:`shapes3d.style.synthesis` does with target energies.

Shapes: features (B, C, H, W); style patches (N, C, k, k); per-image losses (B,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8


def _check_features(features: torch.Tensor, k: int, stride: int, what: str = "features") -> None:
    if features.ndim != 4:
        raise ValueError(f"{what} must have shape (B, C, H, W), got {tuple(features.shape)}")
    if k < 1 or stride < 1:
        raise ValueError(f"k and stride must be >= 1, got k={k}, stride={stride}")
    if min(features.shape[-2:]) < k:
        raise ValueError(f"{what} of size {tuple(features.shape[-2:])} are smaller than the {k}x{k} patches")


def extract_patches(features: torch.Tensor, k: int = 3, stride: int = 1) -> torch.Tensor:
    """All k x k patches of a feature map: (B, C, H, W) -> (B, L, C, k, k).

    L = ((H - k) // stride + 1) * ((W - k) // stride + 1), patches in row-major order of
    their top-left corner (the order :func:`torch.nn.functional.unfold` uses). Keeps the graph.
    """
    _check_features(features, k, stride)
    b, c = features.shape[:2]
    cols = F.unfold(features, kernel_size=k, stride=stride)  # (B, C*k*k, L)
    return cols.transpose(1, 2).reshape(b, -1, c, k, k)


def style_patches(style_features: torch.Tensor, k: int = 3, stride: int = 1) -> torch.Tensor:
    """The style patch bank: (S, C, H, W) features of S style images -> (N, C, k, k), all images pooled."""
    p = extract_patches(style_features, k, stride)
    return p.reshape(-1, *p.shape[2:])


@torch.no_grad()
def nearest_patches(features_x: torch.Tensor, patches: torch.Tensor, *, stride: int = 1,
                    chunk: int = 1024) -> torch.Tensor:
    """Index of the best-matching style patch for every patch of x: -> (B, L) int64 into ``patches``.

    ``features_x`` (B, C, H, W); ``patches`` (N, C, k, k). Best = highest normalised
    cross-correlation; ties go to the lowest index. Computed in ``chunk``-sized groups of
    style patches, as convolutions with the unit-norm patches as filters.
    """
    if patches.ndim != 4 or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"style patches must have shape (N, C, k, k), got {tuple(patches.shape)}")
    n, c, k = patches.shape[0], patches.shape[1], patches.shape[-1]
    _check_features(features_x, k, stride, "features_x")
    if features_x.shape[1] != c:
        raise ValueError(f"features_x has {features_x.shape[1]} channels, the style patches {c}")
    if n == 0:
        raise ValueError("the style patch bank is empty")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    x = features_x.detach()
    norms = patches.flatten(1).norm(dim=1).clamp_min(EPS)
    filters = (patches / norms.view(-1, 1, 1, 1)).to(x.dtype)
    best_score = best_index = None
    for start in range(0, n, chunk):
        scores = F.conv2d(x, filters[start:start + chunk], stride=stride)  # (B, n_chunk, H', W')
        score, index = scores.max(dim=1)
        index = index + start
        if best_score is None:
            best_score, best_index = score, index
        else:
            better = score > best_score  # strict: earlier chunks win ties, as one big argmax would
            best_score = torch.where(better, score, best_score)
            best_index = torch.where(better, index, best_index)
    return best_index.flatten(1)


def mrf_loss(features_x: torch.Tensor, patches: torch.Tensor, *, stride: int = 1, chunk: int = 1024,
             reduction: str = "sum") -> torch.Tensor:
    """MRF style loss per image: sum_i ||Psi_i(Phi(x)) - Psi_NN(i)(Phi(a))||^2 -> (B,).

    ``features_x`` (B, C, H, W): the generated image's features (with gradient);
    ``patches`` (N, C, k, k): the style patch bank (:func:`style_patches`; treated as
    constant); ``stride``: stride of the patches of x; ``chunk``: style patches per
    matching convolution; ``reduction``: ``"sum"`` (the formula) or ``"mean"`` (divided by
    the number of patch entries L * C * k * k). Zero when x's patches all occur in the bank.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    k = patches.shape[-1]
    nn_index = nearest_patches(features_x, patches, stride=stride, chunk=chunk)  # (B, L)
    px = extract_patches(features_x, k, stride).flatten(2)  # (B, L, C*k*k)
    target = patches.detach().flatten(1).to(px.dtype)[nn_index]  # (B, L, C*k*k)
    loss = (px - target).pow(2).sum(dim=(1, 2))
    if reduction == "mean":
        loss = loss / (px.shape[1] * px.shape[2])
    return loss


def mrf_style_loss(features_x: torch.Tensor, style_features: torch.Tensor, *, k: int = 3, stride: int = 1,
                   style_stride: int = 1, chunk: int = 1024, reduction: str = "sum") -> torch.Tensor:
    """:func:`mrf_loss` against the patches of ``style_features`` (S, C, H_s, W_s) -> (B,).

    ``k``: patch size; ``stride``: patch stride on x; ``style_stride``: stride when
    building the bank (Li & Wand sample style patches densely, stride 1).
    """
    return mrf_loss(features_x, style_patches(style_features.detach(), k, style_stride), stride=stride,
                    chunk=chunk, reduction=reduction)
