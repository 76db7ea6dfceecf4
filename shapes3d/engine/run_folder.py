"""Run folders: whether training may start, resume or overwrite there, and what changed since the checkpoint.

:func:`check_run_folder` runs before any expensive work (voxelizing, sampling) and again when the loop resumes;
:func:`architecture_changes` and :func:`identity_changes` say in words what differs between a checkpoint's
config / inputs and the current ones.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from shapes3d.config import config_to_dict
from shapes3d.engine.checkpoint import load_checkpoint
from shapes3d.engine.tensorboard import require_tensorboard, tensorboard_requested
from shapes3d.errors import RunFolderError

log = logging.getLogger(__name__)


RUN_FILES = ("last.pt", "best.pt")


def check_run_folder(out: str | Path, *, resume: bool, overwrite: bool = False, epochs: int | None = None,
                     config: Any = None, architecture_keys: tuple[str, ...] = ()) -> Path | None:
    """Refuse, before any expensive work, a training run that would lose or mix runs; see the module docstring.

    * ``out`` must be a folder (or not exist yet); ``resume`` and ``overwrite`` exclude each other;
    * a new run into a folder holding ``last.pt`` or ``best.pt`` is a :class:`RunFolderError` naming
      ``--resume`` and ``--overwrite``; with ``overwrite`` both files are deleted first (rank 0), so the
      folder never holds checkpoints of two runs;
    * ``resume`` needs ``out/last.pt``; a finished run (``epoch >= epochs``, no in-epoch position) is a
      :class:`RunFolderError` saying so (raise ``train.epochs`` to train on);
    * ``resume`` with other values of ``architecture_keys`` in ``config`` than the checkpoint's config is a
      :class:`RunFolderError` naming each (``model.hidden 128 -> 256``);
    * ``train.tensorboard`` in ``config`` without the tensorboard package is a one-line ``ConfigError``.

    Returns the checkpoint to resume from, or None for a fresh run.
    """
    out = Path(out)
    if tensorboard_requested(config):
        require_tensorboard()
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out}: --out is a file, expected a run folder")
    if resume and overwrite:
        raise RunFolderError(f"{out}: --resume and --overwrite exclude each other (continue the run, or replace it)")
    last = out / "last.pt"
    present = [name for name in RUN_FILES if (out / name).exists()]
    if not resume:
        if not present:
            return None
        if not overwrite:
            raise RunFolderError(f"{out} already holds a training run ({', '.join(present)}): continue it with "
                                 f"--resume, or replace it with --overwrite (or choose another --out)")
        from shapes3d.engine.distributed import is_main_process

        if is_main_process():
            for name in present:
                (out / name).unlink(missing_ok=True)
            log.warning("--overwrite: removed %s from %s", ", ".join(present), out)
        return None
    if not last.exists():
        raise RunFolderError(f"{out}: --resume given but there is no checkpoint (last.pt) to resume from; "
                             f"drop --resume to start a new run")
    ck = load_checkpoint(last)
    position = ck.get("position")
    if epochs is not None and isinstance(ck.get("epoch"), int) and ck["epoch"] >= epochs and position is None:
        raise RunFolderError(f"{out}: the run is finished (epoch {ck['epoch']} of {epochs}); nothing to resume "
                             f"(raise train.epochs to train longer, or start again with --overwrite)")
    if config is not None and architecture_keys and isinstance(ck.get("config"), dict):
        changes = architecture_changes(ck["config"], config_to_dict(config), architecture_keys)
        if changes:
            raise RunFolderError(f"{last}: cannot resume, the architecture changed: {'; '.join(changes)} (use "
                                 f"the checkpoint's values, or start a new run with --overwrite or another --out)")
    return last


def _leaves(d: Any, prefix: str) -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: list(d) if isinstance(d, tuple) else d}


def _select(cfg: dict, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def architecture_changes(old_config: dict, new_config: dict, keys: tuple[str, ...]) -> list[str]:
    """``"model.hidden 128 -> 256"`` for every leaf under ``keys`` that differs between two config dicts."""
    changes = []
    for key in keys:
        old, new = _leaves(_select(old_config, key), key), _leaves(_select(new_config, key), key)
        for k in sorted(set(old) | set(new)):
            if old.get(k) != new.get(k):
                changes.append(f"{k} {old.get(k)!r} -> {new.get(k)!r}")
    return changes


def _quote(items, limit: int = 3) -> str:
    items = list(items)
    shown = ", ".join(repr(x) for x in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def identity_changes(old: dict, new: dict) -> list[str]:
    """What differs between two :meth:`Task.identity` dicts, one phrase each (empty: the same inputs)."""
    what = new.get("what", "input list")
    changes = []
    on, nn = list(old.get("names") or []), list(new.get("names") or [])
    oh, nh = list(old.get("sha256") or []), list(new.get("sha256") or [])
    hashed = bool(oh) and bool(nh) and None not in oh and None not in nh
    if new.get("ordered"):
        if hashed:
            if len(oh) != len(nh):
                changes.append(f"{what} changed: {len(oh)} -> {len(nh)} inputs")
            else:
                files = list(new.get("files") or nn)
                differ = [files[i] if i < len(files) else f"#{i}" for i in range(len(oh)) if oh[i] != nh[i]]
                if differ:
                    moved = Counter(oh) == Counter(nh)
                    changes.append(f"{what} changed: {len(differ)} of {len(oh)} inputs "
                                   f"{'in another order' if moved else 'differ in content'} ({_quote(differ)})")
        elif on != nn:
            changes.append(_name_change(what, on, nn))
        return changes
    if on != nn:
        changes.append(_name_change(what, on, nn))
    if hashed:
        of = dict(zip(oh, old.get("files") or oh))
        nf = dict(zip(nh, new.get("files") or nh))
        gone = Counter(oh) - Counter(nh)
        added = Counter(nh) - Counter(oh)
        if gone or added:
            parts = []
            if gone:
                parts.append(f"{sum(gone.values())} removed or edited ({_quote(of[h] for h in gone)})")
            if added:
                parts.append(f"{sum(added.values())} added or edited ({_quote(nf[h] for h in added)})")
            changes.append(f"training files changed: {', '.join(parts)}")
    return changes


def _name_change(what: str, old: list, new: list) -> str:
    removed = [x for x in old if x not in set(new)]
    added = [x for x in new if x not in set(old)]
    if not removed and not added:
        return f"{what} changed: the same {len(old)} names in another order"
    parts = ([f"{_quote(removed)} renamed/removed"] if removed else []) + ([f"{_quote(added)} added"] if added else [])
    return f"{what} changed: {', '.join(parts)}"
