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
cached result is re-verified against its checksum (and its identity: stored key and input
hash must be the ones asked for) before it is counted as done.

Workers: ``workers=N`` is capped by the CPUs this process may use and by the memory available
(``MemAvailable`` in ``/proc/meminfo``, :data:`WORKER_MEMORY_BYTES` per worker); the cap is logged.
``timeout_s`` bounds each file's work: a job running longer is skipped with
:data:`TIMEOUT_REASON` and its worker process replaced (this needs worker processes, so with a
time limit even ``workers=1`` runs its jobs in one). SIGINT and SIGTERM stop the run the same
way: every worker process is terminated (SIGTERM, then SIGKILL after a grace period), the
cache keeps only complete entries (each is written atomically; a terminated worker removes its
temp file), and :class:`~shapes3d.errors.Interrupted` is raised, carrying the partial report,
so a CLI exits 130/143 and a re-run resumes from the cache.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shapes3d.data.cache import (
    cache_key,
    cache_location,
    canonical_json,
    fn_name,
    input_identity,
    load_cached,
)
from shapes3d.data.discovery import ManifestEntry
from shapes3d.data.workers import CRASH_REASON, TIMEOUT_REASON, _Job, _run_pool, _run_serial, _work  # noqa: F401
from shapes3d.errors import CheckpointError, ConfigError, Interrupted, Shapes3DError
from shapes3d.utils.io import atomic_write_text, remove_stale_temporaries
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)

