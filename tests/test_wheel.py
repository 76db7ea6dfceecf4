"""The built wheel works on its own: presets ship inside it, and each pipeline trains one tiny step.

The wheel is built from a copy of the sources (so a stale ``build/`` folder in the checkout
cannot leak into it), installed with ``pip install --target``, and run from a folder outside
the checkout with only that folder on ``PYTHONPATH``: the commands find their default configs
by bare name, as after a plain ``pip install``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(args: list[str], *, cwd: Path, env: dict, timeout: int = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """(site folder holding the installed wheel, environment that imports it first)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "shapes3d", src / "shapes3d", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run(["-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist")],
         cwd=tmp, env=env)
    (wheel,) = (tmp / "dist").glob("shapes3d-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("shapes3d/configs/") and n.endswith(".toml")}
    assert {p.name for p in (REPO / "shapes3d" / "configs").glob("*.toml")} == shipped
    site = tmp / "site"
    _run(["-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)], cwd=tmp, env=env)
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1", SHAPES3D_CACHE=str(tmp / "cache"))
    return site, env


def test_installed_package_is_imported(installed, tmp_path):
    site, env = installed
    r = _run(["-c", "import shapes3d, shapes3d.config as c; print(shapes3d.__file__); print(c.find_preset('voxnet'))"],
             cwd=tmp_path, env=env)
    module, preset = r.stdout.split()
    assert Path(module).resolve().is_relative_to(site.resolve()), module
    assert Path(preset).resolve().is_relative_to(site.resolve()), preset
    assert not Path(module).resolve().is_relative_to(REPO)


def test_each_pipeline_runs_from_the_wheel_with_default_presets(installed, tmp_path):
    """data synth, classify train, sdf train and style texture: one tiny step each, presets by bare name."""
    _, env = installed
    cli = ["-m", "shapes3d.cli.main", "-q"]
    _run([*cli, "data", "synth", "--out", "data", "--per-class", "2", "--set", "families=['ring', 'mug']",
          "--set", "resolution=24"], cwd=tmp_path, env=env)
    _run([*cli, "classify", "train", "--data", "data", "--out", "runs/classify", "--cache", "cache/voxels",
          "--config", "voxnet", "--set", "train.epochs=1", "--set", "data.rotations=1", "--set", "train.batch_size=2",
          "--set", "train.val_fraction=0.0", "--set", "train.device='cpu'"], cwd=tmp_path, env=env)
    assert (tmp_path / "runs/classify/last.pt").stat().st_size > 0
    _run([*cli, "sdf", "train", "--data", "data", "--out", "runs/deepsdf", "--cache", "cache/sdf",  # no --config
          "--set", "model.hidden=16", "--set", "model.latent_size=4", "--set", "train.epochs=1",
          "--set", "train.samples_per_shape=64", "--set", "samples.n_samples=500", "--set", "samples.n_uniform=50",
          "--set", "train.device='cpu'"], cwd=tmp_path, env=env)
    assert "hidden = 16" in (tmp_path / "runs/deepsdf/config.toml").read_text()
    _run([*cli, "style", "texture", "skimage:brick", "--out", "runs/texture", "--config", "style.toml",
          "--set", "size=16", "--set", "steps=1", "--set", "weights='random'", "--set", "device='cpu'"],
         cwd=tmp_path, env=env)
    assert (tmp_path / "runs/texture/texture.png").exists()


def test_unknown_preset_is_one_line_listing_the_presets(installed, tmp_path):
    _, env = installed
    r = subprocess.run([sys.executable, "-m", "shapes3d.cli.main", "data", "synth", "--out", "d", "--config", "nope"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: nope: no such config file or shipped preset; presets: "
                                + ", ".join(sorted(p.stem for p in (REPO / "shapes3d" / "configs").glob("*.toml"))))
