"""Find the shape files of a dataset folder and list them as a manifest (class, split, path).

Four layouts are recognised:

* ``modelnet``: ``root/<class>/<split>/<file>`` with ``<split>`` one of ``train``/``test``
  (ModelNet10/40, the MeshCNN SHREC'11 split, ModelNet point-cloud exports such as PointNet's
  ModelNet40 ``.npy`` clouds), also below one wrapper folder, ``root/ModelNet40/<class>/<split>/<file>``
  (a root holding the data set's folder, as its archives and ``shapes3d data fetch`` unpack; a root
  holding two such folders, or one beside class folders, is an error: their classes would merge).
  A ``shape_names.txt`` beside the class folders (PointNet's class list, one name a line) is checked
  against them: a listed class without files, or a class folder it does not list, is a warning.
* ``shapenet``: ``root/<synset>/<model id>/models/<file>`` (ShapeNetCore v2) or
  ``root/<synset>/<model id>/<file>`` (v1); the class is the synset folder's name
  and the split is unknown (``""``): ShapeNet's splits ship as separate lists. With a ShapeNet
  ``taxonomy.json`` in the root, the class is the synset's name (``table``), else the synset id.
* ``deepsdf``: the official DeepSDF data source, ``root/SdfSamples/<dataset>/<class>/<id>.npz`` (or
  ``root`` being the ``SdfSamples`` folder); the class is the class folder.
* ``flat``: shape files anywhere below ``root``; the class is the name of the top-level
  folder holding the file, or ``""`` for files directly in ``root``.

Hidden files and folders (name starting with ``.``) and files with other extensions
(``.mtl``, ``.binvox``, ``.json``, READMEs, …) are ignored. Entries are sorted by their
path relative to the root, so a manifest (and a shard of it) is the same on every machine.

Symlinked folders are followed (datasets are often assembled from links); a link leading back
to a folder already on the way down (a loop) is not followed and is logged as a warning, as are
broken links and folders that cannot be read. Manifest CSVs are read as UTF-8 (a BOM is
skipped); one that is not UTF-8 is read as Latin-1, with a warning.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from shapes3d.data.shape_ids import read_taxonomy, shape_names
from shapes3d.errors import CorruptFileError, InputFileError, MissingFileError, Shapes3DError
from shapes3d.utils.io import atomic_write_text

log = logging.getLogger(__name__)

#: Extensions of the files a manifest lists, lower case; matching ignores case
#: (ModelNet and trimesh's models use ``.STL``/``.OFF`` as often as lower case).
SHAPE_EXTENSIONS: tuple[str, ...] = (".off", ".obj", ".ply", ".stl", ".glb", ".gltf", ".pcd", ".xyz", ".npy", ".npz")
LAYOUTS: tuple[str, ...] = ("auto", "modelnet", "shapenet", "deepsdf", "flat")
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


def _read_csv_text(path: Path) -> str:
    """The CSV's text: UTF-8 (BOM skipped), else Latin-1 with a warning; InputFileError if unreadable."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputFileError(path, f"cannot read the manifest CSV ({exc.strerror or type(exc).__name__})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        log.warning("%s: not UTF-8 (byte 0x%02x at offset %d); reading it as Latin-1", path, raw[exc.start],
                    exc.start)
        return raw.decode("latin-1")


