"""Find the shape files of a dataset folder and list them as a manifest (class, split, path).

Three layouts are recognised:

* ``modelnet``: ``root/<class>/<split>/<file>`` with ``<split>`` one of ``train``/``test``
  (ModelNet10/40, the MeshCNN SHREC'11 split, ModelNet point-cloud exports).
* ``shapenet``: ``root/<synset>/<model id>/models/<file>`` (ShapeNetCore v2) or
  ``root/<synset>/<model id>/<file>`` (v1); the class is the synset folder's name
  and the split is unknown (``""``): ShapeNet's splits ship as separate lists.
* ``flat``: shape files anywhere below ``root``; the class is the name of the top-level
  folder holding the file, or ``""`` for files directly in ``root``.

Hidden files and folders (name starting with ``.``) and files with other extensions
(``.mtl``, ``.binvox``, ``.json``, READMEs, …) are ignored. Entries are sorted by their
path relative to the root, so a manifest (and a shard of it) is the same on every machine.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from shapes3d.errors import CorruptFileError, InputFileError, MissingFileError
from shapes3d.utils.io import atomic_write_text

log = logging.getLogger(__name__)

#: Extensions of the files a manifest lists, lower case; matching ignores case
#: (ModelNet and trimesh's models use ``.STL``/``.OFF`` as often as lower case).
SHAPE_EXTENSIONS: tuple[str, ...] = (".off", ".obj", ".ply", ".stl", ".glb", ".gltf", ".pcd", ".xyz", ".npy", ".npz")
LAYOUTS: tuple[str, ...] = ("auto", "modelnet", "shapenet", "flat")
SPLITS: tuple[str, ...] = ("train", "val", "test", "")
_MODELNET_SPLITS = ("train", "test")
CSV_COLUMNS = ("class", "split", "path")


@dataclass(frozen=True)
class ManifestEntry:
    """One shape file: its class name (``""`` if unknown), split (``""`` if unknown) and path."""

    class_name: str
    split: str
    path: Path

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split {self.split!r} of {self.path}: expected one of {SPLITS}")
        object.__setattr__(self, "path", Path(self.path))


@dataclass(frozen=True)
class Manifest:
    """The sorted entries of a dataset; ``root`` is the folder paths are made relative to in CSV files."""

    entries: tuple[ManifestEntry, ...]
    root: Path | None = None
    layout: str = "flat"

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ManifestEntry]:
        return iter(self.entries)

    @property
    def classes(self) -> list[str]:
        """Distinct class names, sorted (``""`` included when some entries have no class)."""
        return sorted({e.class_name for e in self.entries})

    @property
    def paths(self) -> list[Path]:
        return [e.path for e in self.entries]

    def filter(self, *, split: str | None = None, class_name: str | None = None) -> Manifest:
        """The entries with this split and/or class (``None`` keeps all), in the same order."""
        if split is not None and split not in SPLITS:
            raise ValueError(f"split {split!r}: expected one of {SPLITS}")
        kept = tuple(
            e
            for e in self.entries
            if (split is None or e.split == split) and (class_name is None or e.class_name == class_name)
        )
        return Manifest(kept, self.root, self.layout)

    def save_csv(self, path: str | os.PathLike) -> None:
        """Write columns ``class,split,path`` atomically; paths under ``root`` are stored relative to it (POSIX)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for e in self.entries:
            writer.writerow((e.class_name, e.split, self._stored_path(e.path)))
        atomic_write_text(path, buf.getvalue())

    def _stored_path(self, path: Path) -> str:
        if self.root is not None:
            try:
                return PurePosixPath(*path.relative_to(self.root).parts).as_posix()
            except ValueError:
                pass  # outside the root: keep it absolute
        return path.as_posix()


