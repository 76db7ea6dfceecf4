"""DeepSDF glue between files and the core: cached sampling, extraction back to input coordinates,
partial observations from depth renders, and reconstruction metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import trimesh

from shapes3d.data.cache import load_cached
from shapes3d.data.discovery import ManifestEntry
from shapes3d.data.preprocess import PreprocessReport, run_preprocess
from shapes3d.data.sdf_dataset import SDFDataset, ShapeSamples
from shapes3d.data.tasks import SDF_VERSION, sdf_task
from shapes3d.deepsdf.config import SDFSamplingConfig
from shapes3d.deepsdf.fitting import Observation, observations_from_depth
from shapes3d.errors import Shapes3DError
from shapes3d.geometry.extract import ExtractedMesh, extract_mesh
from shapes3d.geometry.normalize import Transform
from shapes3d.metrics.shape import mesh_metrics
from shapes3d.models.deepsdf import SDFDecoder
from shapes3d.render.cameras import Camera
from shapes3d.render.mesh import render_mesh


def _copy_on_write(arr: np.ndarray) -> np.ndarray:
    """A writable view of a read-only cache memory map (torch wants writable arrays); nothing is copied
    unless written, and writes never reach the file."""
    if not isinstance(arr, np.memmap) or arr.size == 0:
        return arr
    return np.memmap(arr.filename, dtype=arr.dtype, mode="c", offset=arr.offset, shape=arr.shape,
                     order="F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C")


def sdf_task_params(cfg: SDFSamplingConfig) -> dict:
    """The preprocessing parameters of the SDF sampling task (they key its cache entries)."""
    params = dataclasses.asdict(cfg)
    params["variances"] = list(params["variances"])
    return params


def build_sdf_dataset(entries: Sequence[ManifestEntry | str | Path], cfg: SDFSamplingConfig, *, cache_dir,
                      workers: int = 1) -> tuple[SDFDataset, PreprocessReport]:
    """Sample (or read from the cache) every mesh; failures are skipped and listed in the report."""
    report = run_preprocess(entries, sdf_task, params=sdf_task_params(cfg), cache_dir=cache_dir, workers=workers,
                            desc="sdf samples", version=SDF_VERSION)
    shapes, names = [], []
    for e in entries:
        path = Path(e.path if isinstance(e, ManifestEntry) else e)
        loc = report.results.get(path)
        if loc is None:
            continue
        a = load_cached(loc, mmap=True)  # verified once; samples are paged in as batches draw them
        shapes.append(ShapeSamples(_copy_on_write(a["pos"]), _copy_on_write(a["neg"]), tuple(a["offset"].tolist()),
                                   float(a["scale"])))
        names.append(str(path))
    if not shapes:
        raise Shapes3DError(f"no usable meshes out of {len(entries)} ({len(report.skipped)} skipped)")
    return SDFDataset(shapes, names), report


def decoder_field(decoder: SDFDecoder, code: torch.Tensor | None):
    """A differentiable callable points (N, 3) -> SDF (N,) for one code (or the single-shape decoder).

    Without gradients, ``decoder.freeze(code)`` gives the same values 1.4-1.6x faster."""
    def f(xyz: torch.Tensor) -> torch.Tensor:
        z = None if code is None else code.to(xyz.device, xyz.dtype).expand(len(xyz), -1)
        return decoder(z, xyz)
    return f


def extract_shape(decoder: SDFDecoder, code: torch.Tensor | None, *, resolution: int = 128,
                  transform: Transform | None = None, mode: str = "coarse_to_fine") -> ExtractedMesh:
    """Marching cubes of one code's field in [-1, 1]^3; vertices mapped back through ``transform.invert``."""
    device = next(decoder.parameters()).device
    field = decoder.freeze(None if code is None else code.detach())  # 1.4-1.6x the decoder's points/s
    res = extract_mesh(field, resolution=resolution, bound=1.0, mode=mode, device=device)
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
