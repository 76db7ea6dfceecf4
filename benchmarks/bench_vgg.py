"""VGG16 forward throughput (images/s): shapes3d VGGFeatures vs a plain eager fp32 net.

torchvision cannot be imported in this environment, so the peer is the same conv
stack run as a bare ``nn.Sequential`` in fp32 (what torchvision's ``vgg16().features``
does). Ours runs the same layers through VGGFeatures (normalisation buffers, tap dict),
in fp32 and under bf16 autocast (the CPU here has bf16 matrix units), optionally in
channels-last memory format. Both go up to relu5_3 (the deepest tap LPIPS uses).

    python benchmarks/bench_vgg.py [--batch 8] [--sizes 224 128] [--repeats 2] [--device cpu]

Timings on a shared machine are noisy: compare ratios taken in the same run. On a CPU
without native bf16 (AVX2 only, as measured here) bf16 convolutions are many times
slower than fp32, so those rows can be estimates (marked ~) rather than runs.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from torch import nn

from shapes3d.models.vgg import VGGFeatures, tap_names


def _time(fn, x: torch.Tensor, repeats: int) -> float:
    """Median seconds per call after one warm-up call."""
    fn(x)
    times = []
    for _ in range(repeats):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=30.0,
                    help="estimate instead of run a variant whose batch would take longer than this")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)

    ours = VGGFeatures("vgg16", taps=("relu5_3",)).to(dev)
    last = tap_names("vgg16")["relu5_3"]
    # The peer: identical weights, bare Sequential, no normalisation or dict.
    peer = nn.Sequential(*list(ours.features)[: last + 1]).eval()

    def run_peer(x):
        with torch.inference_mode():
            return peer(x)

    def run_ours(x, bf16=False):
        ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            return ours(x)["relu5_3"]

    variants = [
        ("peer: plain eager fp32 Sequential", run_peer, False),
        ("ours: VGGFeatures fp32", run_ours, False),
        ("ours: VGGFeatures bf16 autocast", lambda t: run_ours(t, bf16=True), False),
        ("ours: bf16 autocast channels_last", lambda t: run_ours(t, bf16=True), True),
    ]
    print(f"device={dev} threads={torch.get_num_threads()} batch={args.batch} repeats={args.repeats} "
          f"cpu_capability={torch.backends.cpu.get_cpu_capability()} torch={torch.__version__}")
    print("rows marked ~ were not run: estimated from one 64x64 image, scaled by pixels and batch, because the "
          f"estimate exceeded --max-seconds={args.max_seconds}")
    print(f"{'size':>5} {'variant':<34} {'s/batch':>9} {'img/s':>9} {'vs peer':>8}", flush=True)
    for size in args.sizes:
        x = torch.rand(args.batch, 3, size, size, device=dev)
        probe = torch.rand(1, 3, 64, 64, device=dev)
        t_peer = None
        for name, fn, channels_last in variants:
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            est = _time(fn, probe.contiguous(memory_format=fmt), 1) * args.batch * (size / 64) ** 2
            if est > args.max_seconds and t_peer is not None:
                t, mark = est, "~"
            else:
                t, mark = _time(fn, x.contiguous(memory_format=fmt), args.repeats), " "
            t_peer = t if t_peer is None else t_peer
            print(f"{size:>5} {name:<34} {mark}{t:>8.3f} {args.batch / t:>9.2f} {t_peer / t:>7.3f}x", flush=True)


if __name__ == "__main__":
    main()
