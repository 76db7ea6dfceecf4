"""Time how long the ``shapes3d`` command takes to answer before any job runs.

Usage: python benchmarks/bench_cli_start.py [--repeats 5]

Each case is a fresh interpreter (``python -m shapes3d.cli.main ...``), as a user's shell
starts it: ``--help``, every command group's ``--help``, an argument error and a missing input
file. The peer is what the CLI paid before its imports were made lazy: a bare interpreter that
imports torch and open3d (every command imported both before parsing its arguments). Both run in
the same process tree, one after the other; the ratio is printed. Goal: every case <= 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "--help": ["--help"],
    "info --help": ["info", "--help"],
    "data --help": ["data", "--help"],
    "classify train --help": ["classify", "train", "--help"],
    "sdf train --help": ["sdf", "train", "--help"],
    "sdf fit-views --help": ["sdf", "fit-views", "--help"],
    "render --help": ["render", "--help"],
    "style texture --help": ["style", "texture", "--help"],
    "bad argument": ["classify", "train", "--no-such-option"],
    "missing file": ["classify", "evaluate", "no/such/checkpoint.pt", "--data", "no/such/dir"],
}
PEER = ["-c", "import torch, open3d"]


def wall(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    peer = wall(PEER, args.repeats)
    print(f"peer (python -c 'import torch, open3d'): {peer:.3f} s (median of {args.repeats})")
    print(f"{'case':<24} {'ours s':>8} {'peer/ours':>10}")
    worst = 0.0
    for name, argv in CASES.items():
        ours = wall(["-m", "shapes3d.cli.main", *argv], args.repeats)
        worst = max(worst, ours)
        print(f"{name:<24} {ours:>8.3f} {peer / ours:>9.1f}x")
    print(f"slowest case {worst:.3f} s ({'meets' if worst <= 1.0 else 'misses'} the 1 s goal)")


if __name__ == "__main__":
    main()
