"""Configuration of the DeepSDF pipeline (``configs/deepsdf.toml``).

Defaults follow the paper and the official release's ``specs.json`` except where noted:
the release trains 64 shapes per batch; on a CPU we default to 4 (memory: each shape's
16 384 samples keep ~0.5 GB of activations alive through the backward pass).
"""

from __future__ import annotations

from dataclasses import dataclass

from shapes3d.config import MAX_SEED, check_ranges, option
from shapes3d.geometry.limits import MAX_POINTS
from shapes3d.geometry.sampling import SDFSampleConfig

_BIG = 10**9  # a bound on counts that only catches typos and overflow (epochs, iterations, batch sizes)


@dataclass(frozen=True)
class DeepSDFModelConfig:
    """Decoder and latent codes."""

    latent_size: int = option(256, "Code length L; 0 is the single-shape mode (no codes, overfit one shape).")
    hidden: int = option(512, "Width of the hidden fully connected layers.")
    layers: int = option(8, "Hidden layers (each weight-normed, ReLU, dropout).")
    skip_at: tuple[int, ...] = option((4,), "Hidden layers that receive the input (code, xyz) again.")
    dropout: float = option(0.2, "Dropout probability after every hidden layer (training only).")
    weight_norm: bool = option(True, "Weight normalisation on the hidden layers.")
    code_init_std: float = option(0.0, "Std of the initial codes; 0 means 1/sqrt(latent_size) (official).")
    code_max_norm: float = option(1.0, "Codes are renormalised to at most this norm when looked up (0: off).")
    pe_frequencies: int = option(0, "Positional encoding of xyz: F > 0 feeds [xyz, sin(2^k pi xyz), cos(2^k pi xyz)], "
                                    "k < F (3 + 6F features) to layer 0 and the skip layers; 0: plain xyz "
                                    "(official; export-official refuses F > 0).")

    def __post_init__(self) -> None:
        check_ranges(self, latent_size=(0, 65536), hidden=(1, 65536), layers=(1, 256), skip_at=(1, self.layers - 1),
                     dropout=(0.0, 1.0, False, True), code_init_std=(0.0, None), code_max_norm=(0.0, None),
                     pe_frequencies=(0, 32))
        if self.latent_size < 0 or self.hidden < 1 or self.layers < 1:
            raise ValueError(f"latent_size >= 0, hidden >= 1, layers >= 1 required, got "
                             f"{self.latent_size}, {self.hidden}, {self.layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.code_init_std < 0 or self.code_max_norm < 0:
            raise ValueError(f"code_init_std and code_max_norm must be >= 0, got {self.code_init_std}, "
                             f"{self.code_max_norm}")


@dataclass(frozen=True)
class SDFTrainConfig:
    """Optimisation of decoder and codes (auto-decoding)."""

    epochs: int = option(2000, "Epochs; one epoch visits every training shape once.")
    shapes_per_batch: int = option(4, "Shapes per step (official release: 64).")
    samples_per_shape: int = option(16384, "SDF samples per shape per step, half SDF >= 0 and half < 0.")
    clamp: float = option(0.1, "Clamp distance delta of the L1 loss.")
    code_reg: float = option(1e-4, "Weight of the code regulariser (mean code norm per sample).")
    code_reg_ramp: int = option(100, "Epochs over which the regulariser weight ramps up linearly from 0.")
    lr_decoder: float = option(5e-4, "Adam learning rate of the decoder.")
    lr_codes: float = option(1e-3, "Adam learning rate of the latent codes.")
    lr_interval: int = option(500, "Both learning rates are multiplied by lr_factor every this many epochs.")
    lr_factor: float = option(0.5, "Step-decay factor of both learning rates.")
    lr_schedule: str = option("step", "step (official: lr_factor every lr_interval epochs) or cosine (half-cosine "
                                      "from the initial rates to lr_min_ratio times them over the epochs after "
                                      "the warm-up; lr_interval and lr_factor are then unused).")
    warmup_epochs: int = option(0, "Epochs of linear learning-rate warm-up (epoch e of W runs at e/W of the "
                                   "rate); 0: none. Applies to both schedules.")
    lr_min_ratio: float = option(0.0, "cosine only: the rates' floor as a fraction of the initial rates.")
    precision: str = option("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), fp32, or bf16 (autocast with fp32 "
                                    "master weights; fast only on CPUs with bf16 matrix units, or CUDA).")
    seed: int = option(0, "Seed of initialisation, sampling and dropout.")
    device: str = option("auto", "auto (CUDA when present), cpu, or cuda[:N].")
    checkpoint_every: int = option(1, "Write the checkpoint every this many epochs (and at the end).")
    tensorboard: bool = option(False, "Also write the log.csv scalars as TensorBoard events into <out>/tensorboard/ "
                                      "(needs: pip install tensorboard).")

    def __post_init__(self) -> None:
        check_ranges(self, epochs=(1, _BIG), shapes_per_batch=(1, _BIG), samples_per_shape=(1, MAX_POINTS),
                     clamp=(0.0, None, True), code_reg=(0.0, None), code_reg_ramp=(0, _BIG),
                     lr_decoder=(0.0, None, True), lr_codes=(0.0, None, True), lr_interval=(1, _BIG),
                     lr_factor=(0.0, 1.0, True), seed=(0, MAX_SEED), checkpoint_every=(1, _BIG),
                     warmup_epochs=(0, _BIG), lr_min_ratio=(0.0, 1.0))
        if self.lr_schedule not in ("step", "cosine"):
            raise ValueError(f"lr_schedule must be 'step' or 'cosine', got {self.lr_schedule!r}")
        if min(self.epochs, self.shapes_per_batch, self.samples_per_shape, self.lr_interval,
               self.checkpoint_every) < 1:
            raise ValueError("epochs, shapes_per_batch, samples_per_shape, lr_interval and checkpoint_every "
                             "must all be >= 1")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if not self.clamp > 0 or self.code_reg < 0 or not 0 < self.lr_factor <= 1:
            raise ValueError(f"need clamp > 0, code_reg >= 0, 0 < lr_factor <= 1; got {self.clamp}, "
                             f"{self.code_reg}, {self.lr_factor}")


@dataclass(frozen=True)
class SDFFitConfig:
    """Fitting a new code to observations with the decoder frozen (official reconstruct.py defaults)."""

    iterations: int = option(800, "Adam iterations per restart.")
    lr: float = option(5e-3, "Initial learning rate of the code.")
    lr_drop_at: int = option(400, "Iteration at which the learning rate is divided by lr_drop_factor.")
    lr_drop_factor: float = option(10.0, "Learning-rate divisor at lr_drop_at.")
    samples_per_iter: int = option(8000, "Observations drawn per iteration (balanced by sign when both exist).")
    init_std: float = option(0.01, "Std of the initial code of each restart.")
    restarts: int = option(3, "Random restarts; the code with the lowest final loss over all observations wins.")
    seed: int = option(0, "Seed of initial codes and sampling.")

    def __post_init__(self) -> None:
        check_ranges(self, iterations=(1, _BIG), lr=(0.0, None, True), lr_drop_at=(0, _BIG),
                     lr_drop_factor=(1.0, None), samples_per_iter=(1, MAX_POINTS), init_std=(0.0, None),
                     restarts=(1, 10_000), seed=(0, MAX_SEED))
        if min(self.iterations, self.samples_per_iter, self.restarts) < 1:
            raise ValueError("iterations, samples_per_iter and restarts must be >= 1")
        if not self.lr > 0 or not self.lr_drop_factor >= 1 or self.init_std < 0:
            raise ValueError(f"need lr > 0, lr_drop_factor >= 1, init_std >= 0; got {self.lr}, "
                             f"{self.lr_drop_factor}, {self.init_std}")


@dataclass(frozen=True)
class DeepSDFConfig:
    """DeepSDF: SDF samples -> auto-decoder training -> code fitting and interpolation."""

    model: DeepSDFModelConfig = option(doc="Decoder and latent codes.", factory=DeepSDFModelConfig)
    train: SDFTrainConfig = option(doc="Optimisation.", factory=SDFTrainConfig)
    fit: SDFFitConfig = option(doc="Fitting codes to new observations.", factory=SDFFitConfig)
    samples: SDFSampleConfig = option(doc="SDF sampling of the training meshes.", factory=SDFSampleConfig)
