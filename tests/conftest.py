"""Shared fixtures: the real-data root (skip cleanly when absent) and small meshes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

from shapes3d.utils.io import data_root  # noqa: E402


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Root of ../shared/data (or $SHAPES3D_DATA_ROOT); skips the test when absent."""
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real data root {root} not present (set SHAPES3D_DATA_ROOT)")
    return root


def real_subset(root: Path, name: str) -> Path:
    p = root / name
    if not p.is_dir():
        pytest.skip(f"real data set {p} not present")
    return p


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A tiny built-in dataset: 3 families x 5 shapes (4 train / 1 test), meshed at 32^3."""
    from shapes3d.data.synth import write_dataset

    out = tmp_path_factory.mktemp("synth")
    write_dataset(out, per_class=5, seed=0, families=("mug", "table", "ring"), test_fraction=0.2, resolution=32)
    return out


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tiny steps: with the 2 cores shared, two intra-op threads made small
    DeepSDF steps ~10x slower (threads wait for each other); one thread is steady. Use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
