"""DeepSDF end to end from the real config (shrunk): train, extract, fit (full and partial), interpolate, evaluate."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from shapes3d.cli.main import main
from shapes3d.config import load_config
from shapes3d.training.sdf_config import DeepSDFConfig

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "deepsdf.toml"
SHRINK = ["model.hidden=64", "model.latent_size=16", "model.dropout=0.0", "train.epochs=40",
          "train.samples_per_shape=1024", "train.lr_decoder=0.003", "train.lr_codes=0.006",
          "samples.n_samples=8000", "samples.n_uniform=800", "train.device='cpu'"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add overhead
    yield
    torch.set_num_threads(n)


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
