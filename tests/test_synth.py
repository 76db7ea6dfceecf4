"""The built-in synthetic dataset: closed meshes, exact analytic SDFs, determinism, layout."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import trimesh

from shapes3d.data import shapes_sdf as S
from shapes3d.data import synth_families as F
from shapes3d.data.synth import (
    FAMILIES,
    PARAM_RANGES,
    SynthShape,
    _sample_near_surface,
    load_synth_params,
    sample_shape,
    shape_from_params,
    shape_rng,
    write_dataset,
)
from shapes3d.errors import CorruptFileError, MissingFileError
from shapes3d.geometry.conventions import Grid

RES = 64  # the default; thin parts (>= 0.06) span about two cells


@pytest.fixture(scope="module")
def meshes() -> dict[str, tuple[SynthShape, trimesh.Trimesh, float]]:
    """One posed shape per family, its mesh, and the mesh grid's cell size."""
    out = {}
    for fam in FAMILIES:
        shape = sample_shape(fam, shape_rng(3, fam, 1))
        out[fam] = (shape, shape.mesh(resolution=RES), float(shape.mesh_grid(resolution=RES).spacing.max()))
    return out


def test_at_least_eight_families_including_the_required_ones():
    assert {"chair", "table", "lamp", "mug", "bottle", "bowl", "ring", "rocket"} <= set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_mesh_is_closed_consistently_wound_and_outward(meshes, family):
    shape, mesh, h = meshes[family]
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0
    assert len(mesh.split(only_watertight=False)) == 1  # one connected part, no floating pieces
    # Outward normals: face normals follow the SDF gradient (central differences).
    c, eps = mesh.triangles_center, 1e-5
    grad = np.stack([shape.sdf(c + eps * e) - shape.sdf(c - eps * e) for e in np.eye(3)], axis=1)
    assert np.mean(np.einsum("ij,ij->i", grad, mesh.face_normals) > 0) > 0.99


@pytest.mark.parametrize("family", FAMILIES)
def test_analytic_sign_agrees_with_mesh_containment(meshes, family):
    shape, mesh, h = meshes[family]
    lo, hi = mesh.bounds
    # Half the points near the surface (where a wrong mesh would show), half uniform in the box.
    rng = np.random.default_rng(1)
    near = mesh.vertices[rng.integers(len(mesh.vertices), size=300)] + rng.normal(scale=3 * h, size=(300, 3))
    pts = np.concatenate([near, rng.uniform(lo - 2 * h, hi + 2 * h, size=(300, 3))])
    d = shape.sdf(pts)
    far = np.abs(d) > 2 * h
    agree = mesh.contains(pts[far]) == (d[far] < 0)
    assert far.sum() > 250
    assert agree.mean() > 0.995


@pytest.mark.parametrize("family", FAMILIES)
def test_mesh_vertices_lie_on_the_zero_level_set(meshes, family):
    shape, mesh, h = meshes[family]
    assert np.abs(shape.sdf(mesh.vertices)).max() < h


def test_handles_and_rings_have_genus_one_and_vessels_genus_zero(meshes):
    for fam in ("mug", "ring"):
        assert meshes[fam][1].euler_number == 0, fam  # V - E + F = 2 - 2g with g = 1
    for fam in ("bowl", "bottle", "lamp", "rocket"):
        assert meshes[fam][1].euler_number == 2, fam


def test_bowls_and_mugs_are_hollow(meshes):
    for fam in ("bowl", "mug"):
        mesh = meshes[fam][1]
        assert mesh.volume < 0.6 * mesh.convex_hull.volume, fam
    assert meshes["bottle"][1].volume > 0.8 * meshes["bottle"][1].convex_hull.volume


