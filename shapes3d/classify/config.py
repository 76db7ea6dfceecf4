"""Configuration of the voxel classification pipeline (``configs/voxnet.toml``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shapes3d.config import MAX_SEED, check_ranges, option
from shapes3d.data.configs import VoxelCacheConfig
from shapes3d.geometry.limits import MAX_VOXEL_RESOLUTION

_BIG = 10**9  # a bound on counts that only catches typos and overflow (epochs, steps, batch sizes)


MODEL_KINDS = ("voxnet", "mvcnn")
VIEW_CHANNELS = ("shaded", "depth", "both")
SPATIAL_POOLS = ("max", "avg", "both", "grid2", "grid3")  # = shapes3d.models.mvcnn.SPATIAL_POOLS (a test checks)
_TAP = re.compile(r"(conv|relu)[1-5]_[1-4]|pool[1-5]")


@dataclass(frozen=True)
class MVCNNConfig:
    """Multi-view CNN (Su et al. 2015): V rendered views -> VGG features -> max over views -> a small head.

    The views (``data.up_axis`` is their up axis) and, with ``frozen``, the per-view features are cached
    content-keyed; training then runs only the head.
    """

    views: int = option(12, "Views, evenly spaced in azimuth around the up axis (Su et al.: 12).")
    elevation: float = option(30.0, "Camera elevation above the horizontal plane, in degrees (Su et al.: 30).")
    channels: str = option("shaded", "Image channels: shaded (Lambert; point clouds: splat coverage), depth, or "
                                     "both (each goes through the VGG as a grey image, features concatenated).")
    image_size: int = option(64, "Width and height of each view in pixels (224 in the paper; 64 fits a CPU).")
    point_radius: int = option(1, "Point clouds: splat radius in pixels.")
    arch: str = option("vgg16", "The shared VGG: vgg16 or vgg19.")
    tap: str = option("relu5_3", "VGG layer whose activations are the per-view features (e.g. relu4_3, relu5_3, "
                                 "pool5), pooled over the image as `spatial` says.")
    spatial: str = option("max", "Pooling of the tap over the image: max, avg, both (concatenated), or grid2 / "
                                 "grid3 (max over each cell of a 2x2 / 3x3 grid, keeping a coarse layout as "
                                 "Su et al. do: 4x / 9x the features per view).")
    weights: str = option("auto", "VGG weights: auto (installed weights, see shapes3d info), a file, or random "
                                  "(a seeded untrained VGG, for tests).")
    frozen: bool = option(True, "Keep the VGG fixed and cache its features (false: fine-tune it on the views, "
                                "for a GPU).")
    hidden: int = option(512, "Hidden units of the head (0: a linear classifier on the pooled features).")
    dropout: float = option(0.5, "Dropout before each layer of the head.")

    def __post_init__(self) -> None:
        check_ranges(self, views=(1, 360), elevation=(-90.0, 90.0, True, True), image_size=(16, 1024),
                     point_radius=(0, 64), hidden=(0, 65536), dropout=(0.0, 1.0, False, True))
        if self.channels not in VIEW_CHANNELS:
            raise ValueError(f"channels must be one of {', '.join(VIEW_CHANNELS)}, got {self.channels!r}")
        if self.arch not in ("vgg16", "vgg19"):
            raise ValueError(f"arch must be 'vgg16' or 'vgg19', got {self.arch!r}")
        if not _TAP.fullmatch(self.tap):
            raise ValueError(f"tap must name a VGG layer such as relu4_3, relu5_3 or pool5, got {self.tap!r}")
        if self.spatial not in SPATIAL_POOLS:
            raise ValueError(f"spatial must be one of {', '.join(SPATIAL_POOLS)}, got {self.spatial!r}")
        if not self.weights:
            raise ValueError("weights must be 'auto', 'random' or a file path, got ''")


@dataclass(frozen=True)
class VoxNetConfig:
    """The network: VoxNet (Maturana & Scherer 2015 defaults) or, with ``kind = "mvcnn"``, a multi-view CNN."""

    kind: str = option("voxnet", "voxnet (3D CNN on voxel grids: the fields below and [data]) or mvcnn (multi-view "
                                 "CNN on rendered views: [model.mvcnn]).")
    filters: tuple[int, int] = option((32, 32), "Filters of the 5^3/stride-2 and 3^3 conv layers.")
    hidden: int = option(128, "Width of the hidden fully connected layer.")
    dropout: tuple[float, float, float] = option((0.2, 0.3, 0.4), "Dropout after conv1, after the pool, after fc1.")
    batch_norm: bool = option(False, "Add batch normalisation after each conv and fc1 (not in the paper).")
    mvcnn: MVCNNConfig = option(doc="The multi-view CNN (used when kind = \"mvcnn\").", factory=MVCNNConfig)

    def __post_init__(self) -> None:
        check_ranges(self, filters=(1, 4096), hidden=(1, 65536), dropout=(0.0, 1.0, False, True))
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MODEL_KINDS)}, got {self.kind!r}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation (rotations come from the voxel cache's copies)."""

    rotate: bool = option(True, "Pick a random cached rotation about the up axis per sample.")
    mirror: bool = option(True, "Randomly mirror across a vertical plane (keeps the up axis).")
    translate: int = option(2, "Random shift of up to this many voxels along each axis.")
    balanced: bool = option(False, "Sample classes with equal probability instead of by frequency.")

    def __post_init__(self) -> None:
        check_ranges(self, translate=(0, MAX_VOXEL_RESOLUTION))


