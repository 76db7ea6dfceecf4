"""Dataset discovery: layouts, labels, ignored files, errors, and the manifest CSV, on real and tmp folders."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import real_subset

from shapes3d.data.discovery import Manifest, ManifestEntry, discover, load_csv
from shapes3d.errors import CorruptFileError, InputFileError, MissingFileError


def touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")


def triples(manifest: Manifest) -> set[tuple[str, str, Path]]:
    return {(e.class_name, e.split, e.path) for e in manifest}


def read_index(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- real data sets -------------------------------------------------------------------------------


@pytest.mark.data
def test_modelnet_point_clouds_match_their_index(real_data):
    root = real_subset(real_data, "modelnet10_pcd1024")
    manifest = discover(root)
    assert manifest.layout == "modelnet"
    assert (len(manifest.filter(split="train")), len(manifest.filter(split="test"))) == (3991, 908)
    assert manifest.classes == sorted(
        ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]
    )
    assert len(manifest.filter(split="test", class_name="bathtub")) == 50
    # the set's own index.csv has columns path,class,split, which load_csv reads by name
    assert triples(manifest) == triples(load_csv(root / "index.csv"))
    rel = [e.path.relative_to(root).as_posix() for e in manifest]
    assert rel == sorted(rel, key=lambda r: Path(r).parts)


@pytest.mark.data
def test_shapenet_layout_lists_present_objs_by_synset_folder(real_data):
    root = real_subset(real_data, "shapenet_semrob10")
    manifest = discover(root)
    assert manifest.layout == "shapenet" and len(manifest) == 93
    assert {e.path.name for e in manifest} == {"model_normalized.obj"}  # .mtl/.json/.binvox left out
    assert {e.split for e in manifest} == {""}
    rows = [r for r in read_index(root / "index.csv") if r["obj_present"] == "True"]
    assert triples(manifest) == {(r["class"], "", root / r["obj_path"]) for r in rows}
    counts = Counter(e.class_name for e in manifest)
    assert (counts["aeroplane"], counts["bottle"], counts["chair"]) == (6, 9, 10)


@pytest.mark.data
def test_shrec_meshes_follow_the_modelnet_layout(real_data):
    root = real_subset(real_data, "shrec11_meshcnn")
    manifest = discover(root)
    assert (len(manifest.filter(split="train")), len(manifest.filter(split="test")), len(manifest.classes)) == (
        480,
        120,
        30,
    )
    assert triples(manifest) == triples(load_csv(root / "index.csv"))


@pytest.mark.data
def test_trimesh_models_are_flat_and_extension_case_is_ignored(real_data):
    root = real_subset(real_data, "trimesh_models")
    manifest = discover(root)
    assert manifest.layout == "flat" and manifest.classes == [""]
    assert {e.path.name for e in manifest} == {r["path"] for r in read_index(root / "index.csv")}
    assert "ADIS16480.STL" in {e.path.name for e in manifest}
    assert "chair_model.binvox" not in {e.path.name for e in manifest}


# --- tmp folders ----------------------------------------------------------------------------------


def test_modelnet_layout_ignores_hidden_unknown_and_misplaced_files(tmp_path):
    touch(
        tmp_path,
        "chair/train/chair_0001.off",
        "chair/train/chair_0002.OFF",
        "chair/test/chair_0003.off",
        "chair/train/.chair_0004.off",  # hidden file
        "chair/.cache/train/x.off",  # inside a hidden folder
        "chair/train/notes.txt",  # unknown extension
        "chair/chair_extra.off",  # not in a split folder
        "desk/test/desk_0001.ply",
        "README.md",
    )
    manifest = discover(tmp_path)
    assert manifest.layout == "modelnet"
    assert [(e.class_name, e.split, e.path.relative_to(tmp_path).as_posix()) for e in manifest] == [
        ("chair", "test", "chair/test/chair_0003.off"),
        ("chair", "train", "chair/train/chair_0001.off"),
        ("chair", "train", "chair/train/chair_0002.OFF"),
        ("desk", "test", "desk/test/desk_0001.ply"),
    ]
    assert manifest.classes == ["chair", "desk"]
    assert [e.path.name for e in manifest.filter(split="train")] == ["chair_0001.off", "chair_0002.OFF"]


def test_shapenet_v1_and_v2_layouts(tmp_path):
    touch(
        tmp_path,
        "03001627/aaa/models/model_normalized.obj",
        "03001627/aaa/models/model_normalized.mtl",
        "02691156/bbb/models/model_normalized.obj",
    )
    manifest = discover(tmp_path)
    assert manifest.layout == "shapenet"
    assert [(e.class_name, e.path.parent.parent.name) for e in manifest] == [("02691156", "bbb"), ("03001627", "aaa")]
    v1 = tmp_path / "v1"
    touch(v1, "03001627/ccc/model.obj")
    assert [(e.class_name, e.split) for e in discover(v1, layout="shapenet")] == [("03001627", "")]


def test_flat_layout_takes_class_from_top_folder(tmp_path):
    touch(tmp_path, "bunny.ply", "scans/dragon/dragon.obj", "scans/armadillo.stl", "parts/a.glb")
    manifest = discover(tmp_path)
    assert manifest.layout == "flat"
    assert [(e.class_name, e.path.name) for e in manifest] == [
        ("", "bunny.ply"),
        ("parts", "a.glb"),
        ("scans", "armadillo.stl"),
        ("scans", "dragon.obj"),
    ]


def test_custom_extensions_and_explicit_layout(tmp_path):
    touch(tmp_path, "a/train/x.off", "a/train/y.binvox")
    assert [e.path.name for e in discover(tmp_path, extensions=["binvox", ".OFF"])] == ["x.off", "y.binvox"]
    flat = discover(tmp_path, layout="flat")
    assert [(e.class_name, e.split) for e in flat] == [("a", "")]


def test_empty_folder_is_a_clear_error(tmp_path):
    touch(tmp_path, "notes.txt", ".hidden.off")
    with pytest.raises(InputFileError) as info:
        discover(tmp_path)
    assert str(info.value) == (
        f"{tmp_path}: no shape files found for layout 'flat' (extensions "
        ".glb, .gltf, .npy, .npz, .obj, .off, .pcd, .ply, .stl, .xyz; 0 matching files in other places)"
    )


def test_layout_that_does_not_fit_is_a_clear_error(tmp_path):
    touch(tmp_path, "bunny.ply")
    with pytest.raises(
        InputFileError, match=r"no shape files found for layout 'modelnet' .*1 matching files in other places"
    ):
        discover(tmp_path, layout="modelnet")


def test_missing_root_file_root_and_bad_arguments(tmp_path):
    with pytest.raises(MissingFileError) as info:
        discover(tmp_path / "nope")
    assert str(info.value) == f"{tmp_path / 'nope'}: dataset folder does not exist"
    touch(tmp_path, "a.off")
    with pytest.raises(InputFileError, match="expected a dataset folder, got a file"):
        discover(tmp_path / "a.off")
    with pytest.raises(ValueError, match=r"layout 'voc': expected one of \('auto', 'modelnet', 'shapenet', 'deepsdf', 'flat'\)"):
        discover(tmp_path, layout="voc")
    with pytest.raises(ValueError, match="split 'dev'"):
        ManifestEntry("a", "dev", tmp_path / "a.off")


# --- CSV ----------------------------------------------------------------------------------------------


def test_csv_round_trip_with_relative_paths(tmp_path):
    root = tmp_path / "data"
    touch(root, "chair/train/a.off", "chair/test/b.off", "desk/train/c,comma.off")
    manifest = discover(root)
    out = tmp_path / "out" / "manifest.csv"
    manifest.save_csv(out)
    rows = read_index(out)
    assert list(rows[0]) == ["class", "split", "path"]
    assert [r["path"] for r in rows] == ["chair/test/b.off", "chair/train/a.off", "desk/train/c,comma.off"]
    assert load_csv(out, root=root).entries == manifest.entries
    assert [p.name for p in out.parent.iterdir()] == ["manifest.csv"]  # no temp file left behind


def test_csv_keeps_paths_outside_root_absolute(tmp_path):
    outside = tmp_path / "elsewhere" / "x.obj"
    manifest = Manifest((ManifestEntry("", "", outside),), root=tmp_path / "data")
    manifest.save_csv(tmp_path / "m.csv")
    assert read_index(tmp_path / "m.csv")[0]["path"] == outside.as_posix()
    assert load_csv(tmp_path / "m.csv", root=tmp_path / "other").entries == manifest.entries


def test_load_csv_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("class,split,file\na,train,x.off\n")
    with pytest.raises(CorruptFileError) as info:
        load_csv(bad)
    assert (
        str(info.value)
        == f"{bad}: header ['class', 'split', 'file'] has no 'path' column; expected columns class,split,path"
    )
    bad.write_text("class,split,path\na,holdout,x.off\n")
    with pytest.raises(CorruptFileError, match=r"line 2: split 'holdout'"):
        load_csv(bad)
    with pytest.raises(MissingFileError, match="manifest CSV does not exist"):
        load_csv(tmp_path / "none.csv")


def test_shape_ids_are_unique_shapenet_ids_or_shortest_distinguishing_paths():
    from shapes3d.data.shape_ids import shape_names
    from shapes3d.errors import Shapes3DError

    shapenet = [f"/d/{s}/{i}/models/model_normalized.obj" for s, i in (("04379243", "aa"), ("02828884", "bb"))]
    assert shape_names(shapenet) == ["04379243/aa", "02828884/bb"]
    assert shape_names(["/r/SdfSamples/ShapeNetV2/03001627/x1.npz"]) == ["03001627/x1"]
    assert shape_names(["/r/a/chair.obj", "/r/b/chair.obj", "/r/c/table.obj"]) == ["a/chair", "b/chair", "table"]
    assert shape_names(["/r/x.obj", "/r/x.off"]) == ["x.obj", "x.off"]
    with pytest.raises(Shapes3DError, match="shape id clash"):
        shape_names(["/r/a/x.obj", "/r/a/x.obj"])


def test_shapenet_classes_come_from_the_taxonomy_and_split_files_select_in_order(tmp_path):
    import json

    from shapes3d.data.discovery import apply_split_file

    for syn, mid in (("04379243", "t1"), ("04379243", "t2"), ("02828884", "b1")):
        (tmp_path / syn / mid / "models").mkdir(parents=True)
        (tmp_path / syn / mid / "models" / "model_normalized.obj").write_text("v 0 0 0\n")
    (tmp_path / "taxonomy.json").write_text(json.dumps([{"synsetId": "04379243", "name": "table,tabular array"}]))
    m = discover(tmp_path)
    assert sorted(m.classes) == ["02828884", "table"]
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"ShapeNetV2": {"04379243": ["t2", "missing"], "02828884": ["b1"]}}))
    picked = apply_split_file(m, split)
    assert [e.path.parts[-3] for e in picked] == ["t2", "b1"]


def test_official_sdf_samples_layout_is_discovered(tmp_path):
    folder = tmp_path / "SdfSamples" / "ShapeNetV2" / "03001627"
    folder.mkdir(parents=True)
    np.savez(folder / "c1.npz", pos=np.ones((2, 4), np.float32), neg=-np.ones((2, 4), np.float32))
    (tmp_path / "NormalizationParameters" / "ShapeNetV2" / "03001627").mkdir(parents=True)
    np.savez(tmp_path / "NormalizationParameters" / "ShapeNetV2" / "03001627" / "c1.npz", offset=np.zeros(3),
             scale=np.ones(1))
    for root in (tmp_path, tmp_path / "SdfSamples"):
        m = discover(root)
        assert m.layout == "deepsdf" and len(m) == 1 and m.entries[0].class_name == "03001627"


def test_safe_child_nested_accepts_relative_ids_and_refuses_escapes(tmp_path):
    from shapes3d.utils.io import safe_child

    assert safe_child(tmp_path, "04379243/1a2b.ply", nested=True) == tmp_path / "04379243" / "1a2b.ply"
    for bad in ("../x.ply", "a/../../x", "/etc/x", "a//b", "a/./b", "a\\b", "a/\x00b", "C:x/y"):
        with pytest.raises(InputFileError, match="unsafe"):
            safe_child(tmp_path, bad, nested=True)
    with pytest.raises(InputFileError, match="path separator"):
        safe_child(tmp_path, "04379243/1a2b.ply")  # not nested: one component only
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(tmp_path.parent)
    with pytest.raises(InputFileError, match="symlink"):
        safe_child(tmp_path / "out", "link/x.ply", nested=True)


# --- ModelNet40 as PointNet's .npy clouds (../shared/data/modelnet40_npy1024) ----------------------


def _modelnet40_like(root: Path, counts: dict[str, tuple[int, int]]) -> Path:
    """PointNet's layout: <class>/<split>/<class>_<NNNN>.npy (train numbered first), index.csv, shape_names.txt."""
    rng = np.random.default_rng(0)
    rows = ["path,class,label,split"]
    for label, (name, (n_train, n_test)) in enumerate(sorted(counts.items())):
        for i in range(1, n_train + n_test + 1):
            split = "train" if i <= n_train else "test"
            rel = f"{name}/{split}/{name}_{i:04d}.npy"
            (root / name / split).mkdir(parents=True, exist_ok=True)
            np.save(root / rel, rng.normal(size=(1024, 3)).astype(np.float32))
            rows.append(f"{rel},{name},{label},{split}")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    (root / "shape_names.txt").write_text("\n".join(sorted(counts)) + "\n")
    (root / "PROVENANCE.md").write_text("# not a shape\n")
    return root


