"""Render benchmarks: mesh views per second (8 views batched in one cast vs one view at a
time, both on a prebuilt BVH; and batched including the BVH build) and SDF
render + backward seconds per view (DeepSDF-sized MLP and an analytic sphere).

    .venv/bin/python benchmarks/bench_render.py [--repeats 5] [--threads 1] [--sizes 128 256]

The mesh is data_root()/classic_scans/quartet/bunny_watertight.obj (~70k faces),
normalised into the unit sphere. The MLP is a plain 8-layer, 512-wide ReLU network on
(x, code) with a 256-d code (~1.7M parameters), added as a small term to a sphere's SDF
so that, like a trained decoder, it has a surface to trace (random weights alone do not).
Timings on a shared machine are noisy: compare ratios taken in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from shapes3d.geometry.io import load_mesh
from shapes3d.geometry.normalize import normalize
from shapes3d.render.cameras import cameras_on_sphere
from shapes3d.render.mesh import MeshScene, render_mesh
from shapes3d.render.sdf_render import render_sdf
from shapes3d.utils.io import data_root


def timed(fn, repeats: int, *, warmup: bool = True) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up run if asked."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


class MLPSDF(torch.nn.Module):
    """Sphere of radius 0.5 plus 0.05 * tanh(MLP(x, code)): DeepSDF-sized compute, traceable surface."""

    def __init__(self, latent: int = 256, width: int = 512, layers: int = 8):
        super().__init__()
        dims = [3 + latent] + [width] * (layers - 1) + [1]
        mods: list[torch.nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            mods.append(torch.nn.Linear(a, b))
            if i < len(dims) - 2:
                mods.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*mods)
        self.code = torch.nn.Parameter(torch.zeros(1, latent))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, self.code.expand(x.shape[0], -1)], dim=1)
        return x.norm(dim=1) - 0.5 + 0.05 * torch.tanh(self.net(h))[:, 0]


class Counting:
    """Wraps an SDF callable and counts the points it is asked about."""

    def __init__(self, fn):
        self.fn, self.points = fn, 0

    def __call__(self, x):
        self.points += x.shape[0]
        return self.fn(x)


def bench_mesh(sizes, repeats: int) -> None:
    path = data_root() / "classic_scans" / "quartet" / "bunny_watertight.obj"
    mesh, _ = normalize(load_mesh(path))
    print(f"\nmesh render: {path.name}, {len(mesh.faces)} faces, 8 views (2 elevations x 4 azimuths)")
    # A Trimesh argument builds Embree's BVH on every call; a MeshScene builds it once.
    t_build = timed(lambda: MeshScene.build(mesh), repeats)
    scene = MeshScene.build(mesh)
    print(f"MeshScene.build (BVH): {t_build * 1e3:.1f} ms")
    print(f"{'size':>6} {'batched+build':>14} {'batched':>9} {'one-at-a-time':>14} {'batched/one':>12}   (views/s)")
    for s in sizes:
        cams = cameras_on_sphere(elevations_deg=[15, 45], azimuths_deg=[0, 90, 180, 270], distance=2.5,
                                 width=s, height=s)
        t_full = timed(lambda cams=cams: render_mesh(mesh, cams), repeats)
        t_batch = timed(lambda cams=cams: render_mesh(scene, cams), repeats)
        t_single = timed(lambda cams=cams: [render_mesh(scene, c) for c in cams], repeats)
        print(f"{s:>4}^2 {8 / t_full:>14.1f} {8 / t_batch:>9.1f} {8 / t_single:>14.1f} {t_single / t_batch:>11.2f}x")


def bench_sdf(sizes, repeats: int) -> None:
    torch.manual_seed(0)
    mlp = MLPSDF()
    n_params = sum(p.numel() for p in mlp.parameters())
    radius = torch.tensor(0.5, requires_grad=True)
    fns = {
        f"MLP 8x512 ({n_params / 1e6:.2f}M params)": (mlp, list(mlp.parameters())),
        "analytic sphere": (lambda x: x.norm(dim=1) - radius, [radius]),
    }
    print("\nSDF render + backward (loss = mean shaded + mean soft silhouette), 1 view, CPU float32")
    print(f"{'sdf':>28} {'size':>6} {'s/view':>8} {'render s':>9} {'hit %':>6} {'points/ray':>11}")
    for name, (fn, params) in fns.items():
        for s in sizes:
            cam = cameras_on_sphere(elevations_deg=[20], azimuths_deg=[30], distance=2.5, width=s, height=s)
            counter = Counting(fn)
            stats = {}

            def step(cam=cam, counter=counter, params=params, stats=stats, s=s):
                for p in params:
                    p.grad = None
                counter.points = 0
                t = time.perf_counter()
                out = render_sdf(counter, cam, near=0.5, far=4.5)
                stats["render"] = time.perf_counter() - t
                (out.shaded.mean() + out.silhouette_soft.mean()).backward()
                stats["hit"] = out.hit.float().mean().item()
                stats["points"] = counter.points / (s * s)

            # The MLP takes minutes per 128^2 view on a CPU: one run, no warm-up.
            sphere = "sphere" in name
            total = timed(step, repeats if sphere else 1, warmup=sphere)
            print(f"{name:>28} {s:>4}^2 {total:>8.3f} {stats['render']:>9.3f} {100 * stats['hit']:>5.1f}% "
                  f"{stats['points']:>11.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="mesh render sizes")
    ap.add_argument("--sdf-sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--skip-mesh", action="store_true")
    ap.add_argument("--skip-sdf", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.skip_mesh:
        bench_mesh(args.sizes, args.repeats)
    if not args.skip_sdf:
        bench_sdf(args.sdf_sizes, args.repeats)


if __name__ == "__main__":
    main()
