"""Which torchrun rank this process is, from the environment alone (no torch import: the CLI asks at start-up).

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` before the process starts, so the answer is known
before any process group exists. Only rank 0 prints: the CLI silences stdout and lowers logging to warnings on
every other rank.
"""

from __future__ import annotations

import os


def env_rank() -> int:
    """This process's global rank: ``RANK`` when set to an integer, else 0 (a plain single process)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main_process() -> bool:
    """True unless this is a torchrun rank other than 0."""
    return env_rank() == 0
