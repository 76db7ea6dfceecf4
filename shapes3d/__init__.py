"""shapes3d: learning on 3D shapes with voxel and signed-distance-field models."""

__version__ = "0.1.0"
