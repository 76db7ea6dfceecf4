"""Checkpoints: one file holds everything to resume; written atomically, loaded without pickled code.

The payload is a dict of tensors, numbers, strings, lists and dicts, saved with
``torch.save`` through :func:`~shapes3d.utils.io.atomic_write` (temp file + fsync +
rename: a crash or full disk leaves the previous checkpoint intact) and read with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects. A SHA-256
of the serialised payload is stored in a sidecar-free envelope so a truncated or
corrupted file is detected and never used silently.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import torch

from shapes3d.errors import CheckpointError, MissingFileError
from shapes3d.utils.io import atomic_write

_MAGIC = "shapes3d-checkpoint"


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Serialise ``payload`` and write it atomically with a checksum; returns the path."""
    buf = io.BytesIO()
    torch.save(payload, buf)
    blob = buf.getvalue()
    envelope = {"magic": _MAGIC, "sha256": hashlib.sha256(blob).hexdigest(),
                "payload": torch.frombuffer(bytearray(blob), dtype=torch.uint8)}
    path = Path(path)
    with atomic_write(path, "wb") as f:
        torch.save(envelope, f)
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, "checkpoint does not exist")
    try:
        envelope = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first_line = (str(e).splitlines() or [""])[0][:200]  # an empty file gives an empty message
        raise CheckpointError(path, f"not a readable checkpoint (truncated, corrupted or unsafe: "
                                    f"{e.__class__.__name__}: {first_line})") from None
    if not isinstance(envelope, dict) or envelope.get("magic") != _MAGIC:
        raise CheckpointError(path, "not a shapes3d checkpoint (missing envelope)")
    payload = envelope.get("payload")
    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8 or payload.dim() != 1:
        raise CheckpointError(path, "not a shapes3d checkpoint (envelope has no uint8 payload tensor)")
    blob = payload.numpy().tobytes()
    if hashlib.sha256(blob).hexdigest() != envelope.get("sha256"):
        raise CheckpointError(path, "checksum mismatch: the checkpoint is corrupted")
    try:
        return torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(path, f"payload could not be loaded safely ({e.__class__.__name__})") from None


def require_keys(path: str | os.PathLike, payload: dict[str, Any], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in payload]
    if missing:
        raise CheckpointError(path, f"checkpoint lacks {', '.join(missing)} (written by another pipeline?)")
