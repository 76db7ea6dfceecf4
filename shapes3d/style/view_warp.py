"""Exact correspondences between rendered views, and the warp and consistency term built on them.

The renderer knows the geometry, so no optical flow is estimated (Ruder et al. 2016 estimate it between video
frames): a pixel (u, v) of view i with depth z (along the camera's z axis, :mod:`shapes3d.render.mesh`) is the
world point ``X = p_i + R_i^T (z (u - cx) / fx, z (v - cy) / fy, z)``; projected by camera j it lands at
``(u_j, v_j)`` with depth ``z_j``. View j's image sampled bilinearly there is the warp of view j into view i,
differentiable in view j's pixels (:func:`torch.nn.functional.grid_sample`).

The mask c of a pair keeps the pixels where view i sees the shape and view j sees the *same* point: the point
projects inside view j, all four bilinear taps of view j hit the shape, and view j's depth interpolated there
matches ``z_j`` within ``tolerance`` (a depth test: disoccluded and self-occluded points fail it).

Shapes: depth (V, H, W) with ``inf`` where a ray misses; images (V, C, H, W); P ordered pairs (i <- j);
grids (P, H, W, 2); masks (P, 1, H, W).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shapes3d.render.cameras import Camera


def reproject(depth_i: np.ndarray, cam_i: Camera, cam_j: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pixel of view i (depth (H, W)) in camera j: pixel coordinates (H, W, 2) as (u, v), depth (H, W)
    along j's z axis, and the hit mask (H, W) of view i. NaN where view i misses or the point is behind j."""
    z = np.asarray(depth_i, dtype=np.float64)
    if z.ndim != 2 or z.shape != (cam_i.height, cam_i.width):
        raise ValueError(f"depth must have shape ({cam_i.height}, {cam_i.width}) of camera i, got {z.shape}")
    hit = np.isfinite(z)
    zz = np.where(hit, z, np.nan)
    k = cam_i.intrinsics
    v, u = np.meshgrid(np.arange(z.shape[0], dtype=np.float64), np.arange(z.shape[1], dtype=np.float64),
                       indexing="ij")
    pc = np.stack([(u - k[0, 2]) / k[0, 0] * zz, (v - k[1, 2]) / k[1, 1] * zz, zz], axis=-1).reshape(-1, 3)
    world = pc @ cam_i.rotation + np.asarray(cam_i.position)  # R^T applied to row vectors
    pj = cam_j.to_camera(world)
    kj = cam_j.intrinsics
    zj = pj[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([kj[0, 0] * pj[:, 0] / zj + kj[0, 2], kj[1, 1] * pj[:, 1] / zj + kj[1, 2]], axis=1)
    uv[~(zj > 0)] = np.nan
    return uv.reshape(*z.shape, 2), zj.reshape(z.shape), hit


def pair_correspondence(depth_i: np.ndarray, depth_j: np.ndarray, cam_i: Camera, cam_j: Camera, *,
                        tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Where view j sees what view i sees: the sampling grid (H, W, 2) into view j in
    :func:`~torch.nn.functional.grid_sample`'s [-1, 1] coordinates (``align_corners=True``: -1 and 1 are the
    centres of the corner pixels) and the mask (H, W) bool of pixels that pass the depth test."""
    uv, zj, hit = reproject(depth_i, cam_i, cam_j)
    dj = np.asarray(depth_j, dtype=np.float64)
    h, w = dj.shape
    u, v = uv[..., 0], uv[..., 1]
    eps = 1e-6  # pixels: round-off of the reprojection must not drop the border pixels
    with np.errstate(invalid="ignore"):
        inside = hit & (u >= -eps) & (u <= w - 1 + eps) & (v >= -eps) & (v <= h - 1 + eps)
    uc, vc = np.clip(np.where(inside, u, 0.0), 0, w - 1), np.clip(np.where(inside, v, 0.0), 0, h - 1)
    u0, v0 = np.floor(uc).astype(np.int64), np.floor(vc).astype(np.int64)
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    fu, fv = uc - u0, vc - v0
    taps = np.stack([dj[v0, u0], dj[v0, u1], dj[v1, u0], dj[v1, u1]])
    all_hit = np.isfinite(taps).all(axis=0)
    t = np.where(np.isfinite(taps), taps, 0.0)
    d_interp = (1 - fv) * ((1 - fu) * t[0] + fu * t[1]) + fv * ((1 - fu) * t[2] + fu * t[3])
    with np.errstate(invalid="ignore"):
        mask = inside & all_hit & (np.abs(np.where(inside, zj, np.inf) - d_interp) < tolerance)
    grid = np.stack([2.0 * uc / max(w - 1, 1) - 1.0, 2.0 * vc / max(h - 1, 1) - 1.0], axis=-1)
    return np.where(mask[..., None], grid, 0.0), mask


def ring_pairs(n_views: int, neighbours: int = 1) -> list[tuple[int, int]]:
    """Ordered pairs (i, j), j within ``neighbours`` of i around a circle of ``n_views`` views, no repeats."""
    pairs = []
    for i in range(n_views):
        for off in range(1, neighbours + 1):
            for j in ((i + off) % n_views, (i - off) % n_views):
                if j != i and (i, j) not in pairs:
                    pairs.append((i, j))
    return pairs


@dataclass
class ViewPairs:
    """Correspondences of P ordered view pairs: view ``source[p]`` warped into view ``target[p]``."""

    target: torch.Tensor  #: (P,) int64, the view warped into (i)
    source: torch.Tensor  #: (P,) int64, the neighbour sampled (j)
    grid: torch.Tensor  #: (P, H, W, 2) float32, where each pixel of i samples view j
    mask: torch.Tensor  #: (P, 1, H, W) float32, c: 1 where view j sees the same surface point

    def to(self, device) -> ViewPairs:
        return ViewPairs(self.target.to(device), self.source.to(device), self.grid.to(device), self.mask.to(device))


def view_pairs(depth: np.ndarray, cameras: Sequence[Camera], pairs: Sequence[tuple[int, int]], *,
               tolerance: float) -> ViewPairs:
    """The :class:`ViewPairs` of ``pairs`` (i, j) from the renders' depth (V, H, W) and their V cameras."""
    depth = np.asarray(depth)
    if depth.ndim != 3 or len(cameras) != depth.shape[0]:
        raise ValueError(f"need depth (V, H, W) and V cameras, got {depth.shape} and {len(cameras)} cameras")
    if not pairs:
        raise ValueError("pairs must not be empty")
    grids, masks = zip(*(pair_correspondence(depth[i], depth[j], cameras[i], cameras[j], tolerance=tolerance)
                         for i, j in pairs))
    return ViewPairs(torch.tensor([i for i, _ in pairs]), torch.tensor([j for _, j in pairs]),
                     torch.from_numpy(np.stack(grids)).float(),
                     torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)))


