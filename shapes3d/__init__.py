"""shapes3d: learning on 3D shapes with voxel and signed-distance-field models.

``import shapes3d as s3`` gives the everyday calls and one face per package; nothing heavy
(torch, open3d, trimesh) is imported until a name is first used::

    mesh = s3.load_mesh("chair.off")
    unit, transform = s3.normalize(mesh, mode="sphere")
    grid = s3.voxelize(unit, resolution=32)          # solid occupancy at cell centres
    samples = s3.sample_sdf(mesh, n_samples=20_000)  # DeepSDF samples, SDF negative inside
    s3.classify.train(...), s3.deepsdf.extract_shape(...), s3.losses.style_loss(...)

docs/ARCHITECTURE.md describes the layers, the faces and the conventions.
"""

from shapes3d.utils.lazy import lazy_face

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    # everyday calls
    "load_mesh": "shapes3d.geometry.io",
    "load_points": "shapes3d.geometry.io",
    "normalize": "shapes3d.geometry.normalize",
    "voxelize": "shapes3d.geometry.voxelize:voxelize_solid",
    "signed_distance": "shapes3d.geometry.signed_distance",
    "sample_sdf": "shapes3d.geometry.api",
    "extract_mesh": "shapes3d.geometry.extract",
    "render_mesh": "shapes3d.render.mesh",
    # configs and presets
    "load_config": "shapes3d.config",
    "find_preset": "shapes3d.config",
    "presets": "shapes3d.config",
    # package faces
    "errors": "shapes3d.errors:",
    "geometry": "shapes3d.geometry:",
    "data": "shapes3d.data:",
    "models": "shapes3d.models:",
    "losses": "shapes3d.losses:",
    "metrics": "shapes3d.metrics:",
    "render": "shapes3d.render:",
    "engine": "shapes3d.engine:",
    "classify": "shapes3d.classify:",
    "deepsdf": "shapes3d.deepsdf:",
    "style": "shapes3d.style:",
})
__all__ = ["__version__", *__all__]
