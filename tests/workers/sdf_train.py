"""Train a tiny DeepSDF on analytic spheres (run directly or under torchrun by tests/test_distributed.py).

usage: python sdf_train.py OUT_DIR EPOCHS [--resume]
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from shapes3d.config import load_config
from shapes3d.data.sdf_dataset import SDFDataset, samples_from_sdf
from shapes3d.deepsdf.config import DeepSDFConfig
from shapes3d.deepsdf.trainer import train

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "deepsdf.toml"


def sphere_data(n_shapes: int = 6) -> SDFDataset:
    shapes = []
    for i in range(n_shapes):
        r = 0.3 + 0.08 * i
        rng = np.random.default_rng(i)
        d = rng.normal(size=(1500, 3))
        surface = r * d / np.linalg.norm(d, axis=1, keepdims=True)
        shapes.append(samples_from_sdf(lambda p, r=r: np.linalg.norm(p, axis=1) - r, surface, n=3000, seed=i))
    return SDFDataset(shapes)


def config(epochs: int) -> DeepSDFConfig:
    cfg = load_config(DeepSDFConfig, CONFIG)
    model = dataclasses.replace(cfg.model, latent_size=8, hidden=64, layers=4, skip_at=(2,), dropout=0.0)
    t = dataclasses.replace(cfg.train, epochs=epochs, shapes_per_batch=4, samples_per_shape=256, device="cpu",
                            lr_decoder=2e-3, lr_codes=5e-3, code_reg_ramp=2, checkpoint_every=1)
    return dataclasses.replace(cfg, model=model, train=t)


if __name__ == "__main__":
    result = train(config(int(sys.argv[2])), sphere_data(), sys.argv[1], resume="--resume" in sys.argv)
    sys.exit(0 if result.interrupted is None else 3)
