"""Shared pieces of the pipelines' job functions: where caches live, what a data argument means.

A *job* (``shapes3d.classify.train``, ``shapes3d.deepsdf.fit``, ...) takes paths and a
config, writes its outputs through the atomic writers and returns a result dataclass;
the CLI handlers only parse arguments, call a job and print its result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from shapes3d.data.cache import input_identity, read_meta
from shapes3d.data.discovery import Manifest, discover, load_csv
from shapes3d.errors import Shapes3DError
from shapes3d.geometry.io import MESH_EXTENSIONS, POINT_EXTENSIONS
from shapes3d.utils.names import unique_names  # noqa: F401 (re-exported: names of outputs written per input)

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


def input_hashes(paths: Sequence[str | os.PathLike], results: dict[Path, Path] | None = None) -> list[str | None]:
    """The content sha256 of each input file, as the caches key it (None where the file cannot be read).

    ``results`` (a :class:`~shapes3d.data.preprocess.PreprocessReport`'s ``results``: path -> cache entry) gives
    the hashes stored in the cache entries without reading the inputs again.
    """
    out: list[str | None] = []
    for p in map(Path, paths):
        sha = None
        if results is not None and p in results:
            try:
                sha = read_meta(results[p]).get("input_sha256")
            except Shapes3DError:
                sha = None
        if sha is None:
            try:
                sha = input_identity(p)[0]
            except (OSError, Shapes3DError):
                sha = None
        out.append(sha)
    return out


def split_entries(manifest: Manifest, split: str | None, data: str | os.PathLike = "data", *,
                  fallback: bool = True) -> list:
    """The entries of ``split``; a data set without splits gives all its entries when ``fallback``.

    A data set that has splits but not this one is a :class:`~shapes3d.errors.Shapes3DError` naming the
    splits it has (``--split validation`` on a train/test set); so is an empty data set.
    """
    if not manifest.entries:
        raise Shapes3DError(f"{data}: no shapes found")
    if split is None:
        return list(manifest.entries)
    present = sorted({e.split for e in manifest.entries if e.split})
    if split in present:
        return [e for e in manifest.entries if e.split == split]
    if not present and fallback:
        return list(manifest.entries)
    have = f"its splits are {', '.join(present)}" if present else "it has no splits"
    raise Shapes3DError(f"{data}: no shapes in split {split!r}; {have}")


def check_stop_after(stop_after: int | None) -> None:
    """``stop_after`` is None or an integer >= 1 (epochs of this call)."""
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
        raise Shapes3DError(f"--stop-after: {stop_after!r} is out of range [1, epochs] (epochs of this call)")


#: Largest ``workers`` accepted (run_preprocess caps it further by the CPUs and memory of the machine).
MAX_WORKERS = 1024


def check_int(name: str, value, lo: int, hi: int | None) -> int:
    """``value`` as an integer in ``[lo, hi]`` (``hi=None``: no upper bound), else a one-line ConfigError
    ``"name: value is out of range [lo, hi]"``."""
    from shapes3d.errors import ConfigError

    if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
        raise ConfigError(f"{name}: {value!r} is not an integer (expected one in [{lo}, {'inf' if hi is None else hi}])")
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(f"{name}: {value!r} is out of range [{lo}, {'inf)' if hi is None else f'{hi}]'}")
    return int(value)


def check_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """An output folder: it may not exist yet, but it must not be a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise Shapes3DError(f"{path}: {what} is a file, expected a folder")
    return path


def check_file_path(path: str | os.PathLike, what: str = "--out") -> Path:
    """An output file: not an existing folder, and no file where one of its folders should be."""
    path = Path(path)
    if path.is_dir():
        raise Shapes3DError(f"{path}: {what} is a folder, expected a file path (e.g. {path / 'out.png'})")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise Shapes3DError(f"{path}: {what} lies inside {parent}, which is a file, not a folder")
            break
    return path