def test_modelnet40_npy_clouds_follow_the_official_split(tmp_path):
    from shapes3d.geometry.io import load_points

    counts = {"airplane": (3, 2), "night_stand": (2, 1), "xbox": (1, 1)}
    root = _modelnet40_like(tmp_path / "modelnet40_npy1024", counts)
    m = discover(root)
    assert m.layout == "modelnet" and m.classes == sorted(counts)
    assert {c: (len(m.filter(split="train", class_name=c)), len(m.filter(split="test", class_name=c)))
            for c in m.classes} == counts
    assert all(e.path.suffix == ".npy" for e in m)  # index.csv, shape_names.txt, PROVENANCE.md left out
    # the files numbered after a class's training files are its test files, as in the official split
    assert [e.path.name for e in m.filter(class_name="airplane", split="test")] == ["airplane_0004.npy",
                                                                                   "airplane_0005.npy"]
    assert triples(m) == triples(load_csv(root / "index.csv"))
    pts = load_points(m.entries[0].path)
    assert pts.shape == (1024, 3) and np.array_equal(pts, np.load(m.entries[0].path))


def test_modelnet_layout_below_one_wrapper_folder(tmp_path, caplog):
    counts = {"bed": (2, 1), "chair": (1, 1)}
    _modelnet40_like(tmp_path / "ModelNet40", counts)
    (tmp_path / "ModelNet40" / "shape_names.txt").write_text("bed\nchair\ndesk\n")  # desk has no files
    with caplog.at_level("WARNING"):
        m = discover(tmp_path)
    assert m.layout == "modelnet" and m.classes == ["bed", "chair"]
    assert (len(m.filter(split="train")), len(m.filter(split="test"))) == (3, 2)
    assert triples(m) == triples(discover(tmp_path / "ModelNet40"))
    assert "shape_names.txt lists 1 classes without files: desk" in caplog.text


@pytest.mark.data
def test_real_modelnet40_clouds_match_their_index_and_class_list(real_data):
    root = real_subset(real_data, "modelnet40_npy1024")
    m = discover(root)
    assert m.layout == "modelnet" and len(m.classes) == 40
    assert (len(m.filter(split="train")), len(m.filter(split="test"))) == (9843, 2468)
    assert m.classes == (root / "shape_names.txt").read_text().split()
    assert (len(m.filter(split="train", class_name="airplane")), len(m.filter(split="test", class_name="desk"))) == (
        626, 86)
    assert triples(m) == triples(load_csv(root / "index.csv"))


def test_a_root_holding_two_modelnet_sets_is_refused(tmp_path):
    _modelnet40_like(tmp_path / "ModelNet40", {"bed": (1, 1)})
    _modelnet40_like(tmp_path / "ModelNet10", {"bed": (1, 1)})
    with pytest.raises(InputFileError) as e:
        discover(tmp_path)
    assert str(e.value).endswith("holds several ModelNet-layout data sets (ModelNet10/, ModelNet40/); give the "
                                 "folder of one")
    assert str(tmp_path) in str(e.value)
    assert len(discover(tmp_path / "ModelNet10")) == 2
