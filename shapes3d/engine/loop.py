"""The one epoch loop of every trainer: resume, steps, stop requests, checkpoints, the log.

A pipeline describes *what* one step, one epoch end and one checkpoint are with a
:class:`Task`; :func:`fit` does the bookkeeping around it, the same way for all of them:

* **resume** from ``last.pt``, also from the middle of an epoch (data order, step,
  partial sums and seconds are in the checkpoint's ``position``);
* **randomness**: one seeded generator handed to the task (order, augmentation) plus
  torch's global and CUDA RNG, saved and restored with every checkpoint, so that a
  resumed run equals an uninterrupted one bit for bit;
* **stop requests** (SIGINT/SIGTERM via :class:`~shapes3d.engine.distributed.StopFlag`):
  the step finishes, the position is saved, :func:`fit` returns with ``interrupted`` set;
* **cadence**: ``last.pt`` every ``checkpoint_steps`` steps within an epoch and every
  ``checkpoint_every`` epochs (and after the last epoch of the call); ``best.pt`` when
  :meth:`Task.is_better`; with every ``last.pt`` at an epoch end, ``log.csv`` and ``curves.png``
  (and, when the config's ``train.tensorboard`` is set, every epoch's row as TensorBoard scalars:
  :mod:`shapes3d.engine.tensorboard`);
* **ranks**: only rank 0 writes; per-epoch sums are added over ranks.

A checkpoint is ``task.payload()`` plus the loop's keys ``epoch`` (epochs completed),
``rng``, ``history``, ``position`` (None at an epoch end) and ``identity`` (what was trained on:
:meth:`Task.identity`, e.g. the class list and the sha256 of every input file).

Runs are never mixed or silently lost (:func:`check_run_folder`, called by the trainers before
any data is prepared): a new run refuses a folder holding a checkpoint unless told to
overwrite it; ``resume`` needs a ``last.pt``, refuses a finished run, and refuses a checkpoint
whose architecture (:attr:`Task.architecture_keys` of the config) or inputs (:meth:`Task.identity`)
differ from this run's, naming what changed. Checkpoints written before ``identity`` existed
resume with a warning. A NaN or infinite loss or weight stops training with a
:class:`~shapes3d.errors.DivergedError` before anything is written: the last checkpoint stays the last good one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shapes3d.config import config_to_dict, config_to_toml
from shapes3d.engine.checkpoint import load_checkpoint, require_keys, save_checkpoint
from shapes3d.engine.distributed import Dist, StopFlag
from shapes3d.engine.plots import plot_curves
from shapes3d.engine.rng import rng_state, set_rng_state
from shapes3d.engine.run_folder import architecture_changes, check_run_folder, identity_changes  # noqa: F401 (check_run_folder re-exported)
from shapes3d.engine.tensorboard import open_tensorboard
from shapes3d.errors import CheckpointError, DivergedError, RunFolderError
from shapes3d.utils.io import atomic_write_csv, atomic_write_text, remove_stale_temporaries
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)


class Task:
    """What a pipeline gives :func:`fit`. Subclass it and override the methods it uses.

    Class attributes describe the bookkeeping: ``required_keys`` (checkpoint keys :meth:`load`
    reads), ``sum_keys`` (per-sample statistics summed over an epoch), the progress bar's
    ``unit`` and shown statistic ``bar_stat`` (formatted with ``bar_format``), and the
    ``curves_title`` of ``curves.png``.
    """

    required_keys: tuple[str, ...] = ()
    #: Config keys (dotted; a table means every key below it) that fix the shapes of the weights: resuming with
    #: other values is refused, naming them (e.g. ``("model", "data.resolution")``).
    architecture_keys: tuple[str, ...] = ()
    sum_keys: tuple[str, ...] = ("loss",)
    unit: str = "step"
    bar_stat: str = "loss"
    bar_format: str = ".3f"
    curves_title: str = "training"

    def begin(self, dist: Dist) -> None:
        """Called once after any resume, before the first epoch (wrap DDP, log what is trained)."""

    def begin_epoch(self, epoch: int) -> None:
        """Called at the start of every epoch, also one resumed in its middle (e.g. set learning rates)."""

    def epoch_order(self, epoch: int, gen: torch.Generator) -> torch.Tensor:
        """The epoch's sample indices (N,), drawn from ``gen``; the loop splits it into batches."""
        raise NotImplementedError

    def step(self, batch: torch.Tensor, epoch: int, gen: torch.Generator) -> tuple[dict[str, float], int] | None:
        """Train on the global batch of indices (B,): (mean statistics, samples on this rank), or None if skipped."""
        raise NotImplementedError

    def end_epoch(self, epoch: int, totals: dict[str, float], elapsed: Callable[[], float]) -> dict[str, Any]:
        """The log row of an epoch from ``totals`` (``sum_keys`` summed over samples and ranks).

        ``elapsed()`` is the epoch's seconds so far (also those before a resume).
        """
        raise NotImplementedError

    def is_better(self, row: dict[str, Any]) -> bool:
        """True when ``row`` beats every earlier epoch (the task remembers its best): write ``best.pt``."""
        return False

    def payload(self) -> dict[str, Any]:
        """The task's part of a checkpoint: format, weights, optimiser state, config, ..."""
        raise NotImplementedError

    def load(self, ck: dict[str, Any]) -> None:
        """Restore what :meth:`payload` saved (on resume)."""
        raise NotImplementedError

    def curve_rows(self, history: list[dict]) -> list[dict]:
        """The rows ``curves.png`` plots (default: the whole log)."""
        return history

    def identity(self) -> dict[str, Any] | None:
        """What the run trains on, saved in every checkpoint and compared on resume (None: nothing to compare).

        Keys: ``what`` (e.g. ``"class list"``, ``"shape list"``), ``names`` (the classes, or the shapes whose
        order the weights depend on), ``files`` and ``sha256`` (each training input and its content hash, None
        where unknown) and ``ordered`` (True when ``sha256[i]`` must stay input ``i``, e.g. one latent code per
        shape; False when only the multiset of inputs matters).
        """
        return None


