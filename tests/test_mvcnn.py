"""The multi-view CNN: view pooling invariants, rotation about the up axis, splat renders, cached features,
the end-to-end train/evaluate/predict run from its shipped preset, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from shapes3d.classify.config import ClassifyConfig
from shapes3d.cli.main import main
from shapes3d.config import load_config
from shapes3d.errors import ConfigError, Shapes3DError
from shapes3d.models.mvcnn import MVCNN
from shapes3d.render.cameras import Camera
from shapes3d.render.multiview import render_views, voxel_mesh
from shapes3d.render.points import render_points

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "pre_redesign" / "classify_last.pt"


def _weights_installed() -> bool:
    from shapes3d.pretrained import find_vgg_weights

    return any(s.found for s in find_vgg_weights("vgg16"))


#: The e2e run uses the installed VGG16 where there is one, else a seeded random VGG: it always runs.
WEIGHTS = "auto" if _weights_installed() else "random"


def _mug() -> trimesh.Trimesh:
    """An asymmetric shape: a box with a handle on one side (no rotational symmetry about z)."""
    body = trimesh.creation.box((1.0, 0.8, 1.2))
    handle = trimesh.creation.box((0.3, 0.2, 0.6))
    handle.apply_translation((0.65, 0.0, 0.1))
    return trimesh.util.concatenate([body, handle])


def _turn(mesh: trimesh.Trimesh, degrees: float) -> trimesh.Trimesh:
    m = mesh.copy()
    m.apply_transform(trimesh.transformations.rotation_matrix(np.radians(degrees), (0, 0, 1)))
    return m


# ---------------------------------------------------------------- the model
def test_view_pooling_is_invariant_to_the_order_of_views():
    torch.manual_seed(0)
    model = MVCNN(5, 16, hidden=8, dropout=0.0).eval()
    f = torch.randn(3, 12, 16)
    perm = torch.randperm(12)
    assert torch.equal(model(f), model(f[:, perm]))
    # max pooling: a view duplicated or a copy of the max view changes nothing either
    assert torch.equal(model(f), model(torch.cat([f, f[:, :1]], dim=1)))
    assert model.view_logits(f).shape == (3, 12, 5)
    # one view alone: its logits equal the pooled logits of a one-view shape
    assert torch.allclose(model.view_logits(f)[:, 4], model(f[:, 4:5]))


def test_rotation_by_the_view_step_only_shifts_the_views():
    """Turning the shape by k view steps about the up axis renders the same images at cameras shifted by k.

    Tolerance (rendering): the two meshes differ by a floating-point rotation, so a few silhouette pixels can
    flip; we allow 0.5 % of the pixels to differ and the pooled features to differ by 1 % (relative, max norm).
    """
    views = render_views(_mug(), views=12, elevation=30.0, size=48, channels="both")
    turned = render_views(_turn(_mug(), 60.0), views=12, elevation=30.0, size=48, channels="both")
    shifted = np.roll(views, 2, axis=0)  # 60 degrees = 2 steps of 30
    assert (turned != shifted).mean() < 0.005
    assert (turned != views).mean() > 0.05  # the test has teeth: unshifted, the views differ
    from shapes3d.classify.mvcnn_data import feature_extractor

    cfg = load_config(ClassifyConfig, "demo-mvcnn", overrides=["model.mvcnn.weights=random",
                                                               "model.mvcnn.views=12"])
    ex = feature_extractor(cfg, "cpu")
    pooled_a, pooled_b = ex(views[None]).max(1), ex(turned[None]).max(1)
    assert np.abs(pooled_a - pooled_b).max() <= 0.01 * np.abs(pooled_a).max()


def test_mvcnn_checks_its_inputs():
    model = MVCNN(3, 8)
    with pytest.raises(ValueError, match=r"per-view features must have shape \(B, V, 8\), got \(2, 4, 7\)"):
        model(torch.zeros(2, 4, 7))
    with pytest.raises(ValueError, match="this MVCNN has no backbone"):
        model.view_features(torch.zeros(1, 2, 1, 16, 16))


def _naive_grid_max(fmap: torch.Tensor, k: int) -> torch.Tensor:
    """Adaptive max pooling by loops: cell (i, j) spans rows floor(i h / k) .. ceil((i + 1) h / k) - 1 (and the
    same for columns); the result is flattened channel-major (n, d * k * k)."""
    n, d, h, w = fmap.shape
    out = torch.empty(n, d, k, k)
    for i in range(k):
        r0, r1 = (i * h) // k, -((-(i + 1) * h) // k)
        for j in range(k):
            c0, c1 = (j * w) // k, -((-(j + 1) * w) // k)
            out[:, :, i, j] = fmap[:, :, r0:r1, c0:c1].amax(dim=(-2, -1))
    return out.reshape(n, d * k * k)


@pytest.mark.parametrize("h, w", [(6, 6), (5, 4), (2, 2)])  # divisible, overlapping cells, fewer rows than k
def test_grid_pooling_matches_a_naive_reference(h, w):
    from shapes3d.models.mvcnn import SPATIAL_POOLS, spatial_pool, spatial_width

    fmap = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h * 10 + w))
    for k in (2, 3):
        got = spatial_pool(fmap, f"grid{k}")
        assert got.shape == (2, 3 * k * k) and spatial_width(f"grid{k}") == k * k
        assert torch.equal(got, _naive_grid_max(fmap, k))
        # the cells cover the map: the max over a channel's cells is the global max
        assert torch.equal(got.reshape(2, 3, k * k).amax(-1), spatial_pool(fmap, "max"))
        if w > 2:  # the layout is kept: a left-right flip moves the cells (the global max does not see it)
            assert not torch.equal(spatial_pool(fmap.flip(-1), f"grid{k}"), got)
    assert torch.equal(spatial_pool(fmap.flip(-1), "max"), spatial_pool(fmap, "max"))
    for how in SPATIAL_POOLS:
        assert spatial_pool(fmap, how).shape == (2, 3 * spatial_width(how))
    with pytest.raises(ValueError, match=r"spatial pooling must be one of \('max', 'avg', 'both', 'grid2', "
                                         r"'grid3'\), got 'grid4'"):
        spatial_pool(fmap, "grid4")


class _TinyBackbone(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"t": torch.relu(self.conv(x))}


def test_grid_pooled_views_keep_view_order_invariance():
    torch.manual_seed(0)
    model = MVCNN(5, 2 * 4 * 9, hidden=8, dropout=0.0, backbone=_TinyBackbone(), tap="t", spatial="grid3").eval()
    views = torch.rand(2, 6, 2, 12, 12)  # 2 channels x 4 maps x 9 cells per view
    with torch.no_grad():
        f = model.view_features(views)
        assert f.shape == (2, 6, 72)
        perm = torch.randperm(6)
        assert torch.equal(model(views), model(views[:, perm]))
        assert torch.equal(model(views), model(torch.cat([views, views[:, :2]], dim=1)))
        assert torch.allclose(model.view_logits(views)[:, 3], model(views[:, 3:4]), atol=1e-6)


def test_grid_spatial_config_and_features():
    from shapes3d.classify import config as classify_config
    from shapes3d.classify.model import feature_dim
    from shapes3d.classify.mvcnn_data import feature_extractor
    from shapes3d.models.mvcnn import SPATIAL_POOLS

    assert classify_config.SPATIAL_POOLS == SPATIAL_POOLS
    base = ["model.mvcnn.weights=random", "model.mvcnn.views=2"]
    grid = load_config(ClassifyConfig, "demo-mvcnn", overrides=[*base, "model.mvcnn.spatial=grid2"])
    assert feature_dim(grid.model.mvcnn) == 256 * 4  # relu3_3: 256 channels x 4 cells
    assert feature_dim(load_config(ClassifyConfig, "mvcnn-shrec11", overrides=[
        "model.mvcnn.spatial=grid3", "model.mvcnn.channels=both"]).model.mvcnn) == 512 * 9 * 2
    with pytest.raises(ConfigError, match="model.mvcnn.spatial"):
        load_config(ClassifyConfig, "demo-mvcnn", overrides=["model.mvcnn.spatial=grid4"])
    views = np.random.default_rng(0).integers(0, 256, (1, 2, 1, 32, 32), dtype=np.uint8)
    ex_grid = feature_extractor(grid, "cpu")
    ex_max = feature_extractor(load_config(ClassifyConfig, "demo-mvcnn", overrides=base), "cpu")
    assert ex_grid.key_params() != ex_max.key_params()  # their features are cached apart
    fg, fm = ex_grid(views), ex_max(views)
    assert fg.shape == (1, 2, 1024) and fm.shape == (1, 2, 256)
    np.testing.assert_allclose(fg.reshape(1, 2, 256, 4).max(-1), fm, rtol=1e-6)


# ---------------------------------------------------------------- renders
def test_splat_render_puts_depth_where_the_points_are():
    cam = Camera(position=(4.0, 0.0, 0.0), look_at=(0.0, 0.0, 0.0), up=(0, 0, 1), width=33, height=33)
    pts = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # both on the optical axis: the nearer (depth 3) wins
    r = render_points(pts, cam, radius=0)
    assert r.depth.shape == (1, 33, 33) and r.coverage.sum() == 1
    assert r.coverage[0, 16, 16] and r.depth[0, 16, 16] == pytest.approx(3.0)
    up = render_points(np.array([[0.0, 0.0, 1.0]]), cam, radius=0)  # above the axis: a row above the centre
    (v, u), = np.argwhere(up.coverage[0])
    assert u == 16 and v < 16 and up.depth[0, v, u] == pytest.approx(4.0)
    disc = render_points(pts, cam, radius=2)
    assert disc.coverage.sum() == 21 and np.all(disc.depth[disc.coverage] == pytest.approx(3.0))
    behind = render_points(np.array([[5.0, 0.0, 0.0]]), cam)
    assert not behind.coverage.any() and np.isinf(behind.depth).all()


@pytest.mark.parametrize("points, message", [
    (np.zeros((0, 3)), r"points must have shape \(N, 3\) with N >= 1, got \(0, 3\)"),
    (np.zeros((4, 2)), r"points must have shape \(N, 3\) with N >= 1, got \(4, 2\)"),
    (np.array([[0.0, np.nan, 0.0]]), "points contain NaN or infinite coordinates"),
])
def test_splat_render_rejects_bad_points(points, message):
    with pytest.raises(ValueError, match=message):
        render_points(points, Camera(position=(3.0, 0, 0)))


def test_point_cloud_views_and_voxel_grid_mesh():
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(500, 3)) * (1.0, 0.5, 0.3)
    v = render_views(cloud, views=6, size=32, channels="both")
    assert v.shape == (6, 2, 32, 32) and v.dtype == np.uint8
    assert 0 < (v[:, 0] < 255).mean() < 0.6 and (v[:, 1] < 255).sum() == (v[:, 0] < 255).sum()
    cube = voxel_mesh(np.pad(np.ones((1, 1, 1)), 1))
    assert len(cube.faces) == 12 and cube.is_watertight and cube.volume == pytest.approx(1.0)
    two = np.zeros((3, 3, 3))
    two[1, 1, 1] = two[1, 1, 2] = 1
    assert len(voxel_mesh(two).faces) == 20  # the shared face is not drawn
    with pytest.raises(ValueError, match="no occupied cells"):
        voxel_mesh(np.zeros((4, 4, 4)))


def test_render_cli_draws_point_clouds_and_voxel_grids(tmp_path, capsys):
    grid = np.zeros((8, 8, 8), dtype=np.uint8)
    grid[2:6, 2:6, 1:7] = 1
    np.save(tmp_path / "grid.npy", grid)
    np.save(tmp_path / "cloud.npy", np.random.default_rng(0).uniform(-1, 1, (300, 3)))
    out = tmp_path / "sheet.png"
    assert main(["-q", "render", str(tmp_path / "grid.npy"), str(tmp_path / "cloud.npy"), "--views", "3",
                 "--size", "32", "--modes", "shaded", "silhouette", "--out", str(out)]) == 0
    assert "(4 rows x 3 views)" in capsys.readouterr().out and out.stat().st_size > 0


def test_real_point_cloud_renders(real_data):
    from conftest import real_subset

    from shapes3d.render.multiview import views_task

    f = next((real_subset(real_data, "modelnet10_pcd1024") / "chair" / "test").glob("*.pcd"))
    v = views_task(f, views=4, size=32, channels="shaded")["views"]
    assert v.shape == (4, 1, 32, 32) and (v < 255).any(axis=(1, 2, 3)).all()


# ---------------------------------------------------------------- config, checkpoints, errors
def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.kind"):
        load_config(ClassifyConfig, "voxnet", overrides=["model.kind=pointnet"])
    with pytest.raises(ConfigError, match="model.mvcnn.channels"):
        load_config(ClassifyConfig, "demo-mvcnn", overrides=["model.mvcnn.channels=rgb"])
    with pytest.raises(ConfigError, match="model.mvcnn.tap"):
        load_config(ClassifyConfig, "demo-mvcnn", overrides=["model.mvcnn.tap=fc7"])
    assert load_config(ClassifyConfig, "voxnet").model.kind == "voxnet"
    assert load_config(ClassifyConfig, "mvcnn-shrec11").model.kind == "mvcnn"


def test_old_checkpoints_load_as_voxnet():
    from shapes3d.classify.evaluation import load_classifier
    from shapes3d.models.voxnet import VoxNet

    if not FIXTURE.exists():
        pytest.skip("pre-redesign fixture not present")
    model, cfg, _ = load_classifier(FIXTURE, device="cpu")
    assert cfg.model.kind == "voxnet" and isinstance(model, VoxNet)


# ---------------------------------------------------------------- end to end
def _tiny(*extra: str) -> list[str]:
    sets = ["train.epochs=2", "train.batch_size=4", "model.mvcnn.views=3", "model.mvcnn.image_size=32",
            f"model.mvcnn.weights={WEIGHTS}", *extra]
    return ["--config", "demo-mvcnn", *[a for s in sets for a in ("--set", s)]]


def test_end_to_end_from_the_shipped_preset(tiny_synth, tmp_path, capsys, monkeypatch):
    from shapes3d.classify import mvcnn_data

    calls = []
    real_call = mvcnn_data.FeatureExtractor.__call__
    monkeypatch.setattr(mvcnn_data.FeatureExtractor, "__call__", lambda self, v: calls.append(len(v)) or
                        real_call(self, v))
    run, cache = tmp_path / "run", tmp_path / "cache"
    assert main(["-q", "classify", "train", "--data", str(tiny_synth), "--out", str(run), "--cache", str(cache),
                 *_tiny()]) == 0
    assert sum(calls) == 12  # the 12 training shapes' features computed once
    from shapes3d.engine.checkpoint import load_checkpoint

    ck = load_checkpoint(run / "best.pt")
    assert ck["config"]["model"]["kind"] == "mvcnn" and ck["feature_source"]["weights"]
    calls.clear()  # a second run from the same cache: views and features are cache hits
    assert main(["-q", "classify", "train", "--data", str(tiny_synth), "--out", str(tmp_path / "run2"),
                 "--cache", str(cache), *_tiny()]) == 0
    assert calls == []
    assert main(["-q", "classify", "evaluate", str(run / "best.pt"), "--data", str(tiny_synth),
                 "--cache", str(cache), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 3 and metrics["model"] == "mvcnn" and metrics["views"] == 3
    assert metrics["vote"] is False and len(metrics["confusion"]) == 3
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 0
    capsys.readouterr()
    sheets = tmp_path / "sheets"
    assert main(["-q", "classify", "predict", str(run / "best.pt"), str(tiny_synth / "mug" / "test"),
                 "--top-k", "2", "--views-sheets", str(sheets)]) == 0
    out = capsys.readouterr().out
    assert "mug_0005.off: " in out and "1 view sheet(s)" in out
    assert (sheets / "mug_0005.png").stat().st_size > 0


def test_views_sheet_evidence(tiny_synth, tmp_path):
    from shapes3d.classify import jobs
    from shapes3d.classify.evaluation import load_classifier
    from shapes3d.classify.members import extractor
    from shapes3d.classify.mvcnn_views import view_evidence

    cfg = load_config(ClassifyConfig, "demo-mvcnn", overrides=_tiny()[3::2])
    res = jobs.train(cfg, tiny_synth, tmp_path / "run", cache=tmp_path / "c")
    model, cfg, classes = load_classifier(res.best_path, device="cpu")
    views = render_views(_mug(), views=3, size=32)
    ex = extractor(cfg, "cpu", model.feature_source)
    pooled, per_view = view_evidence(model, cfg, classes, views, ex)
    assert len(per_view) == 3 and all(c in classes and 0 < p <= 1 for c, p in per_view)
    assert pooled[0] in classes
    with pytest.raises(Shapes3DError, match="--views-sheets needs a multi-view checkpoint"):
        jobs.predict(FIXTURE, [tiny_synth / "mug" / "test"], views_sheets=tmp_path / "s")


def test_features_of_other_weights_are_refused(tiny_synth, tmp_path):
    from shapes3d.classify import jobs
    from shapes3d.engine.checkpoint import load_checkpoint, save_checkpoint

    cfg = load_config(ClassifyConfig, "demo-mvcnn", overrides=_tiny("train.epochs=1", "model.mvcnn.weights=random")[3::2])
    res = jobs.train(cfg, tiny_synth, tmp_path / "run", cache=tmp_path / "c")
    ck = load_checkpoint(res.best_path)
    ck["feature_source"]["weights"] = "0" * 64
    save_checkpoint(tmp_path / "other.pt", ck)
    with pytest.raises(Shapes3DError, match="was trained on features of VGG weights '0000"):
        jobs.evaluate(tmp_path / "other.pt", tiny_synth, cache=tmp_path / "c")


def test_fine_tuning_trains_the_vgg_on_the_views(tiny_synth, tmp_path):
    from shapes3d.classify import jobs

    cfg = load_config(ClassifyConfig, "demo-mvcnn", overrides=_tiny(
        "train.epochs=1", "model.mvcnn.frozen=false", "model.mvcnn.weights=random", "model.mvcnn.tap=relu1_2",
        "model.mvcnn.image_size=16")[3::2])
    res = jobs.train(cfg, tiny_synth, tmp_path / "run", cache=tmp_path / "c")
    from shapes3d.engine.checkpoint import load_checkpoint

    state = load_checkpoint(res.best_path)["model"]
    assert any(k.startswith("backbone.features.") for k in state)
    from shapes3d.classify.mvcnn_data import load_backbone

    before = load_backbone(cfg.model.mvcnn)[0].state_dict()["features.0.weight"]
    assert not torch.equal(state["backbone.features.0.weight"], before)  # the VGG moved
    pred = jobs.predict(res.best_path, [tiny_synth / "mug" / "test"], device="cpu")
    assert len(pred.predictions) == 1
