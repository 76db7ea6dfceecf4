"""DeepSDF auto-decoder: ``SDFDecoder`` (latent + xyz -> SDF) and ``LatentCodes``.

Architecture of Park et al. 2019 as in the official release (``specs.json`` of the
examples): dims ``[512] * 8``, ``latent_in = [4]``, weight normalisation and dropout
(p = 0.2) on every hidden layer, ReLU, ``xyz_in_all = False``, and a final tanh. The
layer before the skip outputs ``512 - (L + 3)`` features so that, after the input
(latent, xyz) is concatenated again, layer 4 sees exactly 512. The output layer is a
plain linear layer (no weight norm, no dropout), as in the release.

Speed notes (both measured while writing this, see ``benchmarks/bench_deepsdf_step.py``):

* Weight norm is computed by hand, once per forward call, from ``weight_v`` and
  ``weight_g``; the parametrization machinery recomputes it on every attribute access.
* ReLU and dropout are one autograd node (:class:`_ReLUDropout`) whose backward only needs
  its own output (which the next matmul saves anyway), and the keep-mask is drawn as 16-bit
  integers, four per 64-bit random draw: drawing dropout masks cost about as much as the
  matmuls on this CPU. The keep probability is therefore quantised to multiples of 1/65536
  (p = 0.2 becomes 0.199997).
* Dropout's 1/(1-p) rescaling is folded into the next layer's weight columns (a 512 x 512
  multiply) instead of a pass over the (N, 512) activations, forward and backward:
  ``(relu(h) * keep / (1-p)) @ W.T == (relu(h) * keep) @ (W / (1-p)).T``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def layer_table(latent_size: int, hidden: int, layers: int, skip_at: Sequence[int],
                xyz_features: int = 3) -> list[tuple[int, int]]:
    """(in, out) features of every linear layer, the output layer last (``layers + 1`` rows).

    Layer ``k`` in ``skip_at`` receives the previous output concatenated with the input
    (L + ``xyz_features`` features: 3, or ``3 + 6F`` with a positional encoding), so the layer
    before it shrinks its output by as many.
    """
    d_in = latent_size + xyz_features
    table = []
    for k in range(layers):
        fan_in = d_in if k == 0 else hidden
        fan_out = hidden - d_in if (k + 1) in skip_at else hidden
        table.append((fan_in, fan_out))
    table.append((hidden, 1))
    return table


def positional_encoding(xyz: torch.Tensor, n_frequencies: int) -> torch.Tensor:
    """xyz (N, 3) -> (N, 3 + 6F): ``[xyz, sin(2^k pi xyz), cos(2^k pi xyz)]`` for k = 0..F-1 (sines of all
    frequencies first, then cosines; coordinate-minor). ``F = 0`` returns ``xyz`` itself.

    Fourier features of the coordinates (NeRF's encoding, Mildenhall et al. 2020; Tancik et al. 2020) let a
    ReLU network fit finer detail in fewer steps; the official DeepSDF decoder has none.
    """
    if n_frequencies <= 0:
        return xyz
    freqs = (2.0 ** torch.arange(n_frequencies, device=xyz.device, dtype=xyz.dtype)) * math.pi
    angles = (xyz.unsqueeze(1) * freqs.view(1, -1, 1)).reshape(xyz.shape[0], -1)  # (N, F*3): k-major
    return torch.cat([xyz, torch.sin(angles), torch.cos(angles)], dim=1)


class _ReLUDropout(torch.autograd.Function):
    """y = relu(h) * keep (bool mask or None, no rescaling); backward needs only y: dy/dh = [y > 0]."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        y = h.clamp_min(0) if keep is None else torch.where(keep, h, 0).clamp_min_(0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (y,) = ctx.saved_tensors
        return torch.where(y > 0, grad, 0.0), None


def keep_mask(shape: tuple[int, ...], p: float, *, device: torch.device) -> torch.Tensor:
    """Boolean Bernoulli(1 - p) keep-mask of ``shape``; P(keep) quantised to k/65536."""
    n = math.prod(shape)
    words = -(-n // 4)  # four int16 per int64 draw
    bits = torch.empty(words, dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1)
    threshold = -32768 + round(p * 65536)
    return (bits.view(torch.int16)[:n] >= threshold).view(shape)


class _WNLinear(nn.Module):
    """Linear layer with (optional) weight normalisation w = g * v / ||v|| per output row."""

    def __init__(self, fan_in: int, fan_out: int, *, weight_norm: bool) -> None:
        super().__init__()
        ref = nn.Linear(fan_in, fan_out)  # PyTorch's default init, as the official code gets
        self.weight_norm = weight_norm
        self.bias = nn.Parameter(ref.bias.detach().clone())
        if weight_norm:
            v = ref.weight.detach().clone()
            self.weight_v = nn.Parameter(v)
            self.weight_g = nn.Parameter(v.norm(dim=1, keepdim=True))  # initial w == v
        else:
            self.weight = nn.Parameter(ref.weight.detach().clone())

    def effective_weight(self) -> torch.Tensor:
        if not self.weight_norm:
            return self.weight
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=1, keepdim=True))

    def forward(self, x: torch.Tensor, *, scale: float = 1.0, scaled_columns: int = 0) -> torch.Tensor:
        """x (N, in) -> (N, out); the first ``scaled_columns`` weight columns are multiplied by ``scale``."""
        w = self.effective_weight()
        if scale != 1.0 and scaled_columns:
            w = torch.cat([w[:, :scaled_columns] * scale, w[:, scaled_columns:]], dim=1)
        return F.linear(x, w, self.bias)


