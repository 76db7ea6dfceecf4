"""Benchmark: dense vs coarse-to-fine mesh extraction from a DeepSDF-sized network.

The network is the package's ``SDFDecoder`` at DeepSDF's size (latent 256 + xyz -> 8 weight-normed
layers of 512, input re-injected at layer 4, ReLU, tanh out; 1.84 M parameters), evaluated as
``extract_shape`` does, through ``decoder.freeze(code)``. It is given a real
surface cheaply: the hidden layers keep their random init and the last layer is solved by
least squares so that the output approximates the (clamped) SDF of a torus. That is a
genuine network field — not an exact SDF, with its own slope — at DeepSDF's cost per point.

    python benchmarks/bench_extract.py                  # 128^3 dense vs c2f, 256^3 c2f, 512^3 memory, bf16
    python benchmarks/bench_extract.py --full           # also dense 256^3 (slow)
    python benchmarks/bench_extract.py --dense-res 64 --res 128 --big-res 256   # quicker

Prints one table. Timings on a shared CPU are noisy; compare ratios taken in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from shapes3d.geometry.extract import extract_mesh
from shapes3d.metrics import chamfer_deepsdf
from shapes3d.models.deepsdf import SDFDecoder
from shapes3d.utils.progress import set_progress_enabled

LATENT = 256
WIDTH = 512


def deepsdf_sized(seed: int = 0) -> tuple[SDFDecoder, torch.Tensor]:
    """The package's decoder at DeepSDF's size (latent 256, 8 x 512, skip at 4) and one code."""
    torch.manual_seed(seed)
    decoder = SDFDecoder(latent_size=LATENT, hidden=WIDTH, layers=8, skip_at=(4,)).eval()
    return decoder, torch.randn(LATENT) * 0.01


def torus_sdf(p: np.ndarray) -> np.ndarray:
    q = np.stack([np.linalg.norm(p[:, :2], axis=1) - 0.5, p[:, 2]], axis=1)
    return np.linalg.norm(q, axis=1) - 0.2


def fit_last_layer(decoder: SDFDecoder, code: torch.Tensor, n: int = 12000, seed: int = 0) -> float:
    """Least-squares fit of the last layer to atanh of the clamped torus SDF; returns RMS error."""
    rng = np.random.default_rng(seed)
    uniform = rng.uniform(-1, 1, size=(n // 3, 3))
    near = rng.uniform(-1, 1, size=(n - n // 3, 3))
    # Push points towards the torus surface (DeepSDF samples mostly near the surface).
    near = near - 0.9 * torus_sdf(near)[:, None] * near / np.maximum(np.linalg.norm(near, axis=1, keepdims=True), 1e-6)
    pts = np.concatenate([uniform, near]) + rng.normal(scale=0.02, size=(n, 3))
    target = np.arctanh(np.clip(torus_sdf(pts), -0.3, 0.3))
    with torch.no_grad():
        frozen = decoder.freeze(code)
        feats = torch.cat([frozen.features(torch.from_numpy(c).float()) for c in np.array_split(pts, 8)]).double()
        a = torch.cat([feats, torch.ones(len(feats), 1, dtype=torch.float64)], dim=1)
        ridge = 1e-6 * torch.eye(a.shape[1], dtype=torch.float64)
        sol = torch.linalg.solve(a.T @ a + ridge, a.T @ torch.from_numpy(target))
        decoder.output.weight.copy_(sol[:-1].float()[None])
        decoder.output.bias.copy_(sol[-1:].float())
        fitted = (a @ sol).numpy()
    return float(np.sqrt(np.mean((fitted - target) ** 2)))


def bf16_fn(net):
    def fn(xyz: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(xyz).float()

    return fn


def vert_chamfer(a, b) -> float:
    if len(a.vertices) == 0 or len(b.vertices) == 0:
        return float("nan")
    return chamfer_deepsdf(a.vertices, b.vertices)


def identical(a, b) -> bool:
    return np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)


def throughput(fn, n: int, reps: int = 2) -> float:
    x = torch.rand(n, 3) * 2 - 1
    with torch.no_grad():
        fn(x)
        t = time.perf_counter()
        for _ in range(reps):
            fn(x)
    return n * reps / (time.perf_counter() - t)


def child_big(state_path: str, res: int, chunk: int) -> None:
    """Run in a fresh process so that ru_maxrss is this extraction's own peak."""
    decoder, _ = deepsdf_sized()
    state = torch.load(state_path, weights_only=True)
    code = state.pop("code")
    decoder.load_state_dict(state)
    out = extract_mesh(decoder.freeze(code), resolution=res, chunk_size=chunk)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({"seconds": out.seconds, "n_evaluated": out.n_evaluated, "peak_rss": peak,
                      "faces": len(out.mesh.faces)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dense-res", type=int, default=128, help="resolution timed dense and coarse-to-fine")
    ap.add_argument("--res", type=int, default=256, help="resolution timed coarse-to-fine (dense with --full)")
    ap.add_argument("--big-res", type=int, default=512, help="resolution for the peak-memory run (0: skip)")
    ap.add_argument("--bf16-res", type=int, default=128, help="resolution for the bf16 comparison (0: skip)")
    ap.add_argument("--full", action="store_true", help="also time dense extraction at --res")
    ap.add_argument("--chunk", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--child-big", nargs=2, metavar=("STATE", "RES"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_progress_enabled(False)
    if args.child_big:
        child_big(args.child_big[0], int(args.child_big[1]), args.chunk)
        return

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    rows = _Rows()
    decoder, code = deepsdf_sized()
    n_params = sum(p.numel() for p in decoder.parameters())
    t = time.perf_counter()
    rms = fit_last_layer(decoder, code)
    rows += [("parameters", f"{n_params:,}"), ("last-layer fit (s, rms atanh err)", f"{time.perf_counter() - t:.1f}, {rms:.4f}")]
    net = decoder.freeze(code)  # what extract_shape evaluates: weight norm applied once, code folded into biases

    def plain(xyz: torch.Tensor) -> torch.Tensor:  # the decoder called as training calls it
        return decoder(code.expand(len(xyz), -1), xyz)

    plain_rate, frozen_rate = throughput(plain, args.chunk), throughput(net, args.chunk)
    rows += [
        (f"fp32 points/s, decoder(code, xyz) (chunk {args.chunk})", f"{plain_rate:,.0f}"),
        (f"fp32 points/s, decoder.freeze(code) (chunk {args.chunk})", f"{frozen_rate:,.0f} ({frozen_rate / plain_rate:.2f}x)"),
        (f"bf16 points/s, frozen (chunk {args.chunk})", f"{throughput(bf16_fn(net), args.chunk):,.0f}"),
    ]

    def extract(fn, res, mode, **kw):
        return extract_mesh(fn, resolution=res, mode=mode, chunk_size=args.chunk, **kw)

    r = args.dense_res
    dense = extract(net, r, "dense")
    c2f = extract(net, r, "coarse_to_fine")
    rows += [
        (f"{r}^3 dense: s / evaluated", f"{dense.seconds:.1f} / {dense.n_evaluated:,}"),
        (f"{r}^3 c2f:   s / evaluated", f"{c2f.seconds:.1f} / {c2f.n_evaluated:,}"),
        (f"{r}^3 speed-up dense/c2f", f"{dense.seconds / c2f.seconds:.1f}x"),
        (f"{r}^3 c2f == dense (identical V,F)", str(identical(dense.mesh, c2f.mesh))),
        (f"{r}^3 Chamfer(dense, c2f) on vertices", f"{vert_chamfer(dense.mesh, c2f.mesh):.3g}"),
        (f"{r}^3 faces; Chamfer to torus (30k pts)", f"{len(dense.mesh.faces):,}; {surface_error(dense.mesh):.3g}"),
    ]
    big = extract(net, args.res, "coarse_to_fine")
    rows.append((f"{args.res}^3 c2f: s / evaluated", f"{big.seconds:.1f} / {big.n_evaluated:,}"))
    rows.append((f"{args.res}^3 c2f est. dense s (by eval rate)",
                 f"{dense.seconds * args.res**3 / r**3:.0f} (ratio {dense.seconds * args.res**3 / r**3 / big.seconds:.1f}x)"))
    if args.full:
        big_dense = extract(net, args.res, "dense")
        rows += [
            (f"{args.res}^3 dense: s", f"{big_dense.seconds:.1f}"),
            (f"{args.res}^3 c2f == dense", str(identical(big_dense.mesh, big.mesh))),
            (f"{args.res}^3 Chamfer(dense, c2f) on vertices", f"{vert_chamfer(big_dense.mesh, big.mesh):.3g}"),
        ]
    if args.bf16_res:
        b = args.bf16_res
        ref = c2f if b == r else extract(net, b, "coarse_to_fine")
        low = extract(bf16_fn(net), b, "coarse_to_fine", device="cpu")
        rows += [
            (f"{b}^3 c2f bf16: s / evaluated", f"{low.seconds:.1f} / {low.n_evaluated:,}"),
            (f"{b}^3 Chamfer(fp32, bf16) on vertices", f"{vert_chamfer(ref.mesh, low.mesh):.3g}"),
        ]
    if args.big_res:
        with tempfile.TemporaryDirectory() as d:
            state = os.path.join(d, "net.pt")
            torch.save({**decoder.state_dict(), "code": code}, state)
            cmd = [sys.executable, __file__, "--chunk", str(args.chunk), "--child-big", state, str(args.big_res)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        rows += [
            (f"{args.big_res}^3 c2f: s / evaluated", f"{res['seconds']:.1f} / {res['n_evaluated']:,}"),
            (f"{args.big_res}^3 c2f peak RSS (whole process)", f"{res['peak_rss'] / 2**30:.2f} GiB"),
        ]


class _Rows(list):
    """Table rows, printed as they are measured (a long run shows its numbers as it goes)."""

    def append(self, row: tuple[str, str]) -> None:
        super().append(row)
        print(f"{row[0]:<42}  {row[1]}", flush=True)

    def __iadd__(self, rows):
        for row in rows:
            self.append(row)
        return self


def surface_error(mesh) -> float:
    """DeepSDF Chamfer between the network's surface and the torus it was fitted to."""
    truth = extract_mesh(torus_sdf, resolution=129).mesh
    a = mesh.sample(30000, seed=0) if len(mesh.faces) else np.zeros((1, 3))
    return chamfer_deepsdf(a, truth.sample(30000, seed=1))


if __name__ == "__main__":
    main()
