"""The shapes3d command: help, info, data synth/discover/preprocess end to end, errors to the user."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from shapes3d.cli.main import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("info", "data", "classify", "demo"):
        assert cmd in out
    with pytest.raises(SystemExit):
        main(["classify", "train", "--help"])
    out = capsys.readouterr().out
    assert "train.epochs" in out and "Training epochs." in out  # config keys with their docs


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("torch", "open3d", "device", "data root", "vgg16", "vgg19"):
        assert key in out


def test_console_script_entry_point():
    exe = shutil.which("shapes3d", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe, "console script 'shapes3d' not installed"
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("shapes3d ")


def test_data_synth_discover_preprocess(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["-q", "data", "synth", "--out", str(out), "--per-class", "2", "--set", "families=['ring', 'mug']",
                 "--set", "resolution=32"]) == 0
    assert (out / "manifest.csv").exists() and (out / "config.toml").exists()
    assert 'families = ["ring", "mug"]' in (out / "config.toml").read_text()
    # a corrupt file in the dataset is skipped and reported; the rest completes
    bad = out / "ring" / "train" / "ring_0099.off"
    bad.write_text("OFF\n10 10 0\n1 2 3\n")
    capsys.readouterr()
    assert main(["-q", "data", "discover", str(out), "--out", str(tmp_path / "m.csv")]) == 0
    assert "5 shapes, 2 classes" in capsys.readouterr().out
    cache = tmp_path / "cache"
    args = ["-q", "data", "preprocess", str(out), "--out", str(cache), "--set", "rotations=1"]
    assert main(args) == 1  # a batch job with a skipped input: done, reported, exit 1
    captured = capsys.readouterr()
    text = captured.out
    assert "1 of 5 inputs skipped" in captured.err
    assert "4 computed, 0 cached, 1 skipped" in text
    assert f"skipped: CorruptFileError: {bad}: truncated: header declares 10 vertices" in text
    report = json.loads((cache / "report.json").read_text())
    assert len(report["skipped"]) == 1
    assert main(args) == 1  # re-run: everything cached, the bad file is tried again
    assert "0 computed, 4 cached, 1 skipped" in capsys.readouterr().out
    assert main([*args, "--set", "object_size=20"]) == 1  # changed parameters recompute
    assert "4 computed, 0 cached, 1 skipped" in capsys.readouterr().out
    assert main([*args, "--shard", "1/2"]) in (0, 1)
    assert "shard 1/2" in capsys.readouterr().out
    assert (cache / "report-shard1of2.json").exists()


def test_config_errors_reach_the_user(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--set", "per_clas=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown key 'per_clas'" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("per_class = 'many'\n")
    assert main(["data", "synth", "--out", str(tmp_path), "--config", str(bad)]) == 2
    assert f"error: {bad}: key 'per_class' expects int, got str 'many'" in capsys.readouterr().err
    assert main(["data", "preprocess", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_render_sheet(tmp_path, capsys):
    import trimesh
    from PIL import Image

    mesh_path = tmp_path / "box.ply"
    trimesh.creation.box(extents=(1, 2, 0.5)).export(mesh_path)
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0 0\nf 1 2 3\n")
    out = tmp_path / "sheet.png"
    assert main(["-q", "render", str(mesh_path), str(bad), "--views", "3", "--size", "32", "--modes", "shaded",
                 "silhouette", "--out", str(out)]) == 1  # drawn, with the bad input reported
    captured = capsys.readouterr()
    text = captured.out
    assert "1 of 2 inputs skipped" in captured.err
    assert f"skipped: {bad}: " in text and "2 rows x 3 views" in text
    img = np.asarray(Image.open(out).convert("L"), dtype=float) / 255
    assert img.shape[1] >= 3 * 32 and img.min() < 0.1  # the silhouette row has dark pixels
