"""VoxNet speed: our model against a plain eager ``nn.Sequential`` VoxNet of the same architecture, side by side.

    OMP_NUM_THREADS=1 python benchmarks/bench_voxnet_speed.py [--batch 32] [--classes 10] [--hidden 128]
                                                              [--rounds 7] [--steps 4] [--threads 1]

Three models with the same weights, timed in interleaved rounds (so a busy machine slows all of them alike; the
median round is reported):

* ``plain``: ``nn.Sequential`` of the published layers in order, contiguous (NCDHW) tensors, ``torch.optim.Adam``;
* ``plain-cl``: the same with channels-last 3D tensors (what the trainer ran before the fast path);
* ``ours``: :class:`shapes3d.models.voxnet.VoxNet` (``forward``: space-to-depth first conv, pool before the
  activation, cheap dropout masks), channels-last, fused Adam, as ``classify train`` runs it.

A training step is forward + cross-entropy + backward + Adam step on a batch of random occupancy grids (10 %
filled, the density of ModelNet grids); inference is ``torch.inference_mode`` forward, on the batch and on calls of
``--vote-batch`` grids (``predict_proba`` passes 64 shapes x 12 rotations at once). Before timing, the plain
model and ours must agree to 1e-4 (logits in eval mode; loss gradients of every parameter with dropout off), or
the benchmark stops. Prints samples/s, the ratio to ``plain`` and GFLOP/s (VoxNet's multiply-adds counted
analytically, training = 3x forward) beside the rate of a 1024^2 fp32 matmul timed in the same rounds (the
practical ceiling under the same load), the time of the augmentation that feeds one batch, and writes
``benchmarks/results/voxnet_speed.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shapes3d.models.voxnet import VoxNet
from shapes3d.utils.io import atomic_write_text

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
CL3D = torch.channels_last_3d
R = 32


def plain_voxnet(num_classes: int, hidden: int, slope: float = 0.1,
                 dropout: tuple[float, float, float] = (0.2, 0.3, 0.4)) -> nn.Sequential:
    """VoxNet as the paper draws it: conv 5^3/2 -> conv 3^3 -> pool -> fc -> fc, layer after layer."""
    return nn.Sequential(
        nn.Conv3d(1, 32, 5, stride=2), nn.LeakyReLU(slope), nn.Dropout(dropout[0]),
        nn.Conv3d(32, 32, 3), nn.LeakyReLU(slope), nn.MaxPool3d(2), nn.Dropout(dropout[1]),
        nn.Flatten(), nn.Linear(32 * 6**3, hidden), nn.LeakyReLU(slope), nn.Dropout(dropout[2]),
        nn.Linear(hidden, num_classes))


def copy_weights(ours: VoxNet, plain: nn.Sequential) -> None:
    """Give ``plain`` our parameters (the two list the same tensors in the same order)."""
    src, dst = list(ours.parameters()), list(plain.parameters())
    assert [p.shape for p in src] == [p.shape for p in dst], "architectures differ"
    with torch.no_grad():
        for s, d in zip(src, dst):
            d.copy_(s)


def forward_macs(num_classes: int, hidden: int) -> int:
    """Multiply-adds of one VoxNet forward pass on a 32^3 grid."""
    return 14**3 * 32 * 125 + 12**3 * 32 * 32 * 27 + 32 * 6**3 * hidden + hidden * num_classes


def check_agreement(ours: VoxNet, plain: nn.Sequential, x: torch.Tensor, y: torch.Tensor, tol: float = 1e-4) -> dict:
    """Largest differences of logits (eval) and of parameter gradients (dropout off); raises past ``tol``."""
    ours, plain = copy.deepcopy(ours), copy.deepcopy(plain)
    ours.eval(), plain.eval()
    with torch.no_grad():
        a, b = ours(x), plain(x)
    logit_diff = float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
    grads = []
    for m in (ours, plain):
        m.eval()  # dropout off, so both compute the same function; gradients flow as in training
        m.zero_grad()
        F.cross_entropy(m(x), y).backward()
        grads.append([p.grad for p in m.parameters()])
    grad_diff = max(float((g - h).abs().max() / h.abs().max().clamp_min(1e-12)) for g, h in zip(*grads))
    if logit_diff > tol or grad_diff > tol:
        raise SystemExit(f"ours and plain disagree: logits {logit_diff:.2e}, gradients {grad_diff:.2e} (tol {tol})")
    return {"logits_max_rel_diff": logit_diff, "grads_max_rel_diff": grad_diff}


def _train_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fused: bool):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused) if fused else torch.optim.Adam(
        model.parameters(), lr=1e-4)

    def step() -> None:
        model.train()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _infer_fn(model: nn.Module, x: torch.Tensor):
    def step() -> None:
        model.eval()
        with torch.inference_mode():
            model(x)
    return step


def timed_rounds(fns: dict, *, rounds: int, steps: int, batch: int) -> dict[str, float]:
    """Median samples/s of each function over interleaved rounds of ``steps`` calls (after one warm-up call)."""
    for f in fns.values():
        f()
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                f()
            rates[k].append(batch * steps / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in rates.items()}


def augment_ms(batch: int, *, repeats: int = 20) -> float:
    """Milliseconds to draw, read and augment one training batch from a (500, 12, 32^3) uint8 grid array."""
    from shapes3d.data.voxel_dataset import apply_augment, augment_params, select_rotations

    grids = (np.random.default_rng(0).random((500, 12, R, R, R)) < 0.1).astype(np.uint8)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        idx = torch.randint(0, len(grids), (batch,), generator=gen)
        p = augment_params(batch, grids.shape[1], generator=gen, rotate=True, mirror=True, translate=2)
        g = torch.from_numpy(select_rotations(grids, idx.numpy(), p[:, 0].numpy()))
        p[:, 0] = 0
        apply_augment(g, p, up_axis="z").contiguous(memory_format=CL3D)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _matmul_fn(n: int = 1024):
    a, b = torch.randn(n, n), torch.randn(n, n)

    def step() -> None:
        torch.mm(a, b)
    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=4, help="calls per timed round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vote-batch", type=int, default=768, help="grids per call of the voting-size inference")
    ap.add_argument("--out", type=Path, default=RESULTS / "voxnet_speed.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ours = VoxNet(args.classes, hidden=args.hidden)
    plain = plain_voxnet(args.classes, args.hidden)
    copy_weights(ours, plain)
    x = (torch.rand(args.batch, 1, R, R, R) < 0.1).float()
    y = torch.randint(0, args.classes, (args.batch,))
    agreement = check_agreement(ours, plain, x, y)
    plain_cl = copy.deepcopy(plain).to(memory_format=CL3D)
    ours = ours.to(memory_format=CL3D)
    xc = x.contiguous(memory_format=CL3D)
    kw = {"rounds": args.rounds, "steps": args.steps, "batch": args.batch}
    train = timed_rounds({"plain": _train_fn(plain, x, y, False), "plain-cl": _train_fn(plain_cl, xc, y, False),
                          "ours": _train_fn(ours, xc, y, True)}, **kw)
    xv = (torch.rand(args.vote_batch, 1, R, R, R) < 0.1).float().contiguous(memory_format=CL3D)
    infer = timed_rounds({"plain": _infer_fn(plain, x), "plain-cl": _infer_fn(plain_cl, xc),
                          "ours": _infer_fn(ours, xc), "matmul": _matmul_fn()}, **kw)
    # predict_proba's batches: 64 shapes x 12 rotations in one call
    big = timed_rounds({"plain-cl": _infer_fn(plain_cl, xv), "ours": _infer_fn(ours, xv)},
                       rounds=max(1, args.rounds // 2), steps=1, batch=args.vote_batch)
    matmul_gflops = infer.pop("matmul") / args.batch * 2 * 1024**3 / 1e9  # timed in the same rounds
    macs = forward_macs(args.classes, args.hidden)
    report = {
        "batch": args.batch, "classes": args.classes, "hidden": args.hidden, "threads": torch.get_num_threads(),
        "forward_mflop_per_sample": 2 * macs / 1e6, "agreement": agreement,
        "train_samples_per_second": train, "inference_samples_per_second": infer,
        "train_ratio_to_plain": {k: v / train["plain"] for k, v in train.items()},
        "inference_ratio_to_plain": {k: v / infer["plain"] for k, v in infer.items()},
        "vote_batch": args.vote_batch, "inference_vote_batch_samples_per_second": big,
        "train_gflops": {k: v * 6 * macs / 1e9 for k, v in train.items()},
        "matmul_gflops": matmul_gflops,
        "augment_ms_per_batch": augment_ms(args.batch),
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "rounds": args.rounds, "steps_per_round": args.steps,
    }
    print(f"agreement with plain: logits {agreement['logits_max_rel_diff']:.1e}, "
          f"gradients {agreement['grads_max_rel_diff']:.1e} (relative max)")
    print(f"batch {args.batch}, {torch.get_num_threads()} thread(s), {2 * macs / 1e6:.0f} MFLOP forward per sample")
    for what, rates in (("train step", train), ("inference", infer)):
        for k, v in rates.items():
            extra = f", {v * 6 * macs / 1e9:.1f} GFLOP/s" if what == "train step" else ""
            print(f"{what:10s} {k:9s} {v:7.1f} samples/s  x{v / rates['plain']:.2f}{extra}")
    for k, v in big.items():
        print(f"inference {k:9s} {v:7.1f} samples/s  in calls of {args.vote_batch} grids  x{v / big['plain-cl']:.2f}")
    print(f"fp32 matmul (1024^2, same rounds): {matmul_gflops:.1f} GFLOP/s; ours trains at "
          f"{train['ours'] * 6 * macs / 1e9 / matmul_gflops:.0%} of it")
    print(f"augmentation feeding one batch: {report['augment_ms_per_batch']:.1f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=1))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
