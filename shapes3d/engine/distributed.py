"""Data-parallel training under ``torchrun`` and clean interruption, shared by both trainers.

``torchrun --nproc_per_node=N`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; the
trainers call :func:`setup` and get a :class:`Dist` that is a no-op for a single process.
The scheme keeps a distributed run equal to a single-process run with the same global
batch: every rank draws the *global* batch (order, augmentation parameters) from the same
seeded generator, works on its own slice ``[rank::world]`` of it, and scales its loss by
``world * n_local / n_global`` so that DDP's gradient average is exactly the gradient of
the global mean. Only rank 0 writes files.

SIGINT and SIGTERM do not kill a trainer: :class:`StopFlag` records them, the loop
finishes the current step, all ranks agree to stop (one all-reduce per step), a
checkpoint with the exact in-epoch position is written, and the trainer returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as tdist

from shapes3d.errors import ConfigError
from shapes3d.utils.device import pick_device
from shapes3d.utils.ranks import env_rank

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """Rank, world size and device of this process (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch of indices: every ``world``-th from ``rank``."""
        return indices[self.rank::self.world]

    def loss_scale(self, n_local: int, n_global: int) -> float:
        """Factor making the mean of per-rank gradients equal the gradient of the global mean."""
        return self.world * n_local / n_global

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of a list of numbers over ranks (identity for one process)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        tdist.all_reduce(t)
        return t.tolist()

    def all_sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return t
        t = t.to(self._comm_device)
        tdist.all_reduce(t)
        return t

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        # NCCL reduces only CUDA tensors; gloo only CPU ones.
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def setup(device_request: str = "auto") -> Dist:
    """Join the process group when launched by torchrun (gloo on CPU, NCCL on CUDA); else one process.

    Under torchrun each rank takes the GPU ``cuda:LOCAL_RANK`` when CUDA is used.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=pick_device(device_request))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_request)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend)
    if tdist.get_world_size() != world:
        raise ConfigError(f"WORLD_SIZE={world} but the process group has {tdist.get_world_size()} ranks")
    log.info("rank %d/%d on %s (%s)", rank, world, device, backend)
    return Dist(rank=rank, world=world, local_rank=local_rank, device=device)


def is_main_process() -> bool:
    """True unless this is a torchrun rank other than 0 (for printing in CLIs); see :mod:`shapes3d.utils.ranks`."""
    return env_rank() == 0


def interrupted_exit_code(signal_name: str) -> int:
    """Shell convention for a job ended by a signal: 128 + its number (SIGINT 130, SIGTERM 143)."""
    return 128 + int(signal.Signals[signal_name])


@contextlib.contextmanager
def main_process_first():
    """Let rank 0 run the block (e.g. build a cache) before the other ranks run it (and hit the cache)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield
        return
    if not tdist.is_initialized():
        # CPU rendezvous for this ordering only; setup() reuses the group (CUDA runs re-init nothing).
        tdist.init_process_group(backend="gloo")
    rank = tdist.get_rank()
    if rank != 0:
        tdist.barrier()
    yield
    if rank == 0:
        tdist.barrier()


def wrap_ddp(module: torch.nn.Module, dist: Dist) -> torch.nn.Module:
    """DistributedDataParallel around ``module`` when running distributed, else ``module`` itself."""
    if not dist.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


class StopFlag:
    """Catches SIGINT/SIGTERM while a trainer runs; ``requested(dist)`` is agreed over ranks.

    Use as a context manager; the previous handlers are restored on exit. Outside the
    main thread (where signals cannot be caught) it only ever reports False.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopFlag:
        try:
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread
            self._previous.clear()
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)

    def _handle(self, signum, frame) -> None:
        if self.signal is None:
            log.warning("%s received: stopping after this step and saving a checkpoint",
                        signal.Signals(signum).name)
        self.signal = signum

    def requested(self, dist: Dist) -> bool:
        mine = 0.0 if self.signal is None else float(self.signal)
        if not dist.enabled:
            return self.signal is not None
        agreed = dist.all_sum([mine])[0]
        if agreed and self.signal is None:
            self.signal = signal.SIGTERM  # another rank was signalled
        return bool(agreed)

    @property
    def name(self) -> str | None:
        return None if self.signal is None else signal.Signals(self.signal).name


def batch_to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device copy: pinned and non-blocking for CUDA, a no-op on CPU."""
    if device.type != "cuda":
        return x
    return x.pin_memory().to(device, non_blocking=True)
