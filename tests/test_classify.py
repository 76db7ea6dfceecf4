"""Voxel classification: VoxNet shape, augmentation invariants, voting, training end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from shapes3d.classify.config import ClassifyConfig
from shapes3d.classify.evaluation import predict_proba
from shapes3d.classify.trainer import train_step
from shapes3d.cli.main import main
from shapes3d.config import load_config
from shapes3d.data.tasks import voxelize_geometry
from shapes3d.data.voxel_dataset import augment_batch, stratified_split
from shapes3d.engine.checkpoint import load_checkpoint
from shapes3d.models.voxnet import VoxNet

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_voxnet_matches_paper_layout():
    m = VoxNet(10)
    convs = [x for x in m.features if isinstance(x, torch.nn.Conv3d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(32, (5,) * 3, (2,) * 3), (32, (3,) * 3, (1,) * 3)]
    assert m.classifier[1].in_features == 32 * 6**3 and m.classifier[1].out_features == 128
    assert [d.p for d in m.modules() if isinstance(d, torch.nn.Dropout)] == [0.2, 0.3, 0.4]
    assert sum(p.numel() for p in m.parameters()) == 917_866  # ~0.92 M as in the paper
    with pytest.raises(ValueError, match=r"VoxNet expects \(B, 1, 32, 32, 32\), got \(2, 1, 16, 16, 16\)"):
        m(torch.zeros(2, 1, 16, 16, 16))


def test_overfits_one_tiny_batch():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(8, 1, 16, 16, 16, generator=g) > 0.7).float()
    y = torch.arange(8) % 4
    model = VoxNet(4, resolution=16, dropout=(0.0, 0.0, 0.0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(40):
        stats = train_step(model, opt, x, y)
    assert stats["acc"] == 1.0 and stats["loss"] < 0.05


def test_quarter_turns_keep_the_occupied_count_of_a_symmetric_shape():
    cyl = trimesh.creation.cylinder(radius=0.6, height=1.5, sections=64)
    out = voxelize_geometry(cyl, resolution=32, object_size=24, rotations=4, up_axis="z")["occupancy"]
    counts = out.reshape(4, -1).sum(1)
    assert counts.min() > 1000 and len(set(counts.tolist())) == 1
    # a box is symmetric under quarter turns too: the rotated grids are rot90 of each other
    box = trimesh.creation.box(extents=(1.0, 0.5, 0.8))
    occ = voxelize_geometry(box, resolution=32, rotations=4)["occupancy"].astype(bool)
    np.testing.assert_array_equal(occ[1], np.rot90(occ[0], k=1, axes=(0, 1)))
    # 12 rotations of a cylinder about its axis: counts agree to within the discretisation
    out12 = voxelize_geometry(cyl, resolution=32, rotations=12)["occupancy"].reshape(12, -1).sum(1)
    assert out12.max() - out12.min() <= 0.03 * out12.mean()


def test_augmentation_keeps_occupancy_and_up_axis():
    g = torch.Generator().manual_seed(0)
    grids = torch.zeros(6, 3, 32, 32, 32, dtype=torch.uint8)
    grids[:, :, 8:24, 10:20, 4:28] = 1
    x = augment_batch(grids, generator=g, rotate=True, mirror=True, translate=2, up_axis="z")
    assert x.shape == (6, 1, 32, 32, 32) and x.dtype == torch.float32
    assert torch.all(x.sum(dim=(1, 2, 3, 4)) == grids[0, 0].sum())  # nothing lost to wrap-around
    z_extent = x[:, 0].sum(dim=(1, 2)) > 0  # per z slice occupancy: height preserved under mirror
    assert torch.all(z_extent.sum(1) == 24)


def test_voting_equals_mean_over_rotations():
    torch.manual_seed(0)
    model = VoxNet(5).eval()
    grids = (np.random.default_rng(0).random((3, 4, 32, 32, 32)) > 0.8).astype(np.uint8)
    voted = predict_proba(model, grids, vote=True, device=torch.device("cpu"))
    with torch.no_grad():
        each = [torch.softmax(model(torch.as_tensor(grids[:, r:r + 1]).float()), 1).numpy() for r in range(4)]
    np.testing.assert_allclose(voted, np.mean(each, axis=0), rtol=1e-5, atol=1e-6)
    single = predict_proba(model, grids, vote=False, device=torch.device("cpu"))
    np.testing.assert_allclose(single, each[0], rtol=1e-5, atol=1e-6)
    # Mirror voting also averages each rotation's mirror image across the vertical x-z plane
    # (x flipped for a z-up set, the same mirror training uses).
    mirrored = predict_proba(model, grids, vote=True, mirror_vote=True, device=torch.device("cpu"), up_axis="z")
    with torch.no_grad():
        flips = [torch.softmax(model(torch.as_tensor(np.ascontiguousarray(grids[:, r:r + 1, ::-1])).float()), 1).numpy()
                 for r in range(4)]
    np.testing.assert_allclose(mirrored, (np.mean(each, axis=0) + np.mean(flips, axis=0)) / 2, rtol=1e-5, atol=1e-6)


def test_stratified_split_keeps_every_class():
    labels = np.repeat(np.arange(4), [10, 5, 2, 1])
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
    assert set(labels[va]) == {0, 1, 2} and set(labels[tr]) == {0, 1, 2, 3}


def test_end_to_end_from_real_config(tiny_synth, tmp_path, capsys):
    """Two epochs from configs/voxnet.toml (shrunk), then resume, evaluate, predict and filters via the CLI."""
    cfg = load_config(ClassifyConfig, CONFIGS / "voxnet.toml")
    assert cfg.model.filters == (32, 32) and cfg.data.resolution == 32
    run, cache = tmp_path / "run", tmp_path / "cache"
    common = ["--config", str(CONFIGS / "voxnet.toml"), "--set", "data.rotations=2", "--set", "train.batch_size=4"]
    assert main(["-q", "classify", "train", "--data", str(tiny_synth), "--out", str(run), "--cache", str(cache),
                 *common, "--set", "train.epochs=1"]) == 0
    assert main(["-q", "classify", "train", "--data", str(tiny_synth), "--out", str(run), "--cache", str(cache),
                 *common, "--set", "train.epochs=2", "--resume"]) == 0
    ck = load_checkpoint(run / "last.pt")
    assert ck["epoch"] == 2 and [h["epoch"] for h in ck["history"]] == [1, 2]
    assert ck["config"]["train"]["epochs"] == 2 and ck["classes"] == ["mug", "ring", "table"]
    for name in ("best.pt", "last.pt", "log.csv", "curves.png", "config.toml"):
        assert (run / name).stat().st_size > 0, name
    assert main(["-q", "classify", "evaluate", str(run / "best.pt"), "--data", str(tiny_synth),
                 "--cache", str(cache), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["rotations"] == 2 and 0 <= metrics["overall_accuracy"] <= 1
    assert metrics["mirror_vote"] is False
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 0
    assert main(["-q", "classify", "evaluate", str(run / "best.pt"), "--data", str(tiny_synth),
                 "--cache", str(cache), "--out", str(tmp_path / "eval-m"), "--mirror-vote"]) == 0
    assert json.loads((tmp_path / "eval-m" / "metrics.json").read_text())["mirror_vote"] is True
    capsys.readouterr()
    bad = tmp_path / "bad.off"
    bad.write_text("OFF\n3 1 0\n0 0 0\n")
    assert main(["-q", "classify", "predict", str(run / "best.pt"), str(tiny_synth / "mug" / "test"), str(bad),
                 "--top-k", "2"]) == 1  # every input predicted or reported; one skipped: exit 1
    captured = capsys.readouterr()
    out = captured.out
    assert captured.err.startswith("1 of ") and "inputs skipped" in captured.err
    assert "mug_0005.off: " in out and f"skipped: {bad}: truncated" in out
    assert main(["-q", "classify", "filters", str(run / "best.pt")]) == 0
    assert (run / "filters.png").stat().st_size > 0


def test_resume_continues_exactly(tiny_synth, tmp_path):
    """2 epochs straight equal 1 epoch, stop, resume for the rest: bit-identical weights on CPU."""
    from shapes3d.classify.trainer import train
    from shapes3d.data.discovery import discover
    from shapes3d.data.voxel_dataset import build_voxel_set

    cfg = load_config(ClassifyConfig, CONFIGS / "voxnet.toml",
                      overrides=["data.rotations=2", "train.batch_size=4", "train.epochs=2", "train.device='cpu'"])
    data, _ = build_voxel_set(discover(tiny_synth).filter(split="train").entries, cfg.data, cache_dir=tmp_path / "c")
    train(cfg, data, tmp_path / "a")
    train(cfg, data, tmp_path / "b", stop_after=1)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    train(cfg, data, tmp_path / "b", resume=True)
    a = load_checkpoint(tmp_path / "a" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "last.pt")
    assert b["epoch"] == 2 and a["history"][-1]["train_loss"] == b["history"][-1]["train_loss"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][k]["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])


# ----------------------------------------------------------------------------- run folders and resume checks
_SMALL = ["data.resolution=16", "data.object_size=12", "data.rotations=1", "train.epochs=1", "train.batch_size=4",
          "train.device='cpu'", "train.val_fraction=0.0"]


def _small(*extra):
    return load_config(ClassifyConfig, None, overrides=[*_SMALL, *extra])


def test_runs_are_never_overwritten_or_mixed(tiny_synth, tmp_path, monkeypatch, capsys):
    import shutil

    from shapes3d.classify import jobs
    from shapes3d.errors import RunFolderError

    run, cache = tmp_path / "run", tmp_path / "cache"
    jobs.train(_small(), tiny_synth, run, cache=cache)
    real_build = jobs.build_voxel_set

    def no_voxelizing(*a, **k):
        raise AssertionError("the run folder must be checked before any voxelizing")

    monkeypatch.setattr(jobs, "build_voxel_set", no_voxelizing)
    with pytest.raises(RunFolderError, match="already holds a training run .*--resume.*--overwrite"):
        jobs.train(_small(), tiny_synth, run, cache=cache)
    with pytest.raises(RunFolderError, match="the run is finished \\(epoch 1 of 1\\)"):
        jobs.train(_small(), tiny_synth, run, cache=cache, resume=True)
    with pytest.raises(RunFolderError, match="architecture changed: model.hidden 128 -> 64"):
        jobs.train(_small("model.hidden=64", "train.epochs=2"), tiny_synth, run, cache=cache, resume=True)
    with pytest.raises(RunFolderError, match="no checkpoint \\(last.pt\\) to resume from"):
        jobs.train(_small(), tiny_synth, tmp_path / "empty", cache=cache, resume=True)
    monkeypatch.setattr(jobs, "build_voxel_set", real_build)
    # the CLI: one error line naming the folder and both flags; --overwrite replaces the run
    args = ["-q", "classify", "train", "--data", str(tiny_synth), "--out", str(run), "--cache", str(cache),
            *[x for o in _SMALL for x in ("--set", o)]]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run} already holds a training run") and err.count("\n") == 1
    assert main([*args, "--overwrite"]) == 0
    with pytest.raises(SystemExit) as stop:  # argparse: not allowed together
        main([*args, "--overwrite", "--resume"])
    assert stop.value.code == 2
    # resuming on changed data says what changed instead of shifting labels
    moved = tmp_path / "renamed"
    shutil.copytree(tiny_synth, moved)
    (moved / "ring").rename(moved / "hoop")
    (moved / "manifest.csv").unlink(missing_ok=True)
    with pytest.raises(RunFolderError, match="class list changed: 'ring' renamed/removed, 'hoop' added"):
        jobs.train(_small("train.epochs=2"), moved, run, cache=cache, resume=True)
    edited = tmp_path / "edited"
    shutil.copytree(tiny_synth, edited)
    target = sorted((edited / "mug" / "train").glob("*.off"))[0]
    target.write_text(target.read_text() + "\n# edited\n")
    with pytest.raises(RunFolderError, match="training files changed: 1 removed or edited .* 1 added or edited"):
        jobs.train(_small("train.epochs=2"), edited, run, cache=cache, resume=True)
    res = jobs.train(_small("train.epochs=2"), tiny_synth, run, cache=cache, resume=True)  # same data: resumes
    assert [h["epoch"] for h in res.history] == [1, 2]
    ck = load_checkpoint(run / "last.pt")
    assert ck["identity"]["names"] == ["mug", "ring", "table"] and None not in ck["identity"]["sha256"]


def test_missing_split_names_the_splits_there_are(tiny_synth, tmp_path):
    from shapes3d.classify import jobs
    from shapes3d.errors import Shapes3DError

    with pytest.raises(Shapes3DError, match="no shapes in split 'validation'; its splits are test, train"):
        jobs.train(_small(), tiny_synth, tmp_path / "run", cache=tmp_path / "c", split="validation")
    assert not (tmp_path / "c").exists()  # refused before any voxelizing


def test_predict_names_clashing_inputs_apart(tmp_path):
    from shapes3d.engine.jobs import unique_names

    a = ["d/03001627/1a2b/models/model_normalized.obj", "d/03001627/3c4d/models/model_normalized.obj", "e/cup.off"]
    assert unique_names(a) == ["1a2b", "3c4d", "cup"]
    assert unique_names(["a/x.obj", "a/x.off"]) == ["x.obj", "x.off"]
    assert unique_names(["a/x.obj", "a/x.obj"]) == ["x", "x-2"]
    assert unique_names(["p/a/m.obj", "q/a/m.obj"]) == ["p", "q"]
