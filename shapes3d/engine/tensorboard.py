"""Optional TensorBoard event files beside ``log.csv``: the same per-epoch scalars, one event per epoch.

Switched by a train config's ``tensorboard`` field (``[train] tensorboard = true``); the ``tensorboard``
package is an optional dependency (``pip install tensorboard`` or ``pip install 'shapes3d[tensorboard]'``).
The CSV log and ``curves.png`` are written either way. Events go to ``<run folder>/tensorboard/``, written
by rank 0 only; view them with ``tensorboard --logdir <run folder>``.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
from pathlib import Path
from typing import Any

from shapes3d.errors import ConfigError

#: The sub-folder of a run folder that holds the event files.
EVENTS_DIR = "tensorboard"
_INSTALL = "pip install tensorboard (or pip install 'shapes3d[tensorboard]')"


def tensorboard_requested(config: Any) -> bool:
    """Whether a run config asks for event files (its ``train.tensorboard``; False for configs without one)."""
    return bool(getattr(getattr(config, "train", None), "tensorboard", False))


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package is installed (looked up, not imported)."""
    return importlib.util.find_spec("tensorboard") is not None


def require_tensorboard() -> None:
    """A one-line :class:`ConfigError` naming the install command when ``tensorboard`` is missing."""
    if not tensorboard_available():
        raise ConfigError(f"train.tensorboard = true needs the tensorboard package, which is not installed: "
                          f"{_INSTALL}; or set train.tensorboard = false")


def epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The finite real numbers of a log row (the CSV's numeric columns), without its ``epoch`` counter."""
    return {str(k): float(v) for k, v in row.items()
            if k != "epoch" and isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoardLog:
    """Writes log rows as scalars (tag = column name, step = epoch) into ``out_dir/tensorboard``.

    The event file is opened by the first row (a run that fails before its first epoch leaves no folder);
    use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, out_dir: str | Path) -> None:
        require_tensorboard()
        self.path = Path(out_dir) / EVENTS_DIR
        self._writer = None

    def add_row(self, row: dict[str, Any], step: int) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.path))
        for tag, value in epoch_scalars(row).items():
            self._writer.add_scalar(tag, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_tensorboard(out_dir: str | Path, config: Any, *, is_main: bool) -> TensorBoardLog | None:
    """The run's event writer when ``config`` asks for one (None otherwise, and on ranks other than 0).

    Every rank checks that tensorboard is installed, so all of them fail together, before training starts.
    """
    if not tensorboard_requested(config):
        return None
    require_tensorboard()
    return TensorBoardLog(out_dir) if is_main else None
