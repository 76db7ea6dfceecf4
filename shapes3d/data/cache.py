"""On-disk cache of per-shape arrays: keys, checksummed files, lazy loading, merging shards.

Format (decided here, stated once): one **uncompressed ``.npz``** file per cache entry,
``cache_dir/<key[:2]>/<key>.npz``, written with :func:`shapes3d.utils.io.atomic_write` so a
reader never sees half a file. Members are ``<name>.npy`` arrays plus ``__meta__.json``
holding, per array, dtype, shape and the sha256 of its C-order bytes. One file per entry
keeps an entry atomic (also while merging shards) and costs one inode; being uncompressed,
every member can be memory-mapped straight from the zip (``mmap=True``). Members carry a
fixed timestamp, so equal inputs give byte-identical files on any machine.

Loading never unpickles: arrays go through ``numpy.lib.format`` with ``allow_pickle=False``
and the metadata is JSON. A truncated or altered file raises :class:`CheckpointError`, and so
does an entry that is intact but not the one asked for: every read compares the key stored in
the metadata with the file's name (``<key>.npz``) and, when given, with the requested key and
input sha256, so a cache file copied or renamed over another is never served for the wrong shape.

Keys are the sha256 of canonical JSON of (function name, version, params, the input's
**content** sha256 and suffix). Content, not size+mtime: it survives copying datasets
between machines (shard caches made elsewhere still match when merged) and ``touch``; its
cost is one read of each input per run, small next to any per-shape work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shapes3d.errors import CheckpointError, ConfigError, InputFileError, MissingFileError
from shapes3d.utils.io import atomic_write, safe_child, sha256_file

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
_META = "__meta__.json"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip's earliest date: no wall-clock time in the bytes


def fn_name(fn: Callable) -> str:
    """``module.qualname`` of a module-level function; anything else cannot be keyed or pickled."""
    if not callable(fn):
        raise ConfigError(f"fn {fn!r}: expected a module-level function")
    module, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qual or "<" in qual:
        raise ConfigError(f"fn {qual or repr(fn)}: expected a module-level function (no lambda, closure or partial)")
    return f"{module}.{qual}"


def canonical_json(value: Any, *, what: str = "params") -> str:
    """Sorted, whitespace-free JSON; numpy scalars/arrays and paths become plain values."""

    def plain(v: Any) -> Any:
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        raise TypeError(f"{type(v).__name__} {v!r}")

    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=plain)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{what} {value!r}: expected JSON-like values (numbers, strings, lists, dicts): {exc}"
        ) from exc


def cache_key(*, fn: str, version: str, params_json: str, input_sha256: str, suffix: str) -> str:
    """Hex sha256 identifying one (function, version, params, input content) combination."""
    blob = json.dumps(
        {"format": CACHE_FORMAT, "fn": fn, "version": version, "params": json.loads(params_json),
         "input": {"sha256": input_sha256, "suffix": suffix.lower()}},
        sort_keys=True, separators=(",", ":"),
    )  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()


def input_identity(path: Path) -> tuple[str, str]:
    """(content sha256, lower-case suffix) of an input file; MissingFileError if absent, InputFileError if unreadable."""
    path = Path(path)
    try:
        if not path.is_file():
            raise MissingFileError(path, "file does not exist" if not path.is_dir()
                                   else "is a directory, expected a shape file")
        return sha256_file(path), path.suffix.lower()
    except MissingFileError:
        raise
    except OSError as exc:  # permission denied, I/O error
        raise InputFileError(path, f"cannot read the file ({exc.strerror or type(exc).__name__})") from None


def cache_location(cache_dir: str | os.PathLike, key: str) -> Path:
    """``cache_dir/<key[:2]>/<key>.npz``; ``key`` must be a hex digest (it may come from a file name)."""
    if not isinstance(key, str) or len(key) < 2 or any(c not in "0123456789abcdef" for c in key):
        raise ConfigError(f"cache key {key!r}: expected a lower-case hex digest")
    return safe_child(safe_child(cache_dir, key[:2], what="cache folder"), f"{key}.npz", what="cache file")


def _array_sha256(arr: np.ndarray) -> str:
    h = hashlib.sha256()
    # reshape(-1) first so 0-d arrays work too; a contiguous memmap is hashed without a copy.
    h.update(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
    return h.hexdigest()


def check_arrays(result: Any) -> dict[str, np.ndarray]:
    """The work function's result as a dict of plain numeric arrays, or TypeError naming the bad item."""
    if not isinstance(result, Mapping):
        raise TypeError(f"work function returned {type(result).__name__}: expected dict[str, np.ndarray]")
    arrays = {}
    for name, value in result.items():
        if not isinstance(name, str) or not name or "/" in name or name.startswith("__"):
            raise TypeError(f"array name {name!r}: expected a non-empty str without '/' and not starting with '__'")
        arr = np.asarray(value)
        if arr.dtype.hasobject:
            raise TypeError(f"array {name!r} has dtype object: expected numeric or bool data (caches never pickle)")
        arrays[name] = arr
    return arrays