def load_csv(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> Manifest:
    """Read a manifest CSV (columns by header name; ``path`` required, ``class``/``split`` default ``""``).

    Relative paths are resolved against ``root``, or against the CSV's own folder when ``root``
    is None (so an ``index.csv`` kept in the dataset folder loads as is). Extra columns are ignored.
    UTF-8 with or without a BOM; other bytes are read as Latin-1 (logged). Every problem is an
    :class:`InputFileError` naming the CSV.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path, "manifest CSV does not exist")
    base = Path(root) if root is not None else path.parent
    text = _read_csv_text(path)
    if "\0" in text:
        raise CorruptFileError(path, f"contains a NUL byte (offset {text.index(chr(0))}): not a CSV text file")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
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
    except csv.Error as exc:
        raise CorruptFileError(path, f"not a valid CSV (line {reader.line_num}: {exc})") from None
    return Manifest(tuple(entries), base, "csv")


#: Deepest folder nesting :func:`_walk` descends (a guard against link chains, not a real layout's depth).
MAX_DEPTH = 64


def _walk(root: Path, extensions: frozenset[str]) -> list[PurePosixPath]:
    """Relative paths of the shape files below ``root``, skipping hidden files and folders.

    Symlinked folders are followed; one resolving to a folder already on the current path from
    ``root`` (a loop: ``a/b -> ..``) is skipped with a warning, so the walk always ends. Broken
    links and unreadable folders are skipped with a warning too.
    """
    found = []
    root_id = os.stat(root)
    # Each stack item: (folder, its path relative to root, (dev, inode) of the folders leading to it).
    stack = [(root, PurePosixPath(), frozenset({(root_id.st_dev, root_id.st_ino)}))]
    while stack:
        folder, rel, ancestors = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.warning("%s: cannot list folder (%s); its files are left out", folder, exc.strerror or exc)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows symlinks
                if not is_dir and entry.is_symlink() and not os.path.exists(entry.path):
                    log.warning("%s: broken or looping symlink (-> %s); left out", entry.path, os.readlink(entry.path))
                    continue
                if is_dir:
                    info = entry.stat()
                    ident = (info.st_dev, info.st_ino)
                    if ident in ancestors:
                        log.warning("%s: symlink loop (leads back to %s, a folder above it); not followed",
                                    entry.path, os.path.realpath(entry.path))
                        continue
                    if len(ancestors) > MAX_DEPTH:
                        log.warning("%s: deeper than %d folders; not followed", entry.path, MAX_DEPTH)
                        continue
                    stack.append((Path(entry.path), rel / entry.name, ancestors | {ident}))
                elif os.path.splitext(entry.name)[1].lower() in extensions:
                    found.append(rel / entry.name)
            except OSError as exc:
                log.warning("%s: cannot inspect (%s); left out", entry.path, exc.strerror or exc)
    return found


def _modelnet_entry(rel: PurePosixPath) -> tuple[str, str] | None:
    parts = rel.parts
    if len(parts) == 3 and parts[1].lower() in _MODELNET_SPLITS:
        return parts[0], parts[1].lower()
    if len(parts) == 4 and parts[2].lower() in _MODELNET_SPLITS:  # one wrapper folder: ModelNet40/<class>/...
        return parts[1], parts[2].lower()
    return None


def _check_one_modelnet_set(root: Path, rels: list[PurePosixPath]) -> None:
    """Refuse a root holding several ModelNet-layout sets (``ModelNet10/`` and ``ModelNet40/``, or one beside class
    folders): their classes would merge. Wrapped files are those whose split folder is the third part."""
    wrappers = sorted({r.parts[0] for r in rels if len(r.parts) == 4})
    direct = any(len(r.parts) == 3 for r in rels)
    if len(wrappers) + direct > 1:
        found = ", ".join([*(f"{w}/" for w in wrappers), *(["class folders directly in it"] if direct else [])])
        raise InputFileError(root, f"holds several ModelNet-layout data sets ({found}); give the folder of one")


#: PointNet's ModelNet class list, kept beside the class folders.
SHAPE_NAMES_FILE = "shape_names.txt"


def _check_shape_names(root: Path, entries: list[ManifestEntry]) -> None:
    """Warn when ``shape_names.txt`` (in ``root`` or its one wrapper folder) and the class folders disagree."""
    found = {e.class_name for e in entries}
    tops = {e.path.relative_to(root).parts[0] for e in entries}
    for folder in [root, *(root / t for t in sorted(tops) if t not in found)]:
        names_file = folder / SHAPE_NAMES_FILE
        if not names_file.is_file():
            continue
        try:
            listed = {line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()}
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("%s: cannot read the class list (%s); not checked", names_file, exc)
            continue
        if listed - found:
            log.warning("%s lists %d classes without files: %s", names_file, len(listed - found),
                        ", ".join(sorted(listed - found)))
        if found - listed:
            log.warning("%s does not list %d class folders: %s", names_file, len(found - listed),
                        ", ".join(sorted(found - listed)))


def _shapenet_entry(rel: PurePosixPath) -> tuple[str, str] | None:
    parts = rel.parts
    if (len(parts) == 4 and parts[2] == "models") or len(parts) == 3:
        return parts[0], ""
    return None


def _deepsdf_entry(rel: PurePosixPath) -> tuple[str, str] | None:
    parts = rel.parts
    if len(parts) == 4 and parts[0] == "SdfSamples" and rel.suffix.lower() == ".npz":
        return parts[2], ""
    return None


def _flat_entry(rel: PurePosixPath) -> tuple[str, str]:
    return (rel.parts[0] if len(rel.parts) > 1 else ""), ""


def _detect_layout(files: Iterable[PurePosixPath]) -> str:
    # ModelNet wins over ShapeNet: a class/train/file path also has the v1 ShapeNet depth.
    files = list(files)
    if any(_deepsdf_entry(f) for f in files):
        return "deepsdf"
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

    ``layout="auto"`` picks ``modelnet`` if any file sits in ``[<wrapper>/]<class>/{train,test}/``, else
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
    if root.name == "SdfSamples":  # the official samples folder itself: discover from its data source
        root = root.parent
    files = sorted(_walk(root, exts))
    chosen = _detect_layout(files) if layout == "auto" else layout
    rule = {"modelnet": _modelnet_entry, "shapenet": _shapenet_entry, "deepsdf": _deepsdf_entry,
            "flat": _flat_entry}[chosen]
    classes = read_taxonomy(root) if chosen == "shapenet" else {}
    entries = []
    left_out = 0
    for rel in files:
        labels = rule(rel)
        if labels is None:
            left_out += 1
            continue
        entries.append(ManifestEntry(classes.get(labels[0], labels[0]), labels[1], root.joinpath(*rel.parts)))
    if not entries:
        raise InputFileError(
            root,
            f"no shape files found for layout {chosen!r} (extensions {', '.join(sorted(exts))}; "
            f"{len(files)} matching files in other places)",
        )
    if left_out:
        log.info("%s: %d shape files do not fit the %s layout and were left out", root, left_out, chosen)
    if chosen == "modelnet":
        _check_one_modelnet_set(root, [rel for rel in files if _modelnet_entry(rel)])
        _check_shape_names(root, entries)
    log.debug("%s: %d entries, %d classes, layout %s", root, len(entries), len({e.class_name for e in entries}), chosen)
    return Manifest(tuple(entries), root, chosen)


def apply_split_file(manifest: Manifest, split_file: str | os.PathLike) -> Manifest:
    """The entries a DeepSDF split file (``{dataset: {class: [ids]}}``) lists, in the file's order, matched against
    the shape ids ``<class>/<id>`` (ShapeNet: ``<synset>/<model id>``; official samples: ``<class>/<id>``; other
    layouts: the entry's class and the last part of its id).
    Listed shapes missing from the data set are logged (as the official loader does); none found is an error."""
    from shapes3d.data.deepsdf_layout import read_split

    wanted = read_split(split_file)
    by_name: dict[str, ManifestEntry] = {}
    for name, e in zip(shape_names(manifest.paths), manifest.entries):
        by_name[name] = e
        by_name.setdefault(f"{e.class_name}/{name.split('/')[-1]}", e)  # ids by class folder (ModelNet, flat)
    kept = [by_name[f"{c}/{i}"] for _, c, i in wanted if f"{c}/{i}" in by_name]
    if len(kept) < len(wanted):
        log.warning("%s: %d of the %d shapes it lists are not in %s", split_file, len(wanted) - len(kept),
                    len(wanted), manifest.root)
    if not kept:
        raise Shapes3DError(f"none of the {len(wanted)} shapes of split file {split_file} is in {manifest.root} "
                            f"(its ids look like {wanted[0][1]}/{wanted[0][2]})")
    return Manifest(tuple(kept), manifest.root, manifest.layout)


def is_split_file(split) -> bool:
    """Whether a ``--split`` value names a split file (``*.json``) rather than a split."""
    return split is not None and str(split).lower().endswith(".json")
