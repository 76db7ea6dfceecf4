"""Mesh extraction: dense vs analytic shapes, exact grid corners, coarse-to-fine == dense, export."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import trimesh

from shapes3d.errors import UnsupportedFormatError
from shapes3d.geometry.conventions import Grid, sphere_sdf
from shapes3d.geometry.export import export_mesh
from shapes3d.geometry.extract import NonFiniteFieldError, extract_mesh, surface_cells_mask


def sphere(p):
    return sphere_sdf(p, center=(0.05, -0.1, 0.02), radius=0.6)


def torus(p):
    q = np.stack([np.linalg.norm(p[:, :2], axis=1) - 0.5, p[:, 2]], axis=1)
    return np.linalg.norm(q, axis=1) - 0.2


def two_spheres(p):
    return np.minimum(sphere_sdf(p, center=(-0.4, 0, 0), radius=0.35), sphere_sdf(p, center=(0.45, 0.1, 0), radius=0.3))


def box_sdf(p, half):
    q = np.abs(p) - half
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0)


def thin_plate(p):
    # Half-thickness 0.6 of a 64-cell spacing: one layer of corners inside, nothing more.
    h = 2.0 / 64
    return np.maximum(np.abs(p[:, 2] - 8 * h) - 0.6 * h, box_sdf(p, np.array([0.7, 0.7, 1.0])))


def thin_rod(p):
    h = 2.0 / 64
    return np.linalg.norm(p[:, :2] - np.array([3 * h, -5 * h]), axis=1) - 0.8 * h


def same_mesh(a, b) -> bool:
    return np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)


def test_dense_sphere_matches_analytic_surface():
    out = extract_mesh(sphere, resolution=49, mode="dense")
    assert not out.empty and out.reason == ""
    assert out.n_evaluated == 49**3
    r = np.linalg.norm(out.mesh.vertices - np.array([0.05, -0.1, 0.02]), axis=1)
    assert np.abs(r - 0.6).max() < 0.005
    assert out.mesh.is_watertight
    # Positive volume = outward winding; MC under-estimates a convex body slightly.
    assert out.mesh.volume == pytest.approx(4 / 3 * np.pi * 0.6**3, rel=0.02)


def test_level_selects_offset_surface():
    out = extract_mesh(sphere, resolution=41, mode="dense", level=0.15)
    r = np.linalg.norm(out.mesh.vertices - np.array([0.05, -0.1, 0.02]), axis=1)
    assert np.abs(r - 0.75).max() < 0.005


def test_grid_corners_are_exact_and_box_faces_land_on_their_planes():
    seen = []

    def recording_box(p):
        seen.append(p.copy())
        return box_sdf(p, np.array([0.5, 0.3, 0.7]))

    # R=34: 0.5/0.3/0.7 are not grid planes, and a box SDF is linear across each face,
    # so marching cubes puts the vertices on the face planes (a grid off by one step,
    # as in DeepSDF's, would move them by ~3 %).
    out = extract_mesh(recording_box, resolution=34, mode="dense", bound=1.0)
    pts = np.concatenate(seen)
    assert pts.min() == -1.0 and pts.max() == 1.0
    x = Grid.cube(34).axes()[0]
    assert np.isin(pts, x).all()
    np.testing.assert_allclose(out.mesh.bounds, [[-0.5, -0.3, -0.7], [0.5, 0.3, 0.7]], atol=1e-5)


def test_box_argument_maps_to_world():
    out = extract_mesh(sphere, resolution=40, mode="dense", box=((-0.7, -0.8, -0.7), (0.8, 0.6, 0.7)))
    assert out.grid.lo == (-0.7, -0.8, -0.7)
    r = np.linalg.norm(out.mesh.vertices - np.array([0.05, -0.1, 0.02]), axis=1)
    assert np.abs(r - 0.6).max() < 0.005


@pytest.mark.parametrize("fn", [sphere, torus, two_spheres, thin_plate, thin_rod], ids=lambda f: f.__name__)
@pytest.mark.parametrize("resolution, stride", [(65, 8), (64, None), (50, 4)])
def test_coarse_to_fine_gives_the_dense_surface(fn, resolution, stride):
    dense = extract_mesh(fn, resolution=resolution, mode="dense")
    c2f = extract_mesh(fn, resolution=resolution, mode="coarse_to_fine", coarse_stride=stride)
    assert not dense.empty
    assert same_mesh(dense.mesh, c2f.mesh)
    assert c2f.n_evaluated < 0.6 * resolution**3


def test_coarse_to_fine_evaluates_a_small_fraction_at_high_resolution():
    c2f = extract_mesh(sphere, resolution=129, mode="coarse_to_fine")
    assert c2f.n_evaluated < 0.15 * 129**3
    r = np.linalg.norm(c2f.mesh.vertices - np.array([0.05, -0.1, 0.02]), axis=1)
    assert np.abs(r - 0.6).max() < 0.002


def test_coarse_to_fine_with_nonzero_level_and_offset_box():
    kw = dict(resolution=57, level=-0.1, box=((-0.9, -1.0, -0.8), (1.0, 0.9, 0.85)))
    assert same_mesh(extract_mesh(torus, mode="dense", **kw).mesh, extract_mesh(torus, coarse_stride=8, **kw).mesh)


def finger(p):
    """A plane with a thin finger poking up between the stride-4 lattice points, 50x steep.

    In index units (R=65, stride 8): plane at z=32.3, finger at (34, 34) up to z=37.5.
    The finger crosses plane 36 inside a stride-4 block whose corners are all outside, so
    that block is not refined and only the repair pass can recover the finger's tip.
    """
    h = 2.0 / 64
    r2 = ((p[:, 0] - 2 * h) ** 2 + (p[:, 1] - 2 * h) ** 2) / (2.5 * h) ** 2
    bump = 5.2 * h * np.maximum(0.0, 1.0 - r2)
    return 50.0 * (p[:, 2] - 0.3 * h - bump)


def test_field_steeper_than_safety_is_repaired_to_the_dense_surface(caplog):
    dense = extract_mesh(finger, resolution=65, mode="dense")
    assert dense.mesh.vertices[:, 2].max() > 5 * 2.0 / 64  # the tip is there
    with caplog.at_level(logging.WARNING, logger="shapes3d.geometry.extract"):
        c2f = extract_mesh(finger, resolution=65, coarse_stride=8, safety=1.0)
    assert same_mesh(dense.mesh, c2f.mesh)
    assert "repair pass evaluated" in caplog.text


@pytest.mark.parametrize("mode", ["dense", "coarse_to_fine"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_volume_without_crossing_gives_empty_result(mode, sign, caplog):
    with caplog.at_level(logging.WARNING, logger="shapes3d.geometry.extract"):
        out = extract_mesh(lambda p: sign * (np.linalg.norm(p, axis=1) + 0.5), resolution=33, mode=mode)
    assert out.empty
    assert len(out.mesh.vertices) == 0 and len(out.mesh.faces) == 0
    assert out.reason.startswith("no zero crossing: every value is " + ("above" if sign > 0 else "at or below"))
    assert ("min 0.5," if sign > 0 else "max -0.5") in out.reason  # true values, not placeholders
    assert "returning an empty mesh" in caplog.text


def test_nan_in_field_raises_clear_error():
    def holey(p):
        v = sphere(p)
        v[np.linalg.norm(p, axis=1) < 0.2] = np.nan
        return v

    with pytest.raises(NonFiniteFieldError, match=r"sdf_fn returned \d+ non-finite values \(NaN/inf\) among \d+ points"):
        extract_mesh(holey, resolution=33, mode="dense")


def test_torch_callable_and_module_match_numpy():
    class TorchSphere(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.center = torch.nn.Parameter(torch.tensor([0.05, -0.1, 0.02]))

        def forward(self, x):
            return (x - self.center).norm(dim=-1, keepdim=True) - 0.6  # (N, 1) is accepted

    ref = extract_mesh(sphere, resolution=41)
    by_module = extract_mesh(TorchSphere(), resolution=41)
    by_fn = extract_mesh(lambda t: torch.linalg.norm(t - torch.tensor([0.05, -0.1, 0.02]), dim=1) - 0.6,
                         resolution=41, device="cpu", chunk_size=1000)
    for out in (by_module, by_fn):
        assert out.mesh.faces.shape == ref.mesh.faces.shape
        np.testing.assert_allclose(out.mesh.vertices, ref.mesh.vertices, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(resolution=1), "resolution must be an integer >= 2, got 1"),
        (dict(mode="fast"), "mode must be 'coarse_to_fine' or 'dense', got 'fast'"),
        (dict(coarse_stride=3), "coarse_stride must be a power of two >= 1, got 3"),
        (dict(chunk_size=0), "chunk_size must be a positive integer, got 0"),
        (dict(safety=0.0), "safety must be > 0, got 0.0"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        extract_mesh(sphere, **{"resolution": 17, **kwargs})


def test_wrong_output_shape_is_named():
    with pytest.raises(ValueError, match=r"sdf_fn must map \(\d+, 3\) points to \(\d+,\) values, got shape \(\d+, 2\)"):
        extract_mesh(lambda p: np.zeros((len(p), 2)), resolution=9, mode="dense")


@pytest.mark.parametrize("ext", ["ply", "obj", "off", "OFF"])
def test_export_round_trip(tmp_path, ext):
    mesh = extract_mesh(torus, resolution=33).mesh
    path = export_mesh(mesh, tmp_path / f"torus.{ext}")
    back = trimesh.load(path, force="mesh", process=False)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    # trimesh's PLY writer stores float32; OBJ and OFF are exact.
    np.testing.assert_allclose(back.vertices, mesh.vertices, rtol=0, atol=1e-6 if ext == "ply" else 0)
    assert [p.name for p in tmp_path.iterdir()] == [f"torus.{ext}"]  # no temp file left behind


def test_export_rejects_unknown_extension_and_empty_mesh(tmp_path):
    mesh = trimesh.creation.icosphere(1)
    with pytest.raises(UnsupportedFormatError, match=r"mesh\.stl: cannot export a mesh as '\.stl'; expected one of"):
        export_mesh(mesh, tmp_path / "mesh.stl")
    empty = extract_mesh(lambda p: np.ones(len(p)), resolution=5).mesh
    with pytest.raises(ValueError, match="cannot export an empty mesh"):
        export_mesh(empty, tmp_path / "e.off")


@pytest.mark.parametrize("fn", [sphere, torus], ids=lambda f: f.__name__)
def test_coarse_to_fine_evaluates_little_more_than_the_surface_cells(fn):
    # The corners of the cells the surface crosses are the least any method giving the
    # dense surface must evaluate; refining every child of a refined block costs ~3x that.
    r = 129
    axes = Grid.cube(r, 1.0).axes()
    vol = fn(np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)).reshape(r, r, r).astype(np.float32)
    needed = int(surface_cells_mask(vol, np.float32(0.0)).sum())
    c2f = extract_mesh(fn, resolution=r)
    assert needed < c2f.n_evaluated < 1.75 * needed


@pytest.mark.parametrize("safety", [0.5, 2.0])
def test_coarse_to_fine_with_other_safety_gives_the_dense_surface(safety):
    # safety scales both the block test and the children's lattice bounds; 0.5 < 1 relies on the repair pass.
    dense = extract_mesh(two_spheres, resolution=50, mode="dense")
    c2f = extract_mesh(two_spheres, resolution=50, safety=safety, coarse_stride=4)
    assert same_mesh(dense.mesh, c2f.mesh)


def test_a_surface_reaching_the_box_is_closed_there_and_reported(caplog):
    big = lambda p: np.linalg.norm(p - np.array([0.3, 0.0, 0.0]), axis=1) - 0.9  # noqa: E731 - pokes out at x=1
    with caplog.at_level(logging.WARNING, logger="shapes3d.geometry.extract"):
        closed = extract_mesh(big, resolution=33, mode="dense")
    assert closed.touches_box > 0 and "closing the surface at the box" in caplog.text
    assert closed.mesh.is_watertight
    assert closed.mesh.vertices[:, 0].max() == pytest.approx(1.0, abs=1e-9)  # the cap lies on the box face
    assert same_mesh(closed.mesh, extract_mesh(big, resolution=33, coarse_stride=8).mesh)
    cut = extract_mesh(big, resolution=33, mode="dense", close=False)
    assert cut.touches_box == closed.touches_box and not cut.mesh.is_watertight
    inside = extract_mesh(sphere, resolution=33, mode="dense")
    assert inside.touches_box == 0 and inside.mesh.is_watertight
