"""The official DeepSDF data layout (facebookresearch/DeepSDF), read and written.

A data source folder holds

* ``SdfSamples/<dataset>/<class>/<id>.npz``: ``pos`` (P, 4) and ``neg`` (Q, 4) float32 rows ``x, y, z, sdf`` in
  the normalised frame (SDF > 0 in ``pos``). The official loader drops rows whose SDF is NaN; so do we (rows with
  any non-finite value).
* ``NormalizationParameters/<dataset>/<class>/<id>.npz``: ``offset`` (3,) and ``scale`` (1,).
* split files, JSON ``{dataset: {class: [ids]}}``; the training order of the official code is the split's order
  (datasets, then classes, then ids, as listed), so code k of an official experiment is the k-th id of its split.

**The offset sign.** The official convention is ``normalised = (x + offset) * scale`` (offset = minus the centre);
ours (:mod:`shapes3d.geometry.normalize`) is ``normalised = (x - offset) * scale`` (offset = the centre). The scales
agree. :func:`convert_offset` is the one place the sign changes, both ways (it is its own inverse).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from shapes3d.errors import CorruptFileError, MissingFileError
from shapes3d.utils.io import atomic_write, atomic_write_text, safe_child

log = logging.getLogger(__name__)

SDF_SAMPLES = "SdfSamples"
NORMALIZATION = "NormalizationParameters"
SURFACE_SAMPLES = "SurfaceSamples"


def convert_offset(offset) -> np.ndarray:
    """Ours <-> official offset: ``(x - o) * s == (x + (-o)) * s``; the same call converts both ways."""
    return -np.asarray(offset, dtype=np.float64).reshape(3)


def read_split(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """A split file -> ``(dataset, class, id)`` in the official training order."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "split file does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        out = _triples(data)
    except (ValueError, AttributeError, TypeError) as exc:
        raise CorruptFileError(path, f"not a DeepSDF split file ({{dataset: {{class: [ids]}}}}): {exc}") from None
    if not out:
        raise CorruptFileError(path, "the split lists no shapes")
    return out


def write_split(path: str | os.PathLike, triples: Iterable[tuple[str, str, str]]) -> Path:
    """Write ``(dataset, class, id)`` as a split file (order kept)."""
    data: dict[str, dict[str, list[str]]] = {}
    for d, c, i in triples:
        data.setdefault(d, {}).setdefault(c, []).append(i)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return Path(path)


def _sibling(samples_path: Path, folder: str, suffix: str) -> Path | None:
    """``.../SdfSamples/<d>/<c>/<id>.npz`` -> ``.../<folder>/<d>/<c>/<id><suffix>`` (None off the layout)."""
    parts = samples_path.parts
    if len(parts) < 4 or parts[-4] != SDF_SAMPLES:
        return None
    return Path(*parts[:-4], folder, *parts[-3:-1], samples_path.stem + suffix)


def normalization_path(samples_path: str | os.PathLike) -> Path | None:
    return _sibling(Path(samples_path), NORMALIZATION, ".npz")


def surface_samples_path(samples_path: str | os.PathLike) -> Path | None:
    """Where the official layout keeps a shape's ground-truth surface points (``SurfaceSamples/.../<id>.ply``)."""
    return _sibling(Path(samples_path), SURFACE_SAMPLES, ".ply")


def _load_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise CorruptFileError(path, f"lacks {', '.join(missing)} (has {', '.join(z.files) or 'nothing'})")
            return {k: np.asarray(z[k]) for k in keys}
    except (OSError, ValueError) as exc:
        raise CorruptFileError(path, f"not a readable npz file ({exc})") from None


def read_normalization(samples_path: str | os.PathLike) -> tuple[tuple[float, float, float], float]:
    """Our ``(offset, scale)`` of an official samples file, from its NormalizationParameters (identity if absent)."""
    p = normalization_path(samples_path)
    if p is None or not p.is_file():
        return (0.0, 0.0, 0.0), 1.0
    a = _load_npz(p, ("offset", "scale"))
    if a["offset"].size != 3 or a["scale"].size != 1 or not float(a["scale"].reshape(-1)[0]) > 0:
        raise CorruptFileError(p, f"offset must have 3 values and scale 1 positive value, got shapes "
                                  f"{a['offset'].shape}, {a['scale'].shape}")
    return tuple(convert_offset(a["offset"]).tolist()), float(a["scale"].reshape(-1)[0])


def read_official_samples(path: str | os.PathLike) -> dict:
    """An official samples npz -> ``points`` (N, 3), ``sdf`` (N,), ``offset``, ``scale`` (ours), ``dropped``.

    Rows with a non-finite value are dropped (the official loader drops NaN SDF rows); rows are re-split by sign
    by the caller, so a file that put SDF 0 on the positive side still loads.
    """
    path = Path(path)
    a = _load_npz(path, ("pos", "neg"))
    rows = []
    for k in ("pos", "neg"):
        x = np.asarray(a[k], dtype=np.float32)
        if x.size == 0:
            continue
        if x.ndim != 2 or x.shape[1] != 4:
            raise CorruptFileError(path, f"{k} must have shape (N, 4) [x, y, z, sdf], got {x.shape}")
        rows.append(x)
    if not rows:
        raise CorruptFileError(path, "pos and neg are both empty")
    rows = np.concatenate(rows)
    keep = np.isfinite(rows).all(axis=1)
    if not keep.any():
        raise CorruptFileError(path, f"all {len(rows)} samples have NaN or infinite values")
    offset, scale = read_normalization(path)
    return {"points": rows[keep, :3], "sdf": rows[keep, 3], "offset": offset, "scale": scale,
            "dropped": int((~keep).sum())}