@dataclass(frozen=True)
class ClassifyTrainConfig:
    """Optimisation and bookkeeping."""

    epochs: int = option(40, "Training epochs.")
    batch_size: int = option(32, "Shapes per batch.")
    optimizer: str = option("adam", "adam or sgd (momentum 0.9, as in the paper).")
    lr: float = option(1e-3, "Initial learning rate.")
    weight_decay: float = option(0.0, "L2 weight decay.")
    schedule: str = option("cosine", "Learning-rate schedule: cosine, step or none.")
    step_epochs: int = option(10, "Step schedule: decay every this many epochs.")
    gamma: float = option(0.5, "Step schedule: multiply the learning rate by this.")
    label_smoothing: float = option(0.0, "Cross-entropy label smoothing.")
    val_fraction: float = option(0.1, "Fraction of each training class held out for validation (0: none).")
    seed: int = option(0, "Seed of the initialisation, data order, augmentation and (unless split_seed) the split.")
    val_mix: str = option("train", "Class mix of the validation split: train (val_fraction of each class) or test "
                                   "(the same number of shapes, spread over the classes as the data set's test "
                                   "split is, so choices made on it weigh classes as the test does).")
    split_seed: int = option(-1, "Seed of the validation split alone (-1: train.seed), so runs of several seeds "
                                 "can be validated, and ensembled, on one split.")
    device: str = option("auto", "auto (CUDA when present), cpu, or cuda[:N].")
    workers: int = option(1, "Preprocessing worker processes for building the voxel cache.")
    precision: str = option("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32, or bf16.")
    checkpoint_steps: int = option(0, "Also write last.pt every this many steps within an epoch (0: at epoch ends).")
    tensorboard: bool = option(False, "Also write the log.csv scalars as TensorBoard events into <out>/tensorboard/ "
                                      "(needs: pip install tensorboard).")

    def __post_init__(self) -> None:
        check_ranges(self, epochs=(1, _BIG), batch_size=(1, _BIG), lr=(0.0, None, True), weight_decay=(0.0, None),
                     step_epochs=(1, _BIG), gamma=(0.0, 1.0, True), label_smoothing=(0.0, 1.0, False, True),
                     val_fraction=(0.0, 1.0, False, True), seed=(0, MAX_SEED), split_seed=(-1, MAX_SEED),
                     workers=(1, 1024),
                     checkpoint_steps=(0, _BIG))
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "none"):
            raise ValueError(f"schedule must be 'cosine', 'step' or 'none', got {self.schedule!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.checkpoint_steps < 0:
            raise ValueError(f"checkpoint_steps must be >= 0, got {self.checkpoint_steps}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_mix not in ("train", "test"):
            raise ValueError(f"val_mix must be 'train' or 'test', got {self.val_mix!r}")

    @property
    def val_seed(self) -> int:
        """The seed of the validation split: ``split_seed``, or ``seed`` when it is -1."""
        return self.seed if self.split_seed < 0 else self.split_seed


@dataclass(frozen=True)
class ClassifyConfig:
    """Shape classification: data -> VoxNet (voxel grids) or a multi-view CNN (rendered views) -> training."""

    data: VoxelCacheConfig = option(doc="How shapes become voxel grids.", factory=VoxelCacheConfig)
    model: VoxNetConfig = option(doc="Network architecture.", factory=VoxNetConfig)
    augment: AugmentConfig = option(doc="Training augmentation.", factory=AugmentConfig)
    train: ClassifyTrainConfig = option(doc="Optimisation.", factory=ClassifyTrainConfig)
    vote: bool = option(True, "Evaluate by averaging class probabilities over all cached rotations.")
    mirror_vote: bool = option(False, "Also average over each rotation's mirror image (twice the inference).")
    prior_tau: float = option(0.0, "Evaluate and predict with the probabilities divided by the training class "
                                   "frequencies^prior_tau (0: no correction; 1: Bayes' rule for balanced test "
                                   "classes); choose it on the validation split.")

    def __post_init__(self) -> None:
        check_ranges(self, prior_tau=(0.0, 2.0))
        if self.augment.translate > self.data.resolution // 2:
            raise ValueError(f"augment.translate={self.augment.translate} is out of range [0, "
                             f"{self.data.resolution // 2}] (half of data.resolution={self.data.resolution})")
