"""Compute-device choice, in one place (models never choose devices)."""

from __future__ import annotations

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """``"auto"`` gives CUDA when available, else CPU; otherwise ``torch.device(requested)``."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from shapes3d.errors import ConfigError

        raise ConfigError(f"device {requested!r} requested but CUDA is not available")
    return dev
