"""Configuration of the SDF jobs driven by 2D losses on multi-view renders (``configs/views.toml``).

Defaults are sized for a CPU: one fit-views step (render, losses and backward for 4
views of 48 x 48, 6 x 128 decoder, VGG16 perceptual loss) took ~2.7 s on a loaded
2-core machine, and the paper's 8 x 512 decoder is far slower; the soft-silhouette
search (``silhouette_samples`` SDF evaluations per ray) is the largest part, hence few
views, small images and few silhouette samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shapes3d.config import MAX_SEED, check_ranges, option
from shapes3d.geometry.limits import MAX_IMAGE_SIZE, MAX_POINTS, MAX_VIEWS

_SILHOUETTE_LOSSES = ("bce", "l2")
_OPTIMISE = ("code", "decoder")


@dataclass(frozen=True)
class ViewRenderConfig:
    """Cameras on a sphere around the unit-sphere-normalised shape, and the SDF renderer's settings."""

    size: int = option(48, "Image width and height in pixels.")
    views: int = option(4, "Azimuths per elevation, evenly spaced from 0 deg.")
    elevations: tuple[float, ...] = option((25.0,), "Camera elevations in degrees.")
    distance: float = option(3.2, "Camera distance from the origin (the shape lies in the unit sphere).")
    fov_deg: float = option(40.0, "Vertical field of view in degrees.")
    up: str = option("z", "Up axis: z (ModelNet, the built-in dataset), y (ShapeNet) or x.")
    max_steps: int = option(48, "Sphere-tracing steps per ray.")
    silhouette_samples: int = option(10, "SDF samples per ray in the soft-silhouette search (the main cost).")
    sharpness: float = option(50.0, "Soft silhouette: sigmoid(-sharpness * min_t f).")
    ambient: float = option(0.2, "Ambient term of the Lambert shading (headlight).")
    group: int = option(2, "Views rendered and backpropagated together (memory vs speed).")
    normal_eps: float = option(0.02, "Shading normals by central differences of the SDF over 2 * normal_eps (0: "
                                     "autograd normals, whose gradient w.r.t. a ReLU decoder's code is zero).")

    def __post_init__(self) -> None:
        check_ranges(self, size=(11, MAX_IMAGE_SIZE), views=(1, MAX_VIEWS), elevations=(-90.0, 90.0, True, True),
                     distance=(1.0, None, True), fov_deg=(0.0, 180.0, True, True), max_steps=(1, 100_000),
                     silhouette_samples=(1, 10_000), sharpness=(0.0, None, True), ambient=(0.0, 1.0),
                     group=(1, MAX_VIEWS), normal_eps=(0.0, 1.0))
        if self.size < 11:
            raise ValueError(f"size must be >= 11 (the SSIM window), got {self.size}")
        if min(self.views, self.max_steps, self.silhouette_samples, self.group) < 1:
            raise ValueError("views, max_steps, silhouette_samples and group must all be >= 1")
        if not self.elevations:
            raise ValueError("elevations must not be empty")
        if not self.distance > 1.0:
            raise ValueError(f"distance must be > 1 (outside the unit sphere), got {self.distance}")
        if self.up not in ("x", "y", "z"):
            raise ValueError(f"up must be 'x', 'y' or 'z', got {self.up!r}")
        if not self.normal_eps >= 0:
            raise ValueError(f"normal_eps must be >= 0, got {self.normal_eps}")
        if not self.sharpness > 0 or not 0.0 <= self.ambient <= 1.0:
            raise ValueError(f"need sharpness > 0 and 0 <= ambient <= 1, got {self.sharpness}, {self.ambient}")


@dataclass(frozen=True)
class FitViewsConfig:
    """Fitting a latent code to target renders (decoder frozen): ``shapes3d sdf fit-views``."""

    steps: int = option(60, "Adam steps per restart.")
    lr: float = option(0.02, "Learning rate of the code.")
    silhouette_weight: float = option(1.0, "Weight of the silhouette loss (soft silhouette vs target mask).")
    silhouette_loss: str = option("bce", "bce (binary cross-entropy) or l2 (mean squared error).")
    ssim_weight: float = option(0.5, "Weight of 1 - SSIM on the shaded and normal images (where targets exist).")
    perceptual_weight: float = option(0.2, "Weight of the VGG content loss (normalised by the target's energy).")
    perceptual_layers: tuple[str, ...] = option(("relu1_2", "relu2_2", "relu3_3"), "VGG taps of the perceptual loss.")
    arch: str = option("vgg16", "Feature network of the perceptual loss: vgg16 or vgg19.")
    weights: str = option("auto", "auto (search the usual places), a weight-file path, or random (tests only).")
    code_reg: float = option(1e-3, "Weight of the code regulariser |z|^2.")
    init: str = option("mean", "Start from the mean of the trained codes (mean) or from zeros (zeros).")
    restarts: int = option(1, "Restarts; restart r > 0 adds N(0, init_std^2) noise to the start; the best wins.")
    init_std: float = option(0.1, "Std of the start-code noise of restarts after the first.")
    seed: int = option(0, "Seed of the restarts' noise.")
    device: str = option("auto", "auto (CUDA when present), cpu, or cuda[:N].")

    def __post_init__(self) -> None:
        check_ranges(self, steps=(1, 10**7), lr=(0.0, None, True), silhouette_weight=(0.0, None),
                     ssim_weight=(0.0, None), perceptual_weight=(0.0, None), code_reg=(0.0, None),
                     restarts=(1, 10_000), init_std=(0.0, None), seed=(0, MAX_SEED))
        if self.steps < 1 or self.restarts < 1:
            raise ValueError(f"steps and restarts must be >= 1, got {self.steps}, {self.restarts}")
        if not self.lr > 0 or min(self.silhouette_weight, self.ssim_weight, self.perceptual_weight,
                                  self.code_reg, self.init_std) < 0:
            raise ValueError("need lr > 0 and every weight, code_reg and init_std >= 0")
        if self.silhouette_loss not in _SILHOUETTE_LOSSES:
            raise ValueError(f"silhouette_loss must be 'bce' or 'l2', got {self.silhouette_loss!r}")
        if self.arch not in ("vgg16", "vgg19"):
            raise ValueError(f"arch must be 'vgg16' or 'vgg19', got {self.arch!r}")
        if self.init not in ("mean", "zeros"):
            raise ValueError(f"init must be 'mean' or 'zeros', got {self.init!r}")
        if self.perceptual_weight > 0 and not self.perceptual_layers:
            raise ValueError("perceptual_layers must not be empty when perceptual_weight > 0")


