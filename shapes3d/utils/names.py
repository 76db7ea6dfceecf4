"""Distinct names for outputs written one per input (files, sheet labels, JSON keys).

Here, in the base layer, so that every layer can name its outputs the same way (``render`` as well as the jobs);
:mod:`shapes3d.engine.jobs` re-exports :func:`unique_names`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def unique_names(paths: Sequence[str | os.PathLike], *, sep: str = "/") -> list[str]:
    """One distinct name per input path, for outputs written one per input (files, labels, JSON keys).

    A name is the file's stem when no other input shares it; inputs whose stems clash are named by the
    shortest distinguishing suffix of their folders, after dropping the trailing parts they all share:
    ``a/03001627/1a2b/models/model_normalized.obj`` and ``a/03001627/3c4d/models/model_normalized.obj``
    become ``1a2b`` and ``3c4d`` (parts joined with ``sep``). Same stem and folder but another suffix keeps the
    suffix (``x.obj``, ``x.off``); the same path given twice gets ``-2``, ``-3``, ... The order is the input's.
    """
    keys = [Path(p).with_suffix("").parts or (str(p),) for p in paths]
    files = [Path(p).name for p in paths]
    names = [k[-1] for k in keys]
    for _ in range(max((len(k) for k in keys), default=0) + 1):
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            groups.setdefault(n, []).append(i)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            return names
        for g in clashes:
            for i, name in zip(g, _distinguish([keys[i] for i in g], [files[i] for i in g], sep)):
                names[i] = name
    seen: dict[str, int] = {}  # identical paths (or names no suffix separates): number them
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def _distinguish(keys: list[tuple[str, ...]], files: list[str], sep: str) -> list[str]:
    """Names for one group of clashing inputs: the shortest suffixes of their folder parts that differ."""
    tail = 0  # trailing parts every member shares
    while all(len(k) > tail for k in keys) and len({k[len(k) - 1 - tail] for k in keys}) == 1:
        tail += 1
    heads = [k[: len(k) - tail] for k in keys]
    for depth in range(1, max(len(h) for h in heads) + 1):
        names = [sep.join(h[-depth:]) for h in heads]
        if len(set(names)) == len(names) and all(names):
            return names
    if len(set(files)) == len(files):  # same folder and stem, other suffixes
        return [sep.join((*h, f)) if h else f for h, f in zip(heads, files)]
    return [k[-1] for k in keys]  # the same file twice: numbered by the caller
