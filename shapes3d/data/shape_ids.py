"""Unique shape ids from file paths, and ShapeNet class names from ``taxonomy.json``.

Every ShapeNetCore.v2 mesh is called ``model_normalized.obj``, so a file stem does not name a shape. A shape id
is a relative name, parts joined by ``/``:

* ShapeNet (``.../<synset>/<model id>/models/<file>``, v2): ``<synset>/<model id>``;
* the official DeepSDF layout (``.../SdfSamples/<dataset>/<class>/<id>.npz``): ``<class>/<id>``;
* anything else: the file stem, or, among files whose stems clash, the shortest suffix of their relative path
  that tells them apart (``a/chair.obj``, ``b/chair.obj`` -> ``a/chair``, ``b/chair``); two files differing only
  in their extension keep it (``x.obj``, ``x.off``).

The same file given twice is a clash, an :class:`~shapes3d.errors.Shapes3DError` raised before anything is
written. Ids become output paths through ``safe_child(..., nested=True)``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from shapes3d.errors import CorruptFileError, Shapes3DError

log = logging.getLogger(__name__)
TAXONOMY = "taxonomy.json"


def _key(path: Path, keep_suffix: bool) -> tuple[tuple[str, ...], int]:
    """The parts a name is taken from (no anchor) and how many of the last ones it uses at least."""
    parts = path.parts[1:] if path.is_absolute() else path.parts
    parts = (*parts[:-1], path.name if keep_suffix else path.stem) if parts else (str(path),)
    if len(parts) >= 4 and parts[-2] == "models":  # ShapeNet v2: <synset>/<id>/models/model_normalized
        return parts[:-2], 2
    if len(parts) >= 4 and parts[-4] == "SdfSamples":  # official DeepSDF: SdfSamples/<dataset>/<class>/<id>
        return parts, 2
    return parts, 1


def shape_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """One unique id per path (see the module notes), in the input's order; a clash raises Shapes3DError."""
    paths = [Path(p) for p in paths]
    stems: dict[Path, list[int]] = {}
    for i, p in enumerate(paths):
        stems.setdefault(p.with_suffix(""), []).append(i)
    keep_suffix = [False] * len(paths)
    for group in (g for g in stems.values() if len(g) > 1):
        files = [paths[i].name for i in group]
        if len(set(files)) != len(files):
            dup = next(f for f in files if files.count(f) > 1)
            raise Shapes3DError(f"shape id clash: {paths[group[files.index(dup)]]} is given {files.count(dup)} "
                                "times; give each shape once")
        for i in group:
            keep_suffix[i] = True
    keys = [_key(p, k) for p, k in zip(paths, keep_suffix)]
    depth = [d for _, d in keys]
    while True:
        names = ["/".join(k[-d:]) for (k, _), d in zip(keys, depth)]
        groups: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            groups.setdefault(n, []).append(i)
        clashes = [g for g in groups.values() if len(g) > 1]
        if not clashes:
            return names
        grew = False
        for i in (i for g in clashes for i in g):
            if depth[i] < len(keys[i][0]):
                depth[i], grew = depth[i] + 1, True
        if not grew:
            g = clashes[0]
            raise Shapes3DError(f"shape id clash: {len(g)} inputs are named {names[g[0]]!r} "
                                f"({', '.join(str(paths[i]) for i in g[:3])})")


def read_taxonomy(root: str | os.PathLike) -> dict[str, str]:
    """``{synset id: class name}`` from ``root/taxonomy.json`` (ShapeNet's: a list of ``{"synsetId", "name"}``;
    the name's first comma-separated word is the class), or {} when there is no such file."""
    path = Path(root) / TAXONOMY
    if not path.is_file():
        return {}
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
        out = {str(d["synsetId"]): str(d["name"]).split(",")[0].strip() for d in items}
    except (ValueError, TypeError, KeyError, OSError) as exc:
        raise CorruptFileError(path, f"not a ShapeNet taxonomy (a list of {{synsetId, name}}): {exc}") from None
    log.info("%s: %d class names", path, len(out))
    return out
