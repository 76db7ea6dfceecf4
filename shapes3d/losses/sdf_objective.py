"""DeepSDF losses: clamped L1 on SDF values and the latent-code regulariser.

:func:`sdf_objective` is the one objective used by both training
(:mod:`shapes3d.deepsdf.trainer`) and code fitting (:mod:`shapes3d.deepsdf.fitting`); it
returns a named dict whose ``"total"`` entry is the sum of the others.

Regulariser, as in the official training script (``train_deep_sdf.py``)::

    reg = lambda * min(1, epoch / ramp) * sum_n ||z_{s(n)}||_2 / N

i.e. the *unsquared* norm of the code of each of the N SDF samples in the batch,
averaged over samples (the paper writes ``||z||^2 / sigma^2``; the release uses the
norm). ``squared=True`` gives the paper's form. The official reconstruction script
instead adds ``1e-4 * mean(z^2)``; here fitting deliberately uses the same regulariser as
training (with the ramp complete), so that both optimise one objective.
"""

from __future__ import annotations

import torch


def clamped_l1(pred: torch.Tensor, target: torch.Tensor, *, delta: float = 0.1) -> torch.Tensor:
    """mean |clamp(pred, -delta, delta) - clamp(target, -delta, delta)| over (N,) values; scalar."""
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if not delta > 0:
        raise ValueError(f"delta must be > 0, got {delta!r}")
    p = pred.float().clamp(-delta, delta)
    t = target.float().clamp(-delta, delta)
    return (p - t).abs().mean()


def latent_regulariser(codes: torch.Tensor, *, weight: float, epoch: float, ramp_epochs: float = 100,
                       squared: bool = False) -> torch.Tensor:
    """weight * min(1, epoch / ramp_epochs) * mean_n ||codes[n]|| (or ||.||^2); codes (N, L) -> scalar.

    ``codes`` holds one row per SDF sample (the code of the shape the sample belongs to).
    ``ramp_epochs <= 0`` disables the ramp.
    """
    if codes.ndim != 2:
        raise ValueError(f"codes must have shape (N, L), got {tuple(codes.shape)}")
    if weight < 0:
        raise ValueError(f"weight must be >= 0, got {weight!r}")
    ramp = 1.0 if ramp_epochs <= 0 else min(1.0, float(epoch) / float(ramp_epochs))
    c = codes.float()
    norms = c.pow(2).sum(dim=1) if squared else c.norm(dim=1)
    return (weight * ramp) * norms.mean()


def sdf_objective(pred: torch.Tensor, target: torch.Tensor, codes: torch.Tensor | None, *, delta: float = 0.1,
                  code_weight: float = 1e-4, epoch: float = 0, ramp_epochs: float = 100,
                  squared: bool = False) -> dict[str, torch.Tensor]:
    """Named losses {"sdf", "code", "total"} for predictions (N,), targets (N,), per-sample codes (N, L) or None.

    ``codes=None`` (single-shape mode) gives a zero ``code`` term.
    """
    losses = {"sdf": clamped_l1(pred, target, delta=delta)}
    if codes is None or codes.numel() == 0 or code_weight == 0:
        losses["code"] = torch.zeros((), device=pred.device)
    else:
        losses["code"] = latent_regulariser(codes, weight=code_weight, epoch=epoch, ramp_epochs=ramp_epochs,
                                            squared=squared)
    losses["total"] = losses["sdf"] + losses["code"]
    return losses
