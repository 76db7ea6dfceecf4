"""DeepSDF glue between the decoder and meshes: a code's field, extraction back to input coordinates,
partial observations from depth renders, and reconstruction metrics.

(The SDF training set is built by :func:`shapes3d.data.sdf_dataset.build_sdf_dataset`.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import trimesh

from shapes3d.deepsdf.fitting import Observation, observations_from_depth
from shapes3d.errors import Shapes3DError
from shapes3d.geometry.extract import DEFAULT_SAFETY, ExtractedMesh, extract_mesh
from shapes3d.geometry.normalize import Transform
from shapes3d.metrics.shape import mesh_metrics
from shapes3d.models.deepsdf import SDFDecoder
from shapes3d.render.cameras import Camera
from shapes3d.render.mesh import render_mesh


def decoder_field(decoder: SDFDecoder, code: torch.Tensor | None):
    """A differentiable callable points (N, 3) -> SDF (N,) for one code (or the single-shape decoder).

    Without gradients, ``decoder.freeze(code)`` gives the same values 1.4-1.6x faster."""
    def f(xyz: torch.Tensor) -> torch.Tensor:
        z = None if code is None else code.to(xyz.device, xyz.dtype).expand(len(xyz), -1)
        return decoder(z, xyz)
    return f


def extract_shape(decoder: SDFDecoder, code: torch.Tensor | None, *, resolution: int = 128,
                  transform: Transform | None = None, mode: str = "coarse_to_fine", bound: float = 1.0,
                  safety: float = DEFAULT_SAFETY) -> ExtractedMesh:
    """Marching cubes of one code's field in [-bound, bound]^3 (the shapes were normalised into the unit sphere
    with a margin, so 1 holds them); vertices mapped back through ``transform.invert``. A surface reaching the box
    is closed there (``touches_box`` says so). ``safety``: the Lipschitz bound coarse-to-fine trusts
    (:func:`~shapes3d.geometry.extract.extract_mesh`)."""
    device = next(decoder.parameters()).device
    field = decoder.freeze(None if code is None else code.detach())  # 1.4-1.6x the decoder's points/s
    res = extract_mesh(field, resolution=resolution, bound=bound, mode=mode, device=device, safety=safety)
    if transform is not None and not res.empty:
        mesh = trimesh.Trimesh(transform.invert(res.mesh.vertices), res.mesh.faces, process=False)
        res = dataclasses.replace(res, mesh=mesh)
    return res


def depth_view_observation(mesh_normalised: trimesh.Trimesh, *, camera_position=(0.0, -2.5, 1.0), size: int = 96,
                           free_space_samples: int = 4, seed: int = 0) -> Observation:
    """One depth view of a normalised mesh -> SDF-0 surface points plus free-space samples along the rays."""
    cam = Camera(position=camera_position, look_at=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0), width=size, height=size,
                 fov_deg=45.0)
    r = render_mesh(mesh_normalised, [cam])
    origins, dirs = cam.rays()
    hit = np.isfinite(r.depth[0].reshape(-1))
    if not hit.any():
        raise Shapes3DError("the depth view sees none of the shape")
    # depth is along the camera's z axis; the ray parameter is depth / cos(angle to the optical axis)
    cos = dirs[hit] @ cam.forward
    points = origins[hit] + dirs[hit] * (r.depth[0].reshape(-1)[hit] / cos)[:, None]
    return observations_from_depth(points, np.asarray(camera_position, float), free_space_samples=free_space_samples,
                                   seed=seed)


def reconstruction_metrics(pred: trimesh.Trimesh, gt: trimesh.Trimesh, transform: Transform, *,
                           n_points: int = 30000, seed: int = 0) -> dict:
    """Metrics in the normalised (unit-sphere) frame, as DeepSDF reports them; Chamfer also x10^3."""
    a = trimesh.Trimesh(transform.apply(pred.vertices), pred.faces, process=False)
    b = trimesh.Trimesh(transform.apply(gt.vertices), gt.faces, process=False)
    m = mesh_metrics(a, b, n_points=n_points, seed=seed)
    out = {k: (float(v) if np.isscalar(v) else v) for k, v in m.items()}
    if "chamfer_deepsdf" in out:
        out["chamfer_deepsdf_x1e3"] = 1e3 * out["chamfer_deepsdf"]
    return out
