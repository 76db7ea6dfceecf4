"""The fast DeepSDF recipe: positional encoding of xyz, warm-up + cosine learning rates, the deepsdf-fast preset."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from shapes3d.config import config_from_dict, config_to_dict, load_config
from shapes3d.data.sdf_dataset import SDFDataset, samples_from_sdf
from shapes3d.deepsdf import trainer as sdf_train
from shapes3d.deepsdf.config import DeepSDFConfig, SDFTrainConfig
from shapes3d.errors import ConfigError
from shapes3d.geometry.conventions import sphere_sdf
from shapes3d.models.deepsdf import SDFDecoder, layer_table, positional_encoding

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def sphere_data(radii=(0.3, 0.5)) -> SDFDataset:
    shapes = []
    for k, r in enumerate(radii):
        v = np.random.default_rng(k).normal(size=(1000, 3))
        surface = r * v / np.linalg.norm(v, axis=1, keepdims=True)
        shapes.append(samples_from_sdf(lambda p, r=r: sphere_sdf(p, radius=r), surface, n=4000, seed=k))
    return SDFDataset(shapes, names=[f"s{k}" for k in range(len(radii))])


def tiny(cfg: DeepSDFConfig, *, pe: int = 0, **train) -> DeepSDFConfig:
    model = dataclasses.replace(cfg.model, latent_size=8, hidden=64, layers=4, skip_at=(2,), pe_frequencies=pe)
    t = dict(epochs=2, samples_per_shape=256, device="cpu", checkpoint_every=50)
    t.update(train)
    return dataclasses.replace(cfg, model=model, train=dataclasses.replace(cfg.train, **t))


# --- positional encoding --------------------------------------------------------------------


def test_positional_encoding_matches_a_naive_formula():
    xyz = torch.randn(7, 3, dtype=torch.float64)
    enc = positional_encoding(xyz, 4)
    assert enc.shape == (7, 3 + 6 * 4)
    naive = [xyz[:, c] for c in range(3)]
    naive += [torch.sin(2.0**k * math.pi * xyz[:, c]) for k in range(4) for c in range(3)]
    naive += [torch.cos(2.0**k * math.pi * xyz[:, c]) for k in range(4) for c in range(3)]
    torch.testing.assert_close(enc, torch.stack(naive, dim=1))
    assert positional_encoding(xyz, 0) is xyz


def test_positional_encoding_is_off_by_default_and_the_official_architecture_unchanged():
    assert DeepSDFConfig().model.pe_frequencies == 0
    assert load_config(DeepSDFConfig, "deepsdf").model.pe_frequencies == 0
    dec = SDFDecoder()
    assert dec.pe_frequencies == 0 and dec.hidden_layers[0].weight_v.shape == (512, 259)
    assert [tuple(r) for r in layer_table(256, 512, 8, (4,))][:4] == [(259, 512), (512, 512), (512, 512), (512, 253)]
    old = config_to_dict(DeepSDFConfig())  # a checkpoint's config from before these fields existed
    del old["model"]["pe_frequencies"], old["train"]["lr_schedule"], old["train"]["warmup_epochs"]
    cfg = config_from_dict(DeepSDFConfig, old)
    assert (cfg.model.pe_frequencies, cfg.train.lr_schedule, cfg.train.warmup_epochs) == (0, "step", 0)


def test_encoded_decoder_shapes_freeze_and_one_training_step():
    torch.manual_seed(0)
    dec = SDFDecoder(latent_size=8, hidden=96, layers=4, skip_at=(2,), pe_frequencies=3)
    xyz_features = 3 + 6 * 3
    assert dec.hidden_layers[0].weight_v.shape == (96, 8 + xyz_features)
    assert dec.hidden_layers[1].weight_v.shape == (96 - (8 + xyz_features), 96)  # room for the skip input
    assert dec.hidden_layers[2].weight_v.shape == (96, 96)
    code, xyz = torch.randn(8) * 0.1, torch.rand(50, 3) * 2 - 1
    dec.eval()
    out = dec(code.expand(50, 8), xyz)
    assert out.shape == (50,)
    torch.testing.assert_close(dec.freeze(code)(xyz), out, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"hidden \(24\) must exceed latent_size \+ 21 \(29\)"):
        SDFDecoder(latent_size=8, hidden=24, layers=4, skip_at=(2,), pe_frequencies=3)

    cfg = tiny(load_config(DeepSDFConfig, "deepsdf"), pe=3)
    data = sphere_data()
    decoder, codes = sdf_train.build_decoder(cfg), sdf_train.build_codes(cfg, len(data))
    assert decoder.pe_frequencies == 3
    opt = sdf_train.build_optimizer(cfg, decoder, codes)
    idx = torch.tensor([0, 1])
    xyz, sdf = sdf_train.sample_batch(data, idx, 256, seed=0, epoch=1)
    before = [p.detach().clone() for p in decoder.parameters()]
    stats = sdf_train.train_step(decoder, codes, opt, idx, xyz, sdf, t=cfg.train, epoch=1)
    assert math.isfinite(stats["total"]) and stats["sdf"] > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, decoder.parameters()))


def test_export_official_refuses_a_positional_encoding(tmp_path):
    from shapes3d.deepsdf.official import export_official

    cfg = tiny(load_config(DeepSDFConfig, "deepsdf"), pe=2, epochs=1)
    res = sdf_train.train(cfg, sphere_data(), tmp_path / "run")
    with pytest.raises(ConfigError) as e:
        export_official(res.last_path, tmp_path / "out")
    assert str(e.value) == (f"{res.last_path}: the decoder encodes xyz with 2 positional-encoding frequencies "
                            "(model.pe_frequencies); the official DeepSDF decoder reads plain xyz, so this "
                            "checkpoint cannot be exported")
    assert not (tmp_path / "out").exists()


# --- learning-rate schedules ----------------------------------------------------------------


def naive_cosine(epoch: int, epochs: int, warmup: int, floor: float) -> float:
    if warmup and epoch <= warmup:
        return epoch / warmup
    p = (epoch - warmup - 1) / (epochs - warmup)
    return floor + (1 - floor) * (1 + math.cos(math.pi * p)) / 2


@pytest.mark.parametrize("epoch", [1, 2, 5, 6, 7, 30, 55, 100])
def test_warmup_cosine_multiplier_matches_a_naive_formula(epoch):
    t = SDFTrainConfig(epochs=100, lr_schedule="cosine", warmup_epochs=5, lr_min_ratio=0.02)
    assert sdf_train.lr_multiplier(t, epoch) == pytest.approx(naive_cosine(epoch, 100, 5, 0.02), rel=1e-12)


def test_schedule_landmarks_and_the_official_step_decay_unchanged():
    t = SDFTrainConfig(epochs=100, lr_schedule="cosine", warmup_epochs=5, lr_min_ratio=0.0)
    assert sdf_train.lr_multiplier(t, 1) == pytest.approx(0.2)
    assert sdf_train.lr_multiplier(t, 5) == sdf_train.lr_multiplier(t, 6) == 1.0  # warm-up ends at the peak
    assert sdf_train.lr_multiplier(t, 53) == pytest.approx(0.5, abs=0.02)  # half-way through the decay
    assert 0 < sdf_train.lr_multiplier(t, 100) < 1e-3  # the last epoch still learns
    step = SDFTrainConfig(epochs=2000, lr_interval=500, lr_factor=0.5)
    assert [sdf_train.lr_multiplier(step, e) for e in (1, 499, 500, 1999)] == [1.0, 1.0, 0.5, 0.125]
    opt = torch.optim.Adam([{"params": [torch.zeros(1, requires_grad=True)], "lr": 0.0, "name": "decoder"},
                            {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.0, "name": "codes"}])
    sdf_train.set_learning_rates(opt, t, 1)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([t.lr_decoder * 0.2, t.lr_codes * 0.2])
    with pytest.raises(ValueError, match="lr_schedule must be 'step' or 'cosine', got 'linear'"):
        SDFTrainConfig(lr_schedule="linear")


# --- the preset -----------------------------------------------------------------------------


def test_fast_preset_keeps_the_architecture_and_changes_the_recipe():
    official, fast = load_config(DeepSDFConfig, "deepsdf"), load_config(DeepSDFConfig, "deepsdf-fast")
    assert official.train.lr_schedule == "step" and official.train.shapes_per_batch == 4
    assert fast.train.lr_schedule == "cosine" and fast.train.shapes_per_batch == 1
    assert (fast.model.layers, fast.model.hidden, fast.model.latent_size) == (8, 512, 256)
    assert official.model.pe_frequencies == 0 and fast.model.pe_frequencies == 2
    assert fast.samples == official.samples and fast.fit == official.fit


def test_tiny_training_run_from_the_fast_preset(tmp_path):
    cfg = load_config(DeepSDFConfig, "deepsdf-fast", overrides=[
        "model.latent_size=8", "model.hidden=64", "model.layers=4", "model.skip_at=[2]", "train.epochs=3",
        "train.warmup_epochs=1", "train.samples_per_shape=256", "train.device='cpu'", "train.checkpoint_every=10"])
    res = sdf_train.train(cfg, sphere_data(), tmp_path / "run")
    assert len(res.history) == 3 and all(math.isfinite(h["train_loss"]) for h in res.history)
    lrs = [h["lr_decoder"] for h in res.history]
    lr = cfg.train.lr_decoder
    assert lrs == pytest.approx([lr, lr, lr * 0.5])  # warm-up epoch 1/1, then the cosine from its peak
    model = sdf_train.load_deepsdf(res.last_path, device="cpu")
    assert model.config == cfg and model.codes.shape == (2, 8)