@dataclass
class LoopResult:
    history: list[dict]
    last_path: Path
    best_path: Path
    interrupted: str | None = None  # name of the signal that stopped training early (position saved)


def fit(task: Task, out_dir: str | Path, *, dist: Dist, gen: torch.Generator, epochs: int, batch_size: int,
        config: Any = None, checkpoint_steps: int = 0, checkpoint_every: int = 1, resume: bool = False,
        stop_after: int | None = None) -> LoopResult:
    """Train ``task`` for epochs ``1..epochs`` in batches of ``batch_size``; see the module docstring.

    ``resume`` continues from ``out_dir/last.pt`` when it exists; ``stop_after`` ends this call
    after that many epochs. ``config`` (a config dataclass) is written to ``config.toml``.
    """
    out = Path(out_dir)
    last, best = out / "last.pt", out / "best.pt"
    if dist.is_main and out.is_dir():
        # A run folder has one writer: temp files of ours found at start are left by a killed run.
        remove_stale_temporaries(out, older_than_s=0)
    cfg_dict = config_to_dict(config) if config is not None else None
    tb = open_tensorboard(out, config, is_main=dist.is_main)  # None unless train.tensorboard; fails if not installed
    identity = task.identity()
    state = _resume(last, task, gen, dist.device, cfg_dict, identity) if resume and last.exists() else _State()
    task.begin(dist)
    if dist.is_main and config is not None:
        atomic_write_text(out / "config.toml", config_to_toml(config, header="Resolved configuration of this run."))

    def save(path: Path, epochs_done: int, position: dict | None) -> None:
        payload = task.payload()
        bad = _non_finite(payload)  # every rank checks (DDP keeps the weights equal): all raise together
        if bad is not None:
            raise DivergedError(f"training stopped: {bad} became non-finite (NaN or inf) at epoch {epochs_done + 1}; "
                                f"not saved, {_last_good(last)}; lower the learning rate or check the data")
        if dist.is_main:
            save_checkpoint(path, {**payload, "epoch": epochs_done, "rng": rng_state(gen, dist.device),
                                   "history": state.history, "position": position, "identity": identity})

    end = epochs if stop_after is None else min(epochs, state.start_epoch + stop_after - 1)
    with StopFlag() as stop, tb or contextlib.nullcontext():
        for epoch in range(state.start_epoch, end + 1):
            task.begin_epoch(epoch)
            pos = state.take_position(epoch) or _Position.fresh(epoch, task.epoch_order(epoch, gen), task.sum_keys)
            batches = pos.order.split(batch_size)
            bar = progress(range(pos.step, len(batches)), desc=f"epoch {epoch}/{epochs}", unit=task.unit,
                           leave=False, disable=not dist.is_main)
            for bi in bar:
                done = task.step(batches[bi], epoch, gen)
                _check_finite_step(done, dist, epoch, bi + 1, len(batches), last)
                if done is not None:
                    pos.add(*done)
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(loss=format(done[0][task.bar_stat], task.bar_format))
                pos.step = bi + 1
                if stop.requested(dist):
                    save(last, epoch - 1, pos.snapshot())
                    log.warning("stopped by %s at epoch %d, step %d/%d; resume with --resume", stop.name, epoch,
                                pos.step, len(batches))
                    return LoopResult(state.history, last, best, interrupted=stop.name)
                if checkpoint_steps and pos.step % checkpoint_steps == 0 and pos.step < len(batches):
                    save(last, epoch - 1, pos.snapshot())
            totals = dict(zip(pos.sums, dist.all_sum(list(pos.sums.values()))))
            state.history.append(task.end_epoch(epoch, totals, pos.elapsed))
            if tb is not None:
                tb.add_row(state.history[-1], epoch)  # the CSV's scalars, every epoch
            if task.is_better(state.history[-1]):
                save(best, epoch, None)
            if epoch % checkpoint_every == 0 or epoch == end:
                save(last, epoch, None)
                if dist.is_main:
                    atomic_write_csv(out / "log.csv", state.history)
                    plot_curves(task.curve_rows(state.history), out / "curves.png",
                                title=f"{task.curves_title}: run {out.resolve().name}")
    dist.barrier()
    return LoopResult(state.history, last, best)


