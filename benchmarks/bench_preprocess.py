"""Timings of the preprocessing framework on real ModelNet10 point clouds, each next to a plain peer.

1. input identity for the cache key: content sha256 (ours) vs size+mtime from ``os.stat``;
2. a first run with ``run_preprocess`` (hash, compute, checksummed atomic write) vs a bare loop
   calling the same work function and ``np.savez`` (the framework's overhead);
3. a fully cached re-run (hash + verify every cache) vs the bare loop's compute;
4. ``workers=2`` vs ``workers=1`` on the same first run (spawn start-up included);
5. reading 1 000 rows of a 4 MB cached array: ``load_cached(mmap=True)`` with and without
   checksum verification vs ``np.load(npz)[name][:1000]``.

Run: ``.venv/bin/python benchmarks/bench_preprocess.py [--files 400]``. Numbers depend on the
machine and its load; each line prints ours, the peer, and the ratio from the same run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from shapes3d.data.cache import cache_location, load_cached, write_cached
from shapes3d.data.discovery import discover
from shapes3d.data.preprocess import run_preprocess
from shapes3d.utils.io import data_root, sha256_file
from shapes3d.utils.progress import set_progress_enabled


def occupancy(path: Path, *, res: int) -> dict[str, np.ndarray]:
    """A realistic small work function: points -> (R, R, R) occupancy in their bounding cube."""
    from shapes3d.geometry.io import load_points

    pts = load_points(path)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    scale = (hi - lo).max() or 1.0
    idx = np.clip(((pts - lo) / scale * res).astype(np.int64), 0, res - 1)
    grid = np.zeros((res, res, res), dtype=bool)
    grid[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return {"occupancy": grid}


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


def line(what: str, ours: float, peer: float, peer_name: str) -> None:
    print(f"{what:<44} ours {ours * 1e3:9.1f} ms | {peer_name} {peer * 1e3:9.1f} ms | ratio {ours / peer:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=400, help="how many ModelNet10 point clouds to use")
    parser.add_argument("--res", type=int, default=32)
    args = parser.parse_args()
    set_progress_enabled(False)
    manifest = discover(data_root() / "modelnet10_pcd1024")
    paths = manifest.paths[:: max(1, len(manifest) // args.files)][: args.files]
    all_paths = manifest.paths
    print(f"{len(paths)} files for runs; {len(all_paths)} for hashing; res {args.res}; cpus {os.cpu_count()}")

    for p in all_paths:  # warm the page cache: compare hashing with stat, not with a cold disk
        p.read_bytes()
    t_sha, _ = timed(lambda: [sha256_file(p) for p in all_paths])
    t_stat, _ = timed(lambda: [(s.st_size, s.st_mtime_ns) for s in map(os.stat, all_paths)])
    line(f"identity of {len(all_paths)} files: sha256", t_sha, t_stat, "stat")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def bare():
            for i, p in enumerate(paths):
                np.savez(tmp / "bare" / f"{i}.npz", **occupancy(p, res=args.res))

        (tmp / "bare").mkdir()
        t_bare, _ = timed(bare)
        params = {"res": args.res}
        t_first, r1 = timed(lambda: run_preprocess(paths, occupancy, params=params, cache_dir=tmp / "c1"))
        t_cached, r2 = timed(lambda: run_preprocess(paths, occupancy, params=params, cache_dir=tmp / "c1"))
        t_pool, r3 = timed(lambda: run_preprocess(paths, occupancy, params=params, cache_dir=tmp / "c2", workers=2))
        assert (r1.computed, r2.cached, r3.computed) == (len(paths),) * 3, (r1.summary(), r2.summary(), r3.summary())
        line("first run, workers=1", t_first, t_bare, "bare loop")
        line("cached re-run (hash + verify)", t_cached, t_bare, "bare loop")
        line("first run, workers=2", t_pool, t_first, "workers=1")

        big = {"samples": np.random.default_rng(0).normal(size=(250_000, 4)).astype(np.float32)}
        loc = cache_location(tmp / "big", "ab" + "0" * 62)
        write_cached(loc, big, meta={})
        np.savez(tmp / "big.npz", **big)
        reps = 20

        def ours(verify: bool):
            for _ in range(reps):
                float(load_cached(loc, mmap=True, verify=verify)["samples"][:1000].sum())

        def peer():
            for _ in range(reps):
                with np.load(tmp / "big.npz", allow_pickle=False) as z:
                    float(z["samples"][:1000].sum())

        t_peer, _ = timed(peer)
        t_lazy, _ = timed(lambda: ours(False))
        t_ver, _ = timed(lambda: ours(True))
        line(f"1000 rows of 4 MB, mmap, no verify (x{reps})", t_lazy, t_peer, "np.load npz")
        line(f"1000 rows of 4 MB, mmap + sha256 (x{reps})", t_ver, t_peer, "np.load npz")


if __name__ == "__main__":
    main()
