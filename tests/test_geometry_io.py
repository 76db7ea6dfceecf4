"""Mesh and point-cloud loading: every format on real files, every error with its message."""

from __future__ import annotations

import csv
import struct

import numpy as np
import pytest
import trimesh

from shapes3d.errors import (
    CorruptFileError,
    DegenerateMeshError,
    EmptyMeshError,
    FaceIndexError,
    InputFileError,
    MissingFileError,
    NonFiniteError,
    UnsupportedFormatError,
)
from shapes3d.geometry.io import clean_mesh, load_geometry, load_mesh, load_points
from tests.conftest import real_subset

# ---------------------------------------------------------------- real files


def test_modelnet_off_samples_all_load_with_index_counts(real_data):
    root = real_subset(real_data, "modelnet_off_samples")
    rows = list(csv.DictReader(open(root / "index.csv")))
    assert len(rows) == 17
    for row in rows:
        mesh = load_mesh(root / row["path"])
        # cleaning only merges duplicates and drops degenerate faces, never adds
        assert 0 < len(mesh.faces) <= int(row["faces"])
        assert len(mesh.vertices) <= int(row["vertices"])
        assert np.isfinite(mesh.vertices).all()


def test_malformed_modelnet_header(real_data, tmp_path):
    """ModelNet's 'OFF1046 900 0' (counts glued to the magic word) loads like the standard layout."""
    src = real_subset(real_data, "modelnet_off_samples") / "flux3d/ModelNet10/table/test/table_0393.off"
    lines = src.read_text().splitlines()
    assert lines[0] == "OFF"
    glued = tmp_path / "table_0393.off"
    glued.write_text("\n".join([f"OFF{lines[1]}"] + lines[2:]) + "\n")
    assert glued.read_text().startswith("OFF6036 5408 0\n")
    a, b = load_mesh(src), load_mesh(glued)
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.faces, b.faces)
    ref = trimesh.load(src, process=False)
    np.testing.assert_allclose(b.bounds, ref.bounds)


def test_trimesh_models_every_format(real_data):
    root = real_subset(real_data, "trimesh_models")
    rows = list(csv.DictReader(open(root / "index.csv")))
    exts = set()
    for row in rows:
        mesh = load_mesh(root / row["path"])
        exts.add((root / row["path"]).suffix.lower())
        ref = trimesh.load(root / row["path"], force="mesh")
        np.testing.assert_allclose(mesh.bounds, ref.bounds, rtol=0, atol=1e-6 * np.ptp(ref.bounds))
        if row["watertight"] == "True":
            assert mesh.is_watertight, row["path"]
    assert {".off", ".obj", ".ply", ".stl"} <= exts


def test_seam_split_vertices_are_merged(real_data):
    # fuze.obj becomes watertight once seam-split (UV) vertices are merged (PROVENANCE.md)
    mesh = load_mesh(real_subset(real_data, "trimesh_models") / "fuze.obj")
    assert mesh.is_watertight and mesh.is_winding_consistent


def test_modelnet10_pcd_binary(real_data):
    root = real_subset(real_data, "modelnet10_pcd1024")
    rows = list(csv.DictReader(open(root / "index.csv")))[::400]
    for row in rows:
        pts = load_points(root / row["path"])
        assert pts.shape == (1024, 3) and np.isfinite(pts).all()
        # the reference reader from PROVENANCE.md: header until DATA, then float32 triples
        raw = (root / row["path"]).read_bytes()
        body = raw[raw.index(b"DATA binary\n") + len(b"DATA binary\n"):]
        ref = np.frombuffer(body, dtype="<f4", count=1024 * 3).reshape(-1, 3)
        np.testing.assert_array_equal(pts, ref.astype(np.float64))


# ---------------------------------------------------------------- formats made here


