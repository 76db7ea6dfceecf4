"""Benchmark solid voxelization: ours vs trimesh ``voxelized(pitch).fill()``, and solid methods vs binvox.

Run: ``python benchmarks/bench_voxelize.py [--shapenet-stride N] [--repeats N]``

1. Speed on ~50k-100k-face watertight scans (classic_scans quartet/bunny_watertight.obj,
   69,664 faces; quartet/dragon.obj, 100,000 faces), normalised into [-0.9, 0.9]^3, at
   32^3 and 64^3 over [-1, 1]^3. trimesh gets ``pitch = 2 / R`` (the same cell size; its
   grid is anchored at the mesh, not our box). Times are the best of ``--repeats`` runs on
   a fresh copy of the mesh (so cached ``is_watertight``/BVH data are not reused). IoU of
   ours is against an independent inside test (open3d ray-voting occupancy) at cell
   centres more than 1e-5 from the surface.
2. Holes: the Stanford bunny with its scan holes (common3d/stanford-bunny.obj) per solid
   method vs the exact solid of the hole-filled bunny (quartet/bunny_watertight.obj,
   same scan, mapped into the same frame).
3. ShapeNet (shapenet_semrob10, 93 OBJ meshes): IoU per shape and method against the
   shipped 128^3 solid binvox grids, in the binvox box. Binvox solids are "touched cells
   + interior", so the IoU is shown both for our cell-centre solid and for solid | surface.
"""

from __future__ import annotations

import argparse
import csv
import time

import numpy as np
import open3d as o3d
import trimesh
from trimesh.exchange.binvox import load_binvox

from shapes3d.geometry.raycast_grid import axis_crossings
from shapes3d.geometry.voxelize import (
    ROBUST_METHOD,
    SOLID_METHODS,
    drop_duplicate_faces,
    make_grid,
    occupancy_from_crossings,
    voxelize_solid,
    voxelize_surface,
)
from shapes3d.utils.io import data_root

METHODS = SOLID_METHODS[1:]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def normalized(mesh: trimesh.Trimesh, center=None, scale=None) -> trimesh.Trimesh:
    mesh = mesh.copy()
    mesh.apply_translation(-(mesh.bounds.mean(0) if center is None else center))
    mesh.apply_scale(1.8 / mesh.extents.max() if scale is None else scale)
    return mesh


def reference_inside(mesh: trimesh.Trimesh, grid) -> tuple[np.ndarray, np.ndarray]:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)), o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    q = o3d.core.Tensor(grid.points(np.float32))
    inside = scene.compute_occupancy(q, nsamples=5).numpy().reshape(grid.shape) > 0.5
    safe = scene.compute_distance(q).numpy().reshape(grid.shape) > 1e-5
    return inside, safe


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def speed(root, repeats: int) -> None:
    print("\n== speed: solid voxelization, ours (auto -> parity) vs trimesh voxelized(pitch).fill()")
    print(f"{'mesh':24s} {'faces':>7s} {'R':>3s} {'ours s':>8s} {'trimesh s':>9s} {'ratio':>6s} {'IoU vs exact':>12s}")
    for rel in ("quartet/bunny_watertight.obj", "quartet/dragon.obj"):
        base = normalized(trimesh.load(root / "classic_scans" / rel, force="mesh", process=True))
        for R in (32, 64):
            t_ours, vox = best_time(lambda: voxelize_solid(base.copy(), resolution=R), repeats)  # noqa: B023
            t_tm, _ = best_time(lambda: base.copy().voxelized(pitch=2.0 / R).fill(), repeats)  # noqa: B023
            ref, safe = reference_inside(base, vox.grid)
            score = iou(vox.values & safe, ref & safe)
            print(f"{rel:24s} {len(base.faces):7d} {R:3d} {t_ours:8.3f} {t_tm:9.3f} {t_tm / t_ours:6.1f} {score:12.4f}")


def holes(root) -> None:
    print("\n== holes: stanford-bunny.obj (scan holes) vs solid of bunny_watertight.obj")
    holed = trimesh.load(root / "classic_scans/common3d/stanford-bunny.obj", force="mesh", process=True)
    closed = trimesh.load(root / "classic_scans/quartet/bunny_watertight.obj", force="mesh", process=True)
    v = closed.vertices / 1000.0  # quartet's copy is in mm with y and z swapped: map into the scan's frame
    closed = trimesh.Trimesh(np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1), closed.faces)
    center, scale = holed.bounds.mean(0), 1.8 / holed.extents.max()
    holed, closed = normalized(holed, center, scale), normalized(closed, center, scale)
    for R in (32, 64):
        grid = make_grid(resolution=R)
        exact = voxelize_solid(closed, resolution=R, method="parity").values
        crossings = [axis_crossings(drop_duplicate_faces(holed.triangles), grid, axis) for axis in range(3)]
        row = "  ".join(f"{m}={iou(occupancy_from_crossings(crossings, method=m), exact):.4f}" for m in METHODS)
        print(f"R={R}: {row}")


def shapenet(root, stride: int) -> None:
    print(f"\n== ShapeNet solid binvox (128^3) IoU per shape; auto uses {ROBUST_METHOD!r} on open meshes")
    sn = root / "shapenet_semrob10"
    with open(sn / "index.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["obj_present"] == "True"][::stride]
    solid = {m: [] for m in METHODS}
    union = {m: [] for m in METHODS}
    print(f"{'class':10s} {'model':34s} " + " ".join(f"{m:>8s}" for m in METHODS) + "   (| surface:) " + " ".join(f"{m:>8s}" for m in METHODS))
    for r in rows:
        with open(sn / r["solid_binvox_path"], "rb") as f:
            bv = load_binvox(f)
        ref = np.asarray(bv.matrix, dtype=bool)
        R = ref.shape[0]
        # trimesh maps binvox index i to translate + i * scale / (R - 1); binvox cells tile
        # [translate, translate + scale], with centres at translate + (i + 0.5) * scale / R.
        lo = bv.transform[:3, 3]
        box = (lo, lo + bv.transform[0, 0] * (R - 1))
        mesh = trimesh.load(sn / r["obj_path"], force="mesh", process=True)
        grid = make_grid(resolution=R, box=box)
        crossings = [axis_crossings(drop_duplicate_faces(mesh.triangles), grid, axis) for axis in range(3)]
        surf = voxelize_surface(mesh, resolution=R, box=box).values
        for m in METHODS:
            occ = occupancy_from_crossings(crossings, method=m)
            solid[m].append(iou(occ, ref))
            union[m].append(iou(occ | surf, ref))
        print(
            f"{r['class']:10s} {r['shapenet_model_id']:34s} "
            + " ".join(f"{solid[m][-1]:8.3f}" for m in METHODS)
            + "                 "
            + " ".join(f"{union[m][-1]:8.3f}" for m in METHODS),
            flush=True,
        )
    print(f"\n{len(rows)} shapes   method: mean / min IoU (solid)   mean / min IoU (solid | surface)")
    for m in METHODS:
        print(f"  {m:8s} {np.mean(solid[m]):.3f} / {np.min(solid[m]):.3f}        {np.mean(union[m]):.3f} / {np.min(union[m]):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shapenet-stride", type=int, default=1, help="every Nth ShapeNet mesh (1 = all 93); 0 skips")
    args = parser.parse_args()
    root = data_root()
    speed(root, args.repeats)
    holes(root)
    if args.shapenet_stride:
        shapenet(root, args.shapenet_stride)


if __name__ == "__main__":
    main()
