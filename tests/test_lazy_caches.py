"""Training data stay in their cache files: voxel grids and SDF samples are memory maps, read per batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shapes3d.data.configs import VoxelCacheConfig
from shapes3d.data.discovery import discover
from shapes3d.data.voxel_dataset import GridStack, build_voxel_set, select_rotations


def test_voxel_set_is_a_stack_of_memory_maps(tiny_synth, tmp_path):
    cfg = VoxelCacheConfig(rotations=3)
    data, _ = build_voxel_set(discover(tiny_synth).filter(split="train").entries, cfg, cache_dir=tmp_path)
    assert isinstance(data.grids, GridStack) and data.grids.shape == (12, 3, 32, 32, 32)
    assert all(isinstance(a, np.memmap) for a in data.grids._arrays)
    dense = np.asarray(data.grids)  # the naive reference: everything in memory
    rows, rots = np.array([5, 0, 5, 11]), np.array([2, 1, 0, 2])
    np.testing.assert_array_equal(select_rotations(data.grids, rows, rots), dense[rows, rots][:, None])
    np.testing.assert_array_equal(select_rotations(dense, rows, rots), dense[rows, rots][:, None])
    np.testing.assert_array_equal(data.grids[2:7:2], dense[2:7:2])
    np.testing.assert_array_equal(data.grids[torch.tensor([3, 1])], dense[[3, 1]])
    sub = data.subset(np.array([4, 9]))
    assert isinstance(sub.grids, GridStack) and sub.labels.tolist() == data.labels[[4, 9]].tolist()
    np.testing.assert_array_equal(np.asarray(sub.grids), dense[[4, 9]])
    empty = data.subset(np.array([], dtype=np.int64))  # e.g. val_fraction = 0
    assert len(empty) == 0 and empty.grids.shape == (0, 3, 32, 32, 32) and empty.grids[:].shape == (0, 3, 32, 32, 32)
    with pytest.raises(ValueError, match=r"grids differ: uint8\(2, 4, 4, 4\) vs uint8\(1, 4, 4, 4\)"):
        GridStack([np.zeros((1, 4, 4, 4), np.uint8), np.zeros((2, 4, 4, 4), np.uint8)])
    with pytest.raises(ValueError, match="an empty GridStack needs grid_shape and dtype"):
        GridStack([])


def _mapping_of(address: int) -> str:
    """The /proc/self/maps line of the mapping that holds ``address``."""
    for line in open("/proc/self/maps"):
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo <= address < hi:
            return line.strip()
    return ""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_sdf_dataset_samples_from_memory_maps(tiny_synth, tmp_path):
    from shapes3d.data.sdf_dataset import build_sdf_dataset
    from shapes3d.geometry.sampling import SDFSampleConfig

    entries = discover(tiny_synth).filter(split="test").entries
    cfg = SDFSampleConfig(n_samples=3000, n_uniform=300)
    data, _ = build_sdf_dataset(entries, cfg, cache_dir=tmp_path)
    for t in (data.pos[0], data.neg[1]):  # the tensors' memory is a private (copy-on-write) map of a cache file
        mapping = _mapping_of(t.data_ptr())
        assert mapping.split()[1].endswith("p") and mapping.endswith(".npz") and str(tmp_path) in mapping
    xyz, sdf = data.sample(torch.tensor([0, 2]), 64, generator=torch.Generator().manual_seed(0))
    assert xyz.shape == (128, 3) and (sdf[:32] > 0).all() and (sdf[32:64] <= 0).all()
    again, _ = build_sdf_dataset(entries, cfg, cache_dir=tmp_path)  # a cache hit gives the same samples
    assert torch.equal(again.pos[1], data.pos[1]) and torch.equal(again.neg[2], data.neg[2])
