"""Shape metrics against naive O(N*M) references, analytic values and invariants."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import trimesh

from shapes3d.metrics import (
    chamfer,
    chamfer_deepsdf,
    chamfer_l2_mean,
    emd_approx,
    fscore,
    hausdorff,
    mesh_metrics,
    normal_consistency,
    sample_surface,
    volumetric_iou,
)


def naive_nearest(a, b):
    """For each point of a: (distance, index) of its nearest point in b, by a double loop."""
    dist, idx = np.empty(len(a)), np.empty(len(a), dtype=int)
    for i, p in enumerate(a):
        best, arg = np.inf, -1
        for j, q in enumerate(b):
            d = np.sqrt(np.sum((p - q) ** 2))
            if d < best:
                best, arg = d, j
        dist[i], idx[i] = best, arg
    return dist, idx


@pytest.fixture
def clouds(rng):
    return rng.normal(size=(60, 3)), rng.normal(size=(45, 3)) * 0.8 + 0.3


def test_chamfer_variants_match_naive_loops(clouds):
    a, b = clouds
    d_ab, d_ba = naive_nearest(a, b)[0], naive_nearest(b, a)[0]
    assert chamfer_deepsdf(a, b) == pytest.approx(np.mean(d_ab**2) + np.mean(d_ba**2), rel=1e-12)
    assert chamfer_l2_mean(a, b) == pytest.approx(np.mean(d_ab) + np.mean(d_ba), rel=1e-12)
    assert chamfer(a, b, squared=True, combine="mean") == pytest.approx(0.5 * (np.mean(d_ab**2) + np.mean(d_ba**2)))
    assert hausdorff(a, b) == pytest.approx(max(d_ab.max(), d_ba.max()), rel=1e-12)


def test_chamfer_zero_for_identical_and_symmetric(clouds):
    a, b = clouds
    assert chamfer_deepsdf(a, a[::-1]) == 0.0 and chamfer_l2_mean(a, a) == 0.0 and hausdorff(a, a) == 0.0
    assert chamfer_deepsdf(a, b) == pytest.approx(chamfer_deepsdf(b, a), rel=1e-14)
    assert chamfer_l2_mean(a, b) == pytest.approx(chamfer_l2_mean(b, a), rel=1e-14)
    assert hausdorff(a, b) == hausdorff(b, a)


def test_concentric_spheres_have_the_analytic_chamfer(rng):
    # Radius 1 and 1.1: every nearest distance is ~0.1 (dense sampling), both ways.
    u = rng.normal(size=(20000, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v = rng.normal(size=(20000, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    a, b = u, 1.1 * v
    assert chamfer_deepsdf(a, b) == pytest.approx(2 * 0.01, rel=0.05)
    assert chamfer_l2_mean(a, b) == pytest.approx(2 * 0.1, rel=0.03)
    assert hausdorff(a, b) == pytest.approx(0.1, abs=0.03)


def test_fscore_matches_naive_counts(clouds):
    a, b = clouds
    d_ab, d_ba = naive_nearest(a, b)[0], naive_nearest(b, a)[0]
    ts = (0.1, 0.3, 0.7)
    out = fscore(a, b, thresholds=ts)
    assert list(out) == list(ts)
    for t in ts:
        p, r = np.mean(d_ab <= t), np.mean(d_ba <= t)
        assert out[t] == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)


def test_fscore_is_one_beyond_the_hausdorff_and_zero_below_all_distances(clouds):
    a, b = clouds
    h = hausdorff(a, b)
    assert fscore(a, b, thresholds=[h * 1.01]) == {h * 1.01: 1.0}
    tiny = 1e-9
    assert fscore(a, b + 5.0, thresholds=tiny)[tiny] == 0.0


def test_normal_consistency_matches_naive_loop(rng, clouds):
    a, b = clouds
    na, nb = rng.normal(size=a.shape), rng.normal(size=b.shape) * 3.0  # not unit: must be normalised
    ua = na / np.linalg.norm(na, axis=1, keepdims=True)
    ub = nb / np.linalg.norm(nb, axis=1, keepdims=True)
    i_ab, i_ba = naive_nearest(a, b)[1], naive_nearest(b, a)[1]
    ref = 0.5 * (np.mean([abs(ua[i] @ ub[i_ab[i]]) for i in range(len(a))])
                 + np.mean([abs(ub[j] @ ua[i_ba[j]]) for j in range(len(b))]))
    assert normal_consistency(a, na, b, nb) == pytest.approx(ref, rel=1e-12)
    # Flipping normals does not matter; identical oriented clouds give 1.
    assert normal_consistency(a, -na, b, nb) == pytest.approx(ref, rel=1e-12)
    assert normal_consistency(a, na, a, na) == pytest.approx(1.0)


def test_volumetric_iou_matches_counts_and_edge_cases(rng):
    a, b = rng.random((8, 8, 8)) < 0.4, rng.random((8, 8, 8)) < 0.5
    inter = sum(bool(x and y) for x, y in zip(a.ravel(), b.ravel()))
    union = sum(bool(x or y) for x, y in zip(a.ravel(), b.ravel()))
    assert volumetric_iou(a, b) == pytest.approx(inter / union)
    assert volumetric_iou(a, a) == 1.0
    assert volumetric_iou(a, ~a) == 0.0
    assert volumetric_iou(np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4), bool)) == 1.0
    with pytest.raises(ValueError, match=r"must have the same shape, got \(8, 8, 8\) and \(4, 4, 4\)"):
        volumetric_iou(a, np.zeros((4, 4, 4), bool))
    with pytest.raises(ValueError, match="must be boolean, got float64 and bool"):
        volumetric_iou(a.astype(float), b)


def test_emd_equals_brute_force_assignment_on_tiny_sets(rng):
    a, b = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    best = min(
        np.mean(np.linalg.norm(a - b[list(perm)], axis=1)) for perm in itertools.permutations(range(7))
    )
    assert emd_approx(a, b, n=7) == pytest.approx(best, rel=1e-12)
    assert emd_approx(a, b[::-1], n=100) == pytest.approx(best, rel=1e-12)  # order does not matter
    assert emd_approx(a, a[rng.permutation(7)]) == 0.0


def test_emd_subsample_is_deterministic_and_close(rng):
    a, b = rng.normal(size=(600, 3)), rng.normal(size=(500, 3)) + 0.5
    e1, e2 = emd_approx(a, b, n=200, seed=3), emd_approx(a, b, n=200, seed=3)
    assert e1 == e2
    assert emd_approx(a, b, n=200, seed=4) == pytest.approx(emd_approx(a, b, n=500), rel=0.25)
    assert emd_approx(a, b) >= chamfer_l2_mean(a, b) / 2  # a matching can only be worse than nearest


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: chamfer_deepsdf(np.zeros((5, 2)), np.zeros((5, 3))), r"a must be a point cloud of shape \(N, 3\), got shape \(5, 2\)"),
        (lambda: chamfer_l2_mean(np.zeros((5, 3)), np.zeros((0, 3))), r"b is empty \(0 points\)"),
        (lambda: hausdorff(np.full((2, 3), np.nan), np.zeros((5, 3))), "a contains NaN or infinite coordinates"),
        (lambda: chamfer(np.zeros((2, 3)), np.zeros((2, 3)), squared=True, combine="max"), "combine must be 'sum' or 'mean', got 'max'"),
        (lambda: fscore(np.zeros((2, 3)), np.zeros((2, 3)), thresholds=[0.1, -1]), "thresholds must be positive finite distances"),
        (lambda: normal_consistency(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 3))), "a_normals has 2 zero-length or NaN normals"),
        (lambda: normal_consistency(np.zeros((2, 3)), np.ones((3, 3)), np.zeros((2, 3)), np.ones((2, 3))), r"a_normals must have shape \(2, 3\)"),
        (lambda: emd_approx(np.zeros((2, 3)), np.zeros((2, 3)), n=0), "n must be a positive integer, got 0"),
    ],
)
def test_bad_inputs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_mesh_metrics_on_concentric_spheres():
    a = trimesh.creation.icosphere(subdivisions=4)
    b = trimesh.creation.icosphere(subdivisions=4)
    b.vertices *= 1.1
    m = mesh_metrics(a, b, n_points=5000, thresholds=(0.05, 0.2), emd_points=300, iou_resolution=24)
    assert set(m) == {"chamfer_deepsdf", "chamfer_l2_mean", "hausdorff", "normal_consistency", "emd_approx",
                      "fscore@0.05", "fscore@0.2", "iou", "accuracy@90", "completion@0.01"}
    assert 0.09 < m["accuracy@90"] < 0.11 and m["completion@0.01"] == 0.0  # every point is ~0.1 from the other
    assert m["chamfer_deepsdf"] == pytest.approx(0.02, rel=0.1)
    assert m["fscore@0.05"] == 0.0 and m["fscore@0.2"] == 1.0
    assert m["normal_consistency"] > 0.99
    # Every matched pair spans the radial gap; random subsamples add their own spacing on top.
    assert 0.098 <= m["emd_approx"] < 0.4
    assert m["iou"] == pytest.approx(1 / 1.1**3, abs=0.08)  # volume ratio of the spheres
    same = mesh_metrics(a, a, n_points=5000, iou_resolution=24)
    # Independent samples of one surface: only sampling noise, a tenth of the 0.1 gap case.
    assert same["iou"] == 1.0 and same["normal_consistency"] > 0.99 and same["chamfer_deepsdf"] < 0.1 * m["chamfer_deepsdf"]
    assert mesh_metrics(a, a, n_points=2000, seed=7, iou_resolution=None) == mesh_metrics(
        a, a, n_points=2000, seed=7, iou_resolution=None
    )


def test_mesh_metrics_equal_the_separate_metric_functions():
    """mesh_metrics shares one query per direction; the single-purpose functions are its reference."""
    a = trimesh.creation.icosphere(subdivisions=3)
    b = trimesh.creation.box(extents=(1.5, 1.2, 1.0))
    m = mesh_metrics(a, b, n_points=3000, seed=3, thresholds=(0.05, 0.1), iou_resolution=None)
    pa, na = sample_surface(a, 3000, 3)
    pb, nb = sample_surface(b, 3000, 4)
    assert m["chamfer_deepsdf"] == pytest.approx(chamfer_deepsdf(pa, pb), rel=1e-12)
    assert m["chamfer_l2_mean"] == pytest.approx(chamfer_l2_mean(pa, pb), rel=1e-12)
    assert m["hausdorff"] == pytest.approx(hausdorff(pa, pb), rel=1e-12)
    assert m["normal_consistency"] == pytest.approx(normal_consistency(pa, na, pb, nb), rel=1e-12)
    f = fscore(pa, pb, thresholds=(0.05, 0.1))
    assert (m["fscore@0.05"], m["fscore@0.1"]) == pytest.approx((f[0.05], f[0.1]), rel=1e-12)


def test_mesh_metrics_iou_is_nan_for_open_meshes(caplog):
    a = trimesh.creation.icosphere(subdivisions=2)
    open_mesh = trimesh.Trimesh(a.vertices, a.faces[:-4])
    with caplog.at_level(logging.WARNING, logger="shapes3d.metrics.shape"):
        m = mesh_metrics(open_mesh, a, n_points=500, emd_points=50)
    assert np.isnan(m["iou"]) and "iou needs watertight meshes" in caplog.text


def test_mesh_accuracy_and_completion_match_naive_loops(rng):
    from shapes3d.metrics.shape import cloud_metrics, mesh_accuracy, mesh_completion

    pred, gt = rng.normal(size=(60, 3)), rng.normal(size=(45, 3))
    d_pg = np.array([min(np.linalg.norm(p - g) for g in gt) for p in pred])
    d_gp = np.array([min(np.linalg.norm(g - p) for p in pred) for g in gt])
    assert mesh_accuracy(pred, gt) == pytest.approx(np.sort(d_pg)[int(0.9 * 59)] + 0.9 * 59 % 1
                                                    * (np.sort(d_pg)[int(0.9 * 59) + 1] - np.sort(d_pg)[int(0.9 * 59)]))
    assert mesh_completion(pred, gt, threshold=0.5) == pytest.approx(sum(d <= 0.5 for d in d_gp) / len(gt))
    m = cloud_metrics(pred, None, gt, None, completion_threshold=0.5)
    assert np.isnan(m["normal_consistency"])
    assert m["accuracy@90"] == pytest.approx(mesh_accuracy(pred, gt))
    assert m["completion@0.5"] == pytest.approx(mesh_completion(pred, gt, threshold=0.5))
    assert m["chamfer_deepsdf"] == pytest.approx((d_pg**2).mean() + (d_gp**2).mean())
    with pytest.raises(ValueError, match="percentile"):
        mesh_accuracy(pred, gt, percentile=101)
