"""Download a standard data set and lay it out as discovery expects: ``shapes3d data fetch``.

:func:`fetch_dataset` puts ``modelnet10``, ``modelnet40`` or ``shrec11`` into ``OUT/<folder>`` in the
``<class>/{train,test}/<file>`` layout of :func:`shapes3d.data.discovery.discover`, in five steps:

1. **download** the archive to ``OUT/<archive>`` (or take ``archive=``, a local copy; or ``url=``, a mirror: any
   http, https or file URL). Bytes go to ``OUT/<archive>.part`` first; an interrupted download keeps it, and the
   next call asks the server for the rest (an HTTP ``Range`` request; a server that ignores it sends the whole
   file again). An archive already complete in ``OUT`` is not downloaded again.
2. **verify** its SHA-256 before anything is extracted, against ``sha256=`` if given, else the value recorded in
   ``OUT/<archive>.sha256`` by an earlier fetch. The official sites publish no checksums, so the first download
   records its own (trust on first use, said so in the result); a later download or a mirror must then match.
3. **plan** the extraction (:mod:`shapes3d.data.archives`): every member checked (no absolute paths, no ``..``,
   no links out, member count and uncompressed size limits) before a byte is written.
4. **extract** into a fresh hidden folder inside ``OUT``, dropping the folders every file sits in above
   ``<class>/<split>/<file>`` (``ModelNet10/`` of the official zip, ``shrec_16/`` of the MeshCNN tarball), and
   check with discovery that the result is a ``<class>/{train,test}`` set; ``FETCHED.json`` records where it
   came from.
5. **place** it: one rename of that folder to ``OUT/<folder>`` (``overwrite=True`` replaces an existing one),
   so ``OUT/<folder>`` is either absent or complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from shapes3d.data.archives import MAX_MEMBERS, Member, extract, plan
from shapes3d.errors import CorruptFileError, InputFileError, MissingFileError, Shapes3DError
from shapes3d.utils.io import atomic_write_text, sha256_file
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)

_GiB = 1 << 30


@dataclass(frozen=True)
class DatasetSpec:
    """A data set ``fetch`` knows: its archive's official address and file name, the folder it is laid out in,
    its published SHA-256 (None: none published) and a ceiling on its uncompressed size (a generous bound
    against decompression bombs, not a measurement)."""

    name: str
    folder: str
    url: str
    archive: str
    sha256: str | None
    max_bytes: int
    source: str


DATASETS: dict[str, DatasetSpec] = {
    "modelnet10": DatasetSpec(
        "modelnet10", "ModelNet10", "http://3dvision.princeton.edu/projects/2014/3DShapeNets/ModelNet10.zip",
        "ModelNet10.zip", None, 8 * _GiB, "ModelNet10 (Wu et al., 3D ShapeNets, CVPR 2015)"),
    "modelnet40": DatasetSpec(
        "modelnet40", "ModelNet40", "http://modelnet.cs.princeton.edu/ModelNet40.zip",
        "ModelNet40.zip", None, 32 * _GiB, "ModelNet40 (Wu et al., 3D ShapeNets, CVPR 2015)"),
    # MeshCNN's simplified SHREC'11 (500 faces a mesh, 16 train / 4 test per class); dl=1 makes Dropbox send
    # the file instead of its preview page.
    "shrec11": DatasetSpec(
        "shrec11", "SHREC11", "https://www.dropbox.com/s/w16st84r6wc57u7/shrec_16.tar.gz?dl=1",
        "shrec_16.tar.gz", None, 1 * _GiB,
        "SHREC'11 non-rigid (Lian et al., 3DOR 2011), simplified and split by MeshCNN (Hanocka et al. 2019)"),
}
#: ``<class>/<split>/<file>``: the parts discovery's ModelNet layout expects below the set's folder.
_LAYOUT_DEPTH = 3
_TIMEOUT_S = 60.0
_CHUNK = 1 << 16


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch_dataset` wrote: the set's folder, the archive (None when deleted), its SHA-256 and how it
    was checked, the bytes downloaded by this call, the files extracted and the set as discovery sees it."""

    name: str
    folder: Path
    archive: Path | None
    sha256: str
    checksum: str
    downloaded: int
    files: int
    shapes: int
    classes: int
    splits: dict[str, int] = field(default_factory=dict)
    record: Path | None = None

    def summary(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in sorted(self.splits.items(), key=lambda kv: (kv[0] != "train", kv[0])))
        lines = [f"wrote {self.folder}: {self.shapes} shapes, {self.classes} classes ({splits})",
                 f"sha256 {self.sha256} ({self.checksum})"]
        lines.append(f"archive kept: {self.archive}" if self.archive is not None else "archive deleted")
        return "\n".join(lines)


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise Shapes3DError(f"unknown data set {name!r}: expected one of {', '.join(DATASETS)}") from None


