"""The ``shapes3d`` command: argument parsing, logging, device choice, errors to the user.

Each pipeline registers a subcommand module exposing ``register(subparsers)``; the
module's handler receives the parsed ``argparse.Namespace`` and returns an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from shapes3d import __version__
from shapes3d.errors import Interrupted, Shapes3DError
from shapes3d.utils.progress import set_progress_enabled
from shapes3d.utils.ranks import env_rank

# Subcommand modules, in the order --help lists them.
_COMMANDS = ("info", "data", "classify", "sdf", "render", "style", "vis", "demo")


def build_parser() -> argparse.ArgumentParser:
    from shapes3d.cli.common import Parser, examples

    parser = Parser(
        prog="shapes3d",
        description="Learning on 3D shapes: voxel classifiers, DeepSDF auto-decoders, 2D losses on renders. "
                    "Run 'shapes3d COMMAND --help' for a command's actions, options and examples.",
        epilog=examples(
            "shapes3d demo --out runs/demo",
            "shapes3d classify train --data data/ModelNet10 --config voxnet --out runs/voxnet"),
    )
    parser.add_argument("--version", action="version", version=f"shapes3d {__version__}",
                        help="print the version and exit")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors; no progress bars")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, title="commands")
    import importlib

    for name in _COMMANDS:
        importlib.import_module(f"shapes3d.cli.{name}").register(sub)
    return parser


def setup_logging(*, quiet: bool = False, verbose: bool = False, rank: int = 0) -> None:
    """One stderr handler for the ``shapes3d`` loggers. Under torchrun only rank 0 logs info and shows progress;
    the other ranks log warnings and errors only, prefixed with their rank."""
    level = logging.WARNING if quiet or rank != 0 else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    prefix = f"[rank {rank}] " if rank != 0 else ""
    handler.setFormatter(logging.Formatter(prefix + ("%(levelname).1s %(name)s: %(message)s" if verbose
                                                     else "%(message)s")))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("shapes3d").setLevel(level)
    set_progress_enabled(not quiet and rank == 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code: 0 done, 1 an unexpected failure, 2 a user error, 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    rank = env_rank()
    setup_logging(quiet=args.quiet, verbose=args.verbose, rank=rank)
    try:
        if rank == 0:
            return int(args.handler(args) or 0)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # only rank 0 prints
            return int(args.handler(args) or 0)
    except Shapes3DError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:  # a signal stopped a batch job; the message says how to resume
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # permissions, full disks, folders given for files: the user's to fix
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except Exception as e:  # a fault of ours: one line, the traceback only when asked for
        if args.verbose:
            logging.getLogger("shapes3d").exception("unexpected failure")
        print(f"error: unexpected {type(e).__name__}: {e} (a bug in shapes3d; rerun with -v for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
