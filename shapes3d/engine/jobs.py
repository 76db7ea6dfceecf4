"""Shared pieces of the pipelines' job functions: where caches live, what a data argument means.

A *job* (``shapes3d.classify.train``, ``shapes3d.deepsdf.fit``, ...) takes paths and a
config, writes its outputs through the atomic writers and returns a result dataclass;
the CLI handlers only parse arguments, call a job and print its result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from shapes3d.data.discovery import Manifest, discover, load_csv
from shapes3d.geometry.io import MESH_EXTENSIONS, POINT_EXTENSIONS

SHAPE_EXTENSIONS = frozenset(MESH_EXTENSIONS) | frozenset(POINT_EXTENSIONS)


def default_cache_dir(kind: str = "") -> Path:
    """The shared content-keyed cache folder for ``kind`` (e.g. ``"voxels"``, ``"sdf"``).

    ``$SHAPES3D_CACHE/kind``, or ``~/.cache/shapes3d/kind``; read at each call, so a changed
    environment variable takes effect. With an empty ``kind``, the root folder.
    """
    root = Path(os.environ.get("SHAPES3D_CACHE", Path.home() / ".cache" / "shapes3d"))
    return root / kind if kind else root


def load_manifest(data: str | os.PathLike, *, layout: str = "auto") -> Manifest:
    """A dataset argument: a manifest CSV (``*.csv``), or the shapes discovered in a dataset folder."""
    path = Path(data)
    return load_csv(path) if path.suffix.lower() == ".csv" else discover(path, layout=layout)


def expand_shape_paths(paths: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """Files as given, folders replaced by the mesh and point-cloud files below them (sorted; hidden files and
    folders inside a given folder are left out)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in SHAPE_EXTENSIONS
                          and not any(part.startswith(".") for part in q.relative_to(p).parts))
        else:
            out.append(p)
    return out
