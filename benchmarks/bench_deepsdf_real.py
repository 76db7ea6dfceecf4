"""Real-data DeepSDF benchmark: train on real meshes, then representation, full fit and partial fit.

    python benchmarks/bench_deepsdf_real.py [--preset quick|paper|smoke] [--set key=value ...]
                                            [--tag NAME] [--cache DIR] [--runs DIR] [--results DIR]

One combined auto-decoder run (one decoder, one code per shape) on

* 8 watertight meshes of ``classic_scans`` (training) and 2 more held out, chosen so that no
  held-out mesh is a remesh of a training mesh (the set holds two bunnies, two fandisks and
  two horses; only one of each is used);
* a SHREC'11 subset from ``shrec11_meshcnn``: 2 classes x 4 meshes, the first 3 of each
  class's ``train`` split for training and the first of its ``test`` split held out.

Steps: SDF sampling (DeepSDF recipe, content-keyed cache) -> training (resumable: re-running
the same command continues from the run folder's ``last.pt``) -> per training shape, its
learned code extracted and compared with its mesh (representation) -> per held-out shape, a
new code fitted with the decoder frozen, from its full SDF samples and from one depth view
(partial), extracted and compared -> one 256^3 coarse-to-fine extraction of a trained code,
timed. Metrics are those of ``shapes3d sdf evaluate``: in the unit-sphere frame of the
DeepSDF normalisation, 30 000 surface points per mesh, Chamfer in the DeepSDF convention
(squared distances, means summed) x10^3, F-score at 0.01 and normal consistency.

Presets (``--set`` overrides apply on top, as in ``shapes3d sdf train``):

* ``paper``: ``configs/deepsdf.toml`` unchanged (8 x 512, latent 256, 2000 epochs x 16 384
  samples per shape, fits of 800 iterations x 8000 samples, 3 restarts), metrics at 256^3.
  Meant for a GPU.
* ``quick``: the same architecture family (8 layers, skip at 4, weight norm, dropout 0.2)
  at half width (hidden 256, latent 128: the skip layer needs hidden > latent + 3), 300
  epochs x 4096 samples per shape (learning rates halved every 75 epochs, code regulariser
  ramp 15 epochs: the paper's schedule scaled by 300/2000), fits of 300 iterations x 2048
  samples (rate drop at 200), 2 restarts, metrics at 128^3. 63 minutes on one thread of a
  shared 2-core CPU (load 4-7).
* ``fast``: ``configs/deepsdf-fast.toml`` (positional encoding of xyz at 2 frequencies, one
  shape per step, warm-up and cosine learning rates, decoder rate 1e-3; see that file) on the
  quick preset's network, samples (300 epochs x 4096 per shape), fits and metrics: the same
  samples as ``quick`` in 4 200 steps instead of 1 200, so about its CPU time.
* ``smoke``: a tiny network and a few steps, to check the script end to end; use it with
  ``--eval-limit 1`` (~2 minutes): the untrained network's meshes make each metric row slow.

Writes ``benchmarks/results/deepsdf_real[_<preset>][_<tag>].{json,md}`` (no suffix for
``quick``) after every stage, so an interrupted run still leaves what it measured. Wall and CPU time
(``time.process_time()`` of the process, i.e. of its one torch thread plus Python) are recorded per stage.
Data are found through ``shapes3d.utils.io.data_root()``. Timings depend on the machine and
on what else runs on it; the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import trimesh

from shapes3d.config import config_to_dict, load_config
from shapes3d.data.sdf_dataset import build_sdf_dataset
from shapes3d.deepsdf.config import DeepSDFConfig
from shapes3d.deepsdf.fitting import fit_code
from shapes3d.deepsdf.reconstruction import depth_view_observation, extract_shape, reconstruction_metrics
from shapes3d.deepsdf.trainer import load_deepsdf, train
from shapes3d.geometry.io import load_mesh
from shapes3d.geometry.normalize import Transform
from shapes3d.utils.io import atomic_write_text, data_root
from shapes3d.utils.progress import set_progress_enabled

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
log = logging.getLogger("bench_deepsdf_real")

# classic_scans (paths relative to the folder; all watertight in its index.csv). Training: varied
# scans (figures, animals, mechanical parts, genus > 0). Held out: a cow (the training set has a
# horse and an elephant) and the armadillo (it has humanoid homer and max). Duplicates avoided:
# libigl/bunny.off is in, quartet/bunny_watertight.obj out; fandisk and common3d/horse.ply out.
CLASSIC_TRAIN = ["common3d/cheburashka.obj", "common3d/homer.obj", "common3d/rocker-arm.obj", "libigl/bunny.off",
                 "libigl/decimated-max.obj", "libigl/elephant.obj", "libigl/fertility.off",
                 "libigl/horse_quad.obj"]
CLASSIC_HELD_OUT = ["quartet/cow.obj", "libigl/armadillo.obj"]
# SHREC'11 classes: non-rigid poses of one character each (the point of the set).
SHREC_CLASSES = ["man", "camel"]
SHREC_TRAIN_PER_CLASS = 3

PAPER_CHAMFER_X1E3 = {"chairs": 0.204, "planes": 0.143, "sofas": 0.132}  # DeepSDF Table 3, test-set mean

QUICK_SIZE = ["model.hidden=256", "model.latent_size=128"]  # the quick presets' network
QUICK_FIT = ["fit.iterations=300", "fit.lr_drop_at=200", "fit.samples_per_iter=2048", "fit.restarts=2"]
PRESETS: dict[str, dict] = {
    "paper": {"overrides": [], "metric_resolution": 256, "timing_resolution": 256},
    "quick": {
        "overrides": [*QUICK_SIZE, "train.epochs=300", "train.samples_per_shape=4096", "train.lr_interval=75",
                      "train.code_reg_ramp=15", "train.checkpoint_every=25", *QUICK_FIT],
        "metric_resolution": 128, "timing_resolution": 256,
    },
    # configs/deepsdf-fast.toml's recipe on the quick network, fits and metrics, within quick's CPU time
    "fast": {
        "config": "deepsdf-fast.toml",
        "overrides": [*QUICK_SIZE, "train.epochs=300", "train.samples_per_shape=4096", "train.code_reg_ramp=15",
                      "train.warmup_epochs=15", "train.checkpoint_every=25", *QUICK_FIT],
        "metric_resolution": 128, "timing_resolution": 256,
    },
    "smoke": {
        "overrides": ["model.hidden=64", "model.latent_size=16", "train.epochs=2", "train.samples_per_shape=512",
                      "train.checkpoint_every=1", "fit.iterations=5", "fit.lr_drop_at=3",
                      "fit.samples_per_iter=512", "fit.restarts=1"],
        "metric_resolution": 32, "timing_resolution": 64,
    },
}


def select_shapes(root: Path) -> list[dict]:
    """The shapes of the run: dicts with path, label, set (classic/shrec11) and role (train/held_out)."""
    out = []
    scans = root / "classic_scans"
    for rel in CLASSIC_TRAIN + CLASSIC_HELD_OUT:
        out.append({"path": str(scans / rel), "label": Path(rel).stem, "set": "classic",
                    "role": "train" if rel in CLASSIC_TRAIN else "held_out"})
    shrec = root / "shrec11_meshcnn"
    for cls in SHREC_CLASSES:
        train_files = sorted((shrec / cls / "train").glob("*.obj"))[:SHREC_TRAIN_PER_CLASS]
        test_files = sorted((shrec / cls / "test").glob("*.obj"))[:1]
        for p, role in [(p, "train") for p in train_files] + [(p, "held_out") for p in test_files]:
            out.append({"path": str(p), "label": f"{cls}/{p.stem}", "set": "shrec11", "role": role})
    missing = [s["path"] for s in out if not Path(s["path"]).is_file()]
    if missing:
        raise FileNotFoundError(f"benchmark meshes not found: {missing}")
    return out


def _metrics_row(shape: dict, mode: str, pred: trimesh.Trimesh | None, t: Transform, *, seconds: dict,
                 reason: str = "") -> dict:
    row = {"shape": shape["label"], "set": shape["set"], "mode": mode, **seconds}
    if pred is None:
        row["error"] = reason
        return row
    m = reconstruction_metrics(pred, load_mesh(shape["path"]), t)
    row.update({k: float(v) for k, v in m.items() if np.isscalar(v)})
    row["faces"] = len(pred.faces)
    return row


def _summaries(rows: list[dict]) -> list[dict]:
    keys = ("chamfer_deepsdf_x1e3", "fscore@0.01", "normal_consistency")
    out = []
    for mode in ("representation", "fit_full", "fit_partial"):
        for subset in ("classic", "shrec11", "all"):
            sel = [r for r in rows if r["mode"] == mode and (subset == "all" or r["set"] == subset)]
            if not sel:
                continue
            s = {"mode": mode, "set": subset, "n": len(sel), "n_failed": sum("error" in r for r in sel)}
            for k in keys:
                v = np.asarray([r[k] for r in sel if k in r], dtype=float)
                s[k] = float(v.mean()) if len(v) else None
                s[k + "_median"] = float(np.median(v)) if len(v) else None
            out.append(s)
    return out


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def write_results(res: dict, stem: Path) -> None:
    res["summary"] = _summaries(res["rows"])
    atomic_write_text(stem.with_suffix(".json"), json.dumps(res, indent=1, default=float))
    lines = [f"# DeepSDF on real meshes (`{res['command']}`)", "",
             f"Preset `{res['preset']}` ({'complete' if res['complete'] else 'INCOMPLETE: stages done: ' + ', '.join(res['stages_done'])}). "
             f"Network: {res['network']}. Training: {res.get('train_summary', 'not run')}.", "",
             "Metrics in the unit-sphere frame (DeepSDF normalisation), 30 000 surface points per mesh, "
             f"extraction at {res['metric_resolution']}^3. Chamfer: DeepSDF convention x10^3 (lower is better); "
             "F@0.01: F-score at distance 0.01; NC: normal consistency. For context, DeepSDF's ShapeNet test-set "
             "mean Chamfer x10^3 (full fit, 8 x 512 network, 2000 epochs on thousands of shapes per class): "
             + ", ".join(f"{k} {v}" for k, v in PAPER_CHAMFER_X1E3.items()) + ".", "",
             "| mode | set | n | mean Chamfer x1e3 | median | mean F@0.01 | mean NC |", "|---|---|---|---|---|---|---|"]
    for s in res["summary"]:
        lines.append(f"| {s['mode']} | {s['set']} | {s['n'] - s['n_failed']}/{s['n']} | "
                     f"{_fmt(s['chamfer_deepsdf_x1e3'])} | {_fmt(s['chamfer_deepsdf_x1e3_median'])} | "
                     f"{_fmt(s['fscore@0.01'])} | {_fmt(s['normal_consistency'])} |")
    lines += ["", "Per shape (representation: the learned training code; fit_full: a new code from the held-out "
              "mesh's full SDF samples; fit_partial: from one depth view):", "",
              "| shape | set | mode | Chamfer x1e3 | F@0.01 | NC | fit s | extract s |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['shape']} | {r['set']} | {r['mode']} | failed: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['shape']} | {r['set']} | {r['mode']} | {r['chamfer_deepsdf_x1e3']:.3f} | "
                     f"{r['fscore@0.01']:.3f} | {r['normal_consistency']:.3f} | "
                     f"{_fmt(r.get('fit_seconds'), 1) if 'fit_seconds' in r else '-'} | {r['extract_seconds']:.1f} |")
    ex = res.get("extraction_timing")
    if ex:
        lines += ["", f"Extraction timing: one {ex['resolution']}^3 coarse-to-fine extraction of training code "
                      f"`{ex['shape']}` with the benchmark's network ({ex['decoder_parameters']:,} parameters, "
                      f"{res['network']}): {ex['seconds']:.1f} s, {ex['n_evaluated']:,} SDF evaluations "
                      f"({ex['evaluations_per_second']:.0f}/s), {ex['faces']:,} faces."]
    st, cpu = res["stage_seconds"], res.get("stage_cpu_seconds", {})
    lines += ["", "Wall time per stage (s): " + ", ".join(f"{k} {v:.0f}" for k, v in st.items())
              + f"; total {res.get('wall_seconds', sum(st.values())):.0f} s with {res['torch_threads']} torch "
              f"thread(s), load average at start {res['load_start']}, at end {res.get('load_end', 'n/a')}.",
              "", "CPU time of the process per stage (s, `time.process_time()`): "
              + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items())
              + f"; total {res.get('cpu_seconds', sum(cpu.values())):.0f} s.", ""]
    atomic_write_text(stem.with_suffix(".md"), "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override on top of the preset (repeatable), e.g. --set train.epochs=100")
    ap.add_argument("--tag", default="", help="suffix of the run folder and results files")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("SHAPES3D_CACHE", "/tmp/deepsdf_real/cache")),
                    help="SDF sample cache (default /tmp/deepsdf_real/cache or $SHAPES3D_CACHE)")
    ap.add_argument("--runs", type=Path, default=Path("/tmp/deepsdf_real/runs"), help="parent of the run folder")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the .json and .md go")
    ap.add_argument("--eval-limit", type=int, default=None, metavar="N",
                    help="evaluate only the first N shapes of each stage (for checking the script)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    set_progress_enabled(False)  # the log is read from a file

    root = data_root()
    if not (root / "classic_scans").is_dir() or not (root / "shrec11_meshcnn").is_dir():
        print(f"data not found: expected classic_scans/ and shrec11_meshcnn/ under {root} (set SHAPES3D_DATA_ROOT)",
              file=sys.stderr)
        return 2
    preset = PRESETS[args.preset]
    overrides = [*preset["overrides"], *args.overrides]
    cfg = load_config(DeepSDFConfig, REPO / "configs" / preset.get("config", "deepsdf.toml"), overrides=overrides)
    name = "deepsdf_real" + ("" if args.preset == "quick" else f"_{args.preset}") + (f"_{args.tag}" if args.tag
                                                                                        else "")
    run_dir = args.runs / name
    stem = args.results / name
    args.results.mkdir(parents=True, exist_ok=True)
    shapes = select_shapes(root)
    train_shapes = [s for s in shapes if s["role"] == "train"]
    held_out = [s for s in shapes if s["role"] == "held_out"]
    m = cfg.model
    cmd = "python benchmarks/bench_deepsdf_real.py --preset " + args.preset + "".join(
        f" --set {o}" for o in args.overrides) + (f" --tag {args.tag}" if args.tag else "") + (
        f" --eval-limit {args.eval_limit}" if args.eval_limit else "")
    res: dict = {
        "command": cmd, "preset": args.preset, "overrides": overrides, "config": config_to_dict(cfg),
        "network": f"{m.layers} x {m.hidden}, latent {m.latent_size}, skip at {list(m.skip_at)}, "
                   f"weight norm {m.weight_norm}, dropout {m.dropout}"
                   + (f", xyz positional encoding {m.pe_frequencies} frequencies" if m.pe_frequencies else ""),
        "metric_resolution": preset["metric_resolution"], "data_root": str(root),
        "shapes": [{k: (str(Path(v).relative_to(root)) if k == "path" else v) for k, v in s.items()} for s in shapes],
        "paper_chamfer_x1e3_shapenet": PAPER_CHAMFER_X1E3, "rows": [], "stage_seconds": {}, "stage_cpu_seconds": {}, "stages_done": [],
        "complete": False, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_start": [round(x, 2) for x in os.getloadavg()],
    }
    wall0, cpu0 = time.perf_counter(), time.process_time()
    stage_cpu0 = [cpu0]

    def stage_done(stage: str, t0: float) -> None:
        res["stage_seconds"][stage] = time.perf_counter() - t0
        res["stage_cpu_seconds"][stage] = time.process_time() - stage_cpu0[0]
        stage_cpu0[0] = time.process_time()
        res["stages_done"].append(stage)
        res["wall_seconds"] = time.perf_counter() - wall0
        res["cpu_seconds"] = time.process_time() - cpu0
        write_results(res, stem)
        log.info("stage %s done in %.0f s; results in %s.{json,md}", stage, res["stage_seconds"][stage], stem)

    # 1. SDF samples (the held-out shapes' full samples are the observations of the full fit).
    t0 = time.perf_counter()
    train_data, rep = build_sdf_dataset([s["path"] for s in train_shapes], cfg.samples, cache_dir=args.cache)
    held_data, rep2 = build_sdf_dataset([s["path"] for s in held_out], cfg.samples, cache_dir=args.cache)
    if len(train_data) != len(train_shapes) or len(held_data) != len(held_out):
        raise RuntimeError(f"sampling skipped meshes: {rep.skipped + rep2.skipped}")
    res["sampling"] = {"computed": rep.computed + rep2.computed, "cached": rep.cached + rep2.cached}
    stage_done("sampling", t0)

    # 2. Training (resumes from run_dir/last.pt when a previous call was interrupted).
    t0 = time.perf_counter()
    result = train(cfg, train_data, run_dir, resume=(run_dir / "last.pt").is_file())
    hist = result.history
    rate = [h["samples_per_s"] for h in hist]
    res["train"] = {"epochs": len(hist), "final_loss": hist[-1]["train_loss"], "final_sdf_loss": hist[-1]["train_sdf"],
                    "epoch_seconds_total": sum(h["seconds"] for h in hist),
                    "samples_per_s_median": float(np.median(rate)), "samples_per_shape_per_epoch":
                    cfg.train.samples_per_shape, "n_shapes": len(train_data), "run_dir": str(run_dir)}
    res["train_summary"] = (f"{len(train_data)} shapes, {len(hist)} epochs x {cfg.train.samples_per_shape} samples "
                            f"per shape in {res['train']['epoch_seconds_total']:.0f} s "
                            f"(median {res['train']['samples_per_s_median']:.0f} samples/s), final loss "
                            f"{hist[-1]['train_loss']:.5f}")
    stage_done("training", t0)

    model = load_deepsdf(result.last_path, device=cfg.train.device)
    decoder = model.decoder
    res_m = preset["metric_resolution"]

    # 3. Representation: each training shape's learned code.
    t0 = time.perf_counter()
    for k, s in enumerate(train_shapes[: args.eval_limit]):
        t = Transform(tuple(model.offsets[k].tolist()), float(model.scales[k]))
        ext = extract_shape(decoder, model.codes[k], resolution=res_m, transform=t)
        row = _metrics_row(s, "representation", None if ext.empty else ext.mesh, t,
                           seconds={"extract_seconds": ext.seconds}, reason=ext.reason)
        res["rows"].append(row)
        log.info("representation %s: Chamfer x1e3 %s", s["label"], _fmt(row.get("chamfer_deepsdf_x1e3")))
    stage_done("representation", t0)

    # 4. Held-out shapes: full fit from their SDF samples, partial fit from one depth view.
    fit_kw = {k: getattr(cfg.fit, k) for k in ("iterations", "lr", "lr_drop_at", "lr_drop_factor", "samples_per_iter",
                                              "restarts", "init_std", "seed")}
    fit_kw.update(clamp=cfg.train.clamp, code_reg=cfg.train.code_reg)
    for mode in ("fit_full", "fit_partial"):
        t0 = time.perf_counter()
        for k, s in enumerate(held_out[: args.eval_limit]):
            t = Transform(held_data.offsets[k].tolist(), float(held_data.scales[k]))
            if mode == "fit_full":
                obs = (held_data.pos[k].numpy(), held_data.neg[k].numpy())
            else:
                gt = load_mesh(s["path"])
                obs = depth_view_observation(trimesh.Trimesh(t.apply(gt.vertices), gt.faces, process=False),
                                             seed=cfg.fit.seed)
            f0 = time.perf_counter()
            fit = fit_code(decoder, obs, **fit_kw)
            fit_s = time.perf_counter() - f0
            ext = extract_shape(decoder, fit.code, resolution=res_m, transform=t)
            row = _metrics_row(s, mode, None if ext.empty else ext.mesh, t, reason=ext.reason,
                               seconds={"fit_seconds": fit_s, "extract_seconds": ext.seconds})
            row["fit_loss"] = fit.loss
            row["fit_restart_losses"] = fit.restart_losses
            if mode == "fit_partial":
                row["observations"] = int(len(obs.points))
            res["rows"].append(row)
            log.info("%s %s: Chamfer x1e3 %s (fit %.0f s)", mode, s["label"], _fmt(row.get("chamfer_deepsdf_x1e3")),
                     fit_s)
        stage_done(mode, t0)

    # 5. One coarse-to-fine extraction at the timing resolution, of the first training code.
    t0 = time.perf_counter()
    s0 = train_shapes[0]
    ext = extract_shape(decoder, model.codes[0], resolution=preset["timing_resolution"], transform=None)
    res["extraction_timing"] = {"shape": s0["label"], "resolution": preset["timing_resolution"],
                                "seconds": ext.seconds, "n_evaluated": ext.n_evaluated,
                                "evaluations_per_second": ext.n_evaluated / ext.seconds,
                                "faces": len(ext.mesh.faces), "decoder_parameters":
                                sum(p.numel() for p in decoder.parameters())}
    log.info("%d^3 extraction: %.1f s, %d evaluations", preset["timing_resolution"], ext.seconds, ext.n_evaluated)
    res["complete"] = True
    res["load_end"] = [round(x, 2) for x in os.getloadavg()]
    stage_done("extraction_timing", t0)
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
