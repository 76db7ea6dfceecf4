"""Grid conventions, SDF sign, normalisation and the watertightness report."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from shapes3d.geometry.conventions import Grid, sdf_from_inside_positive, sphere_sdf
from shapes3d.geometry.normalize import DEEPSDF_MARGIN, Transform, fit_transform, normalize, watertight_report


@pytest.mark.parametrize("kind", ["corners", "cells"])
@pytest.mark.parametrize("res", [2, 3, 33, 256])
def test_index_world_round_trip(kind, res, rng):
    g = Grid(res, (-1.3, -0.2, 0.0), (0.7, 2.9, 1e-3), kind)
    idx = rng.uniform(-1, res, size=(100, 3))
    np.testing.assert_allclose(g.world_to_index(g.index_to_world(idx)), idx, atol=1e-9)
    ints = rng.integers(0, res, size=(50, 3))
    np.testing.assert_array_equal(g.world_to_cell(g.index_to_world(ints)), ints)


@pytest.mark.parametrize("res", [2, 7, 128, 257, 512])
def test_corner_grid_ends_are_exact(res):
    lo, hi = (-1.0, -0.1, -1 / 1.03), (1.0, 0.3, 1 / 1.03)
    g = Grid(res, lo, hi, "corners")
    x, y, z = g.axes()
    assert (x[0], y[0], z[0]) == lo and (x[-1], y[-1], z[-1]) == hi  # bitwise exact, no drift
    far = g.index_to_world(np.array([res - 1] * 3))
    assert tuple(far) == hi
    if res <= 128:  # points() materialises R^3 x 3 doubles
        pts = g.points()
        assert pts.shape == (res**3, 3)
        assert tuple(pts[0]) == lo and tuple(pts[-1]) == hi


def test_grid_is_ij_indexed():
    g = Grid(4, (0, 0, 0), (3, 30, 300), "corners")
    vol = g.points().reshape(4, 4, 4, 3)
    # [i, j, k] <-> (x, y, z): moving along the first axis changes x only
    assert np.all(vol[1, 0, 0] == [1, 0, 0]) and np.all(vol[0, 1, 0] == [0, 10, 0]) and np.all(vol[0, 0, 1] == [0, 0, 100])


def test_cell_grid_centres():
    g = Grid.cube(4, 1.0, kind="cells")
    np.testing.assert_allclose(g.axes()[0], [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_allclose(g.spacing, [0.5] * 3)
    m = g.index_to_world_matrix()
    np.testing.assert_allclose((m @ [3, 0, 1, 1])[:3], g.index_to_world(np.array([3, 0, 1])))


def test_grid_validation():
    with pytest.raises(ValueError, match="grid box needs hi > lo on every axis"):
        Grid(8, (0, 0, 0), (1, 0, 1))
    with pytest.raises(ValueError, match="grid resolution must be an integer >= 2"):
        Grid(1, (0, 0, 0), (1, 1, 1), "corners")
    assert Grid.from_dict(Grid(5, (0, 0, 0), (1, 2, 3), "cells").to_dict()) == Grid(5, (0, 0, 0), (1, 2, 3), "cells")


def test_sdf_sign_negative_inside_of_analytic_sphere():
    pts = np.array([[0, 0, 0], [0.5, 0, 0], [1, 0, 0], [2, 0, 0.0]])
    np.testing.assert_allclose(sphere_sdf(pts, radius=1.0), [-1, -0.5, 0, 1])
    # trimesh's signed distance is positive inside; the converter flips it into ours
    sphere = trimesh.creation.icosphere(subdivisions=4)
    inside_pos = trimesh.proximity.signed_distance(sphere, pts[[0, 1, 3]])
    ours = sdf_from_inside_positive(inside_pos)
    assert ours[0] < 0 and ours[1] < 0 and ours[2] > 0


def test_normalize_sphere_deepsdf_margin_and_inverse(rng):
    mesh = trimesh.creation.box(extents=(4, 2, 1))
    mesh.apply_translation([10, -3, 7])
    out, t = normalize(mesh, mode="sphere", margin=DEEPSDF_MARGIN)
    radius = np.linalg.norm(out.vertices, axis=1).max()
    assert radius == pytest.approx(1 / 1.03, rel=1e-12)
    np.testing.assert_allclose(out.bounds.mean(axis=0), 0, atol=1e-12)  # bbox-centred
    np.testing.assert_allclose(t.invert(out.vertices), mesh.vertices, atol=1e-12)
    np.testing.assert_allclose(t.inverse().apply(out.vertices), mesh.vertices, atol=1e-12)
    homog = np.c_[mesh.vertices, np.ones(len(mesh.vertices))] @ t.matrix.T
    np.testing.assert_allclose(homog[:, :3], out.vertices, atol=1e-12)
    assert Transform.from_dict(t.to_dict()) == t


def test_normalize_cube_points(rng):
    pts = rng.uniform([0, 0, 0], [8, 2, 1], size=(500, 3))
    out, t = normalize(pts, mode="cube", margin=0.0)
    assert np.abs(out).max() == pytest.approx(1.0)
    side = np.ptp(out, axis=0)
    assert side.max() == pytest.approx(2.0)
    out2, _ = normalize(pts, mode="cube", margin=1 / 3)  # VoxNet: object spans 24 of 32 voxels
    assert np.ptp(out2, axis=0).max() == pytest.approx(2 * 0.75)
    np.testing.assert_allclose(t.invert_distance(np.array([0.1])), 0.1 / t.scale)


def test_normalize_errors():
    with pytest.raises(ValueError, match="all points coincide"):
        fit_transform(np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"mode must be 'sphere' or 'cube', got 'ball'"):
        fit_transform(np.eye(3), mode="ball")
    with pytest.raises(ValueError, match="expected a trimesh.Trimesh or an \\(N, 3\\) array"):
        fit_transform(np.zeros((5, 2)))


def test_watertight_report():
    closed = trimesh.creation.icosphere(subdivisions=2)
    r = watertight_report(closed)
    assert r.watertight and r.winding_consistent and r.boundary_edges == 0 and r.components == 1
    assert r.euler_characteristic == 2
    torus = trimesh.creation.torus(1.0, 0.3)
    assert watertight_report(torus).euler_characteristic == 0
    open_ = trimesh.Trimesh(closed.vertices, closed.faces[3:], process=False)
    r = watertight_report(open_)
    assert not r.watertight and r.boundary_edges == 9  # three adjacent-free faces removed: 3 x 3 edges
    two = trimesh.util.concatenate([closed, closed.copy().apply_translation([5, 0, 0])])
    assert watertight_report(two).components == 2
    flipped = closed.copy()
    flipped.faces[0] = flipped.faces[0, ::-1]
    assert not watertight_report(flipped).winding_consistent
    fin = trimesh.Trimesh(np.r_[closed.vertices, [[0, 0, 3]]],
                          np.r_[closed.faces, [[closed.faces[0, 0], closed.faces[0, 1], len(closed.vertices)]]],
                          process=False)
    assert watertight_report(fin).non_manifold_edges == 1