@pytest.mark.parametrize("family", FAMILIES)
def test_unposed_shapes_fit_in_the_unit_cube_even_at_extreme_parameters(family):
    ranges = PARAM_RANGES[family]
    rng = np.random.default_rng(5)
    candidates = [{k: lo for k, (lo, hi) in ranges.items()}, {k: hi for k, (lo, hi) in ranges.items()}]
    candidates += [{k: (lo, hi)[rng.integers(2)] for k, (lo, hi) in ranges.items()} for _ in range(3)]
    # Samples on the six faces of [-1, 1]^3, spacing delta: by the 1-Lipschitz bound, sdf > delta / sqrt(2)
    # at every sample means no point of the faces is inside, so a connected shape with a point
    # inside the cube lies entirely within it.
    delta = 0.02
    u, v = np.meshgrid(np.linspace(-1, 1, 101), np.linspace(-1, 1, 101), indexing="ij")
    u, v = u.ravel(), v.ravel()
    faces = np.concatenate([np.stack(np.roll([np.full_like(u, sign), u, v], ax, axis=0), axis=1) for ax in range(3) for sign in (-1.0, 1.0)])
    inner = Grid.cube(16, 0.9).points()
    for params in candidates:
        shape = shape_from_params(family, {**params, "yaw": 0.0, "scale": 1.0})
        assert shape.sdf(faces).min() > delta / np.sqrt(2), params
        assert shape.sdf(inner).min() < 0, params


def test_pose_rotates_about_z_and_scales():
    shape = sample_shape("chair", np.random.default_rng(0))
    base = shape_from_params("chair", {**shape.params, "yaw": 0.0, "scale": 1.0})
    p = np.random.default_rng(1).uniform(-1, 1, size=(500, 3))
    yaw, s = shape.params["yaw"], shape.params["scale"]
    c, si = np.cos(yaw), np.sin(yaw)
    rotated = p @ np.array([[c, -si, 0], [si, c, 0], [0, 0, 1]]).T * s
    np.testing.assert_allclose(shape.sdf(rotated), s * base.sdf(p), atol=1e-12)


def test_coarse_to_fine_sampling_matches_dense_evaluation():
    for fam in ("mug", "rocket", "chair"):
        shape = sample_shape(fam, shape_rng(0, fam, 2))
        grid = shape.mesh_grid(resolution=40)
        dense = shape.sdf(grid.points()).reshape(grid.shape)
        values, exact = _sample_near_surface(shape.sdf, grid)
        np.testing.assert_array_equal(values[exact], dense[exact])
        np.testing.assert_array_equal(values > 0, dense > 0)
        # Every sample within a cell diagonal of the surface was evaluated exactly.
        assert exact[np.abs(dense) <= np.sqrt(3) * grid.spacing.max()].all()
        mesh = shape.mesh(resolution=40)
        from skimage import measure

        verts, faces, _, _ = measure.marching_cubes(dense, 0.0)
        np.testing.assert_allclose(mesh.vertices, grid.index_to_world(verts.astype(np.float64)))
        np.testing.assert_array_equal(mesh.faces, faces)


def test_families_are_distinct_by_occupancy_iou():
    """Within-family IoU beats between-family IoU, and 1-NN by IoU is nearly perfect (pose undone)."""
    cells = Grid.cube(16, 1.0, kind="cells").points()
    occ = {}
    for fam in FAMILIES:
        shapes = [sample_shape(fam, shape_rng(11, fam, i)) for i in range(6)]
        occ[fam] = [shape_from_params(fam, {**s.params, "yaw": 0.0, "scale": 1.0}).sdf(cells) < 0 for s in shapes]

    def iou(a, b):
        return (a & b).sum() / max((a | b).sum(), 1)

    def mean_iou(f, g):
        return np.mean([iou(a, b) for i, a in enumerate(occ[f]) for j, b in enumerate(occ[g]) if f != g or i < j])

    for f in FAMILIES:
        within = mean_iou(f, f)
        assert all(within > mean_iou(f, g) for g in FAMILIES if g != f), f
    labelled = [(f, a) for f in FAMILIES for a in occ[f]]
    hits = [max((iou(a, b), g) for j, (g, b) in enumerate(labelled) if j != i)[1] == f for i, (f, a) in enumerate(labelled)]
    assert np.mean(hits) >= 0.9


def test_different_samples_of_a_family_differ():
    a, b = (sample_shape("table", shape_rng(0, "table", i)) for i in (1, 2))
    assert a.params != b.params
    p = np.random.default_rng(0).uniform(-1, 1, size=(200, 3))
    assert not np.allclose(a.sdf(p), b.sdf(p))


