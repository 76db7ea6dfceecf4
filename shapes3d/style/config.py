"""Configuration of the image style jobs (``configs/style.toml``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shapes3d.config import MAX_SEED, check_ranges, option
from shapes3d.geometry.limits import MAX_IMAGE_SIZE


@dataclass(frozen=True)
class StyleConfig:
    """Texture synthesis and style transfer by pixel optimisation: Gram statistics (Gatys et al.) or MRF patches
    (Li & Wand), as ``kind`` says."""

    arch: str = option("vgg19", "Feature network: vgg19 (Gatys et al.) or vgg16.")
    weights: str = option("auto", "auto (search the usual places), a weight-file path, or random (tests only).")
    pool: str = option("avg", "Pooling in the feature network: avg (Gatys et al. found it smoother) or max.")
    style_layers: tuple[str, ...] = option(("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                                           "Layers whose Gram matrices define the style (kind = gram).")
    kind: Literal["gram", "mrf"] = option("gram", "Style term: gram (Gram matrices, Gatys et al.) or mrf (each "
                                                  "k x k feature patch pulled to its nearest style patch, Li & "
                                                  "Wand 2016).")
    mrf_layers: tuple[str, ...] = option(("relu3_1", "relu4_1"), "Layers whose patches define the style "
                                                                  "(kind = mrf).")
    mrf_patch: int = option(3, "MRF patch size k (k x k feature patches).")
    mrf_chunk: int = option(1024, "Style patches per nearest-patch convolution (memory vs speed; kind = mrf).")
    content_layers: tuple[str, ...] = option(("relu4_2",), "Layers whose activations define the content.")
    style_weight: float = option(1.0, "Weight of the style loss (each layer normalised by its target Gram energy).")
    content_weight: float = option(1.0, "Weight of the content loss (normalised by the target feature energy).")
    tv_weight: float = option(0.0, "Weight of the total-variation regulariser (L1 form).")
    size: int = option(128, "Output size: the longer image side in pixels.")
    steps: int = option(100, "L-BFGS iterations.")
    color: Literal["auto", "full", "luminance"] = option(
        "auto", "Colour handling: full (optimise RGB), luminance (Gatys et al. 2016, 'Preserving color in neural "
                "artistic style transfer': match the style on luminance only; a transfer keeps the content's "
                "colours, a texture comes out grey), or auto (luminance when the style image is grey, R = G = B, "
                "so a grey exemplar gives a grey result; else full).")
    init: str = option("noise", "Start from noise, or from the content image (transfer only): noise or content.")
    seed: int = option(0, "Seed of the noise initialisation.")
    device: str = option("auto", "auto (CUDA when present), cpu, or cuda[:N].")

    def __post_init__(self) -> None:
        check_ranges(self, style_weight=(0.0, None), content_weight=(0.0, None), tv_weight=(0.0, None),
                     size=(16, MAX_IMAGE_SIZE), steps=(1, 10**7), seed=(0, MAX_SEED))
        if self.arch not in ("vgg16", "vgg19"):
            raise ValueError(f"arch must be 'vgg16' or 'vgg19', got {self.arch!r}")
        if self.pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
        if self.color not in ("auto", "full", "luminance"):
            raise ValueError(f"color must be 'auto', 'full' or 'luminance', got {self.color!r}")
        if self.init not in ("noise", "content"):
            raise ValueError(f"init must be 'noise' or 'content', got {self.init!r}")
        if self.size < 16 or self.steps < 1:
            raise ValueError(f"size must be >= 16 and steps >= 1, got {self.size}, {self.steps}")
        if not self.style_layers:
            raise ValueError("style_layers must not be empty")
        if self.kind not in ("gram", "mrf") or not self.mrf_layers or self.mrf_patch < 1 or self.mrf_chunk < 1:
            raise ValueError(f"need kind gram or mrf, non-empty mrf_layers, mrf_patch >= 1 and mrf_chunk >= 1; got "
                             f"{self.kind!r}, {self.mrf_layers}, {self.mrf_patch}, {self.mrf_chunk}")
