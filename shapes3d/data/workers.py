"""Worker processes of :func:`shapes3d.data.preprocess.run_preprocess`: jobs, spawn pools, crash isolation,
per-file time limits and clean termination.

A job is one input file; :func:`_run_serial` runs jobs in this process, :func:`_run_pool` in ``spawn``-started
processes. A crashed worker skips the file that crashed it (:data:`CRASH_REASON`) and a fresh pool carries on;
a job over its time limit is skipped (:data:`TIMEOUT_REASON`) and its worker replaced. Each yields
``(job, reason)`` pairs, ``reason`` None for success.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, NamedTuple

from shapes3d.data.cache import (
    write_cached,
)
from shapes3d.errors import DegenerateGeometryError, Shapes3DError

log = logging.getLogger(__name__)


CRASH_REASON = "worker process crashed (killed, out of memory or a native-code fault) while processing this file"


TIMEOUT_REASON = "timed out after {seconds:g} s (the per-file time limit); its worker process was replaced"


STOP_GRACE_S = 5.0


class _Job(NamedTuple):
    key: str
    path: str
    location: str
    meta: dict[str, Any]


# Worker-process state: the queue start-of-job messages go to (when jobs have a time limit),
# and whether a job is running (SIGTERM then unwinds it, so its temp file is removed).
_STATUS: Any = None
_IN_JOB = False


class _WorkerTerminated(BaseException):
    """Raised by a worker's SIGTERM handler inside a job; not an Exception, so no handler keeps it."""


def _on_worker_sigterm(signum, frame) -> None:
    if _IN_JOB:
        raise _WorkerTerminated()
    os._exit(128 + signum)


def _work(fn: Callable, params: dict[str, Any], job: _Job) -> str | None:
    """Compute and cache one file; the reason it failed, or None. Runs in workers, so it
    returns the reason as text: some exceptions (e.g. from C extensions) do not pickle."""
    global _IN_JOB
    if _STATUS is not None:
        _STATUS.put((job.key, os.getpid(), time.time()))
    try:
        _IN_JOB = True
        write_cached(job.location, fn(Path(job.path), **params), meta=job.meta)
    except DegenerateGeometryError as exc:  # raised where the file is not known: name it here
        exc = exc.for_path(job.path)
        return f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # one bad file must never stop the batch
        return f"{type(exc).__name__}: {exc}"
    except _WorkerTerminated:  # atomic_write has removed its temp file on the way out
        os._exit(128 + signal.SIGTERM)
    finally:
        _IN_JOB = False
    return None


def _init_worker(status: Any = None) -> None:
    global _STATUS
    _STATUS = status
    # The parent handles Ctrl-C (it reaches the whole process group) and stops its workers itself;
    # SIGTERM from the parent lets a running job remove its temp file before the process exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_worker_sigterm)
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