def _pcd_header(n: int, data: str, fields=("x", "y", "z"), size=4, typ="F") -> bytes:
    k = len(fields)
    return (f"# .PCD v0.7\nVERSION 0.7\nFIELDS {' '.join(fields)}\nSIZE {' '.join([str(size)] * k)}\n"
            f"TYPE {' '.join([typ] * k)}\nCOUNT {' '.join(['1'] * k)}\nWIDTH {n}\nHEIGHT 1\n"
            f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {data}\n").encode()


def test_pcd_ascii_with_extra_fields(tmp_path, rng):
    pts = rng.normal(size=(50, 3))
    p = tmp_path / "a.pcd"
    rgb = rng.integers(0, 255, size=(50, 1))
    body = "\n".join(" ".join(f"{v:.17g}" for v in row) for row in np.hstack([rgb, pts]))
    p.write_bytes(_pcd_header(50, "ascii", fields=("rgb", "x", "y", "z")) + body.encode())
    np.testing.assert_allclose(load_points(p), pts, rtol=1e-15)


def _lzf_literal_only(data: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(data), 32):
        chunk = data[i:i + 32]
        out.append(len(chunk) - 1)
        out += chunk
    return bytes(out)


def test_pcd_binary_compressed(tmp_path, rng):
    pts = rng.normal(size=(40, 3)).astype(np.float32)
    raw = pts.T.tobytes()  # field-major
    comp = _lzf_literal_only(raw)
    p = tmp_path / "c.pcd"
    p.write_bytes(_pcd_header(40, "binary_compressed") + struct.pack("<II", len(comp), len(raw)) + comp)
    np.testing.assert_array_equal(load_points(p), pts.astype(np.float64))


def test_lzf_back_references():
    from shapes3d.geometry.pcd import _lzf_decompress

    # literal "abc", then a back reference of length 6 at distance 3 -> "abcabcabc"
    data = bytes([2]) + b"abc" + bytes([(4 << 5) | 0, 2])
    assert _lzf_decompress(data, 9) == b"abcabcabc"


def test_xyz_npy_npz_ply_points(tmp_path, rng):
    pts = rng.normal(size=(30, 3))
    (tmp_path / "p.xyz").write_text("\n".join(" ".join(f"{v:.17g}" for v in r) for r in pts))
    (tmp_path / "p.txt").write_text("# comment\n" + "\n".join(",".join(f"{v:.17g}" for v in r) + ",0,0,1" for r in pts))
    np.save(tmp_path / "p.npy", pts)
    np.savez(tmp_path / "p.npz", points=pts, normals=pts)
    trimesh.PointCloud(pts).export(tmp_path / "p.ply")
    for name in ("p.xyz", "p.txt", "p.npy", "p.npz"):
        np.testing.assert_allclose(load_points(tmp_path / name), pts, rtol=1e-15, err_msg=name)
    np.testing.assert_allclose(load_points(tmp_path / "p.ply"), pts, rtol=1e-6)
    assert isinstance(load_geometry(tmp_path / "p.ply"), np.ndarray)


def test_glb_scene_is_flattened_with_transforms(tmp_path):
    scene = trimesh.Scene()
    box = trimesh.creation.box()
    scene.add_geometry(box, node_name="a", transform=trimesh.transformations.translation_matrix([5, 0, 0]))
    scene.add_geometry(trimesh.creation.icosphere(), node_name="b")
    scene.export(tmp_path / "s.glb")
    mesh = load_mesh(tmp_path / "s.glb")
    assert len(mesh.faces) == len(box.faces) + len(trimesh.creation.icosphere().faces)
    assert mesh.bounds[1, 0] == pytest.approx(5.5)
    gltf_dir = tmp_path / "g"
    gltf_dir.mkdir()
    for name, blob in scene.export(file_type="gltf").items():
        (gltf_dir / name).write_bytes(blob)
    assert len(load_mesh(gltf_dir / "model.gltf").faces) == len(mesh.faces)


def test_polygon_off_is_fan_triangulated(tmp_path):
    p = tmp_path / "quad.off"
    p.write_text("OFF\n# a comment\n5 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n0 0 1\n4 0 1 2 3\n3 0 1 4\n")
    mesh = load_mesh(p)
    assert len(mesh.faces) == 3
    assert mesh.area == pytest.approx(1.5)


# ---------------------------------------------------------------- errors, one per case


def _off(tmp_path, text, name="m.off"):
    p = tmp_path / name
    p.write_text(text)
    return p


CASES = [
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n", CorruptFileError, "truncated: header declares 3 vertices and 1 faces but only 2 data lines follow"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", FaceIndexError, "face index 7 out of range for 3 vertices (valid 0..2)"),
    ("OFF\n3 1 0\n0 0 nan\n1 0 0\n0 1 0\n3 0 1 2\n", NonFiniteError, "1 of 3 vertices have NaN or infinite coordinates (first at index 0)"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n", DegenerateMeshError, "all 1 faces are degenerate (zero area or repeated vertices)"),
    ("OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n", EmptyMeshError, "mesh has no triangle faces (face array shape (0, 3))"),
    ("PLY garbage\n", CorruptFileError, "missing OFF header (first line starts with 'PLY garbage')"),
    ("OFF\nthree one zero\n", CorruptFileError, "bad counts line 'three one zero': expected 'n_vertices n_faces n_edges'"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n4 0 1 2\n", CorruptFileError, "face 0 declares 4 vertices but lists 3"),
]


@pytest.mark.parametrize("text,exc,message", CASES)
def test_off_errors_name_file_and_fault(tmp_path, text, exc, message):
    p = _off(tmp_path, text)
    with pytest.raises(exc) as info:
        load_mesh(p)
    assert str(info.value) == f"{p}: {message}"
    assert isinstance(info.value, InputFileError) and info.value.path == str(p)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.obj"
    with pytest.raises(MissingFileError, match=f"^{p}: file does not exist$"):
        load_mesh(p)


def test_unsupported_extension(tmp_path):
    p = tmp_path / "m.dae"
    p.write_text("x")
    with pytest.raises(UnsupportedFormatError) as info:
        load_mesh(p)
    assert str(info.value) == f"{p}: unsupported mesh extension '.dae'; supported: .off, .obj, .ply, .stl, .glb, .gltf"


def test_empty_file(tmp_path):
    p = tmp_path / "e.stl"
    p.write_bytes(b"")
    with pytest.raises(EmptyMeshError, match=r"e\.stl: file is empty \(0 bytes\)$"):
        load_mesh(p)


def test_garbage_binary_stl_and_glb(tmp_path, rng):
    for name in ("g.stl", "g.glb", "g.ply"):
        p = tmp_path / name
        p.write_bytes(rng.integers(0, 256, size=300, dtype=np.uint8).tobytes())
        with pytest.raises(InputFileError) as info:
            load_mesh(p)
        assert str(info.value).startswith(f"{p}: ")


def test_truncated_binary_pcd(tmp_path):
    p = tmp_path / "t.pcd"
    p.write_bytes(_pcd_header(100, "binary") + b"\0" * 40)
    with pytest.raises(CorruptFileError, match=r"truncated: 100 points need 1200 data bytes, file has 40$"):
        load_points(p)


def test_points_errors(tmp_path):
    p = tmp_path / "nan.npy"
    np.save(p, np.array([[0, 0, 0], [np.inf, 0, 0.0]]))
    with pytest.raises(NonFiniteError, match=r"1 of 2 points have NaN or infinite coordinates \(first at index 1\)"):
        load_points(p)
    p = tmp_path / "flat.npy"
    np.save(p, np.zeros((4, 2)))
    with pytest.raises(CorruptFileError, match=r"expected an \(N, 3\+\) array of points, got shape \(4, 2\)"):
        load_points(p)
    p = tmp_path / "obj.npy"
    np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CorruptFileError, match="pickled objects"):
        load_points(p)
    p = tmp_path / "short.xyz"
    p.write_text("1 2 3\n4 5\n")
    with pytest.raises(CorruptFileError, match=r"line 2: expected at least 3 numbers, got 2"):
        load_points(p)


def test_clean_mesh_removes_degenerate_and_duplicates(caplog):
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0], [2, 2, 2.0]])
    f = np.array([[0, 1, 2], [3, 1, 2], [0, 0, 1]])  # face 1 duplicates face 0 via vertex 3; face 2 repeated index
    with caplog.at_level("INFO", logger="shapes3d"):
        mesh = clean_mesh(v, f)
    assert len(mesh.vertices) == 3
    assert len(mesh.faces) == 2  # the two coincident faces stay (not degenerate), the repeated-index one goes
    assert "merged 1 duplicate vertices, removed 1 degenerate faces and 1 unreferenced vertices" in caplog.text
