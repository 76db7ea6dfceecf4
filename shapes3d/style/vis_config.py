"""Configuration of the VGG visualisation jobs: feature inversion, DeepDream, class / unit visualisation.

No torch here: the CLI imports these classes at start-up for its help texts.
"""

from __future__ import annotations

from dataclasses import dataclass

from shapes3d.config import option

ARCHS = ("vgg16", "vgg19")


def _check_common(arch: str, pool: str, size: int, steps: int) -> None:
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if pool not in ("avg", "max"):
        raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
    if size < 16 or steps < 1:
        raise ValueError(f"size must be >= 16 and steps >= 1, got {size}, {steps}")


@dataclass(frozen=True)
class InversionConfig:
    """Feature inversion (Mahendran & Vedaldi 2015): an image whose features at one layer match the input's.

    x* = argmin_x ||Phi_l(x) - Phi_l(x0)||^2 / ||Phi_l(x0)||^2 + tv_weight * R_beta(x), one run per layer.
    """

    arch: str = option("vgg16", "Feature network: vgg16 (layer names relu2_2 ... relu5_3 of the lecture) or vgg19.")
    weights: str = option("auto", "auto (search the usual places), a weight-file path, or random (tests only).")
    pool: str = option("max", "Pooling in the feature network: max (as trained) or avg.")
    layers: tuple[str, ...] = option(("relu2_2", "relu3_3", "relu4_3", "relu5_3"),
                                     "Layers to invert, one reconstruction each.")
    size: int = option(64, "Image size: the longer side in pixels.")
    steps: int = option(200, "Optimiser iterations per layer.")
    optimizer: str = option("lbfgs", "lbfgs (deterministic smooth objective: converges in far fewer steps) or adam "
                                     "(for tv_beta < 1, where R_beta is not smooth).")
    lr: float = option(0.05, "Adam learning rate (pixels in [0, 1]); L-BFGS always uses 1 with its own line search.")
    tv_weight: float = option(0.5, "lambda: weight of R_beta (the mean over pixels of (dx^2 + dy^2)^(beta/2)).")
    tv_beta: float = option(2.0, "beta of the TV^beta regulariser (2: squared gradients; 1: total variation).")
    seed: int = option(0, "Seed of the noise the optimisation starts from.")
    device: str = option("auto", "auto (CUDA when present), cpu, or cuda[:N].")

    def __post_init__(self) -> None:
        _check_common(self.arch, self.pool, self.size, self.steps)
        if self.optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {self.optimizer!r}")
        if not self.layers:
            raise ValueError("layers must not be empty")
        if self.tv_weight < 0 or self.tv_beta <= 0 or self.lr <= 0:
            raise ValueError(f"tv_weight must be >= 0, tv_beta and lr > 0, got {self.tv_weight}, {self.tv_beta}, "
                             f"{self.lr}")


@dataclass(frozen=True)
class DreamConfig:
    """DeepDream (Mordvintsev et al. 2015): gradient ascent on 1/2 ||f_l(I)||^2 over octaves, with jitter."""

    arch: str = option("vgg16", "Feature network: vgg16 or vgg19.")
    weights: str = option("auto", "auto (search the usual places), a weight-file path, or random (tests only).")
    pool: str = option("max", "Pooling in the feature network: max (as trained) or avg.")
    layer: str = option("relu4_3", "Layer whose activations are amplified.")
    size: int = option(128, "Image size: the longer side in pixels (the finest octave).")
    octaves: int = option(3, "Number of scales; the coarsest is size / octave_scale^(octaves - 1).")
    octave_scale: float = option(1.4, "Size ratio between successive octaves.")
    steps: int = option(10, "Gradient-ascent steps per octave.")
    step_size: float = option(0.02, "Step on the image (pixels in [0, 1]) per unit of mean |gradient|.")
    jitter: int = option(8, "Random roll of the image by up to this many pixels per step (0: off).")
    seed: int = option(0, "Seed of the jitter.")
    views: int = option(4, "dream_views: cameras around the mesh (azimuths evenly spaced).")
    elevation: float = option(25.0, "dream_views: camera elevation in degrees.")
    up: str = option("z", "dream_views: the mesh's up axis (x, y or z).")
    device: str = option("auto", "auto (CUDA when present), cpu, or cuda[:N].")

    def __post_init__(self) -> None:
        _check_common(self.arch, self.pool, self.size, self.steps)
        if self.octaves < 1 or self.octave_scale < 1.0 or self.step_size <= 0 or self.jitter < 0 or self.views < 1:
            raise ValueError(f"need octaves >= 1, octave_scale >= 1, step_size > 0, jitter >= 0, views >= 1; got "
                             f"{self.octaves}, {self.octave_scale}, {self.step_size}, {self.jitter}, {self.views}")


@dataclass(frozen=True)
class ClassVizConfig:
    """Gradient-ascent visualisation (Simonyan et al. 2014; Yosinski et al. 2015) of VGG units or ImageNet classes.

    I* = argmax_I S(I) - l2 * ||I||^2, I the image minus the ImageNet mean colour, started at I = 0, with the
    regularisers of Yosinski et al.: Gaussian blur every few steps, clipping pixels of small norm and pixels of
    small contribution |I * dS/dI|.
    """

    arch: str = option("vgg16", "Feature network: vgg16 or vgg19 (the classifier file must match it).")
    weights: str = option("auto", "Feature weights: auto, a weight-file path, or random (tests only). A torchvision "
                                  "classifier file given as 'classifier' also supplies the features.")
    classifier: str = option("", "torchvision VGG file with classifier.0/3/6 layers, for ImageNet classes ('': units "
                                 "only).")
    layer: str = option("relu4_3", "Tap whose channels are visualised as units.")
    channels: tuple[int, ...] = option((0, 1, 2, 3), "Channels of the tap to visualise (unit mode).")
    classes: tuple[int, ...] = option((), "ImageNet class indices to visualise (needs a classifier; empty: units).")
    size: int = option(64, "Image size in pixels (square).")
    steps: int = option(100, "Gradient-ascent steps.")
    lr: float = option(0.02, "Step per unit of mean |gradient| (pixels in [0, 1]).")
    l2: float = option(1e-3, "lambda of the L2 penalty lambda * ||I||^2 (relative to the score's gradient scale).")
    blur_every: int = option(4, "Gaussian-blur the image every this many steps (0: never).")
    blur_sigma: float = option(0.5, "Sigma of that blur in pixels.")
    clip_small: float = option(0.0, "Zero the pixels whose norm is in this lowest fraction (0: off).")
    clip_grad: float = option(0.0, "Zero the pixels whose contribution |I * grad| is in this lowest fraction (0: off).")
    seed: int = option(0, "Seed of the tiny noise added to the start I = 0.")
    device: str = option("auto", "auto (CUDA when present), cpu, or cuda[:N].")

    def __post_init__(self) -> None:
        _check_common(self.arch, "max", self.size, self.steps)
        if self.lr <= 0 or self.l2 < 0 or self.blur_every < 0 or self.blur_sigma <= 0:
            raise ValueError(f"need lr > 0, l2 >= 0, blur_every >= 0, blur_sigma > 0; got {self.lr}, {self.l2}, "
                             f"{self.blur_every}, {self.blur_sigma}")
        if not (0 <= self.clip_small < 1 and 0 <= self.clip_grad < 1):
            raise ValueError(f"clip_small and clip_grad are fractions in [0, 1), got {self.clip_small}, "
                             f"{self.clip_grad}")
        if any(c < 0 for c in self.channels) or any(c < 0 for c in self.classes):
            raise ValueError("channels and classes must be non-negative indices")
