"""The test protocol (`sdf reconstruct`): per-shape and summary outputs, resume, order independence, official
samples as input, and the official data layout written by `data preprocess --format deepsdf`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import trimesh

from shapes3d.cli.main import main
from shapes3d.errors import Shapes3DError

SHRINK = ["model.hidden=64", "model.latent_size=16", "model.dropout=0.0", "train.epochs=120",
          "train.samples_per_shape=1024", "train.lr_decoder=0.003", "train.lr_codes=0.006",
          "samples.n_samples=3000", "samples.n_uniform=300", "train.device='cpu'"]
FIT = ["--set", "fit.iterations=25", "--set", "fit.restarts=2", "--set", "fit.samples_per_iter=800"]
FAST = ["--resolution", "24", "--points", "1500", *FIT]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A ModelNet-style folder (2 classes, train/test) and a tiny checkpoint trained on its train split."""
    root = tmp_path_factory.mktemp("shapes")
    shapes = {("box", "train", "b0"): trimesh.creation.box((1.0, 0.6, 0.4)),
              ("box", "train", "b1"): trimesh.creation.box((0.5, 0.9, 0.7)),
              ("ball", "train", "s0"): trimesh.creation.icosphere(2),
              ("box", "test", "b2"): trimesh.creation.box((0.8, 0.7, 0.5)),
              ("ball", "test", "s1"): trimesh.creation.capsule(0.6, 0.4)}
    for (cls, split, name), mesh in shapes.items():
        (root / cls / split).mkdir(parents=True, exist_ok=True)
        mesh.export(root / cls / split / f"{name}.off")
    out = tmp_path_factory.mktemp("run")
    sets = [x for kv in SHRINK for x in ("--set", kv)]
    assert main(["-q", "sdf", "train", "--data", str(root), "--out", str(out), "--cache", str(out / "cache"),
                 *sets]) == 0
    return root, out / "last.pt"


def test_reconstruct_writes_per_shape_and_summary_results_and_resumes(run, tmp_path, capsys, monkeypatch):
    root, ck = run
    out = tmp_path / "rec"
    assert main(["-q", "sdf", "reconstruct", str(ck), "--data", str(root), "--split", "test", "--out", str(out),
                 *FAST]) == 0
    printed = capsys.readouterr().out
    assert "2 shapes (0 resumed): Chamfer x1e3 mean" in printed and "box: 1 shapes" in printed
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert sorted(r["shape"] for r in rows) == ["b2", "s1"]
    for key in ("chamfer_deepsdf_x1e3", "emd_approx", "fscore@0.01", "normal_consistency", "iou", "accuracy@90",
                "completion@0.01"):
        assert key in rows[0]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["classes"]) == {"ball", "box"} and summary["overall"]["chamfer_deepsdf_x1e3"]["n"] == 2
    assert (out / "meshes" / "b2.ply").exists() and (out / "codes" / "s1.pt").exists()
    assert (out / "summary_by_class.csv").exists()

    # a killed run: one shape's result is missing; the rerun computes only that one
    first = json.loads((out / "shapes" / "b2.json").read_text())
    (out / "shapes" / "s1.json").unlink()
    import shapes3d.deepsdf.protocol as protocol

    calls = []
    real = protocol._one_shape
    monkeypatch.setattr(protocol, "_one_shape", lambda model, cfg, name, *a, **k: calls.append(name) or
                        real(model, cfg, name, *a, **k))
    assert main(["-q", "sdf", "reconstruct", str(ck), "--data", str(root), "--split", "test", "--out", str(out),
                 *FAST]) == 0
    assert calls == ["s1"] and "(1 resumed)" in capsys.readouterr().out
    assert json.loads((out / "shapes" / "b2.json").read_text()) == first

    # other settings in the same folder are refused
    with pytest.raises(Shapes3DError, match="other settings"):
        protocol.reconstruct(ck, root, split="test", out=out, resolution=32, points=1500)


def test_results_do_not_depend_on_the_order_or_subset_of_shapes(run, tmp_path):
    from shapes3d.deepsdf.protocol import reconstruct

    root, ck = run
    split = tmp_path / "order.json"
    split.write_text(json.dumps({"D": {"ball": ["s1"], "box": ["b2"]}}))
    kw = dict(resolution=24, points=1500, overrides=["fit.iterations=25", "fit.restarts=2",
                                                      "fit.samples_per_iter=800"])
    both = reconstruct(ck, root, split=split, out=tmp_path / "a", **kw)
    alone = reconstruct(ck, root, split="test", out=tmp_path / "b", limit=1, **kw)  # ball/s1 sorts first
    by_name = {r["shape"]: r for r in both.rows}
    assert [r["shape"] for r in both.rows] == ["s1", "b2"] and [r["shape"] for r in alone.rows] == ["s1"]
    for key in ("fit_loss", "chamfer_deepsdf", "emd_approx", "accuracy@90"):
        assert alone.rows[0][key] == by_name["s1"][key]
    split.write_text(json.dumps({"D": {"box": ["b2"], "ball": ["s1"]}}))  # the other order, in a fresh folder
    swapped = reconstruct(ck, root, split=split, out=tmp_path / "c", **kw)
    assert [r["shape"] for r in swapped.rows] == ["b2", "s1"]
    assert swapped.rows[0]["chamfer_deepsdf"] == by_name["b2"]["chamfer_deepsdf"]


