"""Configs of the data commands (built-in dataset, voxel caches)."""

from __future__ import annotations

from dataclasses import dataclass

from shapes3d.config import MAX_SEED, check_ranges, option
from shapes3d.geometry.limits import MAX_VOXEL_RESOLUTION


@dataclass(frozen=True)
class SynthConfig:
    """The built-in synthetic dataset (``shapes3d data synth``)."""

    per_class: int = option(20, "Shapes written per family (train + test).")
    seed: int = option(0, "Master seed; each shape's generator derives from (seed, family, index).")
    test_fraction: float = option(0.2, "Fraction of each family written to the test split.")
    resolution: int = option(64, "Marching-cubes grid resolution per axis used to mesh each analytic SDF.")
    families: tuple[str, ...] = option((), "Families to write; empty means all built-in families.")

    def __post_init__(self) -> None:
        check_ranges(self, per_class=(1, 1_000_000), seed=(0, MAX_SEED), test_fraction=(0.0, 1.0, False, True),
                     resolution=(16, 1024))
        if self.per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {self.per_class}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.resolution < 16:
            raise ValueError(f"resolution must be >= 16, got {self.resolution}")
        from shapes3d.data.synth import FAMILIES  # here: synth imports this module

        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown families {unknown}; expected some of {', '.join(FAMILIES)}")


@dataclass(frozen=True)
class VoxelCacheConfig:
    """How meshes and point clouds become cached occupancy grids (``shapes3d data preprocess --task voxels``)."""

    resolution: int = option(32, "Voxels per axis of the occupancy grid.")
    object_size: int = option(24, "Voxels spanned by the object's longest side (VoxNet: 24 of 32, leaving padding).")
    rotations: int = option(12, "Copies voxelized at 360/rotations degree steps about the up axis (augmentation and test-time voting).")
    up_axis: str = option("z", "The shapes' up axis: x, y or z (ModelNet is z-up, ShapeNet y-up).")
    method: str = option("auto", "Solid voxelization method for meshes: auto, parity, vote or winding.")
    point_dilation: int = option(0, "Dilate point-cloud occupancy by this many voxels (sparse clouds leave holes).")
    point_mode: str = option("binary", "Point-cloud occupancy: binary or count (points per voxel).")

    def __post_init__(self) -> None:
        check_ranges(self, resolution=(4, MAX_VOXEL_RESOLUTION), rotations=(1, 360),
                     point_dilation=(0, MAX_VOXEL_RESOLUTION))
        if self.resolution < 4:
            raise ValueError(f"resolution must be >= 4, got {self.resolution}")
        if not 1 <= self.object_size <= self.resolution:
            raise ValueError(f"object_size must be in [1, resolution={self.resolution}], got {self.object_size}")
        if self.point_mode not in ("binary", "count"):
            raise ValueError(f"point_mode must be 'binary' or 'count', got {self.point_mode!r}")
        if self.rotations < 1:
            raise ValueError(f"rotations must be >= 1, got {self.rotations}")
        if self.up_axis not in ("x", "y", "z"):
            raise ValueError(f"up_axis must be 'x', 'y' or 'z', got {self.up_axis!r}")
        if self.point_dilation < 0:
            raise ValueError(f"point_dilation must be >= 0, got {self.point_dilation}")
