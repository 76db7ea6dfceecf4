"""VoxNet (Maturana & Scherer, IROS 2015): a small 3D CNN on occupancy grids.

As published: conv(32 filters, 5^3, stride 2) -> conv(32, 3^3) -> max-pool 2 ->
fully connected 128 -> K classes, leaky ReLU (slope 0.1), dropout 0.2 / 0.3 / 0.4
after the first conv, the pool and the first fully connected layer. With a 32^3
input the feature map is 14^3 -> 12^3 -> 6^3, so the FC layer sees 32 * 6^3 = 6912
features. ``batch_norm=True`` adds BatchNorm after each conv and the hidden FC
(not in the paper; it trains faster and tolerates larger learning rates).
"""

from __future__ import annotations

import torch
from torch import nn


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels or x.shape[2:] != (self.resolution,) * 3:
            raise ValueError(
                f"VoxNet expects (B, {self.in_channels}, {self.resolution}, {self.resolution}, {self.resolution}), "
                f"got {tuple(x.shape)}")
        return self.classifier(self.features(x))
