"""Multi-view CNN (Su et al. 2015): per-view 2D features -> element-wise max over the views -> a small head.

Tensors in, tensors out. :class:`MVCNN` takes either precomputed per-view features (B, V, D) (a frozen
backbone whose outputs were cached) or, when built with a ``backbone``, the views themselves (B, V, C, H, W)
in [0, 1] and runs the backbone on every view (fine-tuning). The backbone is any module mapping grey images
replicated to RGB (B*V, 3, H, W) to ``{tap: (B*V, D_c, h, w)}`` (e.g. :class:`~shapes3d.models.vgg.VGGFeatures`);
each of the C channels goes through it separately and the spatially pooled features of the channels are
concatenated: D = C * D_c * :func:`spatial_width` (1 for a global max or mean, 2 for ``"both"``, k^2 for
``"gridk"``, which keeps a coarse k x k layout of the map as Su et al. keep conv5's layout up to their fc layers).

View pooling is a max over V, so the output is invariant to the order of the views, and a shape turned by a
multiple of the view step gives the same prediction when its views are a cyclic shift of each other.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MVCNN", "SPATIAL_POOLS", "spatial_pool", "spatial_width"]

#: max / avg: global pooling over the image; both: the two concatenated; gridk: adaptive max pooling to a
#: k x k grid of cells, flattened channel-major (feature c * k^2 + i * k + j is channel c in cell row i, col j).
SPATIAL_POOLS = ("max", "avg", "both", "grid2", "grid3")


def spatial_width(how: str) -> int:
    """How many values per channel of the tap :func:`spatial_pool` keeps: 1, 2 for both, k^2 for gridk."""
    if how not in SPATIAL_POOLS:
        raise ValueError(f"spatial pooling must be one of {SPATIAL_POOLS}, got {how!r}")
    if how.startswith("grid"):
        return int(how[4:]) ** 2
    return 2 if how == "both" else 1


def spatial_pool(fmap: torch.Tensor, how: str) -> torch.Tensor:
    """(N, D, h, w) -> (N, D * spatial_width(how)): global max or mean, both concatenated, or the adaptive max
    over a k x k grid of cells (cell i spans rows floor(i h / k) .. ceil((i + 1) h / k) - 1; they overlap when
    k does not divide h) flattened channel-major."""
    spatial_width(how)  # checks the name
    if how == "max":
        return fmap.amax(dim=(-2, -1))
    if how == "avg":
        return fmap.mean(dim=(-2, -1))
    if how == "both":
        return torch.cat([fmap.amax(dim=(-2, -1)), fmap.mean(dim=(-2, -1))], dim=1)
    return F.adaptive_max_pool2d(fmap, int(how[4:])).flatten(1)


class MVCNN(nn.Module):
    """View pooling and a head over per-view features of ``feature_dim`` (D).

    ``forward(x)``: features (B, V, D), or views (B, V, C, H, W) when a ``backbone`` is given -> logits (B, K).
    :meth:`view_logits` gives each view's logits alone (B, V, K), the head applied before pooling.
    """

    def __init__(self, n_classes: int, feature_dim: int, *, hidden: int = 512, dropout: float = 0.5,
                 backbone: nn.Module | None = None, tap: str | None = None, spatial: str = "max") -> None:
        super().__init__()
        if n_classes < 1 or feature_dim < 1 or hidden < 0:
            raise ValueError(f"need n_classes >= 1, feature_dim >= 1, hidden >= 0; got {n_classes}, {feature_dim}, "
                             f"{hidden}")
        if backbone is not None and tap is None:
            raise ValueError("a backbone needs the name of its tap")
        if spatial not in SPATIAL_POOLS:
            raise ValueError(f"spatial must be one of {SPATIAL_POOLS}, got {spatial!r}")
        self.feature_dim, self.tap, self.spatial = feature_dim, tap, spatial
        self.backbone = backbone
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(feature_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden or feature_dim, n_classes))
        self.head = nn.Sequential(*layers)

    def view_features(self, views: torch.Tensor) -> torch.Tensor:
        """Views (B, V, C, H, W) in [0, 1] -> per-view features (B, V, D) through the backbone."""
        if self.backbone is None:
            raise ValueError("this MVCNN has no backbone: pass per-view features (B, V, D)")
        if views.ndim != 5:
            raise ValueError(f"views must have shape (B, V, C, H, W), got {tuple(views.shape)}")
        b, v, c, h, w = views.shape
        grey = views.reshape(b * v * c, 1, h, w).expand(-1, 3, -1, -1)
        f = spatial_pool(self.backbone(grey)[self.tap], self.spatial)  # (B*V*C, D_c)
        return f.reshape(b, v, -1)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.view_features(x) if self.backbone is not None else x
        if f.ndim != 3 or f.shape[-1] != self.feature_dim:
            raise ValueError(f"per-view features must have shape (B, V, {self.feature_dim}), got {tuple(f.shape)}")
        return f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._features(x).amax(dim=1))

    def view_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, V, K): what each view alone predicts (the same head, with a single view to pool)."""
        f = self._features(x)
        return self.head(f.reshape(-1, f.shape[-1])).reshape(f.shape[0], f.shape[1], -1)
