"""Safe extraction of downloaded zip and tar archives (``shapes3d data fetch``).

An archive from the network is checked member by member *before* anything is written (:func:`plan`), then the
planned files are copied out (:func:`extract`):

* names: an absolute path, a drive letter, a ``..`` component or a control character is refused; a backslash
  counts as a folder separator (archives made on Windows use it);
* links: a symbolic or hard link pointing outside the archive's folder is refused; one pointing inside is not
  created (logged): the supported sets have none, and a link made by an archive is how later members escape;
* kinds: devices, FIFOs and sparse files are refused;
* sizes: at most ``max_members`` members (folders included); each member's declared size at most
  :func:`~shapes3d.geometry.limits.max_uncompressed_bytes` (``SHAPES3D_MAX_UNCOMPRESSED``, default 1 GiB) and
  all of them together at most ``max_total``. The bytes actually written are counted against the same limits,
  so a header that understates a size gains nothing.

Hidden members (a component starting with ``.``: ``.DS_Store``, macOS ``._*`` files) and ``__MACOSX/`` folders
are checked like the others but not extracted. Files get the mode a plain ``open()`` gives (the archive's mode
bits, set-uid included, are ignored). Every refusal is an :class:`~shapes3d.errors.InputFileError` (or
:class:`~shapes3d.errors.TooLargeError`) naming the archive and the member.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from shapes3d.errors import CorruptFileError, InputFileError, TooLargeError
from shapes3d.geometry.limits import BoundedReader, check_declared
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)

#: Most members an archive may have (folders included). ModelNet40.zip has about 12 300 shape files.
MAX_MEMBERS = 200_000
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 20
_REFUSED = "refusing to extract the archive (nothing was extracted)"


@dataclass(frozen=True)
class Member:
    """One file to extract: its name in the archive, its cleaned relative path, declared size, reader's handle."""

    name: str
    path: PurePosixPath
    size: int
    ref: object


@dataclass(frozen=True)
class Plan:
    """What :func:`plan` found: the archive kind (``zip``/``tar``), the files to extract, their declared total,
    and how many members were left out (hidden files, ``__MACOSX/``, links inside the archive)."""

    kind: str
    files: tuple[Member, ...]
    total: int
    left_out: int


@dataclass(frozen=True)
class _Raw:
    name: str
    kind: str  # file, dir, symlink, hardlink, special
    size: int
    link: str
    ref: object


def archive_kind(path: Path) -> str:
    """``zip`` or ``tar`` (any compression tarfile reads), from the content; CorruptFileError otherwise."""
    import tarfile
    import zipfile

    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (OSError, EOFError):
        pass
    with open(path, "rb") as f:
        head = f.read(16)
    raise CorruptFileError(path, f"not a zip or tar archive (it starts with {head!r}); a web page instead of the "
                                 "file? check the address, or download the archive by hand and pass --archive")


def _name_problem(name: str) -> str | None:
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return "has a control character in its name"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "leads out of the folder ('..')"
    return None


def member_path(archive: Path, name: str) -> PurePosixPath:
    """The relative path a member name stands for (``.`` and empty parts dropped); InputFileError if unsafe."""
    problem = _name_problem(name)
    if problem is not None:
        raise InputFileError(archive, f"member {name!r} {problem}; {_REFUSED}")
    return PurePosixPath(*[p for p in re.split(r"[/\\]", name) if p not in ("", ".")])


def _check_link(archive: Path, raw: _Raw, rel: PurePosixPath) -> None:
    """Refuse a link whose target leaves the archive's folder (symlinks: relative to the link's folder)."""
    what = "symlink" if raw.kind == "symlink" else "hard link"
    base = "" if raw.kind == "hardlink" else posixpath.dirname(rel.as_posix())
    target = posixpath.normpath(posixpath.join(base, raw.link.replace("\\", "/")))
    if _name_problem(raw.link) == "is an absolute path" or target == ".." or target.startswith("../"):
        raise InputFileError(archive, f"member {raw.name!r} is a {what} leading outside the folder "
                                      f"(-> {raw.link}); {_REFUSED}")
    log.warning("%s: member %r is a %s (-> %s); links are not extracted", archive, raw.name, what, raw.link)


def _junk(rel: PurePosixPath) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in rel.parts)