def test_unknown_family_names_the_valid_ones():
    with pytest.raises(ValueError) as err:
        sample_shape("teapot", np.random.default_rng(0))
    assert str(err.value) == f"unknown shape family 'teapot'; expected one of {', '.join(FAMILIES)}"
    with pytest.raises(ValueError, match="unknown shape family 'teapot'"):
        shape_from_params("teapot", {})
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        sample_shape("chair", 0)
    with pytest.raises(ValueError, match="unknown shape family 'teapot'"):
        write_dataset("/nonexistent", per_class=1, families=("chair", "teapot"))


def test_bad_params_are_rejected_with_the_key_named():
    params = dict(sample_shape("ring", np.random.default_rng(0)).params)
    del params["major_r"]
    with pytest.raises(ValueError, match=r"params for 'ring': missing \['major_r'\], unexpected \[\]"):
        shape_from_params("ring", params)
    params = {**sample_shape("ring", np.random.default_rng(0)).params, "half_w": float("nan")}
    with pytest.raises(ValueError, match="params for 'ring': half_w must be a finite number, got nan"):
        shape_from_params("ring", params)
    with pytest.raises(ValueError, match=r"points must have shape \(N, 3\), got \(4, 2\)"):
        sample_shape("ring", np.random.default_rng(0)).sdf(np.zeros((4, 2)))


def test_write_dataset_layout_manifest_and_params_round_trip(tmp_path):
    out = write_dataset(tmp_path / "ds", per_class=5, seed=2, families=("mug", "ring"), resolution=24)
    assert out == tmp_path / "ds"
    with open(out / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["split"] for r in rows] == ["train"] * 4 + ["test"] + ["train"] * 4 + ["test"]
    assert rows[0] == {"class": "mug", "split": "train", "path": "mug/train/mug_0001.off"}
    assert rows[4]["path"] == "mug/test/mug_0005.off"
    for r in rows:
        mesh = trimesh.load(out / r["path"], force="mesh", process=True)
        assert mesh.is_watertight and mesh.volume > 0
        shape = load_synth_params((out / r["path"]).with_suffix(".json"))
        assert shape.family == r["class"]
        # The JSON rebuilds the exact SDF of the shape that was meshed.
        expected = sample_shape(r["class"], shape_rng(2, r["class"], int(r["path"][-8:-4])))
        pts = np.random.default_rng(0).uniform(-1, 1, size=(300, 3))
        np.testing.assert_array_equal(shape.sdf(pts), expected.sdf(pts))
        np.testing.assert_allclose(np.abs(shape.sdf(mesh.vertices)).max(), 0.0, atol=0.1)


def _tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_write_dataset_is_deterministic_and_per_family_independent(tmp_path):
    kw = dict(per_class=2, resolution=20, test_fraction=0.5)
    a = _tree_bytes(write_dataset(tmp_path / "a", seed=4, families=("bowl", "lamp"), **kw))
    b = _tree_bytes(write_dataset(tmp_path / "b", seed=4, families=("bowl", "lamp"), **kw))
    c = _tree_bytes(write_dataset(tmp_path / "c", seed=5, families=("bowl", "lamp"), **kw))
    d = _tree_bytes(write_dataset(tmp_path / "d", seed=4, families=("lamp",), **kw))
    assert a == b
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a if k != "manifest.csv")
    assert all(d[k] == a[k] for k in d if k != "manifest.csv")
    assert not any(name.endswith(".tmp") for name in a)


def test_write_dataset_other_formats_and_argument_checks(tmp_path):
    out = write_dataset(tmp_path / "ply", per_class=1, families=("ring",), resolution=24, fmt="ply", test_fraction=0.0)
    assert trimesh.load(out / "ring/train/ring_0001.ply", force="mesh").is_watertight
    with pytest.raises(ValueError, match="unsupported mesh format 'fbx'; expected one of off, ply, obj, stl"):
        write_dataset(tmp_path / "x", per_class=1, fmt="fbx")
    with pytest.raises(ValueError, match="per_class must be a positive integer, got 0"):
        write_dataset(tmp_path / "x", per_class=0)
    with pytest.raises(ValueError, match=r"test_fraction must be in \[0, 1\), got 1.0"):
        write_dataset(tmp_path / "x", per_class=1, test_fraction=1.0)


