"""Random state of a training run: one seeded generator plus torch's global (and CUDA) RNG.

Everything random in a trainer comes from one seeded ``torch.Generator`` (data order,
augmentation) and torch's global RNG (initialisation, dropout; on CUDA the device's own
generator drives dropout). :func:`rng_state` captures all of them for a checkpoint and
:func:`set_rng_state` puts them back, so a resumed run draws exactly what an
uninterrupted one would.
"""

from __future__ import annotations

import torch


def seed_all(seed: int) -> torch.Generator:
    """Seed torch's global RNG (all devices) and return a fresh CPU generator seeded alike."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(gen: torch.Generator, device: torch.device) -> dict:
    """``{"torch": ..., "generator": ...}`` plus ``"cuda"`` (the device's state) when training on CUDA."""
    state = {"torch": torch.get_rng_state(), "generator": gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, gen: torch.Generator, device: torch.device) -> None:
    """Restore a :func:`rng_state` dict; checkpoints written before ``"cuda"`` was saved still load.

    The states are CPU byte tensors; a checkpoint loaded with ``map_location="cuda"`` carries
    them on the GPU, so they are brought back first.
    """
    torch.set_rng_state(state["torch"].cpu())
    gen.set_state(state["generator"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
