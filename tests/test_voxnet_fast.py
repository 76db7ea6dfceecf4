"""VoxNet's fast forward equals the plain layer-by-layer path; its pieces against naive references."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from shapes3d.models.voxnet import _MASK_BITS, VoxNet, _conv5_stride2, _dropout, _fold_kernel, _space_to_depth

CL3D = torch.channels_last_3d
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_voxnet_speed.py"


def _grids(b: int, c: int, r: int, *, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, c, r, r, r, generator=g) < 0.2).to(dtype).contiguous(memory_format=CL3D)


@pytest.mark.parametrize("resolution", [32, 31, 16])
@pytest.mark.parametrize("in_channels", [1, 2])
def test_strided_first_conv_equals_conv3d(resolution, in_channels):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, in_channels, resolution, resolution, resolution, generator=g, dtype=torch.float64)
    w = torch.randn(5, in_channels, 5, 5, 5, generator=g, dtype=torch.float64)
    b = torch.randn(5, generator=g, dtype=torch.float64)
    assert torch.allclose(_conv5_stride2(x, w, b), F.conv3d(x, w, b, stride=2), atol=1e-11)


def test_space_to_depth_and_kernel_fold_index_as_documented():
    x = torch.arange(2 * 4**3, dtype=torch.float64).reshape(1, 2, 4, 4, 4)
    s = _space_to_depth(x)
    c, a, b, e, i, j, k = 1, 1, 0, 1, 1, 0, 1
    assert s[0, c * 8 + 4 * a + 2 * b + e, i, j, k] == x[0, c, 2 * i + a, 2 * j + b, 2 * k + e]
    w = torch.randn(3, 2, 5, 5, 5, dtype=torch.float64)
    folded = _fold_kernel(w)
    assert folded.shape == (3, 16, 3, 3, 3)
    # tap k = 2m + r; the padded tap 5 (m = 2, r = 1) is zero
    assert folded[2, 1 * 8 + 4 * 1 + 2 * 0 + 1, 1, 2, 0] == w[2, 1, 3, 4, 1]
    assert torch.all(folded[:, :, 2, :, :].reshape(3, 2, 2, 2, 2, 3, 3)[:, :, 1] == 0)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("resolution,in_channels", [(32, 1), (31, 1), (24, 2)])
def test_fast_forward_equals_the_plain_path(batch_norm, resolution, in_channels):
    torch.manual_seed(0)
    m = VoxNet(7, resolution=resolution, in_channels=in_channels, batch_norm=batch_norm, hidden=16).double()
    x = _grids(3, in_channels, resolution)
    m.eval()
    assert torch.allclose(m(x), m.forward_reference(x), atol=1e-10)
    # training mode with dropout off: the same loss gradients (BatchNorm in batch-statistics mode)
    m.train()
    for mod in m.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    y = torch.tensor([0, 3, 6])
    grads = []
    for fwd in (m.forward, m.forward_reference):
        m.zero_grad()
        F.cross_entropy(fwd(x), y).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-10)


def test_fast_forward_in_float32_agrees_to_1e4_and_keeps_the_state_dict_keys():
    torch.manual_seed(0)
    m = VoxNet(10).eval()
    x = _grids(4, 1, 32, dtype=torch.float32)
    ref = m.forward_reference(x)
    assert ((m(x) - ref).abs().max() / ref.abs().max()).item() < 1e-4
    assert list(m.state_dict()) == ["features.0.weight", "features.0.bias", "features.4.weight",
                                    "features.4.bias", "classifier.1.weight", "classifier.1.bias",
                                    "classifier.5.weight", "classifier.5.bias"]


def test_dropout_drops_the_rounded_fraction_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(64, 32, 10, 10, 10).contiguous(memory_format=CL3D).requires_grad_()
    p = 0.3
    y = _dropout(x, p, True)
    levels = 1 << _MASK_BITS
    p_q = round(p * levels) / levels
    kept = y != 0
    n = x.numel()
    frac = 1 - kept.double().mean().item()
    assert abs(frac - p_q) < 5 * (p_q * (1 - p_q) / n) ** 0.5  # five binomial standard deviations
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p_q)))
    assert y.is_contiguous(memory_format=CL3D)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask)/dx = mask, and x is ones
    # reproducible from torch's seed, off in eval mode and at p = 0
    torch.manual_seed(5)
    a = _dropout(x.detach(), p, True)
    torch.manual_seed(5)
    assert torch.equal(a, _dropout(x.detach(), p, True))
    assert _dropout(x, p, False) is x and _dropout(x, 0.0, True) is x
    assert torch.count_nonzero(_dropout(x, 1.0, True)) == 0


def test_dropout_masks_are_independent_across_the_four_fields_of_a_word():
    torch.manual_seed(0)
    x = torch.ones(4 * 50_000, dtype=torch.float64)
    kept = (_dropout(x, 0.5, True) != 0).double().reshape(-1, 4)
    means = kept.mean(0)
    assert torch.all((means - 0.5).abs() < 0.01)  # none of the 16-bit fields is biased (the int64 sign bit)


@pytest.mark.skipif(not BENCH.exists(), reason="benchmarks not present")
def test_speed_benchmark_plain_model_agrees_with_ours():
    spec = importlib.util.spec_from_file_location("bench_voxnet_speed", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    ours, plain = VoxNet(5, hidden=8), bench.plain_voxnet(5, 8)
    bench.copy_weights(ours, plain)
    x = _grids(2, 1, 32, dtype=torch.float32)
    diffs = bench.check_agreement(ours, plain, x, torch.tensor([1, 4]))
    assert max(diffs.values()) < 1e-4
    assert bench.forward_macs(10, 128) == 14**3 * 32 * 125 + 12**3 * 32 * 32 * 27 + 6912 * 128 + 1280


def test_inference_in_chunks_equals_one_batch():
    from shapes3d.models.voxnet import EVAL_CHUNK

    torch.manual_seed(0)
    m = VoxNet(4, resolution=16, hidden=8, batch_norm=True).double().eval()
    x = _grids(2 * EVAL_CHUNK + 5, 1, 16)
    with torch.no_grad():
        chunked = m(x)
    assert chunked.shape == (2 * EVAL_CHUNK + 5, 4)
    assert torch.allclose(chunked, m.forward_reference(x), atol=1e-10)


def test_dropout_on_bf16_and_non_contiguous_inputs():
    torch.manual_seed(0)
    x = torch.ones(300, 200, dtype=torch.bfloat16)
    y = _dropout(x, 0.4, True)
    assert y.dtype == torch.bfloat16
    assert abs((y == 0).float().mean().item() - 0.4) < 0.01  # the mask is drawn in float32, then cast
    t = torch.ones(200, 300).t()  # a transposed (non-contiguous) 2-D input
    assert _dropout(t, 0.4, True).shape == (300, 200)
