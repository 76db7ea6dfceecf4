"""Run a per-shape work function over a dataset: worker processes, cache, shards, and a skip report.

A work function is a module-level ``fn(path: Path, **params) -> dict[str, np.ndarray]`` (it must
pickle by reference for worker processes, and its result must depend only on the file's content
and ``params``: results are cached under a key made from those, see :mod:`shapes3d.data.cache`).

:func:`run_preprocess` hashes each input, reuses a verified cache file when one exists (a corrupt
one is recomputed with a warning, never used), and computes the rest in-process (``workers=1``)
or in ``spawn``-started processes (fork and torch/open3d threads do not mix). Any exception from
``fn`` skips that file with its reason; a crashed worker process skips the file that crashed it
and a fresh pool carries on with the rest. Nothing stops the batch. Failures are not cached:
a skipped file is tried again on the next run (the file or ``fn`` may have been fixed), and every
cached result is re-verified against its checksum before it is counted as done.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from shapes3d.data.cache import (
    cache_key,
    cache_location,
    canonical_json,
    fn_name,
    input_identity,
    load_cached,
    write_cached,
)
from shapes3d.data.discovery import ManifestEntry
from shapes3d.errors import CheckpointError, ConfigError, Shapes3DError
from shapes3d.utils.io import atomic_write_text
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)

CRASH_REASON = "worker process crashed (killed, out of memory or a native-code fault) while processing this file"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (as given to ``--shard``) -> ``(i, n)`` with ``0 <= i < n``; ConfigError otherwise."""
    parts = str(text).split("/")
    try:
        i, n = (int(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        i = n = None
    if i is None or n is None or not 0 <= i < n:
        raise ConfigError(f"shard {text!r}: expected 'i/n' with integers 0 <= i < n, e.g. '0/4'")
    return i, n


def _check_shard(shard: Any) -> tuple[int, int] | None:
    if shard is None:
        return None
    if isinstance(shard, str):
        return parse_shard(shard)
    ok = (
        isinstance(shard, (tuple, list))
        and len(shard) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
    )
    if not ok or not 0 <= shard[0] < shard[1]:
        raise ConfigError(f"shard {shard!r}: expected None or (i, n) with integers 0 <= i < n")
    return int(shard[0]), int(shard[1])


@dataclass
class PreprocessReport:
    """Outcome of :func:`run_preprocess`; counts are of input files (``computed + cached + len(skipped)``
    equals the number of inputs in the shard)."""

    computed: int = 0
    cached: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    results: dict[Path, Path] = field(default_factory=dict)
    recomputed_corrupt: int = 0
    fn: str = ""
    version: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    shard: tuple[int, int] | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        shard = f" (shard {self.shard[0]}/{self.shard[1]})" if self.shard else ""
        corrupt = f", {self.recomputed_corrupt} corrupt caches redone" if self.recomputed_corrupt else ""
        return (
            f"{self.fn}{shard}: {self.computed} computed, {self.cached} cached, "
            f"{len(self.skipped)} skipped{corrupt} in {self.seconds:.1f} s"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "fn": self.fn,
            "version": self.version,
            "params": self.params,
            "shard": list(self.shard) if self.shard else None,
            "computed": self.computed,
            "cached": self.cached,
            "recomputed_corrupt": self.recomputed_corrupt,
            "seconds": self.seconds,
            "skipped": [{"path": str(p), "reason": r} for p, r in self.skipped],
            "results": {str(p): str(loc) for p, loc in self.results.items()},
        }

    def write(self, path: str | os.PathLike) -> None:
        """Save as indented JSON, atomically."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def read(cls, path: str | os.PathLike) -> PreprocessReport:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return cls(
            computed=d["computed"],
            cached=d["cached"],
            skipped=[(Path(s["path"]), s["reason"]) for s in d["skipped"]],
            results={Path(p): Path(loc) for p, loc in d["results"].items()},
            recomputed_corrupt=d["recomputed_corrupt"],
            fn=d["fn"],
            version=d["version"],
            params=d["params"],
            shard=tuple(d["shard"]) if d["shard"] else None,
            seconds=d["seconds"],
        )


class _Job(NamedTuple):
    key: str
    path: str
    location: str
    meta: dict[str, Any]


def _work(fn: Callable, params: dict[str, Any], job: _Job) -> str | None:
    """Compute and cache one file; the reason it failed, or None. Runs in workers, so it
    returns the reason as text: some exceptions (e.g. from C extensions) do not pickle."""
    try:
        write_cached(job.location, fn(Path(job.path), **params), meta=job.meta)
    except Exception as exc:  # one bad file must never stop the batch
        return f"{type(exc).__name__}: {exc}"
    return None


def _init_worker() -> None:
    # N workers each running a full-width BLAS/OpenMP pool would oversubscribe the cores;
    # the env var reaches libraries imported later (torch), threadpoolctl the loaded ones.
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1)


def _run_serial(jobs: list[_Job], fn: Callable, params: dict[str, Any]) -> Iterator[tuple[_Job, str | None]]:
    for job in jobs:
        yield job, _work(fn, params, job)


def _run_pool(
    jobs: list[_Job], fn: Callable, params: dict[str, Any], workers: int
) -> Iterator[tuple[_Job, str | None]]:
    ctx = multiprocessing.get_context("spawn")
    pending = deque(jobs)
    while pending:
        # At most 2 jobs per worker in flight, so a crash leaves few suspects to re-run alone.
        suspects: list[_Job] = []
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker)
        try:
            in_flight: dict[Any, _Job] = {}
            while (pending or in_flight) and not suspects:
                while pending and len(in_flight) < 2 * workers:
                    job = pending.popleft()
                    in_flight[pool.submit(_work, fn, params, job)] = job
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = in_flight.pop(fut)
                    try:
                        yield job, fut.result()
                    except BrokenProcessPool:
                        suspects.append(job)
                    except Exception as exc:  # e.g. fn or params failed to unpickle in the worker
                        yield job, f"{type(exc).__name__}: {exc}"
            suspects.extend(in_flight.values())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if suspects:
            log.warning(
                "a worker process died; re-running the %d files it may have been on one at a time", len(suspects)
            )
            yield from _run_isolated(suspects, fn, params, ctx)


def _ping() -> bool:
    return True


def _fresh_single_pool(ctx) -> ProcessPoolExecutor:
    """A one-process pool that is known to start: if even a no-op dies, the environment is at
    fault (e.g. the main script cannot be re-imported by ``spawn``), not any input file."""
    pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker)
    try:
        pool.submit(_ping).result()
    except BrokenProcessPool as exc:
        pool.shutdown(wait=True)
        raise Shapes3DError(
            "worker processes die on start-up; run with workers=1, or make the main script importable "
            "(code under `if __name__ == '__main__':`, not stdin or an interactive session)"
        ) from exc
    return pool


def _run_isolated(jobs: list[_Job], fn: Callable, params: dict[str, Any], ctx) -> Iterator[tuple[_Job, str | None]]:
    """Run each job alone in a one-process pool, so a crash is pinned on exactly that file."""
    pool = None
    try:
        for job in jobs:
            pool = pool or _fresh_single_pool(ctx)
            try:
                reason = pool.submit(_work, fn, params, job).result()
            except BrokenProcessPool:
                reason = CRASH_REASON
                pool.shutdown(wait=True)
                pool = None
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            yield job, reason
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _as_path(item: ManifestEntry | str | os.PathLike) -> Path:
    if isinstance(item, ManifestEntry):
        return item.path
    if isinstance(item, (str, os.PathLike)):
        return Path(item)
    raise ConfigError(f"input {item!r}: expected a ManifestEntry or a path")


def _checked_params(params, *, workers, version) -> tuple[dict, str]:
    """``params`` as a dict and its canonical JSON (part of every cache key), after checking the options."""
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise ConfigError(f"params {params!r}: expected a dict with str keys")
    if "path" in params:
        raise ConfigError("params has a 'path' key: the input path is fn's first argument, not a param")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers {workers!r}: expected an integer >= 1")
    if not isinstance(version, str):
        raise ConfigError(f"version {version!r}: expected a str")
    params = dict(params)
    return params, canonical_json(params)


def _plan(paths, report: PreprocessReport, bar, *, fn_name: str, version: str, params_json: str,
          cache_dir) -> tuple[dict[str, list[Path]], list[_Job]]:
    """Credit cache hits to ``report`` and return the jobs left to compute, keyed by content.

    Inputs with identical content share one key: computed once, credited to every path.
    """
    groups: dict[str, list[Path]] = {}
    jobs: list[_Job] = []
    for path in paths:
        try:
            sha, suffix = input_identity(path)
        except (OSError, Shapes3DError) as exc:
            _skip(report, path, f"{type(exc).__name__}: {exc}")
            bar.update(1)
            continue
        key = cache_key(fn=fn_name, version=version, params_json=params_json, input_sha256=sha, suffix=suffix)
        if key in groups:
            groups[key].append(path)
            continue
        location = cache_location(cache_dir, key)
        if location.exists():
            try:
                load_cached(location, mmap=True, verify=True)
                report.cached += 1
                report.results[path] = location
                bar.update(1)
                continue
            except CheckpointError as exc:
                log.warning("cache file is corrupt, recomputing it: %s", exc)
                report.recomputed_corrupt += 1
        meta = {"key": key, "fn": fn_name, "version": version, "params": report.params, "input_sha256": sha,
                "input_suffix": suffix}
        groups[key] = [path]
        jobs.append(_Job(key, str(path), str(location), meta))
    return groups, jobs


def run_preprocess(
    entries_or_paths: Iterable[ManifestEntry | str | os.PathLike],
    fn: Callable[..., Mapping[str, Any]],
    *,
    params: Mapping[str, Any],
    cache_dir: str | os.PathLike,
    workers: int = 1,
    shard: tuple[int, int] | str | None = None,
    desc: str = "preprocess",
    version: str = "1",
) -> PreprocessReport:
    """Apply ``fn(path, **params)`` to every input (of this shard) and cache the arrays it returns.

    Inputs are de-duplicated and sorted by path; shard ``(i, n)`` takes sorted input ``k`` when
    ``k % n == i``. Bump ``version`` when ``fn``'s code changes its output: the key does not see code.
    """
    name = fn_name(fn)
    params, params_json = _checked_params(params, workers=workers, version=version)
    shard = _check_shard(shard)
    paths = sorted({_as_path(item) for item in entries_or_paths}, key=str)
    if shard is not None:
        paths = paths[shard[0] :: shard[1]]
    report = PreprocessReport(fn=name, version=version, params=json.loads(params_json), shard=shard)
    start = time.perf_counter()
    bar = progress(total=len(paths), desc=desc, unit="shape")
    try:
        groups, jobs = _plan(paths, report, bar, fn_name=name, version=version, params_json=params_json,
                             cache_dir=cache_dir)
        # With workers > 1 even a single job goes to a process: a crash must never take down the caller.
        if workers == 1 or not jobs:
            runner = _run_serial(jobs, fn, params)
        else:
            runner = _run_pool(jobs, fn, params, min(workers, len(jobs)))
        for job, reason in runner:
            for path in groups[job.key]:
                if reason is None:
                    report.computed += 1
                    report.results[path] = Path(job.location)
                else:
                    _skip(report, path, reason)
            bar.update(len(groups[job.key]))
    finally:
        bar.close()
    report.skipped.sort(key=lambda item: str(item[0]))
    report.results = dict(sorted(report.results.items(), key=lambda item: str(item[0])))
    report.seconds = time.perf_counter() - start
    log.info("%s", report.summary())
    return report


def _skip(report: PreprocessReport, path: Path, reason: str) -> None:
    log.warning("skipped %s: %s", path, reason)
    report.skipped.append((path, reason))
