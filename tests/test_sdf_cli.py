"""DeepSDF end to end from the real config (shrunk): train, extract, fit (full and partial), interpolate, evaluate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from shapes3d.cli.main import main
from shapes3d.config import load_config
from shapes3d.deepsdf.config import DeepSDFConfig

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "deepsdf.toml"
SHRINK = ["model.hidden=64", "model.latent_size=16", "model.dropout=0.0", "train.epochs=40",
          "train.samples_per_shape=1024", "train.lr_decoder=0.003", "train.lr_codes=0.006",
          "samples.n_samples=8000", "samples.n_uniform=800", "train.device='cpu'"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def trained(tiny_synth, tmp_path_factory):
    run = tmp_path_factory.mktemp("sdfrun")
    cfg = load_config(DeepSDFConfig, CONFIG)
    assert cfg.model.latent_size == 256 and cfg.train.clamp == 0.1 and cfg.samples.n_samples == 500_000
    sets = [x for kv in SHRINK for x in ("--set", kv)]
    assert main(["-q", "sdf", "train", "--data", str(tiny_synth), "--out", str(run), "--cache",
                 str(run / "cache"), "--config", str(CONFIG), *sets]) == 0
    return run


def test_train_writes_checkpoint_log_and_curves(trained):
    for name in ("last.pt", "log.csv", "curves.png", "config.toml"):
        assert (trained / name).stat().st_size > 0
    rows = list(csv.DictReader(open(trained / "log.csv")))
    assert len(rows) == 40 and float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert "hidden = 64" in (trained / "config.toml").read_text()


def test_extract_fit_interpolate_evaluate(trained, tiny_synth, capsys):
    ck = trained / "last.pt"
    assert main(["-q", "sdf", "extract", str(ck), "ring_0001", "--resolution", "40", "--format", "obj"]) == 0
    assert (trained / "meshes" / "ring_0001.obj").exists()
    mesh = tiny_synth / "mug" / "test" / "mug_0005.off"
    fit = ["--set", "fit.iterations=40", "--set", "fit.restarts=2", "--set", "fit.samples_per_iter=2000"]
    assert main(["-q", "sdf", "fit", str(ck), str(mesh), "--resolution", "40", *fit]) == 0
    assert main(["-q", "sdf", "fit", str(ck), str(mesh), "--partial", "depth", "--resolution", "40", *fit]) == 0
    out = capsys.readouterr().out
    assert "fitted mug_0005:" in out and "fitted mug_0005-depth:" in out
    assert (trained / "fits" / "mug_0005.pt").exists() and (trained / "fits" / "mug_0005-depth.pt").exists()
    assert main(["-q", "sdf", "interpolate", str(ck), "ring_0001", str(trained / "fits" / "mug_0005.pt"),
                 "--steps", "3", "--resolution", "32"]) == 0
    assert (trained / "interp-ring_0001-mug_0005" / "strip.png").exists()
    assert main(["-q", "sdf", "evaluate", str(ck), "--resolution", "40", "--limit", "2", "--points", "4000"]) == 0
    summary = json.loads((trained / "evaluate" / "summary.json").read_text())
    assert summary["n"] == 2 and summary["chamfer_deepsdf_x1e3"]["mean"] > 0
    rows = list(csv.DictReader(open(trained / "evaluate" / "metrics.csv")))
    assert {"shape", "chamfer_deepsdf", "chamfer_deepsdf_x1e3", "normal_consistency"} <= set(rows[0])


def test_unknown_shape_is_a_clear_error(trained, capsys):
    assert main(["sdf", "extract", str(trained / "last.pt"), "nope"]) == 2
    assert "'nope' is neither a code file nor one of the" in capsys.readouterr().err


# ----------------------------------------------------------------------------- jobs on multi-view renders
VIEWS_SHRINK = ["render.size=16", "render.views=2", "render.max_steps=24", "render.silhouette_samples=6",
                "fit.steps=3", "fit.weights=random", "style.steps=2", "style.weights=random",
                "style.preserve_points=256", "style.style_size=32", "style.style_layers=['relu1_1', 'relu2_1']"]


@pytest.mark.slow
def test_fit_views_from_a_mesh_and_from_its_targets_folder_then_style_shape(trained, tiny_synth, tmp_path, capsys):
    ck = trained / "last.pt"
    sets = [x for kv in VIEWS_SHRINK for x in ("--set", kv)]
    mesh = tiny_synth / "mug" / "test" / "mug_0005.off"
    out = tmp_path / "fit"
    assert main(["-q", "sdf", "fit-views", str(ck), "--targets", str(mesh), "--out", str(out), "--resolution", "32",
                 *sets]) == 0
    for name in ("mug_0005.pt", "sheet.png", "loss.png", "log.csv", "config.toml", "targets/cameras.json",
                 "targets/silhouette_01.png", "targets/normals_00.png"):
        assert (out / name).stat().st_size > 0, name
    assert "size = 16" in (out / "config.toml").read_text()
    assert len(list(csv.DictReader(open(out / "log.csv")))) == 3
    again = tmp_path / "again"
    assert main(["-q", "sdf", "fit-views", str(ck), "--targets", str(out / "targets"), "--out", str(again),
                 "--resolution", "32", *sets]) == 0
    assert (again / "fit.pt").exists()  # the folder route names outputs after the run folder
    text = capsys.readouterr().out
    first, second = (float(line.split("loss ")[1].split(" ->")[0]) for line in text.splitlines()
                     if line.startswith("fitted "))
    assert first == pytest.approx(second, rel=0.02)  # targets read back from 8-bit PNGs: about the same start
    (out / "targets" / "sub").mkdir()  # a targets folder reached through "..": its name must not become a path
    assert main(["sdf", "fit-views", str(ck), "--targets", str(out / "targets" / "sub" / ".."), *sets]) == 2
    assert "fit-views: unsafe target name '..' for an output path" in capsys.readouterr().err

    styled = tmp_path / "styled"
    assert main(["-q", "style", "shape", str(ck), "--shape", "ring_0001", "--style", "skimage:brick", "--out",
                 str(styled), "--optimise", "decoder", "--resolution", "32", *sets]) == 0
    for name in ("sheet.png", "loss.png", "log.csv", "config.toml", "ring_0001-styled.pt"):
        assert (styled / name).stat().st_size > 0, name
    assert 'optimise = "decoder"' in (styled / "config.toml").read_text()
    assert "stylised ring_0001 (decoder)" in capsys.readouterr().out
    # the stylised decoder comes as a whole model that the other commands read
    from shapes3d.deepsdf.trainer import load_deepsdf

    source, tuned = load_deepsdf(ck), load_deepsdf(styled / "ring_0001-styled-model.pt")
    assert tuned.names == source.names and torch.equal(tuned.codes, source.codes)
    assert any(not torch.equal(a, b) for a, b in zip(tuned.decoder.state_dict().values(),
                                                     source.decoder.state_dict().values(), strict=True))
    assert main(["-q", "sdf", "extract", str(styled / "ring_0001-styled-model.pt"), "ring_0001", "--resolution",
                 "24", "--out", str(styled / "meshes")]) == 0


def test_render_a_training_shape_and_a_code_file_of_a_checkpoint(trained, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from shapes3d.deepsdf.trainer import load_deepsdf
    from shapes3d.engine.checkpoint import save_checkpoint

    ck = trained / "last.pt"
    model = load_deepsdf(ck, device="cpu")
    code_file = save_checkpoint(tmp_path / "code.pt", {"code": model.codes[1].cpu(), "offset": torch.zeros(3),
                                                       "scale": torch.tensor(1.0)})
    sheet = tmp_path / "sheet.png"
    assert main(["-q", "render", str(ck), "--shape", "0", "--code", str(code_file), "--views", "2", "--size", "24",
                 "--modes", "shaded", "silhouette", "--out", str(sheet)]) == 0
    assert "(4 rows x 2 views)" in capsys.readouterr().out
    img = np.asarray(Image.open(sheet).convert("L"))
    assert img.min() < 100  # something dark was drawn: the shapes' silhouettes
    assert main(["render", str(ck), "--out", str(sheet)]) == 2
    assert "needs --shape NAME_OR_INDEX or --code FILE" in capsys.readouterr().err