def write_official_shape(out: str | os.PathLike, dataset: str, class_name: str, shape_id: str, *, pos, neg,
                         offset, scale: float) -> Path:
    """Write one shape's ``SdfSamples`` and ``NormalizationParameters`` npz files (our ``offset`` converted)."""
    rel = f"{dataset}/{class_name}/{shape_id}.npz"
    target = safe_child(Path(out) / SDF_SAMPLES, rel, what="shape path", nested=True)
    with atomic_write(target) as f:
        np.savez(f, pos=np.asarray(pos, np.float32), neg=np.asarray(neg, np.float32))
    with atomic_write(safe_child(Path(out) / NORMALIZATION, rel, what="shape path", nested=True)) as f:
        np.savez(f, offset=convert_offset(offset).astype(np.float32),
                 scale=np.asarray([scale], dtype=np.float32))
    return target


def official_triple(name: str, class_name: str, dataset: str) -> tuple[str, str, str]:
    """``(dataset, class, id)`` of a shape id: ``<class>/<id>`` ids give their own class, other ids the entry's
    class (``"shapes"`` when it has none); the id is the name's last part."""
    parts = name.split("/")
    cls = parts[0] if len(parts) == 2 else (class_name or "shapes")
    return dataset, cls, parts[-1]


def _shard_split_name(shard: tuple[int, int]) -> str:
    return f"split.shard{shard[0]}of{shard[1]}.json"


def _write_split_of_shards(out: Path, triples: list[tuple], kept: list[tuple], shard: tuple[int, int]) -> Path | None:
    """A shard writes its own ``split.shard<k>of<n>.json``; ``split.json`` (the union, in the order of the whole
    manifest) is written once every shard's file exists, by whichever shard finishes last. Returns its path or
    None while shards are missing (so shard k never overwrites the shapes of shard j)."""
    write_split(out / _shard_split_name(shard), kept)
    parts = [out / _shard_split_name((k, shard[1])) for k in range(shard[1])]
    if not all(p.is_file() for p in parts):
        log.info("split.json is written when all %d shards have finished (%d of them have)", shard[1],
                 sum(p.is_file() for p in parts))
        return None
    done = {t for p in parts for t in read_split_or_empty(p)}
    return write_split(out / "split.json", [t for t in triples if t in done])


def _triples(data: dict) -> list[tuple[str, str, str]]:
    return [(str(d), str(c), str(i)) for d, classes in data.items() for c, ids in classes.items() for i in ids]


def read_split_or_empty(path: Path) -> list[tuple[str, str, str]]:
    """A shard's split file; an empty one (a shard whose shapes were all skipped) is an empty list."""
    return _triples(json.loads(Path(path).read_text(encoding="utf-8")))


def write_official_dataset(entries, results: dict, out: str | os.PathLike, *, dataset: str,
                           shard: tuple[int, int] | None = None) -> list[Path]:
    """Write the cached SDF samples of ``entries`` (``results``: path -> cache entry, a preprocessing report's) as
    an official data source in ``out``: ``SdfSamples``, ``NormalizationParameters`` and ``split.json`` (every
    written shape, in entry order). Ids are :func:`~shapes3d.data.shape_ids.shape_names`; two shapes with one
    ``(class, id)`` are an error before anything is written. With ``shard=(k, n)`` (``entries`` are then the
    whole manifest, ``results`` this shard's), the shard's ids go to ``split.shard<k>of<n>.json`` and
    ``split.json`` is the union once all ``n`` shards have written theirs."""
    from shapes3d.data.cache import load_cached
    from shapes3d.data.shape_ids import shape_names
    from shapes3d.errors import Shapes3DError

    paths = [Path(getattr(e, "path", e)) for e in entries]
    triples = [official_triple(n, getattr(e, "class_name", ""), dataset) for n, e in zip(shape_names(paths), entries)]
    seen: dict[tuple, Path] = {}
    for t, p in zip(triples, paths):
        if t in seen:
            raise Shapes3DError(f"{p} and {seen[t]} would both be written as {'/'.join(t)}.npz")
        seen[t] = p
    written, kept = [], []
    for (d, c, i), p in zip(triples, paths):
        loc = results.get(p)
        if loc is None:
            continue  # skipped by the sampling (listed in its report)
        a = load_cached(loc)
        written.append(write_official_shape(out, d, c, i, pos=a["pos"], neg=a["neg"], offset=a["offset"],
                                            scale=float(a["scale"])))
        kept.append((d, c, i))
    if shard is not None:
        _write_split_of_shards(Path(out), triples, kept, tuple(shard))
    elif kept:
        write_split(Path(out) / "split.json", kept)
    return written
