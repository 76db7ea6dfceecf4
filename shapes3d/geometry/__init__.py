"""Geometry kernels: IO, normalisation, grids, voxelization, signed distance, SDF sampling, extraction.

A lazy face: names resolve on first use (nothing heavy is imported by ``import shapes3d.geometry``).
"""

from shapes3d.utils.lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    # reading and writing
    "load_mesh": "shapes3d.geometry.io",
    "load_points": "shapes3d.geometry.io",
    "load_geometry": "shapes3d.geometry.io",
    "clean_mesh": "shapes3d.geometry.io",
    "export_mesh": "shapes3d.geometry.export",
    # normalisation (returns its transform)
    "normalize": "shapes3d.geometry.normalize",
    "fit_transform": "shapes3d.geometry.normalize",
    "Transform": "shapes3d.geometry.normalize",
    "watertight_report": "shapes3d.geometry.normalize",
    "WatertightReport": "shapes3d.geometry.normalize",
    # grid conventions
    "Grid": "shapes3d.geometry.conventions",
    "sdf_from_inside_positive": "shapes3d.geometry.conventions",
    "sphere_sdf": "shapes3d.geometry.conventions",
    # voxelization
    "voxelize": "shapes3d.geometry.voxelize:voxelize_solid",
    "voxelize_solid": "shapes3d.geometry.voxelize",
    "voxelize_surface": "shapes3d.geometry.voxelize",
    "voxelize_points": "shapes3d.geometry.voxelize",
    "distance_grid": "shapes3d.geometry.voxelize",
    "VoxelGrid": "shapes3d.geometry.voxelize",
    # signed distance and DeepSDF samples (negative inside)
    "signed_distance": "shapes3d.geometry.signed_distance",
    "SignedDistance": "shapes3d.geometry.signed_distance",
    "winding_number": "shapes3d.geometry.winding",
    "sample_sdf": "shapes3d.geometry.api",
    "SDFSampleConfig": "shapes3d.geometry.sampling",
    "SDFSamples": "shapes3d.geometry.sampling",
    # meshes from any points -> sdf callable
    "extract_mesh": "shapes3d.geometry.extract",
    "ExtractedMesh": "shapes3d.geometry.extract",
})
