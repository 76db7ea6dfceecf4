"""Cameras, CPU mesh renders, the differentiable SDF renderer and images from renders.

A lazy face: ``import shapes3d.render`` imports neither torch nor open3d; the first name read does.
"""

from shapes3d.utils.lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "Camera": "shapes3d.render.cameras",
    "cameras_on_sphere": "shapes3d.render.cameras",
    "render_points": "shapes3d.render.points",
    "PointRenders": "shapes3d.render.points",
    "render_views": "shapes3d.render.multiview",
    "voxel_mesh": "shapes3d.render.multiview",
    "write_transforms": "shapes3d.render.nerf_transforms",
    "read_transforms": "shapes3d.render.nerf_transforms",
    "camera_to_world_opengl": "shapes3d.render.nerf_transforms",
    "MeshRenders": "shapes3d.render.mesh",
    "MeshScene": "shapes3d.render.mesh",
    "render_mesh": "shapes3d.render.mesh",
    "SDFRenders": "shapes3d.render.sdf_render",
    "render_sdf": "shapes3d.render.sdf_render",
    "shade_by_differences": "shapes3d.render.sdf_render",
    "contact_sheet": "shapes3d.render.sheet",
    "depth_to_image": "shapes3d.render.sheet",
    "render_rows": "shapes3d.render.images",
    "read_image": "shapes3d.render.images",
})