@dataclass(frozen=True)
class StyleShapeConfig:
    """Stylising a DeepSDF shape with a style image's Gram statistics or MRF patches (``kind``):
    ``shapes3d style shape``."""

    optimise: str = option("code", "What is optimised: the latent code (code) or a copy of the decoder (decoder).")
    steps: int = option(40, "Adam steps.")
    lr_code: float = option(0.01, "Learning rate when optimising the code.")
    lr_decoder: float = option(1e-4, "Learning rate when optimising the decoder weights.")
    style_weight: float = option(1.0, "Weight of the Gram style loss (each layer normalised by its target energy).")
    preserve_weight: float = option(100.0, "Weight of the shape-preservation term: mean |f_new - f_orig| on "
                                          "fixed points near the original surface.")
    preserve_points: int = option(4096, "Fixed points of the preservation term.")
    preserve_band: float = option(0.05, "Points are drawn where the original |SDF| < band (uniform elsewhere "
                                        "when too few are found).")
    style_layers: tuple[str, ...] = option(("relu1_1", "relu2_1", "relu3_1", "relu4_1"),
                                           "VGG taps whose Gram matrices define the style (kind = gram).")
    kind: Literal["gram", "mrf"] = option("gram", "Style term: gram (Gram matrices, Gatys et al.) or mrf (each "
                                                  "k x k feature patch pulled to its nearest style patch, Li & "
                                                  "Wand 2016).")
    mrf_layers: tuple[str, ...] = option(("relu3_1", "relu4_1"), "VGG taps whose patches define the style "
                                                                  "(kind = mrf).")
    mrf_patch: int = option(3, "MRF patch size k (k x k feature patches).")
    mrf_chunk: int = option(1024, "Style patches per nearest-patch convolution (memory vs speed; kind = mrf).")
    arch: str = option("vgg19", "Feature network: vgg19 (Gatys et al.) or vgg16.")
    weights: str = option("auto", "auto (search the usual places), a weight-file path, or random (tests only).")
    pool: str = option("avg", "Pooling of the feature network: avg or max.")
    style_size: int = option(128, "The style image's longer side in pixels before its Gram matrices are taken.")
    seed: int = option(0, "Seed of the fixed preservation points.")
    device: str = option("auto", "auto (CUDA when present), cpu, or cuda[:N].")

    def __post_init__(self) -> None:
        check_ranges(self, steps=(1, 10**7), lr_code=(0.0, None, True), lr_decoder=(0.0, None, True),
                     style_weight=(0.0, None), preserve_weight=(0.0, None), preserve_points=(1, MAX_POINTS),
                     preserve_band=(0.0, None, True), style_size=(16, MAX_IMAGE_SIZE), seed=(0, MAX_SEED))
        if self.optimise not in _OPTIMISE:
            raise ValueError(f"optimise must be 'code' or 'decoder', got {self.optimise!r}")
        if self.steps < 1 or self.preserve_points < 1 or self.style_size < 16:
            raise ValueError(f"need steps >= 1, preserve_points >= 1, style_size >= 16; got {self.steps}, "
                             f"{self.preserve_points}, {self.style_size}")
        if not (self.lr_code > 0 and self.lr_decoder > 0 and self.preserve_band > 0):
            raise ValueError("lr_code, lr_decoder and preserve_band must be > 0")
        if min(self.style_weight, self.preserve_weight) < 0:
            raise ValueError("style_weight and preserve_weight must be >= 0")
        if not self.style_layers:
            raise ValueError("style_layers must not be empty")
        if self.kind not in ("gram", "mrf") or not self.mrf_layers or self.mrf_patch < 1 or self.mrf_chunk < 1:
            raise ValueError(f"need kind gram or mrf, non-empty mrf_layers, mrf_patch >= 1 and mrf_chunk >= 1; got "
                             f"{self.kind!r}, {self.mrf_layers}, {self.mrf_patch}, {self.mrf_chunk}")
        if self.arch not in ("vgg16", "vgg19") or self.pool not in ("avg", "max"):
            raise ValueError(f"arch must be vgg16/vgg19 and pool avg/max, got {self.arch!r}, {self.pool!r}")


@dataclass(frozen=True)
class ViewsConfig:
    """SDF jobs on multi-view renders: fit a code to target views; stylise a shape with Gram statistics."""

    render: ViewRenderConfig = option(doc="Cameras and SDF renderer (both jobs).", factory=ViewRenderConfig)
    fit: FitViewsConfig = option(doc="sdf fit-views: a code from target renders.", factory=FitViewsConfig)
    style: StyleShapeConfig = option(doc="style shape: Gram style on renders + shape preservation.",
                                     factory=StyleShapeConfig)
