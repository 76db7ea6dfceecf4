"""Signed distances and winding numbers: analytic shapes, pitfall meshes, real scans, errors."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import trimesh
from conftest import real_subset

from shapes3d.geometry.conventions import sphere_sdf
from shapes3d.geometry.signed_distance import drop_duplicate_faces, signed_distance
from shapes3d.geometry.winding import winding_number


@pytest.fixture(scope="module")
def sphere() -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=4)


def _sphere_mesh_error(mesh: trimesh.Trimesh) -> float:
    """Largest gap between the unit sphere and its inscribed mesh: at a face centre."""
    return float(1.0 - np.linalg.norm(mesh.triangles_center, axis=1).min())


def _box_sdf(p: np.ndarray, half: float) -> np.ndarray:
    q = np.abs(p) - half
    return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)


def _naive_point_triangle_distance(p: np.ndarray, tri: np.ndarray) -> float:
    """Brute force: densely sampled triangle, for cross-checking one query."""
    u, v = np.meshgrid(np.linspace(0, 1, 401), np.linspace(0, 1, 401))
    keep = u + v <= 1
    pts = tri[0] + u[keep, None] * (tri[1] - tri[0]) + v[keep, None] * (tri[2] - tri[0])
    return float(np.linalg.norm(pts - p, axis=1).min())


def test_sphere_against_analytic(sphere, rng):
    pts = rng.uniform(-1.5, 1.5, (20_000, 3))
    res = signed_distance(sphere, pts)
    exact = sphere_sdf(pts)
    gap = _sphere_mesh_error(sphere)
    assert res.method == "parity" and res.watertight and res.duplicate_faces == 0
    assert np.abs(res.values - exact).max() <= gap + 1e-5
    away = np.abs(exact) > gap + 1e-5
    assert np.array_equal(res.values[away] < 0, exact[away] < 0)


def test_cube_against_analytic(rng):
    cube = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    pts = rng.uniform(-1.0, 1.0, (20_000, 3))
    res = signed_distance(cube, pts)
    exact = _box_sdf(pts, 0.5)
    # The box mesh is the exact shape, so distances agree to float32 precision.
    np.testing.assert_allclose(res.values, exact, atol=2e-6)


def test_distance_matches_brute_force_single_triangle(rng):
    tri = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.2, 0.9, 0.0]])
    mesh = trimesh.Trimesh(tri, [[0, 1, 2]], process=False)
    pts = rng.uniform(-0.5, 1.5, (5, 3))
    res = signed_distance(mesh, pts, sign_method="winding")
    for p, d in zip(pts, res.values):
        assert abs(abs(d) - _naive_point_triangle_distance(p, tri)) < 3e-3


def test_far_from_origin_keeps_precision(sphere, rng):
    shifted = sphere.copy()
    shifted.apply_translation([1e4, -2e4, 5e3])
    pts = rng.uniform(-1.5, 1.5, (2000, 3))
    a = signed_distance(sphere, pts).values
    b = signed_distance(shifted, pts + [1e4, -2e4, 5e3]).values
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_inverted_normals_parity_and_winding(sphere, rng):
    inverted = sphere.copy()
    inverted.invert()
    pts = rng.uniform(-1.5, 1.5, (1000, 3))
    exact = sphere_sdf(pts)
    away = np.abs(exact) > 0.01
    for method in ("parity", "winding"):
        res = signed_distance(inverted, pts, sign_method=method)
        assert res.method == method
        assert np.array_equal(res.values[away] < 0, exact[away] < 0), method


def test_open_sphere_winding_mostly_right(rng):
    # Remove a cap of faces around +z: a hole ~5 % of the surface.
    sphere = trimesh.creation.icosphere(subdivisions=3)
    keep = sphere.triangles_center[:, 2] < 0.9
    holed = trimesh.Trimesh(sphere.vertices, sphere.faces[keep], process=False)
    pts = rng.uniform(-1.2, 1.2, (2000, 3))
    exact = sphere_sdf(pts)
    res = signed_distance(holed, pts)
    assert res.method == "winding" and not res.watertight
    away = np.abs(exact) > 0.01
    agreement = np.mean((res.values[away] < 0) == (exact[away] < 0))
    # Only points close to the hole's mouth may flip (|w| near 0.5 there).
    assert agreement > 0.99


def test_overlapping_parts_are_summed(rng):
    a = trimesh.creation.icosphere(subdivisions=3)
    b = a.copy()
    b.apply_translation([0.6, 0.0, 0.0])
    both = trimesh.util.concatenate([a, b])
    pts = rng.uniform([-1.2, -1.2, -1.2], [1.8, 1.2, 1.2], (6000, 3))
    exact = np.minimum(sphere_sdf(pts), sphere_sdf(pts, center=(0.6, 0, 0)))
    res = signed_distance(both, pts)
    assert res.method == "parity"
    away = np.abs(exact) > 0.02
    # Plain parity would call the lens where the spheres overlap "outside".
    lens = (sphere_sdf(pts) < -0.02) & (sphere_sdf(pts, center=(0.6, 0, 0)) < -0.02)
    assert lens.sum() > 100
    assert np.array_equal(res.values[away] < 0, exact[away] < 0)


def test_double_sided_faces_detected(sphere, rng):
    flipped = sphere.faces[:, ::-1]
    doubled = trimesh.Trimesh(sphere.vertices, np.concatenate([sphere.faces, flipped]), process=False)
    pts = rng.uniform(-1.5, 1.5, (3000, 3))
    res = signed_distance(doubled, pts)
    assert res.duplicate_faces == len(sphere.faces)
    exact = sphere_sdf(pts)
    away = np.abs(exact) > 0.01
    assert np.array_equal(res.values[away] < 0, exact[away] < 0)


def test_drop_duplicate_faces_keeps_first():
    faces = np.array([[0, 1, 2], [2, 1, 0], [1, 2, 3], [3, 1, 2]])
    kept, dropped = drop_duplicate_faces(faces)
    assert dropped == 2
    np.testing.assert_array_equal(kept, [[0, 1, 2], [1, 2, 3]])


def test_winding_number_closed_sphere_is_indicator(sphere, rng):
    pts = rng.uniform(-1.5, 1.5, (300, 3))
    r = np.linalg.norm(pts, axis=1)
    w = winding_number(sphere, pts, exact=True)
    away = np.abs(r - 1) > 0.01
    np.testing.assert_allclose(w[away], (r[away] < 1).astype(float), atol=1e-6)


def test_winding_number_hemisphere_is_solid_angle(rng):
    # An open hemisphere seen from its centre covers half the sphere of directions: w = 1/2.
    s = trimesh.creation.icosphere(subdivisions=4)
    upper = trimesh.Trimesh(s.vertices, s.faces[s.triangles_center[:, 2] > 0], process=False)
    w = winding_number(upper, np.zeros((1, 3)), exact=True)
    assert abs(abs(w[0]) - 0.5) < 0.02


def test_fast_winding_matches_exact(rng):
    sphere = trimesh.creation.icosphere(subdivisions=3)
    pts = rng.uniform(-1.5, 1.5, (800, 3))
    exact = winding_number(sphere, pts, exact=True)
    fast = winding_number(sphere, pts, exact=False)
    assert np.abs(exact - fast).max() < 0.05
    assert np.array_equal(np.abs(exact) > 0.5, np.abs(fast) > 0.5)


def test_winding_number_accepts_vertices_faces_and_tensors(sphere):
    pts = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    w1 = winding_number((sphere.vertices, sphere.faces), pts)
    w2 = winding_number(sphere, torch.from_numpy(pts))
    np.testing.assert_allclose(w1, [1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(w1, w2)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (np.zeros((0, 3)), "points is empty: expected at least one (x, y, z) row"),
        (np.zeros((4, 2)), "points must have shape (N, 3), got (4, 2)"),
        (np.array([[0.0, 0.0, 0.0], [np.nan, 0.0, 0.0]]), "points contain NaN or infinity (first at row 1"),
    ],
)
def test_bad_points_rejected(sphere, points, message):
    with pytest.raises(ValueError) as e:
        signed_distance(sphere, points)
    assert message in str(e.value)


def test_bad_mesh_and_options_rejected(sphere):
    empty = trimesh.Trimesh(np.zeros((3, 3)), np.zeros((0, 3), dtype=int), process=False)
    with pytest.raises(ValueError, match=r"mesh has no faces \(3 vertices, 0 faces\)"):
        signed_distance(empty, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="sign_method must be one of .* got 'normal'"):
        signed_distance(sphere, np.zeros((1, 3)), sign_method="normal")
    with pytest.raises(ValueError, match="parity_rays must be an odd positive integer, got 2"):
        signed_distance(sphere, np.zeros((1, 3)), parity_rays=2)
    with pytest.raises(ValueError, match=r"face indices must lie in \[0, 3\)"):
        winding_number((np.zeros((3, 3)), np.array([[0, 1, 3]])), np.zeros((1, 3)))


def _watertight_scans(root, max_faces: int) -> list:
    with open(root / "index.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["watertight"] == "True" and int(r["faces"]) <= max_faces]
    return [root / r["path"] for r in rows]


@pytest.mark.data
def test_real_watertight_scans_sign_accuracy(real_data, rng):
    root = real_subset(real_data, "classic_scans")
    paths = _watertight_scans(root, max_faces=15_000)
    assert len(paths) >= 5
    for path in paths[:5]:
        mesh = trimesh.load(path, force="mesh", process=True)
        lo, hi = mesh.bounds
        pts = rng.uniform(lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo), (1000, 3))
        res = signed_distance(mesh, pts)
        assert res.method == "parity", path.name
        reference = mesh.contains(pts)
        agreement = np.mean((res.values < 0) == reference)
        assert agreement > 0.999, f"{path.name}: sign agreement {agreement:.4f}"
        # Distances: the nearest vertex bounds them from above.
        nearest_vertex = np.min(np.linalg.norm(pts[:200, None] - mesh.vertices[None], axis=2), axis=1)
        assert np.all(np.abs(res.values[:200]) <= nearest_vertex + 1e-5 * math.dist(lo, hi))


@pytest.mark.parametrize("family", ["chair", "ring"])
def test_builtin_synthetic_shapes(family):
    # The built-in dataset's analytic SDFs have exact signs and magnitudes that bound the
    # true distance from below; its meshes are marching-cubes surfaces within one cell.
    from shapes3d.data.synth import sample_shape, shape_rng

    shape = sample_shape(family, shape_rng(0, family, 0))
    resolution = 40
    mesh = shape.mesh(resolution=resolution)
    cell = float(np.linalg.norm(shape.mesh_grid(resolution=resolution).spacing))
    rng = np.random.default_rng(1)
    lo, hi = mesh.bounds
    pts = rng.uniform(lo - 0.1, hi + 0.1, (2000, 3))
    res = signed_distance(mesh, pts)
    analytic = shape.sdf(pts)
    assert res.method == "parity" and res.watertight
    away = np.abs(analytic) > cell
    assert away.sum() > 800
    assert np.array_equal(res.values[away] < 0, analytic[away] < 0)
    assert np.all(np.abs(res.values) >= np.abs(analytic) - cell)
