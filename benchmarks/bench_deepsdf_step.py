"""DeepSDF train-step throughput: ours (fp32, bf16 autocast) vs a plain eager fp32 module, same run.

    python benchmarks/bench_deepsdf_step.py [--samples 16384] [--steps 5] [--loss-steps 30]

1. Machine matmul FLOP/s, fp32 and bf16, on (N, 512) @ (512, 512); the fp32 peak is the
   best of a measurement at the start and one per timing round (shared, noisy machine).
2. One train step (forward, backward, Adam) of the official architecture (L = 256) on N
   samples: the baseline uses ``nn.utils.parametrizations.weight_norm``, ``nn.ReLU`` and
   ``nn.Dropout``; ours is :class:`shapes3d.models.deepsdf.SDFDecoder`. Step FLOPs are
   counted as 3 x forward matmul FLOPs (forward, input gradient, weight gradient).
3. Final loss after ``--loss-steps`` steps on a real shape's SDF samples (cheburashka from
   the classic scans, sampled with the geometry layer), fp32 vs bf16, from the same init.

bf16 parts run only when bf16 matmuls are at least as fast as fp32 on this machine (or
with ``--force-bf16``): on CPUs without bf16 units they are emulated and far slower.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time

import torch
import torch.nn as nn

from shapes3d.losses.sdf_objective import sdf_objective
from shapes3d.models.deepsdf import SDFDecoder, layer_table

L, HIDDEN, LAYERS, SKIP = 256, 512, 8, (4,)


class PlainDecoder(nn.Module):
    """The same architecture written the plain eager way (the reference we compare against)."""

    def __init__(self, p: float = 0.2) -> None:
        super().__init__()
        table = layer_table(L, HIDDEN, LAYERS, SKIP)
        self.lins = nn.ModuleList(nn.utils.parametrizations.weight_norm(nn.Linear(i, o)) for i, o in table[:-1])
        self.out = nn.Linear(*table[-1])
        self.relu, self.drop = nn.ReLU(), nn.Dropout(p)

    def forward(self, latent, xyz):
        x = inp = torch.cat([latent, xyz], 1)
        for k, lin in enumerate(self.lins):
            if k in SKIP:
                x = torch.cat([x, inp], 1)
            x = self.drop(self.relu(lin(x)))
        return torch.tanh(self.out(x)).squeeze(1)


def matmul_gflops(n: int, dtype: torch.dtype, reps: int = 5) -> float:
    a, b = torch.randn(n, 512, dtype=dtype), torch.randn(512, 512, dtype=dtype)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n * 512 * 512 * reps / (time.perf_counter() - t) / 1e9


def step_flops_per_sample() -> float:
    return 3 * 2 * sum(i * o for i, o in layer_table(L, HIDDEN, LAYERS, SKIP))


def make_step(model: nn.Module, codes: torch.Tensor, bf16: bool):
    opt = torch.optim.Adam([{"params": model.parameters(), "lr": 5e-4}, {"params": [codes], "lr": 1e-3}])

    def step(xyz, sdf):
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            pred = model(codes.expand(len(xyz), -1), xyz)
        loss = sdf_objective(pred, sdf, codes[None], code_weight=1e-4, epoch=1, ramp_epochs=0)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def time_interleaved(steps: dict, xyz, sdf, rounds: int) -> dict[str, float]:
    """Best (minimum) seconds per step of each variant, alternating variants every step.

    Other jobs share this machine: alternating exposes every variant to the same load, and
    the minimum is the least disturbed step.
    """
    best = {}
    for name, step in steps.items():
        step(xyz, sdf)  # warm-up
        best[name] = float("inf")
    for _ in range(rounds):
        for name, step in steps.items():
            t = time.perf_counter()
            step(xyz, sdf)
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def real_samples(n: int):
    import trimesh

    from shapes3d.geometry.sampling import SDFSampleConfig, sample_sdf
    from shapes3d.utils.io import data_root

    path = data_root() / "classic_scans" / "common3d" / "cheburashka.obj"
    mesh = trimesh.load(path, force="mesh", process=True)
    s = sample_sdf(mesh, config=SDFSampleConfig(n_samples=60_000, n_uniform=4_000), seed=0)
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.from_numpy(s.pos), torch.from_numpy(s.neg)
    rows = torch.cat([pos[torch.randint(0, len(pos), (n // 2,), generator=g)],
                      neg[torch.randint(0, len(neg), (n - n // 2,), generator=g)]])
    return rows[:, :3].contiguous(), rows[:, 3].contiguous(), path.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=16384, help="samples per step (one shape's worth by default)")
    ap.add_argument("--steps", type=int, default=5, help="timed rounds (each variant once per round)")
    ap.add_argument("--loss-steps", type=int, default=30)
    ap.add_argument("--force-bf16", action="store_true")
    args = ap.parse_args()
    n = args.samples
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}")
    # bf16 on a small problem first: where it is emulated, the full size takes minutes.
    mm32, mm16 = matmul_gflops(n, torch.float32), matmul_gflops(min(n, 2048), torch.bfloat16, reps=2)
    print(f"matmul (Nx512 @ 512x512): fp32 {mm32:.1f} GFLOP/s (N={n}), bf16 {mm16:.1f} GFLOP/s "
          f"(N={min(n, 2048)}), ratio {mm16 / mm32:.2f}x")
    use_bf16 = args.force_bf16 or mm16 >= mm32
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    xyz, sdf = torch.rand(n, 3, generator=g) * 2 - 1, torch.rand(n, generator=g) * 0.2 - 0.1
    flops = step_flops_per_sample() * n
    rows = []
    variants = [("plain eager fp32 (baseline)", PlainDecoder(), False), ("ours fp32", SDFDecoder(), False)]
    if use_bf16:
        variants.append(("ours bf16 autocast", SDFDecoder(), True))
    steps = {name: make_step(model.train(), (torch.randn(L) / 16).requires_grad_(True), bf16)
             for name, model, bf16 in variants}
    a, b = torch.randn(n, 512), torch.randn(512, 512)
    steps["matmul"] = lambda *_: [a @ b for _ in range(3)]  # the peak, under the same load
    best = time_interleaved(steps, xyz, sdf, args.steps)
    mm32 = max(mm32, 3 * 2 * n * 512 * 512 / best.pop("matmul") / 1e9)
    print(f"fp32 matmul peak, best of the start and the interleaved rounds: {mm32:.1f} GFLOP/s")
    for name, sec in best.items():
        rows.append((name, sec, n / sec, flops / sec / 1e9))
    base = rows[0][2]
    print(f"\ntrain step, {n} samples, {step_flops_per_sample() * 1e-6:.2f} MFLOP/sample")
    print(f"{'variant':30s} {'best s/step':>11s} {'samples/s':>10s} {'GFLOP/s':>8s} {'of fp32 peak':>12s} {'vs baseline':>11s}")
    for name, sec, sps, gf in rows:
        print(f"{name:30s} {sec:11.3f} {sps:10.0f} {gf:8.1f} {gf / mm32:11.0%} {sps / base:10.2f}x")
    if not use_bf16:
        print(f"\nbf16 skipped: bf16 matmul runs at {mm16 / mm32:.2f}x fp32 on this CPU (no bf16 matrix units); "
              "--force-bf16 runs it anyway")
        return
    try:
        rx, rs, name = real_samples(n)
    except Exception as e:  # real data absent or geometry layer unavailable
        print(f"\nloss check skipped: {e.__class__.__name__}: {e}")
        return
    torch.manual_seed(0)
    ref = SDFDecoder()
    finals = {}
    for label, bf16 in (("fp32", False), ("bf16", True)):
        model, codes = copy.deepcopy(ref), (torch.zeros(L) + 1 / 16).requires_grad_(True)
        torch.manual_seed(1)  # same dropout masks as far as the dtypes allow
        step = make_step(model.train(), codes, bf16)
        for _ in range(args.loss_steps):
            loss = step(rx, rs)
        finals[label] = loss
    rel = abs(finals["bf16"] - finals["fp32"]) / finals["fp32"]
    print(f"\nfinal loss after {args.loss_steps} steps on {name}: fp32 {finals['fp32']:.5f}, bf16 {finals['bf16']:.5f} "
          f"(relative difference {rel:.1%}, target < 5%)")


if __name__ == "__main__":
    main()