def test_load_synth_params_errors(tmp_path):
    with pytest.raises(MissingFileError):
        load_synth_params(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"family": "ring", "params": {"major_r": 0.5}}))
    with pytest.raises(CorruptFileError, match="bad.json: not a synthetic shape record: params for 'ring': missing"):
        load_synth_params(bad)
    bad.write_text("{not json")
    with pytest.raises(CorruptFileError, match="bad.json: not a synthetic shape record"):
        load_synth_params(bad)


# --- primitives against independent references --------------------------------------


def test_lathe_of_a_rectangle_is_the_capped_cylinder():
    p = np.random.default_rng(0).uniform(-1, 1, size=(5000, 3))
    lathe = S.lathe(p, [(0, -0.3), (0.5, -0.3), (0.5, 0.4), (0, 0.4)])
    np.testing.assert_allclose(lathe, S.cylinder(p, (0, 0, -0.3), (0, 0, 0.4), 0.5), atol=1e-12)


def test_ring_cross_section_with_full_roundness_is_the_torus():
    p = np.random.default_rng(0).uniform(-1, 1, size=(5000, 3))
    ring = S.box2d(S.meridian(p), (0.6, 0.0), (0.15, 0.15), 0.15)
    np.testing.assert_allclose(ring, S.torus(p, (0, 0, 0), 0.6, 0.15), atol=1e-12)


def test_polygon2d_matches_brute_force_distance_and_containment():
    from matplotlib.path import Path

    rng = np.random.default_rng(2)
    ang = np.sort(rng.uniform(0, 2 * np.pi, 9))
    poly = np.stack([np.cos(ang), np.sin(ang)], axis=1) * rng.uniform(0.4, 1.0, (9, 1))  # star-shaped, non-convex
    q = rng.uniform(-1.2, 1.2, size=(400, 2))
    d = S.polygon2d(q, poly)
    assert np.array_equal(d < 0, Path(poly).contains_points(q))
    t = np.linspace(0, 1, 1001)[:, None]
    edge_pts = np.concatenate([a + t * (b - a) for a, b in zip(poly, np.roll(poly, -1, axis=0))])
    brute = np.sqrt(((q[:, None, :] - edge_pts[None]) ** 2).sum(-1)).min(axis=1)
    np.testing.assert_allclose(np.abs(d), brute, atol=1e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_sdf_is_one_lipschitz(family):
    shape = sample_shape(family, shape_rng(0, family, 4))
    rng = np.random.default_rng(3)
    a = rng.uniform(-1.2, 1.2, size=(4000, 3))
    b = a + rng.normal(scale=0.05, size=a.shape)
    assert np.all(np.abs(shape.sdf(a) - shape.sdf(b)) <= np.linalg.norm(a - b, axis=1) + 1e-9)


class _Recorder(dict):
    """A params dict that remembers which keys a builder reads."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_declared_parameter_is_used_by_the_builder(family):
    assert set(F.FAMILY_SDFS) == set(FAMILIES)
    ranges = PARAM_RANGES[family]
    read: set[str] = set()
    for pick in (0, 1):  # all-low then all-high values: every switch is seen both ways
        rec = _Recorder({k: r[pick] for k, r in ranges.items()})
        F.FAMILY_SDFS[family](np.zeros((4, 3)), rec)
        read |= rec.read
    assert read == set(ranges)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_many_samples_mesh_closed_and_connected_at_default_resolution(family):
    # Below R=64 thin parts (legs, poles, shade walls) can break into pieces; at 64 none may.
    for i in range(25):
        mesh = sample_shape(family, shape_rng(99, family, i)).mesh()
        assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0, i
        assert len(mesh.split(only_watertight=False)) == 1, i
        if family in ("mug", "ring"):
            assert mesh.euler_number == 0, i
