"""Helpers shared by subcommands: config options, writing the resolved config beside outputs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shapes3d.config import config_to_toml, describe_config, load_config, locate_config
from shapes3d.utils.io import atomic_write_text

#: Content-keyed caches (voxels, SDF samples) are shared across runs: $SHAPES3D_CACHE or ~/.cache/shapes3d
#: (the same rule as :func:`shapes3d.engine.jobs.default_cache_dir`, read here without importing the engine).
DEFAULT_CACHE = Path(os.environ.get("SHAPES3D_CACHE", Path.home() / ".cache" / "shapes3d"))


def _default_text(value) -> str:
    """A default as a user types it: lists space-separated, paths under the home folder with ``~``."""
    if isinstance(value, (list, tuple)):
        return " ".join(_default_text(v) for v in value)
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return "~" + text[len(home):] if text.startswith(home + os.sep) else text
    return str(value)


def default_note(action: argparse.Action) -> str:
    """What :class:`HelpFormatter` appends to an option's help: ``(default: X)``; ``(default: off)`` for a flag;
    nothing when the help already says its default, or when the default is None/empty (the help must then say
    what happens when the option is omitted -- ``tests/test_cli_help.py`` checks that it does)."""
    text = action.help or ""
    if "default" in text.lower() or action.default is argparse.SUPPRESS:
        return ""
    if action.required or (not action.option_strings and action.nargs not in ("?", "*")):
        return ""  # a required positional has no default
    if action.nargs == 0:  # store_true / store_false / store_const
        return " (default: off)" if not action.default else " (default: on)"
    if action.default is None or action.default == [] or action.default == "":
        return ""
    return f" (default: {_default_text(action.default)})".replace("%", "%%")


class HelpFormatter(argparse.HelpFormatter):
    """The one help layout of every command: descriptions and epilogs wrapped paragraph by paragraph, with
    indented lines (config key tables, examples) kept as written; each option's default shown."""

    def __init__(self, prog: str, **kwargs) -> None:
        kwargs.setdefault("max_help_position", 28)
        super().__init__(prog, **kwargs)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out = []
        for line in text.splitlines():
            if not line.strip() or line[:1].isspace():
                out.append(indent + line if line.strip() else "")
            else:
                out.append(textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent))
        return "\n".join(out)

    def _get_help_string(self, action: argparse.Action) -> str:
        return (action.help or "") + default_note(action)


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with :class:`HelpFormatter`, whatever ``formatter_class`` a command asks for.
    Subparsers inherit the class, so every command registered with ``sub.add_parser(...)`` under the root parser
    of :func:`shapes3d.cli.main.build_parser` gets it."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)


def examples(*lines: str, config=None) -> str:
    """A command's ``epilog``: the keys of the config class ``config`` (:func:`config_help`), then ``examples:``
    with one invocation a line -- every command's help ends with one or two (``tests/test_cli_help.py``)."""
    block = "examples:\n" + "\n".join(f"  {line}" for line in lines)
    return f"{config_help(config)}\n\n{block}" if config is not None else block


def require_inputs(*paths: Path | None) -> None:
    """Fail fast, before any heavy import, on an input file or folder that does not exist (None is skipped)."""
    from shapes3d.errors import MissingFileError

    for path in paths:
        if path is not None and not Path(path).exists():
            raise MissingFileError(path)


def int_range(lo: int, hi: int | None = None):
    """An argparse ``type=``: an integer in ``[lo, hi]`` (``hi=None``: no upper bound). A bad value is argparse's
    usage error naming the option, e.g. ``argument --views: 0 is out of range [1, 360]`` (exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value} is out of range [{lo}, {'inf)' if hi is None else f'{hi}]'}")
        return value

    parse.__name__ = "int"
    parse.bounds = (lo, hi)  # tests/test_cli_bad_args.py finds range-checked options by this
    return parse


def float_range(lo: float, hi: float, *, open_ends: bool = False):
    """An argparse ``type=``: a finite number in ``[lo, hi]`` (``(lo, hi)`` with ``open_ends``)."""
    import math

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        inside = lo < value < hi if open_ends else lo <= value <= hi
        if not math.isfinite(value) or not inside:
            interval = f"({lo}, {hi})" if open_ends else f"[{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"{text} is out of range {interval}")
        return value

    parse.__name__ = "float"
    parse.bounds = (lo, hi)  # as int_range's; open_ends says whether the ends themselves are refused
    parse.open_ends = open_ends
    return parse


def output_folder(text: str) -> Path:
    """An argparse ``type=`` for an output folder: refused when it names an existing file."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, expected a folder")
    return path


def output_file(text: str) -> Path:
    """An argparse ``type=`` for an output file: refused when it names an existing folder."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, expected a file path")
    return path


def batch_exit(inputs: int, skipped: int, what: str = "inputs") -> int:
    """The exit code of a batch job (0, or 1 when any input was skipped), printing the one-line summary."""
    if skipped:
        print(f"{skipped} of {inputs} {what} skipped", file=sys.stderr)
        return 1
    return 0


def add_config_args(parser: argparse.ArgumentParser, default: str | None) -> None:
    """``--config`` (a TOML file or a shipped preset's name, e.g. ``voxnet``) and repeatable ``--set``."""
    name = default[: -len(".toml")] if default and default.endswith(".toml") else default
    parser.add_argument("--config", default=name, metavar="TOML|PRESET",
                        help=f"TOML file, or the name of a preset shipped with shapes3d "
                             f"(default: {name or 'built-in defaults'})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set train.epochs=5 (repeatable; default: none, the "
                             "config as written)")


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
