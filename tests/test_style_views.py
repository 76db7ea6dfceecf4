"""View-consistent style (``style views``): exact warps between rendered views, the consistency term, the job.

Tiny sizes (32-48 px, 3-4 views) and random VGG weights: the checks are on the geometry and on the term's
effect, not on how the style looks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from shapes3d.render.cameras import Camera, cameras_on_sphere
from shapes3d.style.view_warp import ring_pairs, view_pairs, warp, warped_difference
from shapes3d.style.views_config import StyleViewsConfig


@pytest.fixture(scope="module")
def sofa():
    from shapes3d.data.synth import sample_shape
    from shapes3d.geometry.normalize import normalize

    mesh = sample_shape("sofa", np.random.default_rng(0)).mesh(resolution=32)
    return normalize(mesh, mode="sphere", margin=0.0)[0]


@pytest.fixture(scope="module")
def vgg():
    from shapes3d.pretrained import load_vgg

    torch.manual_seed(0)
    return load_vgg("vgg19", weights="random", taps=("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2"),
                    pool="avg")


def _cfg(**kw) -> StyleViewsConfig:
    base = dict(views=4, size=32, steps=6, weights="random", device="cpu", style_size=32,
                style_layers=("relu1_1", "relu2_1", "relu3_1", "relu4_1"))
    return StyleViewsConfig(**{**base, **kw})


def test_warping_a_view_into_itself_is_the_identity():
    cam = Camera(position=(0.3, -3.0, 1.0), width=24, height=20, fov_deg=40.0)
    depth = 2.5 + np.random.default_rng(0).random((1, 20, 24)).astype(np.float32)
    pairs = view_pairs(np.concatenate([depth, depth]), [cam, cam], [(0, 1)], tolerance=1e-3)
    assert pairs.mask.shape == (1, 1, 20, 24) and bool(pairs.mask.all())
    images = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(warp(images, pairs)[0], images[1], atol=1e-5, rtol=0)
    assert warped_difference(images[[1, 1]], pairs) == pytest.approx(0.0, abs=1e-10)


def test_ring_pairs_visit_each_neighbour_once():
    assert ring_pairs(4, 1) == [(0, 1), (0, 3), (1, 2), (1, 0), (2, 3), (2, 1), (3, 0), (3, 2)]
    assert ring_pairs(2, 1) == [(0, 1), (1, 0)]


def test_exact_depth_maps_a_render_onto_its_neighbour_where_visible(sofa):
    from shapes3d.render.mesh import render_mesh

    v = 8
    cams = cameras_on_sphere(elevations_deg=[25.0], azimuths_deg=np.arange(v) * 360.0 / v, distance=3.2,
                             fov_deg=40.0, width=48, height=48)
    r = render_mesh(sofa, cams)
    # World-space normals do not depend on the view: a correct warp reproduces them.
    images = torch.from_numpy((r.normals + 1.0) / 2.0).permute(0, 3, 1, 2).float()
    pairs = view_pairs(r.depth, cams, ring_pairs(v, 1), tolerance=0.03)
    m = pairs.mask
    warped_err = float(((images[pairs.target] - warp(images, pairs)).abs().mean(1, keepdim=True) * m).sum() / m.sum())
    unwarped = float(((images[pairs.target] - images[pairs.source]).abs().mean(1, keepdim=True) * m).sum() / m.sum())
    hits = float(torch.from_numpy(r.silhouette[pairs.target.numpy()]).sum())
    assert float(m.sum()) > 0.3 * hits  # most of what a view sees, its 45-degree neighbour sees too
    assert bool((m[:, 0].numpy() <= r.silhouette[pairs.target.numpy()]).all())  # never the background
    assert warped_err < 0.3 * unwarped, (warped_err, unwarped)


def test_the_consistency_term_lowers_the_warped_difference(sofa, vgg):
    from shapes3d.style.view_consistency import _problem, optimise_views, render_views

    cfg = _cfg(init="noise", consistency_weight=200.0)
    renders = render_views(sofa, cfg)
    style = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    problem = _problem(renders, style, cfg, vgg)
    x0 = torch.rand(renders.content.shape, generator=torch.Generator().manual_seed(0))
    with_term = optimise_views(problem, x0, gamma=cfg.consistency_weight, desc="test")
    without = optimise_views(problem, x0, gamma=0.0, desc="test")
    assert len(with_term.history) == cfg.steps + 1 and with_term.history[0]["step"] == 0
    assert with_term.best["warped_difference"] < 0.5 * without.best["warped_difference"]
    assert with_term.best["consistency"] < with_term.history[0]["consistency"]
    # the background stays white: only the shape's pixels are optimised
    bg = renders.mask.expand(-1, 3, -1, -1) == 0
    assert bool((with_term.images[bg] == 1.0).all())


def test_the_cli_job_writes_its_files(tmp_path, sofa, capsys):
    from shapes3d.cli.main import main

    mesh = tmp_path / "sofa.off"
    sofa.export(mesh)
    out = tmp_path / "views"
    args = ["-q", "style", "views", str(mesh), "skimage:brick", "--views", "3", "--size", "32", "--steps", "2",
            "--weights", "random", "--out", str(out), "--set", "style_size=32", "--set", "device=\"cpu\"",
            "--set", "style_layers=['relu1_1', 'relu2_1']"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "warped difference" in text and "matched style loss" in text
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "consistency.json", "log.csv", "sheet.png",
                                                     "view_0.png", "view_1.png", "view_2.png"]
    metrics = json.loads((out / "consistency.json").read_text())
    assert {"content_warped_difference", "consistent", "plain", "ratio_at_matched_style"} <= set(metrics)
    assert metrics["plain"]["gamma"] == 0.0 and metrics["consistent"]["gamma"] == 100.0
    assert Image.open(out / "view_0.png").size == (32, 32)
    assert Image.open(out / "sheet.png").size[0] == 3 * (32 + 2) + 2
    rows = (out / "log.csv").read_text().splitlines()
    assert rows[0].startswith("run,step,") and len(rows) == 1 + 2 * 3


def test_style_shape_takes_the_mrf_term_from_the_same_config_choice():
    """``style shape`` with ``style.kind = "mrf"``: the shared term on SDF renders; its loss drops."""
    from shapes3d.deepsdf.stylization import stylize_shape
    from shapes3d.deepsdf.views_config import StyleShapeConfig, ViewRenderConfig, ViewsConfig
    from shapes3d.models.deepsdf import SDFDecoder
    from shapes3d.pretrained import load_vgg
    from shapes3d.render.cameras import cameras_on_sphere as cams_on_sphere

    torch.manual_seed(0)
    dec = SDFDecoder(latent_size=2, hidden=32, layers=4, skip_at=(2,), dropout=0.0, weight_norm=False)
    opt = torch.optim.Adam(dec.parameters(), lr=5e-3)
    code = torch.tensor([0.5, -0.5])
    for _ in range(100):  # a sphere of radius 0.6
        x = torch.rand(512, 3) * 2 - 1
        loss = (dec(code.expand(512, 2), x) - (x.norm(dim=1) - 0.6)).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    dec.eval()
    render = ViewRenderConfig(size=32, views=2, max_steps=24, silhouette_samples=4, group=2)
    cfg = ViewsConfig(render=render, style=StyleShapeConfig(kind="mrf", steps=4, lr_code=0.05, preserve_points=256,
                                                            weights="random", style_size=32))
    cams = cams_on_sphere(elevations_deg=[25.0], azimuths_deg=[0.0, 180.0], distance=3.2, fov_deg=40.0,
                          width=32, height=32)
    vgg = load_vgg("vgg19", weights="random", taps=cfg.style.mrf_layers, pool="avg")
    style = np.tile((np.arange(32) // 4 % 2).astype(np.float32), (32, 1))
    res = stylize_shape(dec, code, style, cams, cfg=cfg, vgg=vgg)
    assert res.final["style"] < res.history[0]["style"]


def _naive_consistency(images: np.ndarray, depth: np.ndarray, cams, pairs, tol: float) -> np.ndarray:
    """Ruder et al.'s temporal term, one pixel at a time: the world point of pixel k of view i (its ray at the
    rendered depth), projected into view j, view j bilinearly interpolated there where all four taps hit the
    shape and the depth test passes; per view the sum over its pairs of (1/D) sum_k c_k ||x_k - w_k||^2."""
    v_count, _, h, w = images.shape
    out = np.zeros(v_count)
    for i, j in pairs:
        origins, dirs = cams[i].rays()
        fwd = cams[i].forward
        total = 0.0
        for y in range(h):
            for x in range(w):
                z = depth[i, y, x]
                if not np.isfinite(z):
                    continue
                ray = dirs[y * w + x]
                point = origins[y * w + x] + ray * (z / float(ray @ fwd))
                u, vv = cams[j].project(point[None])[0]
                zj = cams[j].to_camera(point[None])[0, 2]
                if not (np.isfinite(u) and -1e-6 <= u <= w - 1 + 1e-6 and -1e-6 <= vv <= h - 1 + 1e-6):
                    continue
                u, vv = min(max(u, 0.0), w - 1), min(max(vv, 0.0), h - 1)
                u0, v0 = int(np.floor(u)), int(np.floor(vv))
                u1, v1 = min(u0 + 1, w - 1), min(v0 + 1, h - 1)
                fu, fv = u - u0, vv - v0
                corners = [(v0, u0, (1 - fu) * (1 - fv)), (v0, u1, fu * (1 - fv)), (v1, u0, (1 - fu) * fv),
                           (v1, u1, fu * fv)]
                if not all(np.isfinite(depth[j, a, b]) for a, b, _ in corners):
                    continue
                d_interp = sum(wt * depth[j, a, b] for a, b, wt in corners)
                if abs(zj - d_interp) >= tol:
                    continue
                warped = sum(wt * images[j, :, a, b] for a, b, wt in corners)
                total += float(((images[i, :, y, x] - warped) ** 2).sum())
        out[i] += total / (h * w)
    return out


def test_consistency_loss_matches_a_per_pixel_reference(sofa):
    """The vectorised term (reprojection, depth test, grid_sample warp, masked sum) equals the naive loop on
    a real render with random images, view by view."""
    from shapes3d.render.mesh import render_mesh
    from shapes3d.style.view_warp import consistency_loss

    v = 4
    cams = cameras_on_sphere(elevations_deg=[20.0], azimuths_deg=np.arange(v) * 360.0 / v + 10.0, distance=3.0,
                             fov_deg=40.0, width=20, height=16)
    r = render_mesh(sofa, cams)
    pairs_list = ring_pairs(v, 1)
    pairs = view_pairs(r.depth, cams, pairs_list, tolerance=0.03)
    assert float(pairs.mask.sum()) > 20  # the check covers real overlap, not an empty mask
    images = torch.rand(v, 3, 16, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = consistency_loss(images, pairs).numpy()
    want = _naive_consistency(images.numpy(), r.depth.astype(np.float64), cams, pairs_list, 0.03)
    assert (want > 0).all()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