def test_official_data_source_round_trip_train_and_reconstruct(run, tmp_path, capsys):
    """`data preprocess --format deepsdf` writes the official layout; `sdf train --split split.json` trains on
    it; `sdf reconstruct` fits its npz samples and scores against SurfaceSamples."""
    root, ck = run
    data = tmp_path / "official"
    sets = [x for kv in SHRINK[7:9] for x in ("--set", kv)]
    assert main(["-q", "data", "preprocess", str(root), "--task", "sdf", "--format", "deepsdf", "--out", str(data),
                 "--cache", str(tmp_path / "cache"), "--dataset", "Toy", *sets]) == 0
    split = json.loads((data / "split.json").read_text())
    assert split == {"Toy": {"ball": ["s1", "s0"], "box": ["b2", "b0", "b1"]}}  # manifest order (test/ < train/)
    npz = np.load(data / "SdfSamples" / "Toy" / "box" / "b2.npz")
    assert set(npz.files) == {"pos", "neg"} and npz["pos"].shape[1] == 4 and (npz["pos"][:, 3] > 0).all()
    norm = np.load(data / "NormalizationParameters" / "Toy" / "box" / "b2.npz")
    assert norm["offset"].shape == (3,) and norm["scale"].shape == (1,)
    # official sign: (x + offset) * scale puts the box (centred at the origin) at the origin
    mesh = trimesh.load(root / "box" / "test" / "b2.off")
    centre = (mesh.bounds[0] + mesh.bounds[1]) / 2
    np.testing.assert_allclose((centre + norm["offset"]) * norm["scale"][0], 0.0, atol=1e-6)

    train_split = tmp_path / "train.json"
    train_split.write_text(json.dumps({"Toy": {"box": ["b0", "b1"], "ball": ["s0"]}}))
    out = tmp_path / "run"
    tsets = [x for kv in [*SHRINK[:7], "train.epochs=3", SHRINK[9]] for x in ("--set", kv)]
    assert main(["-q", "sdf", "train", "--data", str(data), "--split", str(train_split), "--out", str(out),
                 "--cache", str(tmp_path / "cache2"), *tsets]) == 0
    from shapes3d.deepsdf.trainer import load_deepsdf

    model = load_deepsdf(out / "last.pt", device="cpu")
    assert model.names == ["box/b0", "box/b1", "ball/s0"] and model.classes == ["box", "box", "ball"]

    surface = data / "SurfaceSamples" / "Toy" / "box"
    surface.mkdir(parents=True)
    trimesh.PointCloud(mesh.sample(3000, seed=0)).export(surface / "b2.ply")
    test_split = tmp_path / "test.json"
    test_split.write_text(json.dumps({"Toy": {"box": ["b2"], "ball": ["s1"]}}))
    rec = tmp_path / "rec"
    assert main(["-q", "sdf", "reconstruct", str(ck), "--data", str(data), "--split", str(test_split), "--out",
                 str(rec), "--frame", "mesh", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "1 shapes (0 resumed)" in printed and "no ground-truth surface" in printed  # s1 has no SurfaceSamples
    row = json.loads((rec / "shapes" / "box" / "b2.json").read_text())
    assert np.isnan(row["normal_consistency"]) and row["chamfer_deepsdf"] > 0


def test_official_data_source_sharded_split_is_the_union(run, tmp_path):
    """Two shards of `--format deepsdf` into one folder: neither overwrites the other's split; split.json appears
    once both have run and equals the unsharded one (manifest order)."""
    root, _ = run
    data = tmp_path / "official"
    sets = [x for kv in SHRINK[7:9] for x in ("--set", kv)]
    base = ["-q", "data", "preprocess", str(root), "--task", "sdf", "--format", "deepsdf", "--out", str(data),
            "--cache", str(tmp_path / "cache"), "--dataset", "Toy", *sets]
    assert main([*base, "--shard", "1/2"]) == 0
    assert not (data / "split.json").exists()
    first = json.loads((data / "split.shard1of2.json").read_text())
    assert main([*base, "--shard", "0/2"]) == 0
    second = json.loads((data / "split.shard0of2.json").read_text())
    ids = lambda d: sorted(i for c in d["Toy"].values() for i in c)  # noqa: E731
    assert sorted(ids(first) + ids(second)) == ["b0", "b1", "b2", "s0", "s1"] and not set(ids(first)) & set(ids(second))
    assert json.loads((data / "split.json").read_text()) == {"Toy": {"ball": ["s1", "s0"], "box": ["b2", "b0", "b1"]}}
    assert len(list((data / "SdfSamples" / "Toy").rglob("*.npz"))) == 5
