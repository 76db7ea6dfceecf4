"""Configuration of the image style jobs (``configs/style.toml``)."""

from __future__ import annotations

from dataclasses import dataclass

from shapes3d.config import option


@dataclass(frozen=True)
class StyleConfig:
    """Gram-matrix texture synthesis and style transfer (Gatys et al.) by pixel optimisation."""

    arch: str = option("vgg19", "Feature network: vgg19 (Gatys et al.) or vgg16.")
    weights: str = option("auto", "auto (search the usual places), a weight-file path, or random (tests only).")
    pool: str = option("avg", "Pooling in the feature network: avg (Gatys et al. found it smoother) or max.")
    style_layers: tuple[str, ...] = option(("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                                           "Layers whose Gram matrices define the style.")
    content_layers: tuple[str, ...] = option(("relu4_2",), "Layers whose activations define the content.")
    style_weight: float = option(1.0, "Weight of the style loss (each layer normalised by its target Gram energy).")
    content_weight: float = option(1.0, "Weight of the content loss (normalised by the target feature energy).")
    tv_weight: float = option(0.0, "Weight of the total-variation regulariser (L1 form).")
    size: int = option(128, "Output size: the longer image side in pixels.")
    steps: int = option(100, "L-BFGS iterations.")
    init: str = option("noise", "Start from noise, or from the content image (transfer only): noise or content.")
    seed: int = option(0, "Seed of the noise initialisation.")
    device: str = option("auto", "auto (CUDA when present), cpu, or cuda[:N].")

    def __post_init__(self) -> None:
        if self.arch not in ("vgg16", "vgg19"):
            raise ValueError(f"arch must be 'vgg16' or 'vgg19', got {self.arch!r}")
        if self.pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
        if self.init not in ("noise", "content"):
            raise ValueError(f"init must be 'noise' or 'content', got {self.init!r}")
        if self.size < 16 or self.steps < 1:
            raise ValueError(f"size must be >= 16 and steps >= 1, got {self.size}, {self.steps}")
        if not self.style_layers:
            raise ValueError("style_layers must not be empty")
