"""Progress bars for long loops.

Library code wraps long loops in :func:`progress`; the CLI decides whether bars are
shown (``--quiet`` turns them off). Bars go to stderr and show count, rate and ETA.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_enabled = True


def set_progress_enabled(enabled: bool) -> None:
    """Globally show (True) or hide (False) progress bars."""
    global _enabled
    _enabled = enabled


def progress_enabled() -> bool:
    return _enabled


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    leave: bool = True,
    disable: bool = False,
) -> Iterator[T] | tqdm:
    """Wrap ``iterable`` in a tqdm bar (rate and ETA), or a silent one when disabled.

    With ``iterable=None`` returns a manual bar: call ``.update(n)`` and ``.close()``.
    ``disable`` silences this bar only (e.g. on every data-parallel rank but the first).
    """
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        disable=disable or not _enabled,
        dynamic_ncols=True,
        smoothing=0.1,
    )
