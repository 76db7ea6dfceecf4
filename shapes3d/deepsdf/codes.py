"""Which code to use: a training shape of a checkpoint (name, file name or index) or a code file.

Code files are checkpoints (see :mod:`shapes3d.engine.checkpoint`) written by :func:`save_code` with
``code`` (L,), ``offset`` (3,) and ``scale`` (the normalisation of the shape the code stands for) plus
free-form provenance (``source``, ``loss``, ...).
"""

from __future__ import annotations

from pathlib import Path


def shape_code(model, spec: str):
    """A training shape (name, file name or index) or a code file -> (label, code (L,), Transform)."""
    import torch

    from shapes3d.engine.checkpoint import load_checkpoint
    from shapes3d.errors import Shapes3DError
    from shapes3d.geometry.normalize import Transform

    if spec.endswith(".pt") and Path(spec).exists():
        ck = load_checkpoint(spec)
        return Path(spec).stem, ck["code"], Transform(tuple(ck["offset"].tolist()), float(ck["scale"]))
    names = model.names
    idx = None
    if spec.isdigit() and int(spec) < len(names):
        idx = int(spec)
    else:
        hits = [k for k, n in enumerate(names) if n == spec or Path(n).name == spec or Path(n).stem == spec]
        idx = hits[0] if hits else None
    if idx is None:
        raise Shapes3DError(f"{spec!r} is neither a code file nor one of the {len(names)} training shapes")
    code = None if model.codes is None else model.codes[idx]
    t = Transform(tuple(model.offsets[idx].tolist()), float(model.scales[idx]))
    return Path(names[idx]).stem, (code if code is not None else torch.zeros(0)), t


def code_or_none(code):
    return None if code is None or code.numel() == 0 else code


def save_code(path, code, transform=None, **provenance) -> Path:
    """Write a code file: ``code`` (L,) (None for a single-shape decoder), the normalisation ``transform``
    (a :class:`~shapes3d.geometry.normalize.Transform`; None: the identity, the decoder's own frame) and free-form
    ``provenance`` (``source``, ``loss``, ``partial``, ...: numbers, strings, tensors). Atomic; returns ``path``.

    :func:`shape_code` reads it back, so every command that takes a shape takes the file.
    """
    import torch

    from shapes3d.engine.checkpoint import save_checkpoint

    offset, scale = (transform.offset, transform.scale) if transform is not None else ((0.0, 0.0, 0.0), 1.0)
    payload = {"code": None if code is None else code.detach().cpu(), "offset": torch.tensor(tuple(offset)),
               "scale": torch.tensor(scale), **provenance}
    return save_checkpoint(path, payload)