def _stop_processes(pool: ProcessPoolExecutor, grace: float = STOP_GRACE_S) -> None:
    """Terminate every worker process of ``pool`` (SIGTERM, SIGKILL after ``grace`` s), then shut it down."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for proc in procs:
        with contextlib.suppress(Exception):
            if proc.is_alive():
                proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(max(0.0, deadline - time.monotonic()))
    for proc in procs:
        with contextlib.suppress(Exception):
            if proc.is_alive():
                log.warning("worker process %s ignored SIGTERM for %.0f s; killing it", proc.pid, grace)
                proc.kill()
                proc.join(1.0)
    pool.shutdown(wait=True, cancel_futures=True)


def _drain(status, started: dict[str, float]) -> None:
    """Record the start-of-job messages workers have sent: job key -> start time."""
    while True:
        try:
            key, _pid, t0 = status.get_nowait()
        except (queue.Empty, OSError, EOFError, ValueError):
            return
        started[key] = t0


def _run_pool(
    jobs: list[_Job], fn: Callable, params: dict[str, Any], workers: int, timeout_s: float | None = None
) -> Iterator[tuple[_Job, str | None]]:
    ctx = multiprocessing.get_context("spawn")
    pending = deque(jobs)
    poll = None if timeout_s is None else min(0.5, max(0.02, timeout_s / 10))
    while pending:
        # At most 2 jobs per worker in flight, so a crash leaves few suspects to re-run alone.
        suspects: list[_Job] = []
        late: list[_Job] = []
        status = ctx.Queue() if timeout_s is not None else None  # fresh per pool: a killed worker may hold its lock
        started: dict[str, float] = {}
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(status,))
        try:
            in_flight: dict[Any, _Job] = {}
            while (pending or in_flight) and not suspects and not late:
                while pending and len(in_flight) < 2 * workers:
                    job = pending.popleft()
                    in_flight[pool.submit(_work, fn, params, job)] = job
                done, _ = wait(in_flight, timeout=poll, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = in_flight.pop(fut)
                    try:
                        yield job, fut.result()
                    except BrokenProcessPool:
                        suspects.append(job)
                    except Exception as exc:  # e.g. fn or params failed to unpickle in the worker
                        yield job, f"{type(exc).__name__}: {exc}"
                if timeout_s is not None and not suspects:
                    _drain(status, started)
                    now = time.time()
                    late = [j for j in in_flight.values() if now - started.get(j.key, now) > timeout_s]
            if late:
                # A running job cannot be cancelled: stop the pool, skip the late jobs, and give the
                # others (not at fault) back to a fresh pool, unless they finished meanwhile.
                _stop_processes(pool, grace=1.0)
                for fut, job in reversed(list(in_flight.items())):
                    if job in late:
                        continue
                    if fut.done() and not fut.cancelled() and fut.exception() is None:
                        yield job, fut.result()
                    else:
                        pending.appendleft(job)
                for job in late:
                    log.warning("%s: %s", job.path, TIMEOUT_REASON.format(seconds=timeout_s))
                    yield job, TIMEOUT_REASON.format(seconds=timeout_s)
                in_flight.clear()
            suspects.extend(in_flight.values())
        except BaseException:  # interrupted (signal, or the caller stopped iterating): no worker survives
            _stop_processes(pool)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if suspects:
            log.warning(
                "a worker process died; re-running the %d files it may have been on one at a time", len(suspects)
            )
            yield from _run_isolated(suspects, fn, params, ctx, timeout_s)


def _ping(*_ignored) -> bool:
    return True


def _fresh_single_pool(ctx, fn: Callable | None = None) -> ProcessPoolExecutor:
    """A one-process pool that is known to start: if even a no-op dies, the environment is at
    fault (e.g. the main script cannot be re-imported by ``spawn``), not any input file. The
    no-op receives ``fn``, so its module is imported before any job's time limit starts."""
    pool = ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker)
    try:
        pool.submit(_ping, fn).result()
    except BrokenProcessPool as exc:
        pool.shutdown(wait=True)
        raise Shapes3DError(
            "worker processes die on start-up; run with workers=1, or make the main script importable "
            "(code under `if __name__ == '__main__':`, not stdin or an interactive session)"
        ) from exc
    except BaseException:
        _stop_processes(pool)
        raise
    return pool


def _run_isolated(jobs: list[_Job], fn: Callable, params: dict[str, Any], ctx,
                  timeout_s: float | None = None) -> Iterator[tuple[_Job, str | None]]:
    """Run each job alone in a one-process pool, so a crash is pinned on exactly that file."""
    pool = None
    try:
        for job in jobs:
            pool = pool or _fresh_single_pool(ctx, fn)
            try:
                reason = pool.submit(_work, fn, params, job).result(timeout=timeout_s)
            except BrokenProcessPool:
                reason = CRASH_REASON
                pool.shutdown(wait=True)
                pool = None
            except FuturesTimeout:
                reason = TIMEOUT_REASON.format(seconds=timeout_s)
                log.warning("%s: %s", job.path, reason)
                _stop_processes(pool, grace=1.0)
                pool = None
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            yield job, reason
    except BaseException:
        if pool is not None:
            _stop_processes(pool)
            pool = None
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
