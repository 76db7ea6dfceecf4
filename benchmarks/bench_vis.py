"""Figures of the visualisation and view-consistent style jobs, each in one run, with its wall time.

    python benchmarks/bench_vis.py [--out runs/bench-vis] [--figures docs/figures] [--only invert classviz views]

1. Feature inversion (``shapes3d.style.inversion.invert``) of scikit-image's astronaut at 64 px from VGG16
   relu2_2, relu3_3, relu4_3, relu5_3: SSIM of each reconstruction to the input.
2. VoxNet class visualisation (``shapes3d.classify.visualize.classviz_voxnet``): a VoxNet trained for a few
   epochs on a small built-in dataset (``shapes3d.data.synth.write_dataset``), then one gradient-ascent
   occupancy field per built-in class; start and final probability of the class.
3. View-consistent style (``shapes3d.style.view_consistency.views``) on 8 renders of a built-in sofa: the
   warped difference between neighbouring views with the consistency term vs the same optimisation with
   gamma = 0 (the peer, run in this script), at matched style loss.

Real VGG weights where installed (``weights="auto"``), random ones otherwise (then the figures say so).
The classviz and style-views sheets are copied to ``--figures`` as PNG (downscaled under 200 KB if needed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from shapes3d.pretrained import find_vgg_weights


def _weights(arch: str) -> str:
    return "auto" if any(s.found for s in find_vgg_weights(arch)) else "random"


def _small_png(src: Path, dst: Path, limit: int = 200_000) -> Path:
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    img = Image.open(src).convert("RGB")
    while dst.stat().st_size > limit:
        img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.LANCZOS)
        img.save(dst, format="PNG", optimize=True)
    return dst


def bench_invert(out: Path, steps: int) -> dict:
    from shapes3d.style.inversion import invert
    from shapes3d.style.vis_config import InversionConfig

    cfg = InversionConfig(size=64, steps=steps, weights=_weights("vgg16"), device="cpu")
    t0 = time.perf_counter()
    r = invert("skimage:astronaut", out=out / "invert", cfg=cfg)
    return {"seconds": time.perf_counter() - t0, "weights": cfg.weights, "steps": steps, "ssim": r.ssim,
            "sheet": str(r.sheet)}


def bench_classviz(out: Path, per_class: int, epochs: int, steps: int) -> dict:
    from shapes3d.classify.config import ClassifyConfig
    from shapes3d.classify.jobs import train
    from shapes3d.classify.visualize import classviz_voxnet
    from shapes3d.config import load_config
    from shapes3d.data.synth import FAMILIES, write_dataset

    t0 = time.perf_counter()
    data = write_dataset(out / "synth", per_class=per_class, seed=0, families=FAMILIES, test_fraction=0.25,
                         resolution=48)
    t_data = time.perf_counter() - t0
    cfg = load_config(ClassifyConfig, "demo-voxnet", overrides=[f"train.epochs={epochs}", "data.rotations=4",
                                                                "train.device=\"cpu\""])
    t1 = time.perf_counter()
    job = train(cfg, data, out / "voxnet", cache=out / "cache", overwrite=True)
    t_train = time.perf_counter() - t1
    t2 = time.perf_counter()
    r = classviz_voxnet(job.best_path, out=out / "classviz", steps=steps)
    t_viz = time.perf_counter() - t2
    return {"seconds": time.perf_counter() - t0, "data_seconds": t_data, "train_seconds": t_train,
            "classviz_seconds": t_viz, "shapes": job.n_shapes, "epochs": epochs, "steps": steps,
            "train_acc_last": job.history[-1].get("train_acc"), "start_probs": r.start_probs,
            "final_probs": r.final_probs, "empty": r.empty, "sheet": str(r.sheet)}


def bench_views(out: Path, steps: int, size: int) -> dict:
    from shapes3d.data.synth import sample_shape
    from shapes3d.style.view_consistency import views
    from shapes3d.style.views_config import StyleViewsConfig

    mesh = sample_shape("sofa", np.random.default_rng(0)).mesh(resolution=64)
    cfg = StyleViewsConfig(views=8, size=size, steps=steps, weights=_weights("vgg19"), device="cpu")
    t0 = time.perf_counter()
    r = views(mesh, "skimage:coffee", out=out / "views", cfg=cfg)
    return {"seconds": time.perf_counter() - t0, "weights": cfg.weights, "steps": steps, "size": size,
            "gamma": cfg.consistency_weight, **r.metrics, "sheet": str(r.sheet)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-vis"))
    ap.add_argument("--figures", type=Path, default=Path("docs/figures"))
    ap.add_argument("--only", nargs="+", choices=("invert", "classviz", "views"),
                    default=["invert", "classviz", "views"])
    ap.add_argument("--invert-steps", type=int, default=60)
    ap.add_argument("--per-class", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--classviz-steps", type=int, default=120)
    ap.add_argument("--views-steps", type=int, default=60)
    ap.add_argument("--views-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = leave as is)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    t0 = time.perf_counter()
    if "invert" in args.only:
        r = results["invert"] = bench_invert(args.out, args.invert_steps)
        print(f"inversion ({r['weights']} VGG16, 64 px, {r['steps']} L-BFGS steps per layer) in {r['seconds']:.1f} s")
        print("| layer | SSIM to the input |\n|---|---|")
        for layer, s in r["ssim"].items():
            print(f"| {layer} | {s:.3f} |")
    if "classviz" in args.only:
        r = results["classviz"] = bench_classviz(args.out, args.per_class, args.epochs, args.classviz_steps)
        print(f"VoxNet classviz: {r['shapes']} training shapes, {r['epochs']} epochs in {r['train_seconds']:.1f} s, "
              f"{r['steps']} ascent steps per class in {r['classviz_seconds']:.1f} s (total {r['seconds']:.1f} s)")
        print("| class | p start | p final |\n|---|---|---|")
        for c, p in r["final_probs"].items():
            print(f"| {c} | {r['start_probs'][c]:.3f} | {p:.3f} |")
        _small_png(Path(r["sheet"]), args.figures / "classviz_voxnet.png")
    if "views" in args.only:
        r = results["views"] = bench_views(args.out, args.views_steps, args.views_size)
        c, p = r["consistent"], r["plain"]
        print(f"style views ({r['weights']} VGG19, 8 views of {r['size']} px, {r['steps']} L-BFGS steps per run) "
              f"in {r['seconds']:.1f} s; content warped difference {r['content_warped_difference']:.4g}")
        print("| run | style loss | warped difference | step |\n|---|---|---|---|")
        for name, row in ((f"gamma {c['gamma']:g}", c), ("gamma 0 (peer)", p)):
            print(f"| {name} | {row['matched_style']:.4g} | {row['matched_warped_difference']:.4g} | "
                  f"{row['matched_step']} |")
        print(f"ratio at matched style loss: {r['ratio_at_matched_style']:.3f}; returned (lowest-loss) iterates: "
              f"style {c['final_style']:.4g} "
              f"vs {p['final_style']:.4g}, warped difference {c['final_warped_difference']:.4g} vs "
              f"{p['final_warped_difference']:.4g}")
        _small_png(Path(r["sheet"]), args.figures / "style_views.png")
    print(f"total wall time {time.perf_counter() - t0:.1f} s")
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