def write_cached(location: str | os.PathLike, arrays: Mapping[str, np.ndarray], *, meta: Mapping[str, Any]) -> None:
    """Write ``arrays`` (and JSON ``meta``) atomically as one checksummed uncompressed npz."""
    arrays = check_arrays(arrays)
    info = {
        name: {"dtype": arr.dtype.str, "shape": list(arr.shape), "sha256": _array_sha256(arr)}
        for name, arr in arrays.items()
    }
    meta_json = json.dumps({**meta, "format": CACHE_FORMAT, "arrays": info}, sort_keys=True, indent=1)
    with atomic_write(location, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            zinfo = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_TIME)
            with zf.open(zinfo, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, arrays[name], allow_pickle=False)
        zf.writestr(zipfile.ZipInfo(_META, date_time=_FIXED_TIME), meta_json)


def _mmap_member(path: Path, f, zinfo: zipfile.ZipInfo) -> np.ndarray:
    # A stored member's bytes start after its local header: 30 fixed bytes, then the name and
    # an extra field whose lengths sit at offsets 26 and 28 (they may differ from the central copy).
    if zinfo.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(path, f"member {zinfo.filename} is compressed; cannot memory-map it")
    f.seek(zinfo.header_offset + 26)
    name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
    f.seek(zinfo.header_offset + 30 + int(name_len) + int(extra_len))
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise CheckpointError(path, f"member {zinfo.filename} uses .npy version {version}; cannot memory-map it")
    if dtype.hasobject:
        raise CheckpointError(path, f"member {zinfo.filename} holds Python objects; refusing to load it")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if f.tell() + count * dtype.itemsize > os.fstat(f.fileno()).st_size:
        raise CheckpointError(path, f"member {zinfo.filename} is truncated")
    if count == 0:
        return np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    return np.memmap(path, dtype=dtype, mode="r", offset=f.tell(), shape=shape, order="F" if fortran else "C")