class SDFDecoder(nn.Module):
    """f(z, x) -> SDF in (-1, 1): latent (N, L) or None and xyz (N, 3) -> (N,).

    ``latent_size=0`` is the single-shape mode (no codes; pass ``latent=None``). ``pe_frequencies`` F > 0
    feeds :func:`positional_encoding` of xyz (3 + 6F features) instead of xyz, at layer 0 and the skip
    layers; 0 (default) is the official architecture.
    """

    def __init__(self, latent_size: int = 256, hidden: int = 512, layers: int = 8, skip_at: Sequence[int] = (4,),
                 dropout: float = 0.2, weight_norm: bool = True, pe_frequencies: int = 0) -> None:
        super().__init__()
        if latent_size < 0 or hidden < 1 or layers < 1:
            raise ValueError(f"need latent_size >= 0, hidden >= 1, layers >= 1; got {latent_size}, {hidden}, {layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        bad = [k for k in skip_at if not 1 <= k < layers]
        if bad:
            raise ValueError(f"skip_at layers must lie in 1..{layers - 1}, got {list(skip_at)}")
        if pe_frequencies < 0:
            raise ValueError(f"pe_frequencies must be >= 0, got {pe_frequencies}")
        self.pe_frequencies = int(pe_frequencies)
        self.xyz_features = 3 + 6 * self.pe_frequencies
        d_in = latent_size + self.xyz_features
        if skip_at and hidden <= d_in:
            raise ValueError(f"hidden ({hidden}) must exceed latent_size + {self.xyz_features} ({d_in}) to re-inject "
                             "the input")
        self.latent_size = latent_size
        self.skip_at = tuple(sorted(skip_at))
        self.dropout = float(dropout)
        table = layer_table(latent_size, hidden, layers, self.skip_at, self.xyz_features)
        self.hidden_layers = nn.ModuleList(_WNLinear(i, o, weight_norm=weight_norm) for i, o in table[:-1])
        self.output = nn.Linear(*table[-1])

    def forward(self, latent: torch.Tensor | None, xyz: torch.Tensor) -> torch.Tensor:
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise ValueError(f"xyz must have shape (N, 3), got {tuple(xyz.shape)}")
        xyz = positional_encoding(xyz, self.pe_frequencies)
        if self.latent_size:
            if latent is None or latent.shape != (xyz.shape[0], self.latent_size):
                got = None if latent is None else tuple(latent.shape)
                raise ValueError(f"latent must have shape ({xyz.shape[0]}, {self.latent_size}), got {got}")
            x = torch.cat([latent, xyz], dim=1)
        else:
            if latent is not None and latent.numel():
                raise ValueError("this decoder has latent_size 0 (single-shape mode): pass latent=None")
            x = xyz
        inp = x
        drop = self.training and self.dropout > 0
        scale = 1.0 / (1.0 - self.dropout) if drop else 1.0
        for k, layer in enumerate(self.hidden_layers):
            dropped = x.shape[1] if k > 0 else 0  # columns fed by the previous dropout
            if k in self.skip_at:
                x = torch.cat([x, inp.to(x.dtype)], dim=1)
            h = layer(x, scale=scale, scaled_columns=dropped)
            x = _ReLUDropout.apply(h, keep_mask(tuple(h.shape), self.dropout, device=h.device) if drop else None)
        return torch.tanh(F.linear(x, self.output.weight * scale, self.output.bias)).squeeze(1)

    def freeze(self, code: torch.Tensor | None = None) -> FrozenSDFField:
        """The inference-only field of ``code`` (None in single-shape mode): 14 % fewer FLOPs; see
        :class:`FrozenSDFField`."""
        L = self.latent_size
        if L:
            if code is None or code.numel() != L:
                got = None if code is None else tuple(code.shape)
                raise ValueError(f"freeze() needs one code of {L} values, got {got}")
        elif code is not None and code.numel():
            raise ValueError("this decoder has latent_size 0 (single-shape mode): pass code=None")
        with torch.no_grad():
            weights, biases = [], []
            z = code.reshape(L).to(self.output.weight) if L else None
            for k, layer in enumerate(self.hidden_layers):
                w, b = layer.effective_weight().detach(), layer.bias.detach()
                if k == 0 or k in self.skip_at:
                    n_in = w.shape[1] - (L + self.xyz_features)  # hidden columns first (0 for layer 0), latent, xyz
                    if L:
                        b = b + w[:, n_in : n_in + L] @ z
                    w = torch.cat([w[:, :n_in], w[:, n_in + L :]], dim=1)
                weights.append(w)
                biases.append(b)
            return FrozenSDFField(weights, biases, self.skip_at, self.output.weight.detach(), self.output.bias.detach(),
                                  pe_frequencies=self.pe_frequencies)


class LatentCodes(nn.Module):
    """One code per training shape: ``nn.Embedding(n_shapes, L, max_norm)``; indices (N,) -> codes (N, L).

    Initialised N(0, init_std^2) with ``init_std = 1/sqrt(L)`` by default (official release).
    ``max_norm`` renormalises looked-up rows in place during forward (Embedding semantics).
    """

    def __init__(self, n_shapes: int, latent_size: int, init_std: float | None = None,
                 max_norm: float | None = 1.0) -> None:
        super().__init__()
        if n_shapes < 1 or latent_size < 1:
            raise ValueError(f"need n_shapes >= 1 and latent_size >= 1, got {n_shapes}, {latent_size}")
        std = 1.0 / math.sqrt(latent_size) if init_std is None else float(init_std)
        self.embedding = nn.Embedding(n_shapes, latent_size, max_norm=max_norm)
        nn.init.normal_(self.embedding.weight, mean=0.0, std=std)

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.embedding(indices)


class FrozenSDFField(nn.Module):
    """Inference-only field of one shape: xyz (N, 3) -> SDF (N,), for extraction and rendering.

    Built by :meth:`SDFDecoder.freeze` from a decoder and one code; dropout is never applied,
    whatever the decoder's mode. Weight norm is applied once, and the code, identical for
    every point, is folded into biases: the
    layers that read the input (layer 0 and the skip layers) multiply only their xyz and
    hidden columns, and their latent columns become ``bias + W_latent @ z``. For DeepSDF's
    size (latent 256, 8 x 512) that removes 262 144 of 1 835 008 multiply-adds per point
    (14.3 %). Values equal the decoder's to float32 rounding (summation order differs),
    and gradients reach ``xyz`` only (normals, sphere tracing); to differentiate with respect to
    the code or the weights, call the decoder itself.
    """

    def __init__(self, weights: list[torch.Tensor], biases: list[torch.Tensor], skip_at: tuple[int, ...],
                 out_weight: torch.Tensor, out_bias: torch.Tensor, *, pe_frequencies: int = 0) -> None:
        super().__init__()
        self.skip_at = skip_at
        self.pe_frequencies = int(pe_frequencies)
        for k, (w, b) in enumerate(zip(weights, biases)):
            # Own contiguous copies: (in, out) for addmm, and never views of parameters training may update.
            self.register_buffer(f"w{k}", w.t().clone(memory_format=torch.contiguous_format))
            self.register_buffer(f"b{k}", b.clone())
        self.n_layers = len(weights)
        self.register_buffer("w_out", out_weight.t().clone(memory_format=torch.contiguous_format))
        self.register_buffer("b_out", out_bias.clone())

    def features(self, xyz: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations (N, hidden), which the output layer reads."""
        if xyz.ndim != 2 or xyz.shape[1] != 3:
            raise ValueError(f"xyz must have shape (N, 3), got {tuple(xyz.shape)}")
        xyz = positional_encoding(xyz.to(self.w0.dtype), self.pe_frequencies)
        x = xyz
        for k in range(self.n_layers):
            if k in self.skip_at:
                x = torch.cat([x, xyz], dim=1)
            x = torch.addmm(getattr(self, f"b{k}"), x, getattr(self, f"w{k}")).clamp_min_(0)
        return x

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        return torch.tanh_(torch.addmm(self.b_out, self.features(xyz), self.w_out)).squeeze(1)
