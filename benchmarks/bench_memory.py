"""Benchmark: peak memory of the geometry kernels on a 2M-face mesh, and of training vs data-set size.

    python benchmarks/bench_memory.py                      # everything (~5 min on 2 loaded cores)
    python benchmarks/bench_memory.py --skip-train         # geometry cases only
    python benchmarks/bench_memory.py --mesh scan          # bunny_watertight subdivided to 1.1M faces instead

Every case runs in a fresh Python process, so one case's allocations never hide another's.
Figures come from ``/proc/self/status``:

* ``peak``: VmHWM, reset when the case starts (after imports and inputs) and read at its end:
  the highest resident set while the case ran, libraries and inputs included;
* ``case``: VmHWM reset (``/proc/self/clear_refs``) after the inputs are loaded, read again
  after the case, minus the resident set before it: what the operation itself added;
* ``peak_anon``: the highest RssAnon (private memory) over the same span, sampled every 5 ms;
* ``anon`` / ``file``: RssAnon and RssFile at the end. Pages of memory-mapped caches that were
  read count as ``file`` (clean page cache the kernel can drop), not as process memory.

Mesh: a torus with 2 000 major x 500 minor sections = 2 000 000 faces (watertight), written
as binary PLY and read through ``load_mesh``; ``--mesh scan`` uses the real scan
``classic_scans/quartet/bunny_watertight.obj`` midpoint-subdivided twice (1 114 624 faces).

Training: synthetic caches written as ``.npy`` and opened with ``mmap_mode="c"``. Voxels:
``(S, 12, 32, 32, 32)`` uint8 (393 KiB per shape). SDF: 500 000 float32 samples per shape
(7.6 MiB), as ``load_cached(mmap=True)`` maps them. ``library`` runs the package's ``train()``
for one epoch; ``lazy`` runs only its steps (no split, validation or checkpoints), reading the
batch's grids or samples from the maps as ``train()`` does.
Results go to ``--out`` + ``.json`` / ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GIB = 2**30
VOXEL_SHAPE = (12, 32, 32, 32)
SDF_ROWS = 500_000


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class _AnonPeak:
    """Samples RssAnon every 5 ms in a thread: the kernel keeps no peak of private memory alone."""

    def __init__(self) -> None:
        import threading

        self.peak = _status()["RssAnon"]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _status()["RssAnon"])

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status()["RssAnon"])
        return self.peak


_ANON: _AnonPeak | None = None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), and the RssAnon peak; False where not permitted."""
    if _ANON is not None:
        _ANON.peak = _status()["RssAnon"]
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- inputs (parent process)

def make_mesh(kind: str, path: Path) -> dict:
    import trimesh

    if kind == "torus":
        mesh = trimesh.creation.torus(major_radius=0.6, minor_radius=0.25, major_sections=2000, minor_sections=500)
        what = "torus, 2000 x 500 sections"
    else:
        from shapes3d.utils.io import data_root

        src = data_root() / "classic_scans/quartet/bunny_watertight.obj"
        mesh = trimesh.load(src, force="mesh", process=True)
        v, f = mesh.vertices, mesh.faces
        for _ in range(2):
            v, f = trimesh.remesh.subdivide(v, f)
        mesh = trimesh.Trimesh(v, f, process=False)
        what = f"{src.name} midpoint-subdivided twice"
    mesh.export(path)
    return {"mesh": what, "faces": len(mesh.faces), "vertices": len(mesh.vertices), "watertight": mesh.is_watertight,
            "file_mib": round(path.stat().st_size / 2**20, 1)}


def make_voxel_cache(path: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    grids = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, *VOXEL_SHAPE))
    for a in range(0, n, 64):
        b = min(a + 64, n)
        grids[a:b] = rng.random((b - a, *VOXEL_SHAPE), dtype=np.float32) < 0.15
    grids.flush()
    del grids


