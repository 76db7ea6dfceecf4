"""Evaluating ensembles of classifiers, the carved validation split and the training-prior correction:
naive references for the averaging and the correction, the trainer's own validation figure, and exact errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from shapes3d.classify import jobs
from shapes3d.classify.config import ClassifyConfig
from shapes3d.classify.evaluation import load_classifier, predict_proba, prior_corrected, training_prior
from shapes3d.cli.main import main
from shapes3d.config import load_config
from shapes3d.data.tasks import voxel_task
from shapes3d.data.voxel_dataset import build_voxel_set, stratified_split
from shapes3d.engine.checkpoint import load_checkpoint, save_checkpoint
from shapes3d.engine.jobs import load_manifest, split_entries
from shapes3d.errors import CheckpointError, Shapes3DError

pytestmark = pytest.mark.usefixtures("one_thread")

# 4 training shapes per class: a 0.25 validation fraction holds out one per class
_TINY = ["data.resolution=16", "data.object_size=12", "data.rotations=2", "train.epochs=2", "train.batch_size=4",
         "train.device='cpu'", "train.val_fraction=0.25", "model.hidden=32"]


def _cfg(*extra: str) -> ClassifyConfig:
    return load_config(ClassifyConfig, None, overrides=[*_TINY, *extra])


@pytest.fixture(scope="module")
def two_runs(tiny_synth, tmp_path_factory):
    """Two VoxNet runs of different seeds validated on one split (split_seed 0), one voxel cache."""
    root = tmp_path_factory.mktemp("ens")
    cache = root / "cache"
    for seed in (0, 1):
        jobs.train(_cfg(f"train.seed={seed}", "train.split_seed=0"), tiny_synth, root / f"s{seed}", cache=cache)
    return root, cache


def test_prior_correction_matches_a_naive_reference():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), size=6)
    prior = training_prior([[10, 30, 0, 60]])
    assert np.allclose(prior, [0.1, 0.3, 0.0, 0.6])
    for tau in (0.5, 1.0, 2.0):
        got = prior_corrected(p, prior, tau)
        for i in range(6):
            want = [p[i, k] / prior[k] ** tau if prior[k] > 0 else 0.0 for k in range(4)]
            assert np.allclose(got[i], np.array(want) / sum(want)), (tau, i)
    assert prior_corrected(p, prior, 0.0) is p  # tau 0: untouched
    assert np.allclose(prior_corrected(p, training_prior([[5, 5, 5, 5]]), 1.0), p)  # a balanced prior: no change
    # several members: the mean of their frequencies
    assert np.allclose(training_prior([[1, 3], [3, 1]]), [0.5, 0.5])


def test_training_records_the_fitted_class_counts(two_runs):
    root, _ = two_runs
    ck = load_checkpoint(root / "s0" / "best.pt")
    assert ck["train_class_counts"] == [3, 3, 3]  # 4 training shapes per class, one of each held out


def test_val_split_is_the_one_training_chose_on(two_runs, tiny_synth, tmp_path):
    root, cache = two_runs
    res = jobs.evaluate(root / "s0" / "best.pt", tiny_synth, split="val", cache=cache, out=tmp_path / "v")
    ck = load_checkpoint(root / "s0" / "best.pt")
    assert res.metrics["n"] == 3 and res.metrics["split"] == "val"
    assert res.metrics["overall_accuracy"] == pytest.approx(ck["best_val_acc"])  # the trainer's own figure
    # the same three shapes the seeded split holds out
    cfg = _cfg()
    train_set, _ = build_voxel_set(split_entries(load_manifest(tiny_synth), "train", tiny_synth), cfg.data,
                                   cache_dir=cache)
    _, va = stratified_split(train_set.labels, 0.25, seed=0)
    assert sorted(res.metrics["per_class"]) == ["mug", "ring", "table"]
    assert [v["support"] for v in res.metrics["per_class"].values()] == [1, 1, 1] and len(va) == 3


def test_ensemble_averages_the_members_probabilities(two_runs, tiny_synth, tmp_path):
    root, cache = two_runs
    a, b = root / "s0" / "best.pt", root / "s1" / "best.pt"
    res = jobs.evaluate([a, b], tiny_synth, cache=cache)
    assert res.out.parent == a.parent and res.out.name.startswith("eval-test-ensemble2-")
    m = res.metrics
    assert m["model"] == "ensemble" and [r["checkpoint"] for r in m["members"]] == [str(a), str(b)]
    # reference: each member's voted probabilities, averaged, argmax
    test_set, _ = build_voxel_set(split_entries(load_manifest(tiny_synth), "test", tiny_synth), _cfg().data,
                                  cache_dir=cache, classes=["mug", "ring", "table"])
    probs = []
    for ck in (a, b):
        model, cfg, _ = load_classifier(ck, device="cpu")
        probs.append(predict_proba(model, test_set.grids, vote=True, device=torch.device("cpu")))
    pred = np.mean(probs, axis=0).argmax(1)
    conf = np.zeros((3, 3), dtype=int)
    np.add.at(conf, (test_set.labels, pred), 1)
    assert m["confusion"] == conf.tolist()
    assert m["overall_accuracy"] == pytest.approx(float((pred == test_set.labels).mean()))
    for r, p in zip(m["members"], probs):  # each member's own figure on the same shapes
        assert r["overall_accuracy"] == pytest.approx(float((p.argmax(1) == test_set.labels).mean()))
        assert r["model"] == "voxnet" and r["rotations"] == 2
    # one member alone gives what a single evaluation gives
    single = jobs.evaluate(a, tiny_synth, cache=cache, out=tmp_path / "one").metrics
    assert single["model"] == "voxnet" and len(single["members"]) == 1
    assert single["overall_accuracy"] == m["members"][0]["overall_accuracy"]
    assert (res.out / "confusion.png").stat().st_size > 0


def test_prior_tau_changes_the_folder_and_records_the_prior(two_runs, tiny_synth):
    root, cache = two_runs
    res = jobs.evaluate([root / "s0" / "best.pt", root / "s1" / "best.pt"], tiny_synth, cache=cache, prior_tau=1)
    assert res.out.name.endswith("-tau1") and res.metrics["prior_tau"] == 1.0
    assert res.metrics["prior"] == pytest.approx([1 / 3] * 3)
    # the default is the checkpoint's config prior_tau (a preset can ship the protocol chosen on validation)
    ck = load_checkpoint(root / "s0" / "best.pt")
    save_checkpoint(root / "tau.pt", {**ck, "config": {**ck["config"], "prior_tau": 0.5}})
    res = jobs.evaluate(root / "tau.pt", tiny_synth, cache=cache)
    assert res.out.name == "eval-test-tau0.5" and res.metrics["prior_tau"] == 0.5
    assert jobs.evaluate(root / "tau.pt", tiny_synth, cache=cache, prior_tau=0).out.name == "eval-test"
    assert jobs.predict(root / "tau.pt", tiny_synth / "mug" / "test", out=root / "p.json").predictions
    assert json.loads((root / "p.json").read_text())["prior_tau"] == 0.5


def test_ensemble_errors_name_the_member(two_runs, tiny_synth, tmp_path):
    root, cache = two_runs
    a = root / "s0" / "best.pt"
    # another validation split: seed 2 without split_seed carves its own
    jobs.train(_cfg("train.seed=2"), tiny_synth, tmp_path / "s2", cache=cache)
    with pytest.raises(CheckpointError, match=f"^{tmp_path / 's2' / 'best.pt'}: carved another validation split "
                                              "from train than .*s0/best.pt"):
        jobs.evaluate([a, tmp_path / "s2" / "best.pt"], tiny_synth, split="val", cache=cache, out=tmp_path / "e")
    # other classes
    ck = load_checkpoint(a)
    save_checkpoint(tmp_path / "renamed.pt", {**ck, "classes": ["cup", "ring", "table"]})
    with pytest.raises(CheckpointError, match=r"renamed.pt: its classes \['cup', 'ring', 'table'\] differ from "
                                              r"those of .*s0/best.pt \(\['mug', 'ring', 'table'\]\)"):
        jobs.evaluate([a, tmp_path / "renamed.pt"], tiny_synth, cache=cache, out=tmp_path / "e")
    # a checkpoint from before the class counts were recorded
    old = {k: v for k, v in ck.items() if k != "train_class_counts"}
    save_checkpoint(tmp_path / "old.pt", old)
    with pytest.raises(CheckpointError, match="old.pt: records no training class counts .*--prior-tau 0$"):
        jobs.evaluate(tmp_path / "old.pt", tiny_synth, cache=cache, prior_tau=0.5, out=tmp_path / "e")
    assert jobs.evaluate(tmp_path / "old.pt", tiny_synth, cache=cache, out=tmp_path / "e").metrics["n"] == 3
    with pytest.raises(Shapes3DError, match=r"^--prior-tau: 3 is out of range \[0, 2\]$"):
        jobs.evaluate(a, tiny_synth, cache=cache, prior_tau=3)
    with pytest.raises(Shapes3DError, match="^evaluate: 1 caches for 2 checkpoints"):
        jobs.evaluate([a, a], tiny_synth, cache=[cache])
    # a carved split needs a validation fraction
    jobs.train(_cfg("train.val_fraction=0.0", "train.epochs=1"), tiny_synth, tmp_path / "noval", cache=cache)
    with pytest.raises(CheckpointError, match=r"noval/best.pt: was trained without a validation split"):
        jobs.evaluate(tmp_path / "noval" / "best.pt", tiny_synth, split="val", cache=cache)


def test_cli_ensemble_prints_members_and_protocol(two_runs, tiny_synth, tmp_path, capsys):
    root, cache = two_runs
    a, b = root / "s0" / "best.pt", root / "s1" / "best.pt"
    capsys.readouterr()
    assert main(["-q", "classify", "evaluate", str(a), str(b), "--data", str(tiny_synth), "--split", "val",
                 "--prior-tau", "0.5", "--cache", str(cache), "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert f"member {a} (voting over 2 rotations): overall " in out
    assert "(3 shapes of split val, ensemble of 2, probabilities averaged, prior tau 0.5)" in out
    m = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert m["split"] == "val" and m["prior_tau"] == 0.5 and len(m["members"]) == 2
    # --cache once per member is accepted; twice for one checkpoint is an error naming the counts
    assert main(["-q", "classify", "evaluate", str(a), str(b), "--data", str(tiny_synth), "--cache", str(cache),
                 "--cache", str(cache), "--out", str(tmp_path / "cli2")]) == 0
    capsys.readouterr()
    assert main(["-q", "classify", "evaluate", str(a), "--data", str(tiny_synth), "--cache", str(cache),
                 "--cache", str(cache)]) == 2
    assert "evaluate: 2 caches for 1 checkpoints" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["-q", "classify", "evaluate", str(a), "--data", str(tiny_synth), "--prior-tau", "-1"])


def test_voxnet_and_multiview_members_ensemble(two_runs, tiny_synth, tmp_path):
    from tests.test_mvcnn import WEIGHTS

    root, cache = two_runs
    cfg = load_config(ClassifyConfig, "demo-mvcnn", overrides=[
        "train.epochs=2", "train.batch_size=4", "model.mvcnn.views=3", "model.mvcnn.image_size=32",
        f"model.mvcnn.weights={WEIGHTS}", "train.val_fraction=0.25", "train.split_seed=0", "train.device='cpu'"])
    mv = jobs.train(cfg, tiny_synth, tmp_path / "mv", cache=tmp_path / "views")
    res = jobs.evaluate([root / "s0" / "best.pt", mv.best_path], tiny_synth, split="val",
                        cache=[cache, tmp_path / "views"], out=tmp_path / "mix")
    m = res.metrics
    assert [r["model"] for r in m["members"]] == ["voxnet", "mvcnn"] and m["n"] == 3
    assert m["members"][1]["views"] == 3 and m["members"][1]["vote"] is False


def test_predict_with_an_ensemble_averages_and_skips_for_all(two_runs, tiny_synth, tmp_path, capsys):
    root, cache = two_runs
    a, b = root / "s0" / "best.pt", root / "s1" / "best.pt"
    files = sorted((tiny_synth / "mug" / "test").glob("*.off"))
    bad = tmp_path / "bad.off"
    bad.write_text("OFF\n3 1 0\n0 0 0\n")
    res = jobs.predict([a, b], [*files, bad], top_k=3, device="cpu", out=tmp_path / "p.json")
    grids = [voxel_task(f, **dataclasses.asdict(_cfg().data))["occupancy"] for f in files]
    want = []
    for ck in (a, b):
        model, cfg, _ = load_classifier(ck, device="cpu")
        want.append(predict_proba(model, np.stack(grids), vote=True, device=torch.device("cpu")))
    mean = np.mean(want, axis=0)
    classes = ["mug", "ring", "table"]
    for (_, top), p in zip(res.predictions, mean):
        assert [c for c, _ in top] == [classes[i] for i in np.argsort(-p)]
        assert [v for _, v in top] == pytest.approx(np.sort(p)[::-1].tolist(), abs=1e-6)
    assert [p for p, _ in res.skipped] == [bad] and "truncated" in res.skipped[0][1]
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["members"] == [str(a), str(b)] and saved["prior_tau"] == 0.0
    # the prior correction with a balanced training mix leaves the probabilities as they are
    res1 = jobs.predict([a, b], files, device="cpu", prior_tau=1.0)
    assert [v for _, v in res1.predictions[0][1]] == pytest.approx([v for _, v in res.predictions[0][1]])
    capsys.readouterr()
    assert main(["-q", "classify", "predict", str(a), *map(str, files), "--ensemble", str(b), "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{files[0]}: {res.predictions[0][1][0][0]} ")
    with pytest.raises(Shapes3DError, match="^--views-sheets takes one multi-view checkpoint, not an ensemble$"):
        jobs.predict([a, b], files, views_sheets=tmp_path / "s")


def test_validation_split_mirroring_a_class_mix():
    labels = np.repeat([0, 1, 2], [50, 10, 2])
    tr, va = stratified_split(labels, 0.2, seed=0, mix=np.array([1.0, 1.0, 0.0]))
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 62
    assert np.bincount(labels[va], minlength=3).tolist() == [6, 6, 0]  # round(0.2 * 62) = 12, half each
    _, va = stratified_split(labels, 0.2, seed=0, mix=np.array([0.0, 1.0, 1.0]))
    assert np.bincount(labels[va], minlength=3).tolist() == [0, 6, 1]  # class 2 keeps one training shape
    # without a mix: the fraction of each class, as before
    _, va = stratified_split(labels, 0.2, seed=0)
    assert np.bincount(labels[va], minlength=3).tolist() == [10, 2, 1]


def test_val_mix_test_is_carved_alike_in_training_and_evaluation(tiny_synth, tmp_path):
    entries = load_manifest(tiny_synth).entries

    def manifest(path, rows):
        path.write_text("class,split,path\n" + "".join(f"{e.class_name},{e.split},{e.path.resolve()}\n" for e in rows))
        return path

    # the test split is all mugs: the validation split then holds mugs only
    skew = manifest(tmp_path / "skew.csv", [e for e in entries if e.split == "train" or e.class_name == "mug"])
    res = jobs.train(_cfg("train.val_mix='test'"), skew, tmp_path / "run", cache=tmp_path / "c")
    ck = load_checkpoint(res.best_path)
    assert ck["train_class_counts"] == [1, 4, 4]  # round(0.25 * 12) = 3 mugs held out, 1 left to train on
    val = jobs.evaluate(res.best_path, skew, split="val", cache=tmp_path / "c", out=tmp_path / "v")
    assert [v["support"] for v in val.metrics["per_class"].values()] == [3, 0, 0]
    assert val.metrics["overall_accuracy"] == pytest.approx(ck["best_val_acc"])
    # no test split: refused before any voxelizing, naming the option
    only_train = manifest(tmp_path / "train.csv", [e for e in entries if e.split == "train"])
    with pytest.raises(Shapes3DError, match="^train.val_mix = 'test' needs a test split: .*no shapes in split 'test'"):
        jobs.train(_cfg("train.val_mix='test'"), only_train, tmp_path / "r2", cache=tmp_path / "c2")
    assert not (tmp_path / "c2").exists()
