"""DeepSDF sampling: counts, seeding, split, normalisation, file round trip, real scans."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from conftest import real_subset

from shapes3d.errors import CheckpointError, ConfigError, MissingFileError
from shapes3d.geometry.conventions import sphere_sdf
from shapes3d.geometry.sampling import SDFSampleConfig, SDFSamples, sample_sdf, sample_surface
from shapes3d.geometry.signed_distance import signed_distance, spatial_order

SMALL = SDFSampleConfig(n_samples=12_000, n_uniform=2_000)


@pytest.fixture(scope="module")
def ellipsoid() -> trimesh.Trimesh:
    """A sphere of radius 2 centred at (3, -1, 0.5), stretched along x: not pre-normalised."""
    m = trimesh.creation.icosphere(subdivisions=4, radius=2.0)
    m.apply_scale([1.5, 1.0, 1.0])
    m.apply_translation([3.0, -1.0, 0.5])
    return m


@pytest.fixture(scope="module")
def samples(ellipsoid) -> SDFSamples:
    return sample_sdf(ellipsoid, config=SMALL, seed=3)


def test_default_config_is_the_deepsdf_recipe():
    c = SDFSampleConfig()
    assert (c.n_samples, c.n_uniform, c.variances, c.margin) == (500_000, 30_000, (0.005, 0.0005), 0.03)
    assert c.n_surface == 235_000


def test_counts_and_split(samples):
    assert len(samples.pos) + len(samples.neg) == SMALL.n_samples
    assert samples.pos.dtype == np.float32 and samples.pos.shape[1] == 4 and samples.neg.shape[1] == 4
    assert np.all(samples.pos[:, 3] > 0) and np.all(samples.neg[:, 3] <= 0)
    # Near-surface jitter is symmetric, so both sides are well populated.
    assert min(len(samples.pos), len(samples.neg)) > 0.25 * SMALL.n_samples
    assert samples.method == "parity" and samples.watertight


def test_samples_in_cube_and_near_surface(samples):
    pts = samples.all()
    assert np.abs(pts[:, :3]).max() < 1.0 + 6 * np.sqrt(0.005)
    near = np.abs(pts[:, 3]) < 3 * np.sqrt(0.005) * np.sqrt(3)
    assert near.mean() > 0.8


def test_uniform_part_fills_the_cube(ellipsoid):
    cfg = SDFSampleConfig(n_samples=4000, n_uniform=4000, variances=())
    s = sample_sdf(ellipsoid, config=cfg, seed=0)
    pts = s.all()[:, :3]
    assert np.abs(pts).max() <= 1.0
    assert np.all(pts.min(0) < -0.95) and np.all(pts.max(0) > 0.95)


def test_normalisation_stored_and_invertible(ellipsoid, samples):
    c = (ellipsoid.bounds[0] + ellipsoid.bounds[1]) / 2
    np.testing.assert_allclose(samples.offset, c, atol=1e-12)
    r = np.linalg.norm(ellipsoid.vertices - c, axis=1).max()
    assert samples.scale == pytest.approx(1.0 / (1.03 * r))
    # Normalised vertices: farthest at 1/1.03.
    assert np.linalg.norm(samples.transform.apply(ellipsoid.vertices), axis=1).max() == pytest.approx(1 / 1.03)
    # Mapping samples back, their SDF matches a fresh computation in input units.
    from shapes3d.geometry.signed_distance import signed_distance

    back = samples.to_input_frame()[:500]
    direct = signed_distance(ellipsoid, back[:, :3]).values
    np.testing.assert_allclose(back[:, 3], direct, atol=1e-4)


def test_sdf_values_match_analytic_sphere():
    mesh = trimesh.creation.icosphere(subdivisions=4)
    s = sample_sdf(mesh, config=SMALL, seed=1)
    pts = s.all().astype(np.float64)
    # Normalised sphere: centre 0, radius 1/1.03 (the icosphere's vertices lie on it).
    exact = sphere_sdf(pts[:, :3], radius=1 / 1.03)
    gap = 1.0 / 1.03 - np.linalg.norm(mesh.triangles_center, axis=1).min() / 1.03
    assert np.abs(pts[:, 3] - exact).max() < gap + 1e-5
    away = np.abs(exact) > gap + 1e-5
    assert np.array_equal(pts[away, 3] < 0, exact[away] < 0)


def test_seeding(ellipsoid, samples):
    again = sample_sdf(ellipsoid, config=SMALL, seed=3)
    np.testing.assert_array_equal(again.pos, samples.pos)
    np.testing.assert_array_equal(again.neg, samples.neg)
    other = sample_sdf(ellipsoid, config=SMALL, seed=4)
    assert not np.array_equal(other.all(), samples.all())


@pytest.mark.parametrize("variance", [0.005, 0.0005])
def test_variances_are_variances(variance):
    # Near a sphere the SDF of a jittered surface point is its jitter along the normal, so
    # E[sdf^2] is the per-coordinate variance (a standard deviation would give its square).
    mesh = trimesh.creation.icosphere(subdivisions=4)
    cfg = SDFSampleConfig(n_samples=20_000, n_uniform=0, variances=(variance,))
    d = sample_sdf(mesh, config=cfg, seed=0).all()[:, 3].astype(np.float64)
    assert np.mean(d**2) == pytest.approx(variance, rel=0.05)


def test_save_load_round_trip(tmp_path, samples):
    path = samples.save(tmp_path / "shape.npz")
    back = SDFSamples.load(path)
    np.testing.assert_array_equal(back.pos, samples.pos)
    np.testing.assert_array_equal(back.neg, samples.neg)
    np.testing.assert_array_equal(back.offset, samples.offset)
    assert back.scale == samples.scale and back.config == samples.config
    assert back.method == samples.method and back.watertight == samples.watertight
    with np.load(path, allow_pickle=False) as z:
        assert z["pos"].shape == samples.pos.shape  # DeepSDF's own loaders read pos/neg directly


def test_load_errors(tmp_path):
    with pytest.raises(MissingFileError, match="file does not exist"):
        SDFSamples.load(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, pos=np.zeros((2, 4), np.float32))
    with pytest.raises(CheckpointError, match=r"not an SDF sample file: missing keys \['neg'"):
        SDFSamples.load(bad)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot read SDF samples"):
        SDFSamples.load(garbage)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_uniform": 600_000}, "n_uniform must be an integer in [0, n_samples=500000], got 600000"),
        ({"n_samples": 100_001, "n_uniform": 0}, "must be divisible by the number of variances (2)"),
        ({"variances": (0.005, -1.0)}, "variances[1]=-1.0 is out of range (0.0, 1.0]"),
        ({"margin": -0.1}, "margin=-0.1 is out of range [0.0, 10.0]"),
        ({"sign_method": "normal"}, "sign_method must be one of"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ConfigError) as e:
        SDFSampleConfig(**kwargs)
    assert message in str(e.value)


def test_config_dict_round_trip_and_unknown_keys():
    c = SDFSampleConfig(n_samples=1000, n_uniform=100, variances=(0.01,))
    assert SDFSampleConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match=r"unknown SDFSampleConfig keys: \['stddev'\]"):
        SDFSampleConfig.from_dict({"stddev": 0.1})


def test_sample_surface_points_lie_on_the_mesh(rng):
    mesh = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    pts = sample_surface(mesh.vertices, mesh.faces, 5000, rng)
    half = np.array([0.5, 1.0, 1.5])
    # On a box surface: inside the box, and on at least one face plane.
    assert np.all(np.abs(pts) <= half + 1e-12)
    assert np.all(np.isclose(np.abs(pts), half).any(axis=1))
    # Area-weighted: the two 2x3 faces (x = +-0.5) hold 12 / 22 of the area.
    assert np.isclose(np.abs(pts[:, 0]), 0.5).mean() == pytest.approx(12 / 22, abs=0.03)


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"mesh has no faces \(0 vertices\)"):
        sample_sdf(trimesh.Trimesh(), config=SMALL)
    with pytest.raises(ValueError, match="config must be an SDFSampleConfig, got dict"):
        sample_sdf(trimesh.creation.box(), config={"n_samples": 10})


@pytest.mark.data
def test_real_scan_samples_signs(real_data):
    root = real_subset(real_data, "classic_scans")
    mesh = trimesh.load(root / "libigl" / "bunny.off", force="mesh", process=True)
    s = sample_sdf(mesh, config=SDFSampleConfig(n_samples=1500, n_uniform=150), seed=0)
    pts = s.all()
    normalised = trimesh.Trimesh(s.transform.apply(mesh.vertices), mesh.faces, process=False)
    reference = normalised.contains(pts[:, :3].astype(np.float64))
    agreement = np.mean((pts[:, 3] < 0) == reference)
    assert agreement > 0.999, f"sign agreement {agreement:.4f}"


def test_spatial_order_is_a_local_permutation(rng):
    pts = rng.uniform(-1, 1, (5000, 3))
    order = spatial_order(pts)
    assert np.array_equal(np.sort(order), np.arange(len(pts)))
    # Consecutive queries are neighbours: far shorter steps than in random order.
    step = np.linalg.norm(np.diff(pts[order], axis=0), axis=1).mean()
    assert step < 0.2 * np.linalg.norm(np.diff(pts, axis=0), axis=1).mean()
    assert len(spatial_order(pts[:1])) == 1 and len(spatial_order(pts[:0])) == 0


def test_signed_distance_does_not_depend_on_query_order(ellipsoid, rng):
    # Distance and parity queries run in Morton order internally (winding numbers do not);
    # every point must get exactly its own value back.
    pts = rng.uniform(-1, 7, (3000, 3)) * np.array([1.0, 0.6, 0.6]) - np.array([0.0, 2.0, 1.0])
    perm = rng.permutation(len(pts))
    a = signed_distance(ellipsoid, pts, sign_method="parity").values
    b = signed_distance(ellipsoid, pts[perm], sign_method="parity").values
    assert np.array_equal(a[perm], b)
    assert (a < 0).any() and (a > 0).any()


# ----------------------------------------------------------------------------- one sampling config
def test_the_deepsdf_config_samples_with_the_sampling_config_and_keeps_old_checkpoint_keys():
    from shapes3d.config import config_from_dict, config_to_dict, load_config
    from shapes3d.data.sdf_dataset import sdf_task_params
    from shapes3d.deepsdf.config import DeepSDFConfig

    cfg = load_config(DeepSDFConfig, overrides=["samples.n_samples=2200", "samples.n_uniform=200",
                                                "samples.variances=[0.01]", "samples.seed=4"])
    assert type(cfg.samples) is SDFSampleConfig and cfg.samples.variances == (0.01,) and cfg.samples.seed == 4
    # The [samples] table of a checkpoint written before the classes merged (no `bound`) still loads ...
    old = config_to_dict(DeepSDFConfig())
    old["samples"] = {"n_samples": 8000, "n_uniform": 800, "variances": [0.005, 0.0005], "margin": 0.03,
                      "sign_method": "auto", "seed": 0}
    assert config_from_dict(DeepSDFConfig, old).samples == SDFSampleConfig(n_samples=8000, n_uniform=800)
    # ... and its cache keys are the ones the old converter produced.
    assert sdf_task_params(SDFSampleConfig(n_samples=8000, n_uniform=800)) == old["samples"]
    assert sdf_task_params(SDFSampleConfig(bound=1.5))["bound"] == 1.5
    with pytest.raises(ConfigError, match="sign_method must be one of"):
        load_config(DeepSDFConfig, overrides=["samples.sign_method='normal'"])


def test_the_config_seed_is_the_default_seed(ellipsoid):
    a = sample_sdf(ellipsoid, config=SDFSampleConfig(n_samples=600, n_uniform=100, variances=(0.01,), seed=7))
    b = sample_sdf(ellipsoid, config=SDFSampleConfig(n_samples=600, n_uniform=100, variances=(0.01,)), seed=7)
    assert np.array_equal(a.pos, b.pos) and np.array_equal(a.neg, b.neg)


def test_sign_methods_agree_and_the_config_imports_without_the_mesh_libraries():
    import subprocess
    import sys

    from shapes3d.geometry import sampling
    from shapes3d.geometry.signed_distance import SIGN_METHODS

    assert sampling.SIGN_METHODS == SIGN_METHODS
    probe = ("import sys; import shapes3d.geometry.sampling, shapes3d.deepsdf.config; "
             "print(sorted(m for m in ('trimesh', 'open3d', 'scipy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
