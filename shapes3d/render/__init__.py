"""Cameras, CPU mesh renders and the differentiable SDF renderer."""

from shapes3d.render.cameras import Camera, cameras_on_sphere
from shapes3d.render.mesh import MeshRenders, MeshScene, render_mesh
from shapes3d.render.sdf_render import SDFRenders, render_sdf, shade_by_differences
from shapes3d.render.sheet import contact_sheet, depth_to_image

__all__ = ["Camera", "cameras_on_sphere", "MeshRenders", "MeshScene", "render_mesh", "SDFRenders", "render_sdf",
           "shade_by_differences", "contact_sheet", "depth_to_image"]
