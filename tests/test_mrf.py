"""MRF patch style loss (Li & Wand 2016): nearest-patch matching and the loss against naive references."""

from __future__ import annotations

import pytest
import torch

from shapes3d.losses.mrf import extract_patches, mrf_loss, mrf_style_loss, nearest_patches, style_patches


def _naive(fx: torch.Tensor, fa: torch.Tensor, k: int, stride: int = 1) -> tuple[torch.Tensor, list[list[int]]]:
    """Double loop over x patches and style patches with the full normalised cross-correlation."""
    b, c, h, w = fx.shape
    bank = [fa[s, :, i:i + k, j:j + k] for s in range(fa.shape[0])
            for i in range(fa.shape[2] - k + 1) for j in range(fa.shape[3] - k + 1)]
    losses, choices = [], []
    for n in range(b):
        total, chosen = fx.new_zeros(()), []
        for i in range(0, h - k + 1, stride):
            for j in range(0, w - k + 1, stride):
                p = fx[n, :, i:i + k, j:j + k]
                best, best_q = -float("inf"), None
                for q_index, q in enumerate(bank):
                    ncc = float((p * q).sum() / (p.norm() * q.norm()))
                    if ncc > best:
                        best, best_q = ncc, q_index
                chosen.append(best_q)
                total = total + (p - bank[best_q]).pow(2).sum()
        losses.append(total)
        choices.append(chosen)
    return torch.stack(losses), choices


def test_extract_patches_shape_and_order():
    f = torch.arange(2 * 3 * 5 * 6, dtype=torch.float64).reshape(2, 3, 5, 6)
    p = extract_patches(f, 3, 1)
    assert p.shape == (2, 3 * 4, 3, 3, 3)
    torch.testing.assert_close(p[1, 5], f[1, :, 1:4, 1:4])  # row 1, column 1 of a 4-wide grid
    assert extract_patches(f, 2, 2).shape == (2, 2 * 3, 3, 2, 2)
    assert style_patches(f, 3).shape == (24, 3, 3, 3)
    with pytest.raises(ValueError, match="smaller than"):
        extract_patches(f, 6)


def test_zero_when_x_is_the_style():
    torch.manual_seed(0)
    fa = torch.randn(1, 8, 9, 7, dtype=torch.float64)
    assert float(mrf_style_loss(fa, fa)) == pytest.approx(0.0, abs=1e-20)
    assert float(mrf_style_loss(fa[..., 2:8, 1:6], fa)) == pytest.approx(0.0, abs=1e-20)  # a crop: all patches occur


def test_equals_naive_double_loop_including_the_choice():
    torch.manual_seed(1)
    fx = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    fa = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    for stride in (1, 2):
        want, choices = _naive(fx, fa, 3, stride)
        got = mrf_style_loss(fx, fa, k=3, stride=stride)
        torch.testing.assert_close(got, want)
        assert nearest_patches(fx, style_patches(fa, 3), stride=stride).tolist() == choices
    mean = mrf_style_loss(fx, fa, reduction="mean")
    torch.testing.assert_close(mean, _naive(fx, fa, 3)[0] / (12 * 4 * 9))


def test_invariant_to_the_order_of_style_patches_and_chunking():
    torch.manual_seed(2)
    fx = torch.randn(2, 5, 8, 8)
    bank = style_patches(torch.randn(1, 5, 10, 9), 3)
    ref = mrf_loss(fx, bank, chunk=len(bank))
    perm = torch.randperm(len(bank))
    torch.testing.assert_close(mrf_loss(fx, bank[perm]), ref)
    for chunk in (1, 7, 16):
        torch.testing.assert_close(mrf_loss(fx, bank, chunk=chunk), ref, rtol=0, atol=0)
        assert torch.equal(nearest_patches(fx, bank, chunk=chunk), nearest_patches(fx, bank, chunk=len(bank)))


def test_gradient_flows_to_x_and_lowers_the_loss():
    torch.manual_seed(3)
    fa = torch.randn(1, 4, 8, 8)
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    loss = mrf_style_loss(x, fa).sum()
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad():
        x2 = x - 0.01 * x.grad
    assert float(mrf_style_loss(x2, fa).sum()) < float(loss.detach())
    with pytest.raises(ValueError, match="channels"):
        mrf_style_loss(x, torch.randn(1, 3, 8, 8))