#: Skip reason of a job that ran past ``timeout_s`` (formatted with ``seconds``).
#: Memory assumed per worker process (spawn start-up, numpy/trimesh/torch imports, one shape's work):
#: ``workers`` is capped at MemAvailable // WORKER_MEMORY_BYTES.
WORKER_MEMORY_BYTES = 600 * 1000 * 1000
#: Seconds terminated workers get to clean up (remove temp files) before they are killed.


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

    def summary(self, label: str | None = None) -> str:
        """One line; ``label`` names the task for people (e.g. ``voxels``; default: its qualified name)."""
        shard = f" (shard {self.shard[0]}/{self.shard[1]})" if self.shard else ""
        corrupt = f", {self.recomputed_corrupt} corrupt caches redone" if self.recomputed_corrupt else ""
        return (
            f"{label or self.fn}{shard}: {self.computed} computed, {self.cached} cached, "
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


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available_memory_bytes() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` in bytes, or None where it cannot be read (not Linux)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cap_workers(requested: int, n_jobs: int) -> int:
    """``requested`` workers capped by the jobs, the CPUs and the memory available; a cap is logged."""
    cpus = available_cpus()
    memory = available_memory_bytes()
    by_memory = max(1, memory // WORKER_MEMORY_BYTES) if memory is not None else requested
    workers = max(1, min(requested, n_jobs, cpus, by_memory))
    if workers < min(requested, n_jobs):
        mem = f"{memory / 1e9:.1f} GB" if memory is not None else "unknown"
        log.info("workers=%d capped to %d: %d CPUs usable by this process, %s memory available "
                 "(~%d MB assumed per worker)", requested, workers, cpus, mem, WORKER_MEMORY_BYTES // 10**6)
    return workers


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """While active, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread (once; repeats
    are ignored while the run cleans up). Outside the main thread signals cannot be handled: no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired: list[str] = []

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if fired:
            log.warning("%s again: still stopping the workers", name)
            return
        fired.append(name)
        raise Interrupted(name)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


def _as_path(item: ManifestEntry | str | os.PathLike) -> Path:
    if isinstance(item, ManifestEntry):
        return item.path
    if isinstance(item, (str, os.PathLike)):
        return Path(item)
    raise ConfigError(f"input {item!r}: expected a ManifestEntry or a path")


def _checked_params(params, *, workers, version, timeout_s=None) -> tuple[dict, str]:
    """``params`` as a dict and its canonical JSON (part of every cache key), after checking the options."""
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise ConfigError(f"params {params!r}: expected a dict with str keys")
    if "path" in params:
        raise ConfigError("params has a 'path' key: the input path is fn's first argument, not a param")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers {workers!r}: expected an integer >= 1")
    if not isinstance(version, str):
        raise ConfigError(f"version {version!r}: expected a str")
    if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                  or not timeout_s > 0 or timeout_s == float("inf")):
        raise ConfigError(f"timeout_s {timeout_s!r}: expected None or a number of seconds > 0")
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
            try:  # checksums and identity: an entry copied over this one belongs to another shape
                load_cached(location, mmap=True, verify=True, expect_key=key, expect_input_sha256=sha)
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
    timeout_s: float | None = None,
) -> PreprocessReport:
    """Apply ``fn(path, **params)`` to every input (of this shard) and cache the arrays it returns.

    Inputs are de-duplicated and sorted by path; shard ``(i, n)`` takes sorted input ``k`` when
    ``k % n == i``. Bump ``version`` when ``fn``'s code changes its output: the key does not see code.
    ``workers`` is capped (CPUs, memory; see :func:`cap_workers`). ``timeout_s``: per-file time
    limit; a job over it is skipped with :data:`TIMEOUT_REASON` and its worker replaced.
    SIGINT/SIGTERM: workers are stopped and :class:`~shapes3d.errors.Interrupted` is raised with
    the report so far as ``partial``; cached entries stay valid, so a re-run resumes.
    """
    name = fn_name(fn)
    params, params_json = _checked_params(params, workers=workers, version=version, timeout_s=timeout_s)
    shard = _check_shard(shard)
    paths = sorted({_as_path(item) for item in entries_or_paths}, key=str)
    if shard is not None:
        paths = paths[shard[0] :: shard[1]]
    report = PreprocessReport(fn=name, version=version, params=json.loads(params_json), shard=shard)
    start = time.perf_counter()
    bar = progress(total=len(paths), desc=desc, unit="shape")
    runner = None
    try:
        with _interruptible():
            remove_stale_temporaries(cache_dir, recursive=True)  # left by writers killed in earlier runs
            groups, jobs = _plan(paths, report, bar, fn_name=name, version=version, params_json=params_json,
                                 cache_dir=cache_dir)
            # With workers > 1 even a single job goes to a process: a crash must never take down the
            # caller; a time limit needs a process too (a running job can only be stopped by killing it).
            if not jobs or (workers == 1 and timeout_s is None):
                runner = _run_serial(jobs, fn, params)
            else:
                runner = _run_pool(jobs, fn, params, cap_workers(workers, len(jobs)), timeout_s)
            for job, reason in runner:
                for path in groups[job.key]:
                    if reason is None:
                        report.computed += 1
                        report.results[path] = Path(job.location)
                    else:
                        _skip(report, path, reason)
                bar.update(len(groups[job.key]))
    except Interrupted as exc:
        if runner is not None:
            runner.close()  # stops the workers now, if the signal arrived outside the runner
        report.seconds = time.perf_counter() - start
        done = report.computed + report.cached
        detail = (f"{done} of {len(paths)} inputs done ({report.summary(desc)}); finished entries are cached in "
                  f"{cache_dir}: run the same command again to resume")
        log.warning("interrupted by %s: %s", exc.signal_name, detail)
        raise Interrupted(exc.signal_name, detail, partial=report) from None
    finally:
        bar.close()
    report.skipped.sort(key=lambda item: str(item[0]))
    report.results = dict(sorted(report.results.items(), key=lambda item: str(item[0])))
    report.seconds = time.perf_counter() - start
    log.debug("%s", report.summary(desc))  # callers print their own summary (once)
    return report


def _skip(report: PreprocessReport, path: Path, reason: str) -> None:
    log.warning("skipped %s: %s", path, reason)
    report.skipped.append((path, reason))
