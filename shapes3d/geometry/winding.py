"""Generalized winding numbers of triangle meshes (Jacobson et al. 2013; Barill et al. 2018).

The winding number of a closed, outward-oriented surface is 1 inside and 0 outside; for
open surfaces, soups and self-overlapping parts it degrades gracefully, so "inside where
``|w| > 0.5``" is the robust sign used for meshes where ray parity fails (holes, concatenated
overlapping parts, inverted normals: an inverted closed mesh gives ``w = -1`` inside, hence
the absolute value).

Each triangle contributes its signed solid angle ``Omega / (4 pi)`` (Van Oosterom &
Strackee's formula). The exact sum costs ``N * F`` triangle evaluations; the fast path
groups faces into spatially compact clusters (Morton order of the centroids) and replaces a
whole cluster by its dipole term ``A . (c - p) / |c - p|^3`` (``A`` the summed area vector,
``c`` its area-weighted centroid) when the query point is farther than ``beta`` times the
cluster radius, which is Barill et al.'s far-field expansion truncated at first order.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Exact evaluation below this many point-triangle pairs: the cluster bookkeeping only pays
# for itself on large problems.
_EXACT_PAIR_LIMIT = 20_000_000
_PAIR_CHUNK = 1_000_000  # point-triangle pairs per torch kernel call (bounds memory: ~40 floats, ~0.3 GB)


def _as_vertices_faces(mesh_or_vf) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(mesh_or_vf, tuple | list):
        if len(mesh_or_vf) != 2:
            raise ValueError(f"expected a trimesh.Trimesh or (vertices, faces), got a sequence of length {len(mesh_or_vf)}")
        vertices, faces = mesh_or_vf
    else:
        vertices, faces = getattr(mesh_or_vf, "vertices", None), getattr(mesh_or_vf, "faces", None)
        if vertices is None or faces is None:
            raise ValueError(f"expected a trimesh.Trimesh or (vertices, faces), got {type(mesh_or_vf).__name__}")
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError(f"faces must have shape (F, 3) with F >= 1, got {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must be integer vertex indices, got dtype {f.dtype}")
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"face indices must lie in [0, {len(v)}), got range [{f.min()}, {f.max()}]")
    if not np.isfinite(v).all():
        raise ValueError("vertices contain NaN or infinity")
    return v, f.astype(np.int64)


def check_points(points) -> np.ndarray:
    """Validate query points: (N, 3) finite, N >= 1; returns them as float64 numpy."""
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {p.shape}")
    if len(p) == 0:
        raise ValueError("points is empty: expected at least one (x, y, z) row")
    if not np.isfinite(p).all():
        bad = int(np.flatnonzero(~np.isfinite(p).all(axis=1))[0])
        raise ValueError(f"points contain NaN or infinity (first at row {bad}: {p[bad].tolist()})")
    return p


def _solid_angles(p: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """Signed solid angle / (4 pi) of triangles ``tri`` (..., 3, 3) seen from ``p`` (..., 3)."""
    a, b, c = (tri[..., i, :] - p for i in range(3))
    la, lb, lc = a.norm(dim=-1), b.norm(dim=-1), c.norm(dim=-1)
    det = (a * torch.cross(b, c, dim=-1)).sum(-1)
    den = la * lb * lc + (a * b).sum(-1) * lc + (b * c).sum(-1) * la + (c * a).sum(-1) * lb
    return torch.atan2(det, den) / (2.0 * math.pi)


def winding_number_torch(
    vertices: torch.Tensor, faces: torch.Tensor, points: torch.Tensor, *, exact: bool | None = None, beta: float = 2.0,
    leaf_size: int = 8,
) -> torch.Tensor:
    """Generalized winding number of the mesh at ``points``, computed on ``points.device``.

    ``vertices`` (V, 3) float, ``faces`` (F, 3) long, ``points`` (N, 3) -> (N,) float64.
    ``exact=None`` picks the exact sum when ``N * F`` is small, else the clustered
    far-field approximation (``beta``: far when distance > beta * cluster radius).
    """
    dev = points.device
    v = vertices.to(dev, torch.float64)
    f = faces.to(dev, torch.long)
    p = points.to(torch.float64)
    # Winding numbers are translation invariant; centring keeps the float32 near field accurate
    # for meshes far from the origin.
    shift = v.mean(0)
    v, p = v - shift, p - shift
    n, nf = p.shape[0], f.shape[0]
    if exact is None:
        exact = n * nf <= _EXACT_PAIR_LIMIT or nf <= 4 * leaf_size
    tri = v[f]  # (F, 3, 3)
    out = torch.zeros(n, dtype=torch.float64, device=dev)
    if exact:
        step = max(1, _PAIR_CHUNK // nf)
        for s in range(0, n, step):
            out[s : s + step] = _solid_angles(p[s : s + step, None, :], tri[None]).sum(-1)
        return out
    return _clustered(tri, p, beta=beta, leaf_size=leaf_size)


def _morton_order(x: torch.Tensor) -> torch.Tensor:
    """Permutation sorting points (F, 3) along a 3D Z-order curve (10 bits per axis)."""
    lo, hi = x.min(0).values, x.max(0).values
    q = ((x - lo) / (hi - lo).clamp_min(1e-12) * 1023).long().clamp(0, 1023)
    code = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for bit in range(10):
        for axis in range(3):
            code |= ((q[:, axis] >> bit) & 1) << (3 * bit + axis)
    return torch.argsort(code)


def _build_tree(tri: torch.Tensor, leaf_size: int):
    """Implicit binary tree over Morton-sorted faces: per level (centre, radius, dipole), leaves last.

    Node ``k`` of a level has children ``2k`` and ``2k + 1`` one level down; every level but
    the top is padded to an even length with empty nodes (zero dipole and radius, so they
    always count as "far" and add nothing).
    """
    nf = tri.shape[0]
    order = _morton_order(tri.mean(1))
    m = -(-nf // leaf_size)
    m += m % 2
    pad = m * leaf_size - nf
    tri = tri[order]
    if pad:
        # Degenerate padding triangles (all corners equal) have zero solid angle and zero area.
        tri = torch.cat([tri, tri[-1:, :1, :].expand(pad, 3, 3)], 0)
    leaves = tri.reshape(m, leaf_size, 3, 3)
    area_vec = 0.5 * torch.cross(leaves[:, :, 1] - leaves[:, :, 0], leaves[:, :, 2] - leaves[:, :, 0], dim=-1)
    area = area_vec.norm(dim=-1)  # (M, G)
    cent_t = leaves.mean(2)  # (M, G, 3)
    weight = area.sum(1)
    centre = torch.where(weight[:, None] > 0, (area[..., None] * cent_t).sum(1) / weight.clamp_min(1e-300)[:, None],
                         cent_t.mean(1))
    radius = (leaves - centre[:, None, None, :]).norm(dim=-1).flatten(1).max(1).values
    levels = [(centre, radius, area_vec.sum(1), weight)]
    while len(levels[-1][0]) > 64:
        c, r, dip, w = levels[-1]
        if len(c) % 2:
            z = torch.zeros(1, 3, dtype=c.dtype, device=c.device)
            c, r, dip, w = torch.cat([c, z]), torch.cat([r, r[:1] * 0]), torch.cat([dip, z]), torch.cat([w, w[:1] * 0])
            levels[-1] = (c, r, dip, w)
        c2, w2 = c.view(-1, 2, 3), w.view(-1, 2)
        wp = w2.sum(1)
        cp = torch.where(wp[:, None] > 0, (w2[..., None] * c2).sum(1) / wp.clamp_min(1e-300)[:, None], c2.mean(1))
        levels.append((cp, r, dip.view(-1, 2, 3).sum(1), wp))
    # Exact radii (farthest corner of any face below the node): bounding them through the
    # children's balls instead grows them level by level and prunes far fewer pairs.
    corners = leaves.reshape(m, leaf_size * 3, 3)
    leaf_id = torch.arange(m, device=tri.device)
    for j in range(1, len(levels)):
        c, _, dip, w = levels[j]
        node = leaf_id >> j
        dist = (corners - c[node][:, None, :]).norm(dim=-1).max(1).values
        r = torch.zeros(len(c), dtype=c.dtype, device=c.device).scatter_reduce(0, node, dist, "amax")
        levels[j] = (c, r, dip, w)
    return levels[::-1], leaves


def _clustered(tri: torch.Tensor, p: torch.Tensor, *, beta: float, leaf_size: int) -> torch.Tensor:
    levels, leaves = _build_tree(tri, leaf_size)
    leaves32 = leaves.float()
    n = p.shape[0]
    out = torch.zeros(n, dtype=torch.float64, device=p.device)
    n_top = len(levels[0][0])
    q_step = max(1, _PAIR_CHUNK // (8 * n_top))
    n_leaf_pairs = 0
    for s in range(0, n, q_step):
        q = p[s : s + q_step]
        acc = torch.zeros(len(q), dtype=torch.float64, device=p.device)
        qi = torch.arange(len(q), device=p.device).repeat_interleave(n_top)
        ki = torch.arange(n_top, device=p.device).repeat(len(q))
        for depth, (centre, radius, dipole, _) in enumerate(levels):
            d = centre[ki] - q[qi]
            dist = d.norm(dim=-1)
            far = dist > beta * radius[ki]
            term = (d[far] * dipole[ki[far]]).sum(-1) / dist[far] ** 3
            acc.index_add_(0, qi[far], term / (4.0 * math.pi))
            qi, ki = qi[~far], ki[~far]
            if depth + 1 < len(levels):
                qi, ki = qi.repeat_interleave(2), (2 * ki[:, None] + torch.arange(2, device=p.device)).flatten()
        n_leaf_pairs += len(qi)
        pair_step = max(1, _PAIR_CHUNK // leaf_size)
        q32 = q.float()
        for t in range(0, len(qi), pair_step):
            qq, kk = qi[t : t + pair_step], ki[t : t + pair_step]
            w = _solid_angles(q32[qq][:, None, :], leaves32[kk]).sum(-1)
            acc.index_add_(0, qq, w.double())
        out[s : s + q_step] = acc
    logger.debug("winding number: %d points, %.1f exact leaves per point", n, n_leaf_pairs / max(n, 1))
    return out


def winding_number(mesh_or_vf, points, *, exact: bool | None = None, beta: float = 2.0, leaf_size: int = 8,
                   device: str | torch.device | None = None) -> np.ndarray:
    """Generalized winding number at each query point: (N,) float64 numpy.

    ``mesh_or_vf``: a ``trimesh.Trimesh`` or ``(vertices (V, 3), faces (F, 3))``.
    ``points``: (N, 3) array or tensor; a CUDA tensor is evaluated on its device, as is any
    ``device`` given. ``exact``: True sums every triangle (N * F work), False uses the
    clustered far-field approximation, None chooses by problem size. Inside is ``|w| > 0.5``.
    """
    if not beta > 1.0:
        raise ValueError(f"beta must be > 1 (far-field distance in cluster radii), got {beta}")
    if int(leaf_size) != leaf_size or leaf_size < 1:
        raise ValueError(f"leaf_size must be a positive integer, got {leaf_size}")
    v, f = _as_vertices_faces(mesh_or_vf)
    dev = torch.device(device) if device is not None else (
        points.device if isinstance(points, torch.Tensor) else torch.device("cpu"))
    p = torch.from_numpy(check_points(points)).to(dev)
    w = winding_number_torch(torch.from_numpy(v), torch.from_numpy(f), p, exact=exact, beta=beta, leaf_size=int(leaf_size))
    return w.cpu().numpy()