def load_csv(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> Manifest:
    """Read a manifest CSV (columns by header name; ``path`` required, ``class``/``split`` default ``""``).

    Relative paths are resolved against ``root``, or against the CSV's own folder when ``root``
    is None (so an ``index.csv`` kept in the dataset folder loads as is). Extra columns are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "manifest CSV does not exist")
    base = Path(root) if root is not None else path.parent
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise CorruptFileError(
                path, f"header {reader.fieldnames} has no 'path' column; expected columns {','.join(CSV_COLUMNS)}"
            )
        entries = []
        for line, row in enumerate(reader, start=2):
            if not row["path"]:
                raise CorruptFileError(path, f"line {line}: empty path")
            split = row.get("split") or ""
            if split not in SPLITS:
                raise CorruptFileError(path, f"line {line}: split {split!r}, expected one of {SPLITS}")
            entry_path = Path(row["path"])
            entries.append(
                ManifestEntry(
                    row.get("class") or "", split, entry_path if entry_path.is_absolute() else base / entry_path
                )
            )
    return Manifest(tuple(entries), base, "csv")


def _walk(root: Path, extensions: frozenset[str]) -> list[PurePosixPath]:
    """Relative paths of the shape files below ``root``, skipping hidden files and folders."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel = Path(folder).relative_to(root)
        for name in files:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in extensions:
                found.append(PurePosixPath(*rel.parts, name))
    return found


def _modelnet_entry(rel: PurePosixPath) -> tuple[str, str] | None:
    parts = rel.parts
    if len(parts) == 3 and parts[1].lower() in _MODELNET_SPLITS:
        return parts[0], parts[1].lower()
    return None


def _shapenet_entry(rel: PurePosixPath) -> tuple[str, str] | None:
    parts = rel.parts
    if (len(parts) == 4 and parts[2] == "models") or len(parts) == 3:
        return parts[0], ""
    return None


def _flat_entry(rel: PurePosixPath) -> tuple[str, str]:
    return (rel.parts[0] if len(rel.parts) > 1 else ""), ""


def _detect_layout(files: Iterable[PurePosixPath]) -> str:
    # ModelNet wins over ShapeNet: a class/train/file path also has the v1 ShapeNet depth.
    files = list(files)
    if any(_modelnet_entry(f) for f in files):
        return "modelnet"
    if any(len(f.parts) == 4 and f.parts[2] == "models" for f in files):
        return "shapenet"
    return "flat"


def discover(
    root: str | os.PathLike,
    *,
    layout: str = "auto",
    extensions: Iterable[str] = SHAPE_EXTENSIONS,
) -> Manifest:
    """List the shape files of a dataset folder as a :class:`Manifest` sorted by relative path.

    ``layout="auto"`` picks ``modelnet`` if any file sits in ``<class>/{train,test}/``, else
    ``shapenet`` if any sits in ``<synset>/<id>/models/``, else ``flat``. Files that do not fit
    the chosen layout are left out (logged at INFO). Raises :class:`MissingFileError` for a
    missing root and :class:`InputFileError` when no shape file fits.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: expected one of {LAYOUTS}")
    exts = frozenset(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    if not exts:
        raise ValueError("extensions is empty: expected at least one file extension such as '.off'")
    root = Path(root)
    if not root.exists():
        raise MissingFileError(root, "dataset folder does not exist")
    if not root.is_dir():
        raise InputFileError(root, "expected a dataset folder, got a file")
    files = sorted(_walk(root, exts))
    chosen = _detect_layout(files) if layout == "auto" else layout
    rule = {"modelnet": _modelnet_entry, "shapenet": _shapenet_entry, "flat": _flat_entry}[chosen]
    entries = []
    left_out = 0
    for rel in files:
        labels = rule(rel)
        if labels is None:
            left_out += 1
            continue
        entries.append(ManifestEntry(labels[0], labels[1], root.joinpath(*rel.parts)))
    if not entries:
        raise InputFileError(
            root,
            f"no shape files found for layout {chosen!r} (extensions {', '.join(sorted(exts))}; "
            f"{len(files)} matching files in other places)",
        )
    if left_out:
        log.info("%s: %d shape files do not fit the %s layout and were left out", root, left_out, chosen)
    log.info("%s: %d entries, %d classes, layout %s", root, len(entries), len({e.class_name for e in entries}), chosen)
    return Manifest(tuple(entries), root, chosen)