def _zip_declared_count(path: Path) -> int | None:
    """The member count a zip's end-of-central-directory record declares (zip64's when present), read before
    ``zipfile`` loads the whole central directory into memory; None when the record is not found."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - (1 << 16) - 22))
        tail = f.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) < at + 22:
            return None
        count = struct.unpack_from("<H", tail, at + 10)[0]
        locator = at - 20
        if count != 0xFFFF or locator < 0 or tail[locator:locator + 4] != b"PK\x06\x07":
            return count
        f.seek(struct.unpack_from("<Q", tail, locator + 8)[0])
        record = f.read(40)
    if len(record) < 40 or record[:4] != b"PK\x06\x06":
        return None
    return struct.unpack_from("<Q", record, 32)[0]


def _zip_members(zf, archive: Path, max_members: int) -> Iterator[_Raw]:
    infos = zf.infolist()
    _check_count(archive, len(infos), max_members)
    for info in infos:
        mode = info.external_attr >> 16
        if info.is_dir() or stat.S_ISDIR(mode):
            kind, link = "dir", ""
        elif stat.S_ISLNK(mode):
            with zf.open(info) as f:  # a zip symlink's target is its content
                kind, link = "symlink", f.read(4096).decode("utf-8", "replace")
        elif stat.S_IFMT(mode) in (0, stat.S_IFREG):
            kind, link = "file", ""
        else:
            kind, link = "special", ""
        yield _Raw(info.filename, kind, info.file_size, link, info)


def _tar_members(tf, archive: Path, max_members: int) -> Iterator[_Raw]:
    # Checked as each header is read: tarfile skips a member's data only when asked for the next one, so a
    # refused size is refused before its bytes are inflated.
    for count, m in enumerate(tf, start=1):
        _check_count(archive, count, max_members)
        if m.isdir():
            kind = "dir"
        elif m.isreg() and not m.issparse():
            kind = "file"
        elif m.issym():
            kind = "symlink"
        elif m.islnk():
            kind = "hardlink"
        else:
            kind = "special"
        yield _Raw(m.name, kind, m.size, m.linkname, m)


def _check_count(archive: Path, count: int, max_members: int) -> None:
    if count > max_members:
        raise TooLargeError(archive, f"has more than {max_members} members, over the limit of shapes3d data fetch "
                                     f"(an archive bomb?); {_REFUSED}")


class _Opened:
    """A zip or tar archive open for :func:`plan` and :func:`extract`."""

    def __init__(self, path: Path, max_members: int | None) -> None:
        import tarfile
        import zipfile

        self.path, self.kind, self.max_members = path, archive_kind(path), max_members
        if self.kind == "zip" and max_members is not None:
            _check_count(path, _zip_declared_count(path) or 0, max_members)
        self._handle = zipfile.ZipFile(path) if self.kind == "zip" else tarfile.open(path, "r:*")

    def members(self) -> Iterator[_Raw]:
        reader = _zip_members if self.kind == "zip" else _tar_members
        return reader(self._handle, self.path, self.max_members)

    def open(self, ref):
        return self._handle.open(ref) if self.kind == "zip" else self._handle.extractfile(ref)

    def __enter__(self) -> _Opened:
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()


def _too_large_total(archive: Path, what: str, limit: int) -> TooLargeError:
    return TooLargeError(archive, f"{what} more than {limit} bytes uncompressed in all, over the limit for this data "
                                  f"set (a decompression bomb?); raise it with --max-bytes if the archive is genuine")


def _plan_open(arc: _Opened, *, max_total: int) -> Plan:
    files, total, left_out = [], 0, 0
    for raw in arc.members():
        rel = member_path(arc.path, raw.name)
        if raw.kind in ("symlink", "hardlink"):
            _check_link(arc.path, raw, rel)
            left_out += 1
            continue
        if raw.kind == "special":
            raise InputFileError(arc.path, f"member {raw.name!r} is a device, FIFO or sparse file, not a plain file "
                                           f"or folder; {_REFUSED}")
        if raw.kind == "dir" or not rel.parts:
            continue
        if _junk(rel):
            left_out += 1
            continue
        check_declared(arc.path, f"member {raw.name!r}", raw.size)
        total += raw.size
        if total > max_total:
            raise _too_large_total(arc.path, "its members declare", max_total)
        files.append(Member(raw.name, rel, raw.size, raw.ref))
    return Plan(arc.kind, tuple(files), total, left_out)


def plan(archive: str | os.PathLike, *, max_total: int, max_members: int = MAX_MEMBERS) -> Plan:
    """Check every member of ``archive`` (see the module docstring) and list the files to extract."""
    archive = Path(archive)
    with _unreadable_as_corrupt(archive), _Opened(archive, max_members) as arc:
        return _plan_open(arc, max_total=max_total)


@contextlib.contextmanager
def _unreadable_as_corrupt(archive: Path) -> Iterator[None]:
    """A truncated or damaged archive (bad CRC, cut-off stream) is a CorruptFileError naming it."""
    import tarfile
    import zipfile
    import zlib

    try:
        yield
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise CorruptFileError(archive, f"damaged or truncated archive ({exc}); nothing was extracted; delete it "
                                        "to download it again") from None


def _file_mode() -> int:
    """The mode a plain ``open()`` gives a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def _copy(src, target: Path, archive: Path, member: Member, budget: list[int], limit: int) -> None:
    reader = BoundedReader(src, archive, f"member {member.name!r}")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), _FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        while chunk := reader.read(_CHUNK):
            budget[0] += len(chunk)
            if budget[0] > limit:
                raise _too_large_total(archive, "its members decompress to", limit)
            out.write(chunk)


def extract(archive: str | os.PathLike, files: tuple[Member, ...] | list[Member], dest: str | os.PathLike, *,
            max_total: int, where: Callable[[Member], PurePosixPath] = lambda m: m.path) -> int:
    """Copy the planned ``files`` of ``archive`` into ``dest`` (each at ``where(member)``, a relative path), with
    a progress bar; returns the bytes written. The caller extracts into a fresh folder and removes it on error."""
    archive, dest = Path(archive), Path(dest)
    budget = [0]
    with _unreadable_as_corrupt(archive), _Opened(archive, None) as arc:  # plan() counted the members
        for member in progress(files, desc=f"extract {archive.name}", unit="file"):
            target = dest.joinpath(*where(member).parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with arc.open(member.ref) as src:
                    _copy(src, target, archive, member, budget, max_total)
            except OSError as exc:
                raise InputFileError(archive, f"member {member.name!r} cannot be written to {target} "
                                              f"({exc.strerror or exc})") from None
    return budget[0]
