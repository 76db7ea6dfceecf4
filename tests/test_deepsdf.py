"""DeepSDF core: decoder architecture, losses, balanced sampling, training, resume, fitting, interpolation."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shapes3d.config import load_config
from shapes3d.data.sdf_dataset import SDFDataset, ShapeSamples, samples_from_sdf, split_by_sign
from shapes3d.deepsdf import fitting as sdf_fit
from shapes3d.deepsdf import trainer as sdf_train
from shapes3d.deepsdf.config import DeepSDFConfig
from shapes3d.deepsdf.fitting import crop_observation, fit_code, interpolate_codes, observations_from_depth
from shapes3d.engine.checkpoint import load_checkpoint
from shapes3d.errors import ConfigError
from shapes3d.geometry.conventions import sphere_sdf
from shapes3d.losses.sdf_objective import clamped_l1, latent_regulariser, sdf_objective
from shapes3d.models.deepsdf import LatentCodes, SDFDecoder, _ReLUDropout, keep_mask

CONFIG = "configs/deepsdf.toml"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def sphere_points(n: int, radius: float, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return radius * v / np.linalg.norm(v, axis=1, keepdims=True)


def sphere_samples(radius: float, n: int = 6000, seed: int = 0) -> ShapeSamples:
    return samples_from_sdf(lambda p: sphere_sdf(p, radius=radius), sphere_points(2000, radius, seed), n=n, seed=seed)


def tiny_config(**train) -> DeepSDFConfig:
    cfg = load_config(DeepSDFConfig, CONFIG)
    model = dataclasses.replace(cfg.model, latent_size=8, hidden=64, layers=4, skip_at=(2,), dropout=0.0)
    t = dict(epochs=3, shapes_per_batch=2, samples_per_shape=1024, device="cpu", lr_decoder=2e-3, lr_codes=5e-3,
             code_reg_ramp=10, checkpoint_every=50)
    t.update(train)
    return dataclasses.replace(cfg, model=model, train=dataclasses.replace(cfg.train, **t))


# --- architecture ---------------------------------------------------------------------


def test_parameter_count_matches_the_official_architecture():
    # Official specs: dims [512]*8, latent_in [4], weight norm on layers 0..7 (g: one per
    # output row), plain output layer 512 -> 1. Layer 3 outputs 512 - (256 + 3) = 253.
    d_in, h = 256 + 3, 512
    table = [(d_in, h), (h, h), (h, h), (h, h - d_in), (h, h), (h, h), (h, h), (h, h)]
    expected = sum(i * o + o + o for i, o in table) + (h * 1 + 1)
    assert expected == 1_843_195
    dec = SDFDecoder()
    assert sum(p.numel() for p in dec.parameters()) == expected
    assert [(m.weight_v.shape[1], m.weight_v.shape[0]) for m in dec.hidden_layers] == table


def test_skip_connection_reinjects_the_input_at_layer_4():
    dec = SDFDecoder(latent_size=16, hidden=64).eval()
    seen = {}
    dec.hidden_layers[4].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    z, xyz = torch.randn(5, 16), torch.randn(5, 3)
    out = dec(z, xyz)
    assert out.shape == (5,)
    assert seen["x"].shape == (5, 64)
    torch.testing.assert_close(seen["x"][:, 64 - 19:], torch.cat([z, xyz], 1))


def test_output_is_tanh_bounded_and_single_shape_mode_takes_no_code():
    dec = SDFDecoder(latent_size=0, hidden=32, layers=3, skip_at=(2,)).eval()
    with torch.no_grad():
        dec.output.weight.mul_(1e4)
    y = dec(None, torch.randn(200, 3) * 10)
    assert y.abs().max() <= 1.0 and y.abs().max() > 0.99
    with pytest.raises(ValueError, match="single-shape mode"):
        dec(torch.zeros(200, 4), torch.randn(200, 3))
    with pytest.raises(ValueError, match=r"latent must have shape \(4, 8\), got None"):
        SDFDecoder(latent_size=8, hidden=32, layers=3, skip_at=(2,))(None, torch.zeros(4, 3))


@pytest.mark.parametrize("latent, skip_at", [(8, (2,)), (8, (1, 3)), (0, (2,)), (8, ())])
def test_frozen_field_matches_the_decoder_in_values_and_xyz_gradients(latent, skip_at):
    torch.manual_seed(0)
    dec = SDFDecoder(latent_size=latent, hidden=32, layers=4, skip_at=skip_at)
    with torch.no_grad():  # non-trivial weight norm: g away from ||v||
        for layer in dec.hidden_layers:
            layer.weight_g.mul_(torch.rand_like(layer.weight_g) + 0.5)
    code = torch.randn(latent) if latent else None
    frozen = dec.freeze(code)  # the decoder is in training mode with dropout 0.2: freeze ignores it
    dec.eval()
    x = (torch.rand(64, 3) * 2 - 1).requires_grad_(True)
    want = dec(None if code is None else code.expand(64, -1), x)
    got = frozen(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    (g_want,) = torch.autograd.grad(want.sum(), x)
    (g_got,) = torch.autograd.grad(got.sum(), x)
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-5)
    assert not any(b.requires_grad for b in frozen.buffers())
    # Layer 0 reads xyz only; a skip layer reads its hidden columns and xyz (the code is in the bias).
    assert frozen.w0.shape[0] == 3
    for k in skip_at:
        assert getattr(frozen, f"w{k}").shape[0] == 32 - (latent + 3) + 3


@pytest.mark.parametrize("weight_norm", [True, False])
def test_frozen_field_keeps_its_values_while_the_decoder_trains_on(weight_norm):
    torch.manual_seed(0)
    dec = SDFDecoder(latent_size=8, hidden=32, layers=4, skip_at=(2,), weight_norm=weight_norm)
    frozen = dec.freeze(torch.randn(8))
    x = torch.rand(16, 3)
    before = frozen(x).clone()
    with torch.no_grad():
        for p in dec.parameters():
            p.add_(1.0)  # an optimizer step updates parameters in place
    torch.testing.assert_close(frozen(x), before, rtol=0, atol=0)


def test_freeze_checks_the_code():
    dec = SDFDecoder(latent_size=8, hidden=32, layers=4, skip_at=(2,))
    with pytest.raises(ValueError, match=r"freeze\(\) needs one code of 8 values, got \(5,\)"):
        dec.freeze(torch.zeros(5))
    with pytest.raises(ValueError, match=r"freeze\(\) needs one code of 8 values, got None"):
        dec.freeze(None)
    with pytest.raises(ValueError, match="single-shape mode"):
        SDFDecoder(latent_size=0, hidden=32, layers=4, skip_at=(2,)).freeze(torch.zeros(8))
    with pytest.raises(ValueError, match=r"xyz must have shape \(N, 3\), got \(4, 2\)"):
        dec.freeze(torch.zeros(8))(torch.zeros(4, 2))


def test_weight_norm_rows_have_norm_g():
    layer = SDFDecoder(latent_size=4, hidden=32, layers=3, skip_at=(2,)).hidden_layers[0]
    with torch.no_grad():
        layer.weight_g.uniform_(0.5, 2.0)
    torch.testing.assert_close(layer.effective_weight().norm(dim=1, keepdim=True), layer.weight_g)


def test_fused_relu_dropout_matches_the_naive_composition():
    h = torch.randn(300, 40, dtype=torch.float64, requires_grad=True)
    keep = torch.rand(300, 40) > 0.2
    y = _ReLUDropout.apply(h, keep)
    ref_h = h.detach().clone().requires_grad_(True)
    ref = F.relu(ref_h) * keep
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(y)
    y.backward(g)
    ref.backward(g)
    torch.testing.assert_close(h.grad, ref_h.grad)


def test_decoder_with_dropout_matches_a_naive_forward_with_the_same_masks(monkeypatch):
    import shapes3d.models.deepsdf as mod

    dec = SDFDecoder(latent_size=5, hidden=24, layers=4, skip_at=(2,), dropout=0.3).double().train()
    masks = []
    real = mod.keep_mask
    monkeypatch.setattr(mod, "keep_mask", lambda *a, **k: masks.append(real(*a, **k)) or masks[-1])
    z, xyz = torch.randn(50, 5, dtype=torch.float64), torch.randn(50, 3, dtype=torch.float64)
    got = dec(z, xyz)
    x = inp = torch.cat([z, xyz], 1)  # naive: relu, then inverted dropout with the recorded masks
    for k, layer in enumerate(dec.hidden_layers):
        if k == 2:
            x = torch.cat([x, inp], 1)
        x = F.relu(x @ layer.effective_weight().T + layer.bias) * masks[k] / 0.7
    torch.testing.assert_close(got, torch.tanh(dec.output(x)).squeeze(1))


def test_keep_mask_rate_and_dropout_only_in_training():
    m = keep_mask((1000, 1000), 0.2, device=torch.device("cpu"))
    assert m.dtype == torch.bool
    assert abs(m.float().mean().item() - 0.8) < 0.003  # binomial std 0.0004
    dec = SDFDecoder(latent_size=4, hidden=32, layers=3, skip_at=(2,), dropout=0.2)
    z, x = torch.randn(64, 4), torch.randn(64, 3)
    assert not torch.equal(dec.train()(z, x), dec(z, x))
    assert torch.equal(dec.eval()(z, x), dec(z, x))


def test_latent_codes_init_std_and_max_norm():
    codes = LatentCodes(2000, 256)
    assert codes.weight.std().item() == pytest.approx(1 / 16, rel=0.02)
    with torch.no_grad():
        codes.weight[3] = 5.0 * torch.ones(256) / 16  # norm 5
    z = codes(torch.tensor([3, 4]))
    assert z[0].norm().item() == pytest.approx(1.0, abs=1e-4)
    assert codes.weight[3].norm().item() == pytest.approx(1.0, abs=1e-4)  # renormalised in place


# --- losses ---------------------------------------------------------------------------


def test_clamped_l1_matches_a_naive_loop():
    rng = np.random.default_rng(1)
    p, t = rng.normal(0, 0.2, 500), rng.normal(0, 0.2, 500)
    naive = sum(abs(min(max(a, -0.1), 0.1) - min(max(b, -0.1), 0.1)) for a, b in zip(p, t)) / 500
    got = clamped_l1(torch.tensor(p), torch.tensor(t), delta=0.1)
    assert got.item() == pytest.approx(naive, rel=1e-6)
    with pytest.raises(ValueError, match=r"same shape, got \(3,\) and \(4,\)"):
        clamped_l1(torch.zeros(3), torch.zeros(4))


def test_latent_regulariser_ramps_in_over_100_epochs():
    codes = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # norms 5 and 1, mean 3
    for epoch, ramp in ((0, 0.0), (50, 0.5), (100, 1.0), (400, 1.0)):
        got = latent_regulariser(codes, weight=1e-4, epoch=epoch, ramp_epochs=100)
        assert got.item() == pytest.approx(1e-4 * ramp * 3.0)
    assert latent_regulariser(codes, weight=1.0, epoch=1, ramp_epochs=0, squared=True).item() == pytest.approx(13.0)


def test_train_and_fit_use_the_same_objective_object():
    assert sdf_train.OBJECTIVE is sdf_fit.OBJECTIVE is sdf_objective
    out = sdf_objective(torch.zeros(4), torch.ones(4), torch.ones(4, 2), code_weight=0.5, epoch=1, ramp_epochs=0)
    assert set(out) == {"sdf", "code", "total"}
    assert out["total"].item() == pytest.approx(0.1 + 0.5 * math.sqrt(2))


# --- data -----------------------------------------------------------------------------


def test_balanced_sampler_draws_half_from_each_side():
    rows = lambda n, sign: np.c_[np.random.default_rng(n).normal(size=(n, 3)), sign * np.arange(1, n + 1)]  # noqa: E731
    ds = SDFDataset([ShapeSamples(rows(10, 1.0), rows(1000, -1.0)), ShapeSamples(rows(7, 1.0), np.zeros((0, 4)))])
    g = torch.Generator().manual_seed(0)
    xyz, sdf = ds.sample(torch.tensor([0, 1, 0]), 100, generator=g)
    assert xyz.shape == (300, 3) and sdf.shape == (300,)
    per_shape = sdf.view(3, 100)
    assert (per_shape[0] > 0).sum() == 50 and (per_shape[2] > 0).sum() == 50
    assert (per_shape[1] > 0).all()  # a one-sided shape gives all its samples from that side
    again = ds.sample(torch.tensor([0, 1, 0]), 100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[1], sdf)


def test_shape_samples_validate_the_sign_split():
    with pytest.raises(ValueError, match="pos must hold SDF > 0"):
        ShapeSamples(np.array([[0, 0, 0, -1.0]]), np.zeros((0, 4)))
    s = split_by_sign(np.zeros((3, 3)), np.array([0.5, 0.0, -0.2]))
    assert len(s.pos) == 1 and len(s.neg) == 2  # exact zeros go to neg, as the official npz


# --- training -------------------------------------------------------------------------


def test_single_shape_overfits_a_sphere(tmp_path):
    from shapes3d.geometry.extract import extract_mesh
    from shapes3d.metrics.shape import chamfer_deepsdf

    torch.manual_seed(0)
    cfg = tiny_config(epochs=400, shapes_per_batch=1, samples_per_shape=2048, lr_decoder=3e-3, checkpoint_every=400)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, latent_size=0))
    data = SDFDataset([sphere_samples(0.5, n=20000)])
    result = sdf_train.train(cfg, data, tmp_path)
    assert result.history[-1]["train_sdf"] < 0.3 * result.history[0]["train_sdf"]
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "log.csv").exists()
    model = sdf_train.load_deepsdf(result.last_path, device="cpu")
    mesh = extract_mesh(lambda p: model.decoder(None, p), resolution=48, bound=1.0, device="cpu").mesh
    pts = mesh.sample(5000, seed=0) if hasattr(mesh, "sample") else mesh.vertices
    cd = chamfer_deepsdf(pts, sphere_points(5000, 0.5, seed=1))
    print(f"single-shape sphere Chamfer (squared, summed means): {cd:.2e}")
    assert cd < 1e-3  # stated bound: mean squared error ~ (0.02 radius error)^2 per direction


def test_single_shape_mode_rejects_several_shapes(tmp_path):
    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, latent_size=0))
    with pytest.raises(ConfigError, match="exactly 1 shape, got 2"):
        sdf_train.train(cfg, SDFDataset([sphere_samples(0.3, 500), sphere_samples(0.4, 500)]), tmp_path)


def test_resume_continues_exactly(tmp_path):
    cfg = tiny_config(epochs=4, checkpoint_every=1)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dropout=0.2))  # exercise the RNG
    data = SDFDataset([sphere_samples(r, n=2000, seed=i) for i, r in enumerate((0.3, 0.5, 0.7))])
    straight = sdf_train.train(cfg, data, tmp_path / "a")
    sdf_train.train(cfg, data, tmp_path / "b", stop_after=2)
    resumed = sdf_train.train(cfg, data, tmp_path / "b", resume=True)
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]
    a = load_checkpoint(straight.last_path)
    b = load_checkpoint(resumed.last_path)
    for key in ("decoder", "codes"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"


def test_bf16_step_runs_and_keeps_fp32_master_weights():
    cfg = tiny_config(precision="bf16")
    dec, codes = sdf_train.build_decoder(cfg), sdf_train.build_codes(cfg, 2)
    opt = sdf_train.build_optimizer(cfg, dec, codes)
    xyz, sdf = SDFDataset([sphere_samples(0.5, 2000)] * 2).sample(torch.tensor([0, 1]), 256,
                                                                    generator=torch.Generator().manual_seed(0))
    stats = sdf_train.train_step(dec, codes, opt, torch.tensor([0, 1]), xyz, sdf, t=cfg.train, epoch=1)
    assert math.isfinite(stats["total"]) and stats["total"] > 0
    assert all(p.dtype == torch.float32 for p in dec.parameters())


# --- fitting and interpolation --------------------------------------------------------


@pytest.fixture(scope="module")
def three_spheres(tmp_path_factory):
    torch.manual_seed(0)
    cfg = tiny_config(epochs=300, shapes_per_batch=3, samples_per_shape=1024, checkpoint_every=300)
    data = SDFDataset([sphere_samples(r, n=6000, seed=i) for i, r in enumerate((0.3, 0.5, 0.7))])
    result = sdf_train.train(cfg, data, tmp_path_factory.mktemp("deepsdf"))
    return sdf_train.load_deepsdf(result.last_path, device="cpu"), data


def test_extract_shape_through_the_frozen_field_gives_the_decoders_surface(three_spheres):
    from shapes3d.deepsdf.reconstruction import decoder_field, extract_shape
    from shapes3d.geometry.extract import extract_mesh

    model, _ = three_spheres
    code = model.codes[1]
    ours = extract_shape(model.decoder, code, resolution=40, mode="dense").mesh
    ref = extract_mesh(decoder_field(model.decoder, code), resolution=40, bound=1.0, mode="dense", device="cpu").mesh
    assert len(ours.faces) > 100 and np.array_equal(ours.faces, ref.faces)
    np.testing.assert_allclose(ours.vertices, ref.vertices, atol=1e-5)
    radius = np.linalg.norm(ours.vertices, axis=1).mean()
    assert abs(radius - 0.5) < 0.05  # the second training sphere


def test_fit_recovers_a_training_shape(three_spheres):
    model, data = three_spheres
    dec, codes = model.decoder, model.codes
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    res = fit_code(dec, (data.pos[1].numpy(), data.neg[1].numpy()), iterations=150, lr_drop_at=100,
                   samples_per_iter=2000, restarts=2, seed=0)
    assert all(torch.equal(v, dec.state_dict()[k]) for k, v in before.items())  # decoder untouched
    assert all(p.requires_grad for p in dec.parameters())  # flags restored
    probe = torch.from_numpy(sphere_points(2000, 0.5, seed=3) * np.random.default_rng(3).uniform(0.5, 1.5, (2000, 1)))
    probe = probe.float()
    with torch.no_grad():
        f = lambda z: dec(z.expand(len(probe), -1), probe)  # noqa: E731
        fitted, trained = f(res.code), f(codes[1])
        others = min((f(codes[j]) - trained).abs().mean().item() for j in (0, 2))
    err = (fitted - trained).abs().mean().item()
    print(f"fit: mean |sdf diff| to the trained code {err:.4f}, to the nearest other shape {others:.4f}")
    assert err < 0.25 * others
    assert len(res.restart_losses) == 2 and res.loss == min(res.restart_losses)
    again = fit_code(dec, (data.pos[1].numpy(), data.neg[1].numpy()), iterations=150, lr_drop_at=100,
                     samples_per_iter=2000, restarts=2, seed=0)
    assert torch.equal(again.code, res.code)  # seeded: deterministic


def test_fit_from_one_depth_view(three_spheres):
    model, _ = three_spheres
    cam = np.array([0.0, 0.0, 2.5])
    surf = sphere_points(4000, 0.7, seed=5)
    visible = surf[surf[:, 2] > 0.1]  # the cap the camera sees
    obs = observations_from_depth(visible, cam, free_space_samples=2, seed=0)
    # From a near-zero code this decoder's surface lies > delta from the observed one, where the
    # clamped loss has no gradient and the fit stays put (mean |sdf| 0.22 when measured); wider
    # random restarts find a start inside the basin.
    res = fit_code(model.decoder, obs, iterations=150, lr_drop_at=100, samples_per_iter=2000, restarts=4,
                   init_std=0.3)
    probe = torch.from_numpy(sphere_points(1000, 0.7, seed=6)).float()  # the whole sphere, unseen half included
    with torch.no_grad():
        err = model.decoder(res.code.expand(1000, -1), probe).abs().mean().item()
    print(f"fit from a depth view: mean |sdf| on the true surface {err:.4f}")
    assert err < 0.05


def test_depth_observations_are_upper_bounds_in_free_space():
    cam = np.array([0.0, 0.0, 3.0])
    surf = sphere_points(500, 1.0, seed=2)
    surf = surf[surf[:, 2] > 0.5]
    obs = observations_from_depth(surf, cam, free_space_samples=3, seed=1)
    assert len(obs.points) == 4 * len(surf)
    assert np.all(obs.sdf[: len(surf)] == 0)
    free, target = obs.points[len(surf):].astype(np.float64), obs.sdf[len(surf):]
    true = sphere_sdf(free, radius=1.0)
    assert np.all(true > 0) and np.all(true <= target + 1e-5)
    crop = crop_observation(surf, cam, plane_normal=(1, 0, 0), plane_offset=0.0, free_space_samples=0)
    assert np.all(crop.points[:, 0] >= 0) and len(crop.points) == int((surf[:, 0] >= 0).sum())
    with pytest.raises(ValueError, match="camera_center must be 3 finite numbers"):
        observations_from_depth(surf, (0, 0))


def test_interpolation_endpoints_and_slerp_norm():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(16, generator=g), torch.randn(16, generator=g)
    z1 = z1 * (2.0 * z0.norm() / z1.norm())  # endpoint norms |z0| and 2|z0|
    for mode in ("linear", "slerp"):
        path = interpolate_codes(z0, z1, 7, mode=mode)
        assert path.shape == (7, 16)
        torch.testing.assert_close(path[0], z0)
        torch.testing.assert_close(path[-1], z1)
    t = torch.linspace(0, 1, 7)
    slerp = interpolate_codes(z0, z1, 7, mode="slerp")
    torch.testing.assert_close(slerp.norm(dim=1), (1 + t) * z0.norm())
    cos = torch.nn.functional.cosine_similarity(slerp[:-1], slerp[1:], dim=1)
    torch.testing.assert_close(cos, cos[:1].expand(6))  # constant angular speed
    assert interpolate_codes(z0, z1, 7).norm(dim=1)[3] < slerp.norm(dim=1)[3]
    with pytest.raises(ValueError, match="mode must be 'linear' or 'slerp', got 'cubic'"):
        interpolate_codes(z0, z1, 3, mode="cubic")


def test_config_file_loads_strictly(tmp_path):
    cfg = load_config(DeepSDFConfig, CONFIG)
    assert (cfg.model.latent_size, cfg.model.hidden, cfg.model.skip_at, cfg.fit.iterations) == (256, 512, (4,), 800)
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochz = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'train.epochz'"):
        load_config(DeepSDFConfig, bad)


def test_fit_job_uses_the_checkpoints_clamp_and_code_reg(tmp_path, monkeypatch):
    """`sdf fit` once called fit_code with the [fit] table only, so the codes were fitted with the default clamp
    0.1 whatever delta the decoder was trained with; the objective must see the checkpoint's train.clamp."""
    import trimesh

    from shapes3d.deepsdf import jobs
    from shapes3d.deepsdf.codes import shape_code
    from shapes3d.geometry.sampling import SDFSampleConfig

    cfg = tiny_config(epochs=1, clamp=0.05, code_reg=3e-3)
    cfg = dataclasses.replace(cfg, samples=SDFSampleConfig(n_samples=2200, n_uniform=200))
    trained = sdf_train.train(cfg, SDFDataset([sphere_samples(0.4, 500), sphere_samples(0.6, 500)]), tmp_path)
    mesh = tmp_path / "ball.ply"
    trimesh.creation.icosphere(subdivisions=2, radius=0.5).export(mesh)
    seen = []

    def recording_objective(*args, **kwargs):
        seen.append((kwargs.get("delta"), kwargs.get("code_weight")))
        return sdf_objective(*args, **kwargs)

    monkeypatch.setattr(sdf_fit, "OBJECTIVE", recording_objective)
    assert sdf_fit.fit_options(cfg)["clamp"] == 0.05
    result = jobs.fit(trained.last_path, mesh, out=tmp_path / "fits", resolution=16,
                      overrides=["fit.iterations=3", "fit.restarts=1", "fit.samples_per_iter=256"])
    assert seen and {delta for delta, _ in seen} == {0.05}
    assert {w for _, w in seen if w is not None} == {3e-3}
    assert result.code_path == tmp_path / "fits" / "ball.pt"
    label, code, t = shape_code(sdf_train.load_deepsdf(trained.last_path), str(result.code_path))
    assert label == "ball" and torch.equal(code, result.fit.code) and t.scale > 0
    assert load_checkpoint(result.code_path)["partial"] == "none"