def _open_url(url: str, offset: int):
    """The response to GET ``url`` (from byte ``offset`` when > 0); Shapes3DError naming the URL on failure."""
    import urllib.error
    import urllib.request

    from shapes3d import __version__

    req = urllib.request.Request(url, headers={"User-Agent": f"shapes3d/{__version__}"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(req, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return None  # the part is not a prefix the server knows: start over
        raise Shapes3DError(f"cannot download {url}: HTTP {exc.code} {exc.reason}; pass --url with a mirror, or "
                            "--archive with a copy downloaded by other means") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise Shapes3DError(f"cannot download {url}: {reason}; check the address and the connection, or pass "
                            "--archive with a copy downloaded by other means") from None


def _resumed_from(resp, offset: int) -> int:
    """Where the response's body starts: ``offset`` for a 206 answer that continues the part, else 0."""
    if not offset or resp.getcode() != 206:
        return 0
    content_range = resp.headers.get("Content-Range", "")  # bytes START-END/TOTAL
    start = content_range.removeprefix("bytes ").split("-")[0]
    return offset if start.strip() == str(offset) else 0


def _interrupted(url: str, part: Path, have: int, total: int | None, reason: str) -> Shapes3DError:
    of = f" of {total}" if total is not None else ""
    return Shapes3DError(f"download of {url} stopped after {have}{of} bytes ({reason}); {part} is kept: run the "
                         "same command again to resume")


def download(url: str, target: str | os.PathLike) -> int:
    """Download ``url`` to ``target`` through ``target.part``, resuming a part left by an earlier call; returns
    the bytes transferred by this call. An interrupted transfer keeps the part and raises Shapes3DError."""
    import http.client

    target = Path(target)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    resp = _open_url(url, have)
    if resp is None:
        part.unlink()
        have, resp = 0, _open_url(url, 0)
    with resp:
        start = _resumed_from(resp, have)
        if have and not start:
            log.info("%s: the server sent the whole file instead of the rest; starting over", url)
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None and length.isdigit() else None
        target.parent.mkdir(parents=True, exist_ok=True)
        size, moved = start, 0
        with open(part, "ab" if start else "wb") as f, progress(total=total, desc=f"download {target.name}",
                                                                unit="B") as bar:
            bar.update(start)
            try:
                while chunk := resp.read(_CHUNK):
                    f.write(chunk)
                    size += len(chunk)
                    moved += len(chunk)
                    bar.update(len(chunk))
            except (http.client.HTTPException, OSError) as exc:
                raise _interrupted(url, part, size, total, type(exc).__name__) from None
            f.flush()
            os.fsync(f.fileno())
    if total is not None and size != total:
        raise _interrupted(url, part, size, total, "the connection closed early")
    os.replace(part, target)
    return moved


def _read_recorded(sidecar: Path) -> str | None:
    if not sidecar.is_file():
        return None
    words = sidecar.read_text(encoding="utf-8").split()
    if not words or len(words[0]) != 64:
        raise CorruptFileError(sidecar, "expected a sha256sum line '<64 hex digits>  <file name>'")
    return words[0].lower()


def verify_checksum(archive: Path, sidecar: Path, expected: str | None) -> tuple[str, str]:
    """``(sha256, how it was checked)``; CorruptFileError naming the archive when it does not match. Without an
    ``expected`` value the one recorded in ``sidecar`` counts; without that, the checksum is recorded there."""
    actual = sha256_file(archive)
    recorded = _read_recorded(sidecar)
    if expected is not None:
        wanted, how = expected.lower(), "matches --sha256"
    elif recorded is not None:
        wanted, how = recorded, f"matches the checksum recorded in {sidecar}"
    else:
        atomic_write_text(sidecar, f"{actual}  {archive.name}\n")
        return actual, f"no published checksum: recorded in {sidecar} at this first download"
    if actual != wanted:
        if expected is not None:
            source, advice = "--sha256", "Delete the archive to download it again, or check the mirror"
        else:
            source = f"recorded in {sidecar}"
            advice = (f"Delete the archive to download it again, or check the mirror; if the set changed upstream "
                      f"and you trust the new archive, delete {sidecar.name}")
        raise CorruptFileError(archive, f"SHA-256 {actual} does not match the expected {wanted} ({source}); "
                                        f"nothing was extracted. {advice}")
    if recorded != actual:  # first record, or --sha256 vouches for an archive other than the recorded one
        atomic_write_text(sidecar, f"{actual}  {archive.name}\n")
    return actual, how


def _select(archive: Path, files: tuple[Member, ...]) -> tuple[list[Member], int]:
    """The files to extract and how many leading folders to drop: those every shape file shares above
    ``<class>/<split>/<file>`` (``ModelNet10/`` of the official zip). Files outside them are left out (logged)."""
    from shapes3d.data.discovery import SHAPE_EXTENSIONS

    shapes = [m for m in files if m.path.suffix.lower() in SHAPE_EXTENSIONS] or list(files)
    depth = 0
    while all(len(m.path.parts) > _LAYOUT_DEPTH + depth for m in shapes) and \
            len({m.path.parts[depth] for m in shapes}) == 1:
        depth += 1
    prefix = shapes[0].path.parts[:depth]
    kept = [m for m in files if m.path.parts[:depth] == prefix and len(m.path.parts) > depth]
    if len(kept) < len(files):
        log.info("%s: %d files outside %s/ left out", archive, len(files) - len(kept), "/".join(prefix))
    return kept, depth


def _laid_out(archive: Path, spec: DatasetSpec, tmp: Path, n_files: int):
    from shapes3d.data.discovery import discover

    try:
        return discover(tmp, layout="modelnet")
    except InputFileError:
        raise InputFileError(archive, f"extracted {n_files} files, but none sits in <class>/{{train,test}}/ as "
                                      f"{spec.folder} should; nothing was placed") from None


def _unpack(archive: Path, spec: DatasetSpec, out: Path, *, max_total: int, max_members: int):
    """Extract ``archive`` into a fresh hidden folder of ``out``; ``(folder, manifest, files)``. The folder is
    removed on any error (nothing half-extracted stays)."""
    found = plan(archive, max_total=max_total, max_members=max_members)
    if not found.files:
        raise InputFileError(archive, "holds no files to extract")
    kept, depth = _select(archive, found.files)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.folder}.", suffix=".partial", dir=out))
    try:
        extract(archive, kept, tmp, max_total=max_total, where=lambda m: PurePosixPath(*m.path.parts[depth:]))
        manifest = _laid_out(archive, spec, tmp, len(kept))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if found.left_out:
        log.info("%s: %d hidden, __MACOSX or link members left out", archive, found.left_out)
    return tmp, manifest, len(kept)


def _place(tmp: Path, final: Path, overwrite: bool) -> None:
    """Rename ``tmp`` to ``final`` (same folder: one atomic step); an existing ``final`` is replaced only with
    ``overwrite``, by moving it aside first and deleting it once the new folder is in place."""
    old = None
    if final.exists():
        if not overwrite:
            raise Shapes3DError(f"{final} already exists; remove it or pass --overwrite to replace it")
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        if old is not None:
            os.rename(old, final)  # put the previous copy back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _get_archive(spec: DatasetSpec, out: Path, url: str | None, archive: Path | None) -> tuple[Path, int]:
    """The archive to unpack and the bytes downloaded for it now (0: a local copy or one already in ``out``)."""
    if archive is not None:
        if not archive.is_file():
            raise MissingFileError(archive, "archive does not exist")
        return archive, 0
    target = out / spec.archive
    if target.is_file():
        log.info("%s: already downloaded; verifying it (delete it to download again)", target)
        return target, 0
    return target, download(url or spec.url, target)


def _record(tmp: Path, spec: DatasetSpec, source: str, sha: str, checksum: str, files: int) -> None:
    meta = {"dataset": spec.name, "source": source, "sha256": sha, "checksum": checksum, "files": files,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "citation": spec.source}
    atomic_write_text(tmp / "FETCHED.json", json.dumps(meta, indent=2) + "\n")


def fetch_dataset(name: str, out: str | os.PathLike, *, url: str | None = None,
                  archive: str | os.PathLike | None = None, sha256: str | None = None, overwrite: bool = False,
                  keep_archive: bool = True, max_bytes: int | None = None,
                  max_members: int = MAX_MEMBERS) -> FetchResult:
    """Download (or take ``archive``), verify, extract safely and lay out the data set ``name`` in
    ``out/<folder>`` (see the module docstring). ``max_bytes`` caps the uncompressed total (default: the set's
    ceiling in :data:`DATASETS`); ``keep_archive=False`` deletes a downloaded archive once the set is placed
    (a local ``archive`` is never deleted)."""
    spec = _spec(name)
    out = Path(out)
    final = out / spec.folder
    if final.exists() and not overwrite:  # before downloading gigabytes
        raise Shapes3DError(f"{final} already exists; remove it or pass --overwrite to replace it")
    local = Path(archive) if archive is not None else None
    path, moved = _get_archive(spec, out, url, local)
    sha, how = verify_checksum(path, out / f"{path.name}.sha256", sha256)
    tmp, manifest, files = _unpack(path, spec, out, max_total=max_bytes or spec.max_bytes, max_members=max_members)
    try:
        _record(tmp, spec, str(local.resolve()) if local else (url or spec.url), sha, how, files)
        _place(tmp, final, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    kept = path
    if local is None and not keep_archive:
        path.unlink()
        kept = None
    splits: dict[str, int] = {}
    for e in manifest.entries:
        splits[e.split] = splits.get(e.split, 0) + 1
    return FetchResult(spec.name, final, kept, sha, how, moved, files, len(manifest), len(manifest.classes), splits,
                       final / "FETCHED.json")
