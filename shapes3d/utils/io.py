"""Atomic file writes, content hashing, and the real-data root.

Everything a user made (checkpoints, caches, reports) is written through
:func:`atomic_write`: a temp file in the same folder, fsync, then ``os.replace``, so
a crash or a full disk leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from shapes3d.errors import InputFileError

DATA_ROOT_ENV = "SHAPES3D_DATA_ROOT"
log = logging.getLogger(__name__)

# atomic_write's temp files: ".<target name>." + mkstemp's 8 random characters + ".tmp".
_TEMP_PREFIX, _TEMP_SUFFIX = ".", ".tmp"
_TEMP_PATTERN = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp", re.ASCII)
#: Temp files younger than this may belong to a writer still running: left alone by default.
STALE_TEMP_AGE_S = 3600.0


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files with mode 0600; finished files get the mode a plain open() would give.
_FILE_MODE = 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``.

    On any exception the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def is_temporary(name: str) -> bool:
    """Whether a file name is one :func:`atomic_write` gives its temp files (``.NAME.xxxxxxxx.tmp``)."""
    return _TEMP_PATTERN.fullmatch(name) is not None


def remove_stale_temporaries(
    folder: str | os.PathLike, *, older_than_s: float = STALE_TEMP_AGE_S, recursive: bool = False
) -> list[Path]:
    """Delete the temp files :func:`atomic_write` left in ``folder`` when its process was killed.

    A SIGKILL (or power loss) between creating and renaming the temp file leaves a
    ``.NAME.xxxxxxxx.tmp`` behind. Only regular files matching exactly that pattern and last
    modified more than ``older_than_s`` seconds ago are removed (a younger one may belong to a
    writer still running); symlinks, folders and every other file are left alone. ``recursive``
    also cleans subfolders (e.g. a cache's ``<xx>/`` folders; symlinked folders are not followed).
    Returns the removed paths, sorted; a missing ``folder`` removes nothing.
    """
    root = Path(folder)
    cutoff = time.time() - float(older_than_s)
    removed: list[Path] = []
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            try:
                if recursive and entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
                if not is_temporary(entry.name):
                    continue
                info = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(info.st_mode) or info.st_mtime > cutoff:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:  # removed meanwhile (another cleaner, or its writer finished)
                continue
            except OSError as exc:
                log.warning("could not remove stale temporary file %s: %s", entry.path, exc)
                continue
            removed.append(Path(entry.path))
    if removed:
        log.info("%s: removed %d stale temporary files left by interrupted writes", root, len(removed))
    return sorted(removed)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _unsafe_component(name) -> str | None:
    """Why ``name`` is not one plain path component (None when it is)."""
    if not isinstance(name, str):
        return f"expected a str, got {type(name).__name__}"
    if name in ("", ".", ".."):
        return "it is empty or a relative folder reference"
    if "/" in name or "\\" in name or (os.altsep and os.altsep in name) or os.sep in name:
        return "it contains a path separator"
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return "it contains a NUL or control character"
    if ":" in name[:2] and name[:1].isalpha():
        return "it starts with a drive letter"
    return None


def safe_child(root: str | os.PathLike, name: str, *, what: str = "name", nested: bool = False) -> Path:
    """``root / name`` for a ``name`` that is one plain path component staying inside ``root``.

    Every place a user-controlled name (a dataset, class or shape name, a label taken from a
    file) becomes an output path goes through here, so ``../evil``, ``/etc/x``, ``a/b``,
    ``C:x``, NUL bytes and control characters, ``.``/``..`` and empty names are refused with
    :class:`~shapes3d.errors.InputFileError` naming ``root`` and the name, and nothing is
    written outside the chosen output folder. A child that already exists as a symlink
    leading out of ``root`` is refused too.

    ``nested=True`` also accepts a relative name of several components joined by ``/`` (a shape id such as
    ``04379243/1a2b.ply``); each component must pass the same checks (no ``..``, no empty part, no backslash),
    and no existing folder on the way may be a symlink leading out of ``root``.
    """
    root = Path(root)
    parts = name.split("/") if nested and isinstance(name, str) else [name]
    problem = next((p for p in map(_unsafe_component, parts) if p is not None), None)
    if problem is None:
        child = root
        for part in parts:
            child = child / part
            if child.is_symlink() and not child.resolve().is_relative_to(root.resolve()):
                problem = "it is a symlink leading outside the folder"
                break
        else:
            return child
    expected = "a relative path of plain names" if nested else "a single file or folder name"
    raise InputFileError(root, f"unsafe {what} {name!r} for an output path: {problem}; expected {expected} "
                               "inside this folder")


def data_root() -> Path:
    """Root of the shared real-data sets: ``$SHAPES3D_DATA_ROOT`` or ``../shared/data``.

    The fallback is resolved relative to the project checkout (the folder holding
    ``pyproject.toml``), not the current directory.
    """
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser()
    project = Path(__file__).resolve().parents[2]
    return (project.parent / "shared" / "data").resolve()


def atomic_write_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    """Rows of dicts as CSV (columns: every key, in first-seen order), written atomically."""
    import csv
    import io

    keys = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
