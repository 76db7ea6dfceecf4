"""Configuration of ``shapes3d style views``: view-consistent style on multi-view renders of a mesh.

No torch here: the CLI imports this class at start-up for its help text. There is no shipped preset; the
built-in defaults are sized for a CPU (8 views of 64 px, VGG19 up to relu5_1, 60 L-BFGS steps per run).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shapes3d.config import option


@dataclass(frozen=True)
class StyleViewsConfig:
    """All views of a mesh stylised jointly by pixel optimisation, with a multi-view consistency term.

    L = alpha * L_content + beta * L_style + gamma * sum_(neighbours j) (1/D) sum_k c_k (x_k - w_k)^2, w the
    neighbour's stylised view warped into this view through the renderer's depth and cameras, c the mask of
    pixels seen by both views (depth test) on the shape, D the pixels of a view (after Ruder et al. 2016's
    temporal loss for video). Every term is averaged over the views.
    """

    views: int = option(8, "Cameras on a circle around the mesh (normalised into the unit sphere).")
    size: int = option(64, "Image width and height in pixels.")
    elevation: float = option(25.0, "Camera elevation in degrees.")
    distance: float = option(3.2, "Camera distance from the origin.")
    fov_deg: float = option(40.0, "Vertical field of view in degrees.")
    up: str = option("z", "The mesh's up axis: z (ModelNet, the built-in dataset), y (ShapeNet) or x.")
    ambient: float = option(0.3, "Ambient term of the content render's Lambert shading (headlight).")
    arch: str = option("vgg19", "Feature network: vgg19 (Gatys et al.) or vgg16.")
    weights: str = option("auto", "auto (search the usual places), a weight-file path, or random (tests only).")
    pool: str = option("avg", "Pooling in the feature network: avg or max.")
    kind: Literal["gram", "mrf"] = option("gram", "Style term: gram (Gram matrices, Gatys et al.) or mrf (each "
                                                  "k x k feature patch pulled to its nearest style patch, Li & "
                                                  "Wand 2016).")
    style_layers: tuple[str, ...] = option(("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                                           "Layers whose Gram matrices define the style (kind = gram).")
    mrf_layers: tuple[str, ...] = option(("relu3_1", "relu4_1"), "Layers whose patches define the style "
                                                                  "(kind = mrf).")
    mrf_patch: int = option(3, "MRF patch size k (k x k feature patches).")
    mrf_chunk: int = option(1024, "Style patches per nearest-patch convolution (memory vs speed; kind = mrf).")
    content_layers: tuple[str, ...] = option(("relu4_2",), "Layers whose activations define the content.")
    content_weight: float = option(1.0, "alpha: weight of the content loss (normalised by the target energy).")
    style_weight: float = option(100.0, "beta: weight of the style loss (each layer normalised by its target "
                                        "energy; the white background around the shape dilutes its statistics).")
    consistency_weight: float = option(100.0, "gamma: weight of the multi-view consistency term (0: views "
                                             "stylised independently, only the joint optimiser shared).")
    neighbours: int = option(1, "Views on each side of a view (around the circle) warped into it.")
    depth_tolerance: float = option(0.03, "Depth test of the correspondences, in unit-sphere units: a pixel "
                                          "counts as seen by the neighbour when its reprojected depth is "
                                          "within this of the neighbour's depth there.")
    style_size: int = option(128, "The style image's longer side in pixels before its statistics are taken.")
    steps: int = option(60, "L-BFGS iterations per run.")
    init: str = option("content", "Start from the content renders (content) or from noise (noise).")
    compare: bool = option(True, "Also run with gamma = 0 and report both runs' consistency at matched style loss.")
    seed: int = option(0, "Seed of the noise initialisation.")
    device: str = option("auto", "auto (CUDA when present), cpu, or cuda[:N].")

    def __post_init__(self) -> None:
        if self.views < 2 or self.size < 16 or self.steps < 1 or self.style_size < 16:
            raise ValueError(f"need views >= 2, size >= 16, steps >= 1, style_size >= 16; got {self.views}, "
                             f"{self.size}, {self.steps}, {self.style_size}")
        if not 1 <= self.neighbours <= self.views // 2:
            raise ValueError(f"neighbours must be in [1, views // 2 = {self.views // 2}], got {self.neighbours}")
        if self.arch not in ("vgg16", "vgg19") or self.pool not in ("avg", "max"):
            raise ValueError(f"arch must be vgg16/vgg19 and pool avg/max, got {self.arch!r}, {self.pool!r}")
        if self.kind not in ("gram", "mrf") or not self.mrf_layers or self.mrf_patch < 1 or self.mrf_chunk < 1:
            raise ValueError(f"need kind gram or mrf, non-empty mrf_layers, mrf_patch >= 1 and mrf_chunk >= 1; got "
                             f"{self.kind!r}, {self.mrf_layers}, {self.mrf_patch}, {self.mrf_chunk}")
        if not self.style_layers or not self.content_layers:
            raise ValueError("style_layers and content_layers must not be empty")
        if min(self.content_weight, self.style_weight, self.consistency_weight) < 0 or not self.depth_tolerance > 0:
            raise ValueError("the weights must be >= 0 and depth_tolerance > 0")
        if self.init not in ("content", "noise"):
            raise ValueError(f"init must be 'content' or 'noise', got {self.init!r}")
        if self.up not in ("x", "y", "z") or not self.distance > 1.0 or not 0.0 <= self.ambient <= 1.0:
            raise ValueError(f"need up x/y/z, distance > 1, 0 <= ambient <= 1; got {self.up!r}, {self.distance}, "
                             f"{self.ambient}")
