"""Time the synthetic generator: coarse-to-fine meshing vs dense evaluation, and a full dataset.

Usage: python benchmarks/bench_synth.py [--resolution 64] [--per-class 10] [--repeats 3]

"ours" samples the SDF coarse to fine (only blocks near the surface are evaluated per
sample) and masks marching cubes to those samples; the "peer" is the plain approach:
evaluate the SDF at every grid sample and run marching cubes on the full volume. Both
run in the same process on the same shapes; the ratio is printed. The CPU may be shared:
compare ratios, not absolute numbers, across machines.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from skimage import measure

from shapes3d.data.synth import FAMILIES, _sample_near_surface, sample_shape, shape_rng, write_dataset
from shapes3d.utils.progress import set_progress_enabled


def mesh_dense(shape, resolution):
    grid = shape.mesh_grid(resolution=resolution)
    values = shape.sdf(grid.points()).reshape(grid.shape)
    verts, faces, _, _ = measure.marching_cubes(values, 0.0)
    return verts, faces


def mesh_ours(shape, resolution):
    grid = shape.mesh_grid(resolution=resolution)
    values, exact = _sample_near_surface(shape.sdf, grid)
    verts, faces, _, _ = measure.marching_cubes(values, 0.0, mask=exact)
    return verts, faces


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    set_progress_enabled(False)

    shapes = [sample_shape(f, shape_rng(0, f, 1)) for f in FAMILIES]
    for s in shapes:  # same triangles from both paths, or the comparison is meaningless
        v1, f1 = mesh_ours(s, args.resolution)
        v2, f2 = mesh_dense(s, args.resolution)
        assert np.allclose(v1, v2) and np.array_equal(f1, f2), s.family
    ours = best_of(lambda: [mesh_ours(s, args.resolution) for s in shapes], args.repeats)
    peer = best_of(lambda: [mesh_dense(s, args.resolution) for s in shapes], args.repeats)
    n = len(shapes)
    print(f"mesh one shape per family ({n}) at R={args.resolution}, best of {args.repeats}:")
    print(f"  ours (coarse-to-fine + masked MC): {ours / n * 1e3:7.1f} ms/shape")
    print(f"  peer (dense SDF + full MC):        {peer / n * 1e3:7.1f} ms/shape")
    print(f"  speed-up peer/ours: {peer / ours:.2f}x")

    with tempfile.TemporaryDirectory() as tmp:
        t, c = time.perf_counter(), time.process_time()
        write_dataset(tmp, per_class=args.per_class, seed=0, families=FAMILIES[:10], resolution=args.resolution)
        dt, dc = time.perf_counter() - t, time.process_time() - c
    total = 10 * args.per_class
    # CPU time too: on a shared machine wall time mostly measures the other processes.
    print(
        f"write_dataset: 10 families x {args.per_class} shapes at R={args.resolution}: "
        f"{dt:.2f} s wall, {dc:.2f} s CPU ({dt / total * 1e3:.0f} ms/shape wall)"
    )


if __name__ == "__main__":
    main()
