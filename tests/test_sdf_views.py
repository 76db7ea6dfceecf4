"""SDF jobs on multi-view renders: fitting a code to views and stylising a shape, on a tiny decoder
whose code space we control (code (-0.5, 0) is a sphere of radius 0.35, code (0.5, 0) one of radius 0.6)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from shapes3d.deepsdf.reconstruction import decoder_field
from shapes3d.deepsdf.stylization import stylize_shape
from shapes3d.deepsdf.view_fitting import fit_code_to_views
from shapes3d.deepsdf.views import ViewTargets, render_views, targets_from_mesh, view_cameras
from shapes3d.deepsdf.views_config import (
    FitViewsConfig,
    StyleShapeConfig,
    ViewRenderConfig,
    ViewsConfig,
)
from shapes3d.models.deepsdf import SDFDecoder
from shapes3d.pretrained import load_vgg
from shapes3d.render.cameras import cameras_on_sphere
from shapes3d.render.sdf_render import shade_by_differences

CODES = torch.tensor([[-0.5, 0.0], [0.5, 0.0]])
RADII = (0.35, 0.6)
RENDER = ViewRenderConfig(size=16, views=2, elevations=(20.0,), max_steps=32, silhouette_samples=8, group=1,
                          sharpness=30.0)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny ops: threads only spin on a loaded machine
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def decoder() -> SDFDecoder:
    """hidden 32, 4 layers, trained for 150 Adam steps on two spheres (under a second on an idle core)."""
    torch.manual_seed(0)
    dec = SDFDecoder(latent_size=2, hidden=32, layers=4, skip_at=(2,), dropout=0.0, weight_norm=False)
    opt = torch.optim.Adam(dec.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        x = torch.rand(2, 512, 3, generator=gen) * 2 - 1
        target = torch.stack([x[i].norm(dim=1) - r for i, r in enumerate(RADII)])
        pred = dec(CODES.repeat_interleave(512, 0), x.reshape(-1, 3)).reshape(2, -1)
        loss = (pred - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    dec.zero_grad(set_to_none=True)
    return dec.eval()


def _cfg(**fit) -> ViewsConfig:
    base = dict(steps=12, lr=0.05, perceptual_weight=0.0, ssim_weight=0.2, code_reg=0.0, weights="random")
    return ViewsConfig(render=RENDER, fit=FitViewsConfig(**{**base, **fit}))


def _sil_loss(dec, code, targets, cams, cfg) -> float:
    with torch.no_grad():
        r = render_views(decoder_field(dec, code), cams, cfg.render)
    return float(torch.nn.functional.binary_cross_entropy(r.silhouette_soft.clamp(1e-6, 1 - 1e-6),
                                                          targets.silhouette))


def test_fit_code_to_views_recovers_the_larger_sphere(decoder):
    cfg = _cfg()
    cams = view_cameras(cfg.render)
    with torch.no_grad():
        truth = render_views(decoder_field(decoder, CODES[1]), cams, cfg.render)
    targets = ViewTargets(silhouette=truth.hit, shaded=truth.shaded)
    res = fit_code_to_views(decoder, targets, cams, cfg=cfg, codes=CODES)
    start = CODES.mean(0)
    assert _sil_loss(decoder, res.code, targets, cams, cfg) < 0.7 * _sil_loss(decoder, start, targets, cams, cfg)
    assert (res.code - CODES[1]).norm() < 0.6 * (start - CODES[1]).norm()
    assert res.history[-1]["silhouette"] < res.history[0]["silhouette"]
    assert res.renders.shaded.shape == (2, 16, 16) and not res.renders.shaded.requires_grad
    assert all(p.requires_grad for p in decoder.parameters())  # restored after the fit


def test_fit_code_to_views_is_deterministic_with_restarts_and_perceptual_loss(decoder):
    cfg = _cfg(steps=3, restarts=2, init_std=0.2, perceptual_weight=0.1, perceptual_layers=("relu1_2",))
    cams = view_cameras(cfg.render)
    sphere = __import__("trimesh").creation.icosphere(subdivisions=3, radius=0.6)
    targets = targets_from_mesh(sphere, cams)
    vgg = load_vgg("vgg16", weights="random", taps=("relu1_2",))
    a = fit_code_to_views(decoder, targets, cams, cfg=cfg, codes=CODES, vgg=vgg)
    b = fit_code_to_views(decoder, targets, cams, cfg=cfg, codes=CODES, vgg=vgg)
    assert torch.equal(a.code, b.code) and a.restart_losses == b.restart_losses and len(a.restart_losses) == 2
    assert a.loss == min(a.restart_losses)
    assert {"silhouette", "ssim_shaded", "ssim_normals", "perceptual_shaded", "perceptual_normals", "code"} <= set(
        a.history[0])


def test_fit_code_to_views_validates_its_inputs(decoder):
    cfg = _cfg()
    cams = view_cameras(cfg.render)
    with pytest.raises(ValueError, match=r"targets are 3 views of 16x16 but there are 2 cameras of 16x16"):
        fit_code_to_views(decoder, ViewTargets(silhouette=torch.zeros(3, 16, 16)), cams, cfg=cfg)
    with pytest.raises(ValueError, match="targets must give at least one of silhouette, shaded or normals"):
        ViewTargets()
    with pytest.raises(ValueError, match=r"target normals must have shape \(V, H, W, 3\), got \(2, 16, 16\)"):
        ViewTargets(normals=torch.zeros(2, 16, 16))
    single = SDFDecoder(latent_size=0, hidden=8, layers=2, skip_at=())
    with pytest.raises(ValueError, match="latent_size 0"):
        fit_code_to_views(single, ViewTargets(silhouette=torch.zeros(2, 16, 16)), cams, cfg=cfg)


def test_difference_shading_matches_autograd_shading_and_carries_a_code_gradient(decoder):
    cams = cameras_on_sphere(elevations_deg=[20], azimuths_deg=[30], distance=3.2, width=16, height=16)
    code = CODES[1].clone().requires_grad_(True)
    fn = decoder_field(decoder, code)
    r = render_views(fn, cams, RENDER)
    shaded, normals = shade_by_differences(fn, r, cams, eps=0.005, ambient=RENDER.ambient)
    hit = r.hit
    assert (shaded[hit] - r.shaded[hit]).abs().mean() < 0.05
    assert torch.equal(shaded[~hit], torch.ones_like(shaded[~hit]))
    (g,) = torch.autograd.grad(shaded[hit].mean(), code)
    assert g.abs().sum() > 0  # autograd normals of a ReLU net give exactly zero here


def _style_cfg(**style) -> ViewsConfig:
    base = dict(steps=6, lr_code=0.03, lr_decoder=2e-3, preserve_weight=20.0, preserve_points=512, weights="random",
                style_layers=("relu1_1", "relu2_1"), style_size=32)
    return ViewsConfig(render=RENDER, style=StyleShapeConfig(**{**base, **style}))


@pytest.fixture(scope="module")
def style_image() -> np.ndarray:
    rng = np.random.default_rng(0)
    stripes = np.tile((np.arange(32) // 4 % 2).astype(np.float32), (32, 1))
    return np.clip(stripes + 0.1 * rng.standard_normal((32, 32)), 0, 1).astype(np.float32)


def test_stylize_code_lowers_the_style_loss_and_keeps_the_shape(decoder, style_image):
    cfg = _style_cfg()
    cams = view_cameras(cfg.render)
    vgg = load_vgg("vgg19", weights="random", taps=cfg.style.style_layers, pool="avg")
    res = stylize_shape(decoder, CODES[0], style_image, cams, cfg=cfg, vgg=vgg)
    assert res.final["style"] < res.history[0]["style"]
    assert not torch.equal(res.after.shaded, res.before.shaded)
    assert res.final["mean_abs_sdf_change"] < 0.05
    assert res.decoder is decoder and all(p.requires_grad for p in decoder.parameters())
    free = stylize_shape(decoder, CODES[0], style_image, cams, cfg=_style_cfg(preserve_weight=0.0), vgg=vgg)
    assert free.final["mean_abs_sdf_change"] > res.final["mean_abs_sdf_change"]


def test_stylize_decoder_never_modifies_the_callers_decoder(decoder, style_image):
    cfg = _style_cfg(steps=3)
    cams = view_cameras(dataclasses.replace(cfg.render, views=1))
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    vgg = load_vgg("vgg19", weights="random", taps=cfg.style.style_layers, pool="avg")
    res = stylize_shape(decoder, CODES[1], style_image, cams, cfg=cfg, optimise="decoder", vgg=vgg)
    assert res.decoder is not decoder
    assert all(torch.equal(before[k], v) for k, v in decoder.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in res.decoder.state_dict().items())
    assert all(p.grad is None for p in decoder.parameters())
    assert torch.equal(res.code, CODES[1])
    with pytest.raises(ValueError, match="optimise must be 'code' or 'decoder', got 'weights'"):
        stylize_shape(decoder, CODES[1], style_image, cams, cfg=cfg, optimise="weights", vgg=vgg)