def make_sdf_cache(folder: Path, n: int, seed: int = 0) -> None:
    """Per shape ``pos_i.npy`` / ``neg_i.npy``: a sphere's samples, radius varying by shape."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        p = rng.uniform(-1, 1, (SDF_ROWS, 3)).astype(np.float32)
        d = np.linalg.norm(p, axis=1) - (0.4 + 0.2 * i / max(n - 1, 1))
        rows = np.concatenate([p, d[:, None].astype(np.float32)], axis=1)
        np.save(folder / f"pos_{i}.npy", rows[d > 0])
        np.save(folder / f"neg_{i}.npy", rows[d <= 0])


# ---------------------------------------------------------------- cases (child process)

def _mesh_case(name: str, mesh_path: str) -> dict:
    from shapes3d.geometry.io import load_mesh

    if name == "load":
        before = _status()
        _reset_peak()
        t = time.perf_counter()
        mesh = load_mesh(mesh_path)
        return {"before": before, "seconds": time.perf_counter() - t, "faces": len(mesh.faces)}
    mesh = load_mesh(mesh_path)
    before = _status()
    _reset_peak()
    t = time.perf_counter()
    if name.startswith("voxelize_solid_"):
        from shapes3d.geometry.voxelize import voxelize_solid

        out = voxelize_solid(mesh, resolution=int(name.rsplit("_", 1)[1]))
        extra = {"occupied": int(out.values.sum())}
    elif name.startswith("voxelize_surface_"):
        from shapes3d.geometry.voxelize import voxelize_surface

        out = voxelize_surface(mesh, resolution=int(name.rsplit("_", 1)[1]))
        extra = {"occupied": int(out.values.sum())}
    elif name == "sample_sdf_500k":
        from shapes3d.geometry.sampling import sample_sdf

        out = sample_sdf(mesh, seed=0)
        extra = {"samples": len(out.pos) + len(out.neg), "method": out.method}
    else:
        raise SystemExit(f"unknown case {name!r}")
    return {"before": before, "seconds": time.perf_counter() - t, **extra}


def _voxel_case(mode: str, cache: str, batch: int, steps: int, workdir: str) -> dict:
    import torch

    from shapes3d.classify.config import ClassifyConfig, ClassifyTrainConfig
    from shapes3d.classify.model import build_model
    from shapes3d.classify.trainer import train, train_step
    from shapes3d.data.voxel_dataset import GridStack, VoxelSet, apply_augment, augment_params, select_rotations

    torch.set_num_threads(1)
    big = np.load(cache, mmap_mode="c")
    n = len(big)
    # One memory-mapped array per shape, as build_voxel_set returns them from the cache files.
    grids = GridStack([big[i] for i in range(n)])
    labels = np.arange(n, dtype=np.int64) % 10
    cfg = ClassifyConfig(train=ClassifyTrainConfig(epochs=1, batch_size=batch, device="cpu"))
    before = _status()
    _reset_peak()
    t = time.perf_counter()
    if mode == "library":
        vs = VoxelSet(grids, labels, [Path(f"shape_{i}") for i in range(n)], [f"c{k}" for k in range(10)])
        train(cfg, vs, workdir)
    else:
        gen = torch.Generator().manual_seed(0)
        model = build_model(cfg, 10)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        labels_t = torch.from_numpy(labels)
        for _ in range(steps):  # the steps of train(), without its split, validation and checkpoints
            idx = torch.randint(0, n, (batch,), generator=gen)
            params = augment_params(batch, grids.shape[1], generator=gen, rotate=True, mirror=True, translate=2)
            g = torch.from_numpy(select_rotations(grids, idx.numpy(), params[:, 0].numpy()))
            params[:, 0] = 0
            train_step(model, opt, apply_augment(g, params, up_axis="z"), labels_t[idx])
    return {"before": before, "seconds": time.perf_counter() - t, "shapes": n,
            "data_mib": round(big.nbytes / 2**20, 1)}


def _sdf_case(mode: str, folder: str, n: int, shapes_per_batch: int, steps: int, workdir: str) -> dict:
    import torch

    from shapes3d.data.sdf_dataset import SDFDataset, ShapeSamples
    from shapes3d.deepsdf.config import DeepSDFConfig, DeepSDFModelConfig, SDFTrainConfig
    from shapes3d.deepsdf.trainer import build_codes, build_decoder, build_optimizer, sample_batch, train, train_step

    torch.set_num_threads(1)
    arrays = [(np.load(Path(folder) / f"pos_{i}.npy", mmap_mode="c"), np.load(Path(folder) / f"neg_{i}.npy", mmap_mode="c"))
              for i in range(n)]
    # A small decoder: the data set, not the network, is what this case is about.
    cfg = DeepSDFConfig(model=DeepSDFModelConfig(latent_size=64, hidden=128, layers=4, skip_at=(2,)),
                        train=SDFTrainConfig(epochs=1, shapes_per_batch=shapes_per_batch, device="cpu"))
    before = _status()
    _reset_peak()
    t = time.perf_counter()
    data = SDFDataset([ShapeSamples(p, q) for p, q in arrays])
    if mode == "library":
        train(cfg, data, workdir)
    else:
        decoder, codes = build_decoder(cfg), build_codes(cfg, n)
        opt = build_optimizer(cfg, decoder, codes)
        gen = torch.Generator().manual_seed(0)
        for step in range(steps):
            idx = torch.randint(0, n, (shapes_per_batch,), generator=gen)
            xyz, sdf = sample_batch(data, idx, cfg.train.samples_per_shape, seed=0, epoch=step)
            train_step(decoder, codes, opt, idx, xyz, sdf, t=cfg.train, epoch=1)
    return {"before": before, "seconds": time.perf_counter() - t, "shapes": n,
            "data_mib": round(sum(p.nbytes + q.nbytes for p, q in arrays) / 2**20, 1)}


def child(argv: list[str]) -> None:
    from shapes3d.utils.progress import set_progress_enabled

    global _ANON
    set_progress_enabled(False)
    anon = _ANON = _AnonPeak()
    kind = argv[0]
    if kind == "mesh":
        res = _mesh_case(argv[1], argv[2])
    elif kind == "voxel":
        res = _voxel_case(argv[1], argv[2], int(argv[3]), int(argv[4]), argv[5])
    else:
        res = _sdf_case(argv[1], argv[2], int(argv[3]), int(argv[4]), int(argv[5]), argv[6])
    peak_anon = anon.stop()
    after = _status()
    before = res.pop("before")
    res.update(peak=after["VmHWM"], case=after["VmHWM"] - before["VmRSS"], rss_before=before["VmRSS"],
               peak_anon=peak_anon, anon=after["RssAnon"], file=after["RssFile"])
    print("RESULT " + json.dumps(res))


# ---------------------------------------------------------------- driver

def run_case(label: str, args: list[str], rows: list[dict]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        rows.append({"name": label, "error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]})
        print(f"{label:<44} FAILED: {rows[-1]['error']}", flush=True)
        return
    res = json.loads(lines[-1][len("RESULT "):]) | {"name": label, "wall": time.perf_counter() - t,
                                                   "load": os.getloadavg()[0]}
    rows.append(res)
    print(f"{label:<44} peak {res['peak'] / GIB:5.2f} GiB  case +{res['case'] / GIB:5.2f} GiB  "
          f"peak anon {res['peak_anon'] / GIB:5.2f}  file {res['file'] / GIB:5.2f}  {res['seconds']:6.1f} s  "
          f"(load {res['load']:.1f})", flush=True)


def write_results(out: Path, meta: dict, rows: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [
        "# Peak memory (`benchmarks/bench_memory.py`)",
        "",
        f"Command: `{meta['command']}`; {meta['machine']}; load average {meta['load']}.",
        f"Mesh: {meta['mesh']['mesh']} ({meta['mesh']['faces']:,} faces, {meta['mesh']['vertices']:,} vertices, "
        f"watertight={meta['mesh']['watertight']}, {meta['mesh']['file_mib']} MiB binary PLY).",
        "",
        "`peak` = VmHWM while the case ran (libraries, inputs and file-backed pages included); `case` = what the",
        "operation added over the resident set before it; `peak anon` = highest RssAnon (private memory, sampled",
        "every 5 ms, same span); `file` = RssFile at the end (pages of memory-mapped caches: clean page cache, droppable).",
        "",
        "| case | data MiB | peak GiB | case GiB | peak anon GiB | file GiB | s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['name']} | {r.get('data_mib', '-')} | {r['peak'] / GIB:.2f} | {r['case'] / GIB:.2f} | {r['peak_anon'] / GIB:.2f} | "
                     f"{r['file'] / GIB:.2f} | {r['seconds']:.1f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--rewrite":  # regenerate the .md from a .json
        d = json.loads(Path(sys.argv[2]).read_text())
        write_results(Path(sys.argv[2]).with_suffix(""), d["meta"], d["rows"])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mesh", choices=["torus", "scan"], default="torus")
    ap.add_argument("--skip-mesh", action="store_true")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--voxel-shapes", type=int, default=500, help="N; the cases use N and 4N shapes")
    ap.add_argument("--sdf-shapes", type=int, default=16, help="N; the cases use N and 4N shapes")
    ap.add_argument("--out", default="benchmarks/results/memory")
    args = ap.parse_args()
    rows: list[dict] = []
    meta = {"command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "load": None, "mesh": {"mesh": "-", "faces": 0, "vertices": 0, "watertight": None, "file_mib": 0}}
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        tmp = Path(tmp)
        if not args.skip_mesh:
            mesh_path = tmp / "mesh.ply"
            meta["mesh"] = make_mesh(args.mesh, mesh_path)
            print(f"mesh: {meta['mesh']}", flush=True)
            for case in ("load", "voxelize_solid_64", "voxelize_solid_128", "voxelize_surface_128", "sample_sdf_500k"):
                run_case(case, ["mesh", case, str(mesh_path)], rows)
        if not args.skip_train:
            for n in (args.voxel_shapes, 4 * args.voxel_shapes):
                make_voxel_cache(tmp / f"voxels_{n}.npy", n)
            for n in (args.voxel_shapes, 4 * args.voxel_shapes):
                for batch in (32, 128):
                    run_case(f"voxel lazy steps N={n} batch={batch}",
                             ["voxel", "lazy", str(tmp / f"voxels_{n}.npy"), str(batch), "4", str(tmp / "run")], rows)
            for n in (args.voxel_shapes, 4 * args.voxel_shapes):
                run_case(f"voxel library train() 1 epoch N={n} batch=32",
                         ["voxel", "library", str(tmp / f"voxels_{n}.npy"), "32", "0", str(tmp / f"run_v{n}")], rows)
            for n in (args.sdf_shapes, 4 * args.sdf_shapes):
                make_sdf_cache(tmp / f"sdf_{n}", n)
                for spb in (4, 16):
                    run_case(f"sdf lazy steps N={n} shapes/batch={spb}",
                             ["sdf", "lazy", str(tmp / f"sdf_{n}"), str(n), str(spb), "3", str(tmp / "run")], rows)
                run_case(f"sdf library train() 1 epoch N={n} shapes/batch=4",
                         ["sdf", "library", str(tmp / f"sdf_{n}"), str(n), "4", "0", str(tmp / f"run_s{n}")], rows)
    meta["load"] = round(os.getloadavg()[0], 1)
    write_results(Path(args.out), meta, rows)
    print(f"wrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