class _Position:
    """Where the loop is within an epoch: its order (N,), steps done, partial sums and clock."""

    def __init__(self, epoch: int, order: torch.Tensor, step: int, sums: dict[str, float], seconds: float) -> None:
        self.epoch, self.order, self.step, self.sums = epoch, order, step, sums
        self._t0 = time.perf_counter() - seconds

    @classmethod
    def fresh(cls, epoch: int, order: torch.Tensor, keys: tuple[str, ...]) -> _Position:
        return cls(epoch, order, 0, dict.fromkeys(keys, 0.0), 0.0)

    def add(self, stats: dict[str, float], n: int) -> None:
        for k in self.sums:
            self.sums[k] += stats[k] * n

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def snapshot(self) -> dict:
        """The checkpoint's ``position``: resuming from it continues with the next step."""
        return {"epoch": self.epoch, "step": self.step, "order": self.order, "sums": dict(self.sums),
                "seconds": self.elapsed()}


@dataclass
class _State:
    start_epoch: int = 1
    history: list[dict] | None = None
    position: dict | None = None

    def __post_init__(self) -> None:
        self.history = [] if self.history is None else self.history

    def take_position(self, epoch: int) -> _Position | None:
        """The saved in-epoch position if it belongs to ``epoch`` (once), else None."""
        p, self.position = self.position, None
        if p is None or p["epoch"] != epoch:
            return None
        # the order comes back on the training device (map_location); indexing host data needs it on the CPU
        return _Position(epoch, p["order"].cpu(), p["step"], p["sums"], p["seconds"])


def _resume(path: Path, task: Task, gen: torch.Generator, device: torch.device, config: dict | None,
            identity: dict | None) -> _State:
    ck = load_checkpoint(path, map_location=device)
    require_keys(path, ck, (*task.required_keys, "epoch", "rng", "history"))
    changes = []
    if config is not None and task.architecture_keys and isinstance(ck.get("config"), dict):
        changes += architecture_changes(ck["config"], config, task.architecture_keys)
    if identity is not None:
        if isinstance(ck.get("identity"), dict):
            changes += identity_changes(ck["identity"], identity)
        else:
            log.warning("%s was written before checkpoints recorded their inputs: resuming without checking that "
                        "the data is the same", path)
    if changes:
        raise RunFolderError(f"{path}: cannot resume, {'; '.join(changes)} (resume with the same data and "
                             f"settings, or start a new run with --overwrite or another --out)")
    try:
        task.load(ck)
    except (RuntimeError, KeyError, ValueError, IndexError) as e:  # shapes of weights or optimiser state differ
        first = (str(e).splitlines() or [""])[0][:200]
        raise CheckpointError(path, f"does not fit this model and data, cannot resume ({type(e).__name__}: "
                                    f"{first})") from None
    set_rng_state(ck["rng"], gen, device)
    state = _State(start_epoch=ck["epoch"] + 1, history=ck["history"], position=ck.get("position"))
    log.info("resumed from %s at epoch %d%s", path, state.start_epoch,
             f", step {state.position['step']}" if state.position else "")
    return state


def _check_finite_step(done: tuple[dict[str, float], int] | None, dist: Dist, epoch: int, step: int, steps: int,
                       last: Path) -> None:
    """Raise :class:`DivergedError` when a step's statistics are NaN or infinite (on any rank: all raise)."""
    stats = done[0] if done is not None else {}
    bad = sorted(k for k, v in stats.items() if not math.isfinite(v))
    if dist.enabled:
        bad_anywhere = dist.all_sum([float(bool(bad))])[0] > 0
        bad = bad or (["loss (on another rank)"] if bad_anywhere else [])
    if bad:
        values = ", ".join(f"{k} {stats[k]}" for k in bad if k in stats) or bad[0]
        raise DivergedError(f"training stopped: the loss became non-finite ({values}) at epoch {epoch}, step "
                            f"{step}/{steps}; {_last_good(last)}; lower the learning rate or check the data")


def _last_good(last: Path) -> str:
    return f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"


def _non_finite(payload: Any, where: str = "") -> str | None:
    """The key path of the first floating tensor or float in ``payload`` holding NaN or inf, else None."""
    if isinstance(payload, torch.Tensor):
        if payload.is_floating_point() and not bool(torch.isfinite(payload).all()):
            return where or "a tensor"
        return None
    if isinstance(payload, float):
        return None  # plain numbers (best scores start at -inf / inf) are bookkeeping, not weights
    items = payload.items() if isinstance(payload, dict) else enumerate(payload) \
        if isinstance(payload, (list, tuple)) else ()
    for k, v in items:
        found = _non_finite(v, f"{where}.{k}" if where else str(k))
        if found is not None:
            return found
    return None
















