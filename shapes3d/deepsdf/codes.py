"""Which code to use: a training shape of a checkpoint (name, file name or index) or a code file.

Code files are checkpoints (see :mod:`shapes3d.engine.checkpoint`) written by :func:`save_code` with
``code`` (L,), ``offset`` (3,) and ``scale`` (the normalisation of the shape the code stands for) plus
free-form provenance (``source``, ``loss``, ...).
"""

from __future__ import annotations

from pathlib import Path


def shape_index(model, spec: str) -> int | None:
    """The training shape ``spec`` names: an index, its id (``04379243/1a2b``), its source file, or the id's last
    part when only one shape has it; None when none does. An ambiguous last part is an error listing the ids."""
    from shapes3d.errors import Shapes3DError

    names, paths = model.names, getattr(model, "paths", None) or model.names
    if spec.isdigit() and int(spec) < len(names):
        return int(spec)
    if spec in names:
        return names.index(spec)
    if spec in paths:
        return paths.index(spec)
    if Path(spec).exists():
        target = Path(spec).resolve()
        hits = [k for k, p in enumerate(paths) if Path(p).resolve() == target]
        if hits:
            return hits[0]
    hits = [k for k, n in enumerate(names) if n.split("/")[-1] == spec or Path(paths[k]).name == spec]
    if len(hits) > 1 and len({names[k] for k in hits}) > 1:
        raise Shapes3DError(f"{spec!r} names {len(hits)} training shapes ({', '.join(names[k] for k in hits[:4])}); "
                            "give the full id")
    return hits[0] if hits else None


def shape_code(model, spec: str):
    """A training shape (id, source file, unique last part of the id, or index) or a code file -> (label, code (L,),
    Transform). The label of a training shape is its unique id; of a code file, the label it was saved with (else
    its stem)."""
    import torch

    from shapes3d.engine.checkpoint import load_checkpoint
    from shapes3d.errors import Shapes3DError
    from shapes3d.geometry.normalize import Transform

    if spec.endswith(".pt") and Path(spec).is_file():
        ck = load_checkpoint(spec)
        label = ck.get("label") if isinstance(ck.get("label"), str) else Path(spec).stem
        return label, ck["code"], Transform(tuple(ck["offset"].tolist()), float(ck["scale"]))
    idx = shape_index(model, spec)
    if idx is None:
        raise Shapes3DError(f"{spec!r} is neither a code file nor one of the {len(model.names)} training shapes")
    code = None if model.codes is None else model.codes[idx]
    t = Transform(tuple(model.offsets[idx].tolist()), float(model.scales[idx]))
    return model.names[idx], (code if code is not None else torch.zeros(0)), t


def resolve_shapes(model, specs) -> list[tuple[str, object, object]]:
    """:func:`shape_code` of every spec, a shape asked for twice kept once; two different shapes or code files
    with the same label are an error (raised before anything is written)."""
    from shapes3d.errors import Shapes3DError

    seen: dict[str, str] = {}
    out = []
    for spec in specs:
        spec = str(spec)
        idx = None if spec.endswith(".pt") and Path(spec).is_file() else shape_index(model, spec)
        key = str(Path(spec).resolve()) if idx is None else f"#{idx}"
        label, code, t = shape_code(model, spec)
        if label in seen:
            if seen[label] == key:
                continue  # the same shape again: written once
            raise Shapes3DError(f"two inputs would both be written as {label!r} ({spec!r} and an earlier one); "
                                "rename a code file")
        seen[label] = key
        out.append((label, code, t))
    return out


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