def warp(images: torch.Tensor, pairs: ViewPairs) -> torch.Tensor:
    """Each pair's neighbour image warped into its view: images (V, C, H, W) -> (P, C, H, W), differentiable
    in the neighbours' pixels; zero outside the neighbour (masked anyway)."""
    return F.grid_sample(images[pairs.source], pairs.grid.to(images), mode="bilinear", padding_mode="zeros",
                         align_corners=True)


def consistency_loss(images: torch.Tensor, pairs: ViewPairs) -> torch.Tensor:
    """Per view i, sum over its pairs of (1/D) sum_k c_k ||x_i,k - w_k||^2 -> (V,); D = H * W pixels, the
    squared norm over the C channels of pixel k (Ruder et al.'s temporal loss with exact correspondences)."""
    diff = (images[pairs.target] - warp(images, pairs)).pow(2).sum(dim=1, keepdim=True) * pairs.mask.to(images)
    per_pair = diff.flatten(1).sum(dim=1) / (images.shape[-1] * images.shape[-2])
    return images.new_zeros(images.shape[0]).index_add(0, pairs.target.to(images.device), per_pair)


@torch.no_grad()
def warped_difference(images: torch.Tensor, pairs: ViewPairs) -> float:
    """The measured inconsistency: the mean over every pair's masked pixels of the squared difference
    between the view and its warped neighbour, averaged over channels (images (V, C, H, W) in [0, 1])."""
    mask = pairs.mask.to(images)
    diff = (images[pairs.target] - warp(images, pairs)).pow(2).mean(dim=1, keepdim=True) * mask
    return float(diff.sum() / mask.sum().clamp_min(1.0))
