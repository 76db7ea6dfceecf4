"""Benchmark: 500 000 DeepSDF-recipe SDF samples, ours vs mesh_to_sdf, same run.

    python benchmarks/bench_sdf_sampling.py [--mesh PATH] [--ref-points 2000] [--skip-peer] [--repeats 3]

Peer: ``mesh_to_sdf.sample_sdf_near_surface(mesh, number_of_points=500000,
surface_point_method='sample', sign_method='normal')`` (``pip install --no-deps mesh-to-sdf``
plus scikit-learn). Its package imports pyrender/OpenGL at import time although the
'sample' + 'normal' path never renders; we register empty stand-in modules so it imports
without an OpenGL stack.

Sign errors are measured on a random subset of each method's samples against
``trimesh.Trimesh.contains`` (an independent ray test) on the same normalised mesh,
skipping points closer to the surface than 1e-6 where "inside" is not well defined.
Timings are wall-clock and process CPU seconds; on a shared machine wall time is noisy.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import os
import sys
import time
from pathlib import Path

import numpy as np
import trimesh

from shapes3d.geometry.sampling import SDFSampleConfig, sample_sdf
from shapes3d.geometry.signed_distance import signed_distance
from shapes3d.utils.io import data_root

DEFAULT_MESH = "classic_scans/quartet/bunny_watertight.obj"


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves empty OpenGL / pyrender modules, created only when mesh_to_sdf imports them.

    mesh_to_sdf refuses to import if either is already in ``sys.modules``, so they cannot
    simply be registered up front.
    """

    names = ("OpenGL", "OpenGL.GL", "pyrender")

    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self, is_package=True) if name in self.names else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        if module.__name__ == "OpenGL.GL":
            noop = lambda *a: None  # noqa: E731
            module.glEnable = module.glDisable = noop
            module.glRenderbufferStorage = module.glRenderbufferStorageMultisample = noop
            module.GL_MULTISAMPLE = 0


def _import_mesh_to_sdf():
    """Import mesh_to_sdf with stand-ins for the OpenGL modules it only needs for rendering."""
    sys.meta_path.insert(0, _StubFinder())
    import mesh_to_sdf

    return mesh_to_sdf


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def _sign_error(mesh: trimesh.Trimesh, points: np.ndarray, sdf: np.ndarray, n: int, seed: int) -> tuple[float, int]:
    """Percent of sampled points whose sign disagrees with trimesh's ray-test `contains`."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(points), size=min(n, len(points)), replace=False)
    p, s = points[idx].astype(np.float64), sdf[idx]
    # Exclude points essentially on the surface; their sign is a coin toss for any method.
    exact = np.abs(signed_distance(mesh, p).values)
    keep = exact > 1e-6
    # Small chunks: trimesh's ray test materialises every ray/candidate-triangle pair.
    kept = p[keep]
    inside = np.concatenate([mesh.contains(kept[i : i + 200]) for i in range(0, len(kept), 200)])
    wrong = int(np.sum((s[keep] < 0) != inside))
    return 100.0 * wrong / max(int(keep.sum()), 1), int(keep.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mesh", default=None, help=f"mesh file (default: <data root>/{DEFAULT_MESH})")
    ap.add_argument("--ref-points", type=int, default=2000, help="samples checked against the reference")
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of ours (the median is reported)")
    args = ap.parse_args()
    path = Path(args.mesh) if args.mesh else data_root() / DEFAULT_MESH
    mesh = trimesh.load(path, force="mesh", process=True)
    print(f"mesh: {path} ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces, watertight={mesh.is_watertight})")

    cfg = SDFSampleConfig()
    sample_sdf(mesh, config=SDFSampleConfig(n_samples=2000, n_uniform=200), seed=1)  # warm-up: imports, BVH code paths
    runs = [_timed(lambda: sample_sdf(mesh, config=cfg, seed=0)) for _ in range(args.repeats)]
    ours = runs[0][0]
    ours_wall, ours_cpu = float(np.median([r[1] for r in runs])), float(np.median([r[2] for r in runs]))
    rows = ours.all()
    print(f"ours : {len(rows)} samples ({len(ours.pos)} pos / {len(ours.neg)} neg, signs by {ours.method}) "
          f"in {ours_wall:.2f} s wall, {ours_cpu:.2f} s CPU (median of {args.repeats}: "
          f"{', '.join(f'{r[1]:.2f}' for r in runs)} s; load average {os.getloadavg()[0]:.1f})")
    normalised = trimesh.Trimesh(ours.transform.apply(mesh.vertices), mesh.faces, process=False)
    err, n = _sign_error(normalised, rows[:, :3], rows[:, 3], args.ref_points, seed=0)
    print(f"ours : sign error {err:.3f} % of {n} samples vs trimesh.contains")

    if args.skip_peer:
        return
    try:
        m2s = _import_mesh_to_sdf()
    except ImportError as e:
        print(f"peer : mesh_to_sdf unavailable ({e}); install with pip install --no-deps mesh-to-sdf scikit-learn")
        return
    np.random.seed(0)  # mesh_to_sdf draws from numpy's global generator
    (pts, sdf), peer_wall, peer_cpu = _timed(lambda: m2s.sample_sdf_near_surface(
        mesh, number_of_points=500_000, surface_point_method="sample", sign_method="normal"))
    print(f"peer : {len(pts)} samples in {peer_wall:.2f} s wall, {peer_cpu:.2f} s CPU (mesh_to_sdf)")
    peer_mesh = m2s.scale_to_unit_sphere(mesh)
    err, n = _sign_error(peer_mesh, pts, sdf, args.ref_points, seed=0)
    print(f"peer : sign error {err:.3f} % of {n} samples vs trimesh.contains")
    print(f"ratio: ours is {peer_wall / ours_wall:.1f}x faster (wall), {peer_cpu / ours_cpu:.1f}x (CPU)")


if __name__ == "__main__":
    main()
