"""Visualisation jobs: feature inversion, DeepDream (images and mesh renders), class / unit visualisation of VGG
and VoxNet, and the ``vis`` CLI. Tiny sizes; real VGG16 weights where installed, random ones otherwise."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from shapes3d.errors import Shapes3DError
from shapes3d.pretrained import find_vgg_weights, load_vgg
from shapes3d.style.vis_config import ClassVizConfig, DreamConfig, InversionConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# SHAPES3D_TEST_VGG=random runs the random-weight branch on a machine that has real weights.
WEIGHTS = os.environ.get("SHAPES3D_TEST_VGG") or ("auto" if any(s.found for s in find_vgg_weights("vgg16"))
                                                  else "random")
REAL = WEIGHTS != "random"  # random VGGs respond weakly to pixel changes: their checks are "rises", not "by a factor"


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return load_vgg("vgg16", weights=WEIGHTS, taps=("relu4_3",))


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    from shapes3d.style.inversion import as_image

    return as_image("skimage:astronaut", 32)


# ------------------------------------------------------------------ feature inversion
def test_tv_beta_matches_the_formula():
    from shapes3d.style.inversion import tv_beta

    assert float(tv_beta(torch.full((1, 3, 8, 8), 0.3))[0]) == 0.0
    x = torch.rand(2, 3, 6, 7, dtype=torch.float64)
    dx, dy = x[..., :-1, 1:] - x[..., :-1, :-1], x[..., 1:, :-1] - x[..., :-1, :-1]
    torch.testing.assert_close(tv_beta(x), (dx**2 + dy**2).flatten(1).mean(1))
    torch.testing.assert_close(tv_beta(x, beta=1.0), (dx**2 + dy**2 + 1e-8).sqrt().flatten(1).mean(1))


def test_invert_writes_sheet_losses_and_ssim(tmp_path, vgg, astronaut):
    from shapes3d.style.inversion import invert

    cfg = InversionConfig(size=32, steps=8, layers=("relu2_2", "relu3_3"), device="cpu")
    r = invert(astronaut, out=tmp_path, cfg=cfg, vgg=vgg)
    assert set(r.ssim) == {"relu2_2", "relu3_3"} and all(-1 <= v <= 1 for v in r.ssim.values())
    assert Image.open(r.sheet).size[0] == 3 * (32 + 2) + 2  # input + 2 reconstructions
    rows = r.losses_csv.read_text().splitlines()
    assert rows[0] == "layer,step,feature,tv,total" and len(rows) == 1 + 2 * 8
    for layer in ("relu2_2", "relu3_3"):
        totals = [float(line.split(",")[-1]) for line in rows[1:] if line.startswith(layer + ",")]
        assert min(totals) < 0.7 * totals[0], (layer, totals)
        assert (tmp_path / f"{layer}.png").is_file()
    assert r.losses_png.stat().st_size > 0 and (tmp_path / "config.toml").is_file()


# ------------------------------------------------------------------ DeepDream
def test_dream_amplifies_the_layer(tmp_path, vgg, astronaut):
    from shapes3d.style.dream import dream

    cfg = DreamConfig(size=32, octaves=2, steps=3, layer="relu3_3", device="cpu")
    r = dream(astronaut, out=tmp_path, cfg=cfg, vgg=vgg)
    assert r.objective_after > (1.5 if REAL else 1.02) * r.objective_before > 0
    assert Image.open(r.image).size == (32, 32) and Image.open(r.sheet).size[0] == 2 * 34 + 2
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 1 + 2 * 3


def test_dream_views_of_a_mesh(tmp_path, vgg):
    from shapes3d.style.dream import dream_views

    cfg = DreamConfig(size=32, octaves=1, steps=2, views=2, layer="relu3_3", device="cpu")
    r = dream_views(trimesh.creation.icosphere(subdivisions=2), out=tmp_path, cfg=cfg, vgg=vgg)
    assert len(r.images) == 2 and all(p.is_file() for p in r.images)
    assert all(b > a for a, b in zip(r.objective_before, r.objective_after))
    assert Image.open(r.sheet).size[0] == 2 * 34 + 2


# ------------------------------------------------------------------ VGG units and ImageNet classes
def test_vgg_unit_score_rises_and_regularisers_act(vgg):
    from shapes3d.style.classviz import ascend, high_frequency_energy, tap_net, unit_target

    net = tap_net(vgg, ("conv3_3", "relu3_3"))
    base = ClassVizConfig(size=32, steps=12, layer="relu3_3", blur_every=0, device="cpu")
    target = unit_target(net, "relu3_3", 5)
    plain = ascend(target, base, device=torch.device("cpu"))
    assert plain.final_score > 0 and plain.rise > 3, (plain.start_score, plain.final_score)
    blurred = ascend(target, ClassVizConfig(**{**base.__dict__, "blur_every": 1, "blur_sigma": 1.0}),
                     device=torch.device("cpu"))
    assert high_frequency_energy(blurred.offset) < 0.7 * high_frequency_energy(plain.offset)
    decayed = ascend(target, ClassVizConfig(**{**base.__dict__, "l2": 5.0}), device=torch.device("cpu"))
    assert float(decayed.offset.norm()) < 0.8 * float(plain.offset.norm())
    clipped = ascend(target, ClassVizConfig(**{**base.__dict__, "clip_small": 0.5}), device=torch.device("cpu"))
    assert float((clipped.offset.norm(dim=1) == 0).float().mean()) >= 0.45


def test_imagenet_head_from_a_torchvision_layout_file(tmp_path, vgg):
    from shapes3d.style.classviz import classviz_vgg, load_vgg_classifier

    g = torch.Generator().manual_seed(0)
    state = dict(vgg.state_dict())  # the features (all 13 convs), then a small random head
    hidden, k = 16, 10  # torchvision: 4096, 4096, 1000; shapes are read from the file
    for name, shape in (("classifier.0", (hidden, 25088)), ("classifier.3", (hidden, hidden)),
                        ("classifier.6", (k, hidden))):
        state[f"{name}.weight"] = torch.randn(*shape, generator=g) * 0.05
        state[f"{name}.bias"] = torch.zeros(shape[0])
    path = tmp_path / "vgg16-tiny-head.pth"
    torch.save(state, path)
    model = load_vgg_classifier(path)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        f = torch.nn.functional.adaptive_avg_pool2d(model.features(x)["pool5"], 7).flatten(1)
        h = torch.relu(f @ state["classifier.0.weight"].T)
        h = torch.relu(h @ state["classifier.3.weight"].T)
        torch.testing.assert_close(model(x), h @ state["classifier.6.weight"].T)
    r = classviz_vgg(out=tmp_path / "cls", cfg=ClassVizConfig(size=32, steps=10, lr=0.1, classes=(3,), classifier=str(path),
                                                              device="cpu"))
    start, final = r.start_scores["class3"], r.final_scores["class3"]
    assert r.mode == "classes" and final > start + (0.25 if REAL else 0.002) * abs(start), (start, final)
    with pytest.raises(Shapes3DError, match="classifier"):
        classviz_vgg(out=tmp_path / "x", cfg=ClassVizConfig(classes=(3,), device="cpu"))


def test_vgg_units_job_writes_a_sheet(tmp_path, vgg):
    from shapes3d.style.classviz import classviz_vgg

    r = classviz_vgg(out=tmp_path, cfg=ClassVizConfig(size=32, steps=4, layer="relu2_2", channels=(0, 7),
                                                      device="cpu"), vgg=vgg)
    assert r.mode == "units" and set(r.final_scores) == {"relu2_2:0", "relu2_2:7"}
    assert (tmp_path / "classviz.png").is_file() and (tmp_path / "relu2_2-7.png").is_file()
    with pytest.raises(Shapes3DError, match="out of range"):
        classviz_vgg(out=tmp_path, cfg=ClassVizConfig(size=32, steps=1, layer="relu2_2", channels=(128,),
                                                      device="cpu"), vgg=vgg)


# ------------------------------------------------------------------ VoxNet classes
@pytest.fixture(scope="module")
def voxnet_checkpoint(tiny_synth, tmp_path_factory) -> Path:
    """A VoxNet trained for one epoch on the built-in dataset (3 classes)."""
    from shapes3d.classify.config import ClassifyConfig
    from shapes3d.classify.trainer import train
    from shapes3d.config import load_config
    from shapes3d.data.discovery import discover
    from shapes3d.data.voxel_dataset import build_voxel_set

    tmp = tmp_path_factory.mktemp("voxnet")
    cfg = load_config(ClassifyConfig, CONFIGS / "voxnet.toml",
                      overrides=["data.rotations=1", "train.batch_size=4", "train.epochs=1", "train.device='cpu'",
                                 "train.val_fraction=0.0"])
    data, _ = build_voxel_set(discover(tiny_synth).filter(split="train").entries, cfg.data, cache_dir=tmp / "c")
    return train(cfg, data, tmp / "run").best_path


def test_voxnet_classviz_raises_every_class_score(tmp_path, voxnet_checkpoint):
    from shapes3d.classify.visualize import classviz_voxnet

    r = classviz_voxnet(voxnet_checkpoint, out=tmp_path, steps=30, views=2, size=64)
    assert r.classes == ["mug", "ring", "table"]
    for c in r.classes:
        assert r.final_scores[c] > r.start_scores[c] + 2, (c, r.start_scores[c], r.final_scores[c])
        assert r.final_probs[c] > 2 * r.start_probs[c], (c, r.start_probs[c], r.final_probs[c])
    assert Image.open(r.sheet).size[0] == 3 * (64 + 2) + 2  # 2 renders + the slice mosaic
    for c in r.classes:
        assert np.load(tmp_path / f"{c}.npy").shape == (32, 32, 32)
        assert (tmp_path / f"{c}-slices.png").is_file() and (c in r.empty or r.meshes[c].is_file())
    assert len((tmp_path / "scores.csv").read_text().splitlines()) == 4
    with pytest.raises(Shapes3DError, match="unknown class"):
        classviz_voxnet(voxnet_checkpoint, out=tmp_path, classes=["sofa"], steps=1)


def test_voxnet_regularisers_act_as_documented(voxnet_checkpoint):
    from shapes3d.classify.visualize import _load_classifier, ascend_class, field_mesh, high_frequency_energy3d

    model, _, _ = _load_classifier(voxnet_checkpoint, "cpu")
    plain = ascend_class(model, 0, steps=20, blur_every=0)
    blurred = ascend_class(model, 0, steps=20, blur_every=1, blur_sigma=1.0)
    assert high_frequency_energy3d(blurred.field) < 0.7 * high_frequency_energy3d(plain.field)
    decayed = ascend_class(model, 0, steps=20, blur_every=0, l2=5.0)
    assert float(decayed.field.norm()) < 0.8 * float(plain.field.norm())
    clipped = ascend_class(model, 0, steps=20, blur_every=0, clip_small=0.3)
    assert float(clipped.field[clipped.field > 0].min()) >= 0.3  # the clip is the last operation of a step
    # the iso-surface of a ball-shaped field is a closed sphere-like mesh
    ax = np.linspace(-1, 1, 32)
    ball = (np.linalg.norm(np.stack(np.meshgrid(ax, ax, ax, indexing="ij")), axis=0) < 0.6).astype(float)
    ext = field_mesh(ball)
    assert not ext.empty and ext.mesh.is_watertight
    assert math.isclose(np.linalg.norm(ext.mesh.vertices, axis=1).mean(), 0.6, abs_tol=0.07)


# ------------------------------------------------------------------ the CLI
def _parse(argv):
    from shapes3d.cli import vis

    parser = argparse.ArgumentParser()
    vis.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_dream_invert_and_argument_errors(tmp_path, capsys):
    args = _parse(["vis", "dream", "skimage:astronaut", "--size", "32", "--octaves", "1", "--steps", "1",
                   "--layer", "relu2_2", "--weights", "random", "--out", str(tmp_path / "d"), "--set",
                   "device='cpu'"])
    assert args.handler(args) == 0
    assert "1/2 mean f^2" in capsys.readouterr().out and (tmp_path / "d" / "dream.png").is_file()
    args = _parse(["vis", "invert", "skimage:astronaut", "--layer", "relu2_2", "--size", "32", "--steps", "2",
                   "--weights", "random", "--out", str(tmp_path / "i"), "--set", "device='cpu'"])
    assert args.handler(args) == 0
    assert "relu2_2" in capsys.readouterr().out and (tmp_path / "i" / "inversion.png").is_file()
    for argv in (["vis", "dream"], ["vis", "classviz"], ["vis", "classviz", "x.pt", "--vgg"]):
        args = _parse(argv)
        with pytest.raises(Shapes3DError, match="exactly one"):
            args.handler(args)
