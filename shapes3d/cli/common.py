"""Helpers shared by subcommands: config options, writing the resolved config beside outputs."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from shapes3d.config import config_to_toml, describe_config, load_config, locate_config
from shapes3d.utils.io import atomic_write_text

#: Content-keyed caches (voxels, SDF samples) are shared across runs: $SHAPES3D_CACHE or ~/.cache/shapes3d
#: (the same rule as :func:`shapes3d.engine.jobs.default_cache_dir`, read here without importing the engine).
DEFAULT_CACHE = Path(os.environ.get("SHAPES3D_CACHE", Path.home() / ".cache" / "shapes3d"))


def require_inputs(*paths: Path | None) -> None:
    """Fail fast, before any heavy import, on an input file or folder that does not exist (None is skipped)."""
    from shapes3d.errors import MissingFileError

    for path in paths:
        if path is not None and not Path(path).exists():
            raise MissingFileError(path)


def add_config_args(parser: argparse.ArgumentParser, default: str | None) -> None:
    """``--config`` (a TOML file or a shipped preset's name, e.g. ``voxnet``) and repeatable ``--set``."""
    name = default[: -len(".toml")] if default and default.endswith(".toml") else default
    parser.add_argument("--config", default=name, metavar="TOML|PRESET",
                        help=f"TOML file, or the name of a preset shipped with shapes3d "
                             f"(default: {name or 'built-in defaults'})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set train.epochs=5 (repeatable)")


def config_help(cls) -> str:
    rows = describe_config(cls)
    width = max(len(k) for k, *_ in rows)
    return "config keys (use with --set):\n" + "\n".join(
        f"  {k:<{width}}  {doc} [{tp}, default {default}]" for k, tp, default, doc in rows)


def resolve_config(cls, args: argparse.Namespace, *, section: str | None = None, extra: list[str] = ()):
    """The config of ``--config`` (a path that exists wins; else a shipped preset's bare name) plus ``--set``."""
    path = None if args.config is None else locate_config(args.config)
    return load_config(cls, path, overrides=[*extra, *args.overrides], section=section)


def write_resolved_config(cfg, out_dir: str | Path, name: str = "config.toml") -> Path:
    path = Path(out_dir) / name
    atomic_write_text(path, config_to_toml(cfg, header="Resolved configuration written by shapes3d."))
    return path


def print_skipped(skipped) -> None:
    """One line per skipped file; our errors already name the file, so it is not repeated."""
    for path, reason in skipped:
        print(f"  skipped: {reason}" if str(path) in reason else f"  skipped: {path}: {reason}")


def report_interrupted(result, *, main: bool) -> int | None:
    """For a training result stopped by a signal: tell the user how to continue (rank 0 only) and return
    the shell's exit code for that signal; None when training ran to its end."""
    if not result.interrupted:
        return None
    from shapes3d.engine.distributed import interrupted_exit_code

    if main:
        print(f"interrupted by {result.interrupted}: position saved in {result.last_path}; "
              f"continue with the same command plus --resume")
    return interrupted_exit_code(result.interrupted)
