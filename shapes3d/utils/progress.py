"""Progress bars for long loops.

Library code wraps long loops in :func:`progress`; the CLI decides whether bars are
shown (``--quiet`` turns them off). Bars go to stderr and show count, rate and ETA.

When stderr is not a terminal (a CI log, ``nohup``, a pipe) a bar would be one long line
of carriage returns; there :func:`progress` returns a :class:`PlainProgress` instead,
which writes a plain line each time another 10 % is done or 30 s have passed, whichever
comes first, and one at the end. Bars made with ``leave=False`` (inner loops, epochs
whose summary the trainer logs) write only the 30-second lines there.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_enabled = True

#: A plain line at least this often (seconds), and at every ``PLAIN_FRACTION`` of the total.
PLAIN_SECONDS = 30.0
PLAIN_FRACTION = 0.1


def set_progress_enabled(enabled: bool) -> None:
    """Globally show (True) or hide (False) progress bars."""
    global _enabled
    _enabled = enabled


def progress_enabled() -> bool:
    return _enabled


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 10 min``: a duration for people."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    return f"{minutes} min {s:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class PlainProgress:
    """The part of tqdm's interface the library uses (iteration, ``update``, ``set_postfix``,
    ``set_description``, ``close``, ``n``, ``total``), written as plain lines for a stream that is not a
    terminal: ``desc: 30/100 shape (30%), 2.1 shape/s, 33 s left, loss=0.12``."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", leave: bool = True, file: IO[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit, self.leave = iterable, total, desc, unit, leave
        self.file, self.clock = file, clock
        self.n, self.postfix = 0, ""
        self._start = self._last_time = clock()
        self._last_n, self._last_step, self._closed = 0, 0, False

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __len__(self) -> int:
        return self.total or 0

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        step = int(self.n / (self.total * PLAIN_FRACTION)) if self.total else 0
        crossed = self.leave and step > self._last_step
        if crossed or now - self._last_time >= PLAIN_SECONDS:
            self._emit(now)
            self._last_step = step

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.leave and self.n != self._last_n:
            self._emit(self.clock())

    def refresh(self) -> None:
        pass

    def line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = self.n / elapsed
        head = f"{self.desc}: " if self.desc else ""
        word = self.unit.isalpha() and self.unit.islower() and len(self.unit) > 2 and not self.unit.endswith("s")
        units = f"{self.unit}s" if word else self.unit  # 3/10 shapes, 3/10 it, 300/1000 B
        if self.total:
            text = f"{head}{self.n}/{self.total} {units} ({100 * self.n / self.total:.0f}%)"
        else:
            text = f"{head}{self.n} {units}"
        text += f", {rate:.3g} {self.unit}/s" if rate >= 1 else f", {1 / rate:.3g} s/{self.unit}" if rate else ""
        if self.total and rate and self.n < self.total:
            text += f", {format_duration((self.total - self.n) / rate)} left"
        elif self.total and self.n >= self.total:
            text += f", done in {format_duration(elapsed)}"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _emit(self, now: float) -> None:
        stream = self.file if self.file is not None else sys.stderr
        print(self.line(now), file=stream, flush=True)
        self._last_time, self._last_n = now, self.n


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    leave: bool = True,
    disable: bool = False,
    file: IO[str] | None = None,
) -> Iterator[T] | tqdm | PlainProgress:
    """Wrap ``iterable`` in a tqdm bar (rate and ETA), or a silent one when disabled; on a stream that is not a
    terminal, in a :class:`PlainProgress` (periodic plain lines).

    With ``iterable=None`` returns a manual bar: call ``.update(n)`` and ``.close()``.
    ``disable`` silences this bar only (e.g. on every data-parallel rank but the first).
    ``file``: the stream (default stderr).
    """
    shown = not disable and _enabled
    if shown and not _is_terminal(file if file is not None else sys.stderr):
        return PlainProgress(iterable, total=total, desc=desc, unit=unit, leave=leave, file=file)
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        disable=not shown,
        dynamic_ncols=True,
        smoothing=0.1,
        file=file,
    )
