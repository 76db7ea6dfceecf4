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