def read_meta(location: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a cache file (no arrays read); CheckpointError if unreadable."""
    path = Path(location)
    if not path.is_file():
        raise MissingFileError(path, "cache file does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read(_META))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as exc:
        raise CheckpointError(path, f"unreadable cache file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(path, f"metadata is a JSON {type(meta).__name__}, expected an object")
    return meta


def _is_key(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def check_identity(path: Path, meta: Mapping[str, Any], *, expect_key: str | None = None,
                   expect_input_sha256: str | None = None) -> None:
    """CheckpointError unless the entry at ``path`` is the one asked for.

    The stored key must equal the file name's (``<key>.npz``, when the name is a key) and
    ``expect_key``; the stored input sha256 must equal ``expect_input_sha256``. A mismatch means
    the file was copied or renamed over another entry: its arrays belong to a different shape.
    """
    stored = meta.get("key")
    if _is_key(path.stem) and stored is not None and stored != path.stem:
        raise CheckpointError(path, f"cache entry stores key {str(stored)[:16]}..., but its file name is key "
                                    f"{path.stem[:16]}... (copied or renamed over another entry)")
    if expect_key is not None and stored != expect_key:
        raise CheckpointError(path, f"cache entry stores key {str(stored)[:16]}..., expected {expect_key[:16]}... "
                                    "(it belongs to another input or parameters)")
    if expect_input_sha256 is not None and meta.get("input_sha256") != expect_input_sha256:
        raise CheckpointError(path, f"cache entry was made from input sha256 {str(meta.get('input_sha256'))[:16]}..., "
                                    f"expected {expect_input_sha256[:16]}... (it belongs to another input)")


def load_cached(location: str | os.PathLike, *, mmap: bool = False, verify: bool = True,
                expect_key: str | None = None, expect_input_sha256: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of a cache file, by name.

    ``mmap=True`` returns read-only memory maps into the file (nothing copied to RAM until
    touched); ``verify=True`` checks every array against its stored sha256, which reads the
    bytes once. The entry's identity is always checked (:func:`check_identity`: stored key
    against the file name, and against ``expect_key`` / ``expect_input_sha256`` when given).
    Raises :class:`CheckpointError` naming the file if it is truncated, altered, not a cache
    file, or another entry's; never unpickles.
    """
    path = Path(location)
    meta = read_meta(path)
    info = meta.get("arrays")
    if not isinstance(info, dict) or meta.get("format") != CACHE_FORMAT:
        raise CheckpointError(path, f"not a shapes3d cache file of format {CACHE_FORMAT}")
    check_identity(path, meta, expect_key=expect_key, expect_input_sha256=expect_input_sha256)
    arrays = {}
    try:
        with open(path, "rb") as f, zipfile.ZipFile(f) as zf:
            members = {z.filename: z for z in zf.infolist()}
            for name, spec in info.items():
                zinfo = members.get(f"{name}.npy")
                if zinfo is None:
                    raise CheckpointError(path, f"array {name!r} listed in metadata is missing")
                if mmap:
                    arr = _mmap_member(path, f, zinfo)
                else:
                    with zf.open(zinfo) as member:  # zipfile checks the member's CRC32 on the way
                        arr = np.lib.format.read_array(member, allow_pickle=False)
                if arr.dtype.str != spec["dtype"] or list(arr.shape) != spec["shape"]:
                    raise CheckpointError(
                        path,
                        f"array {name!r} is {arr.dtype.str}{list(arr.shape)}, metadata says {spec['dtype']}{spec['shape']}",
                    )
                if verify and _array_sha256(arr) != spec["sha256"]:
                    raise CheckpointError(path, f"array {name!r} fails its sha256 checksum (corrupted)")
                arrays[name] = arr
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, TypeError) as exc:
        raise CheckpointError(path, f"unreadable cache file ({type(exc).__name__}: {exc})") from exc
    return arrays


def iter_cache_files(cache_dir: str | os.PathLike) -> list[Path]:
    """Every cache file under ``cache_dir`` (``<xx>/<key>.npz``), sorted; temp files excluded."""
    root = Path(cache_dir)
    return sorted(p for p in root.glob("??/*.npz")
                  if p.stem[:2] == p.parent.name and all(c in "0123456789abcdef" for c in p.stem))


@dataclass
class MergeReport:
    """What :func:`merge_caches` did: files copied, duplicates skipped, invalid files left out."""

    copied: int = 0
    duplicates: int = 0
    invalid: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"merge: {self.copied} copied, {self.duplicates} duplicates skipped, {len(self.invalid)} invalid left out"
        )


def _valid(path: Path) -> str | None:
    """None if the cache file at ``path`` loads and verifies, else the reason."""
    try:
        meta = read_meta(path)
        if meta.get("key") not in (None, path.stem):
            return f"{path}: file name does not match the key {meta.get('key')} it stores"
        load_cached(path, mmap=True, verify=True, expect_key=meta.get("key"))
    except CheckpointError as exc:
        return str(exc)
    return None


def merge_caches(src_dirs: Iterable[str | os.PathLike], dst_dir: str | os.PathLike) -> MergeReport:
    """Copy the verified cache files of ``src_dirs`` (e.g. one per shard) into ``dst_dir``.

    A source file failing its checksum is left out and listed; one whose key ``dst_dir``
    already holds (valid) is a duplicate and skipped; an invalid destination file is replaced.
    """
    dst_dir = Path(dst_dir)
    report = MergeReport()
    for src_dir in src_dirs:
        src_dir = Path(src_dir)
        if not src_dir.is_dir():
            raise MissingFileError(src_dir, "cache folder to merge does not exist")
        for src in iter_cache_files(src_dir):
            reason = _valid(src)
            if reason is not None:
                log.warning("merge: leaving out %s", reason)
                report.invalid.append((src, reason))
                continue
            dst = cache_location(dst_dir, src.stem)
            if dst.resolve() == src.resolve():
                report.duplicates += 1
                continue
            if dst.exists():
                if _valid(dst) is None:
                    report.duplicates += 1
                    continue
                log.warning("merge: replacing invalid %s with %s", dst, src)
            with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
                shutil.copyfileobj(fin, fout)
            report.copied += 1
    log.debug("%s", report.summary())  # the caller prints it (data merge), once
    return report
