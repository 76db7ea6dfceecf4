"""Help that teaches: every command's ``--help``, walked from the real parser, documents every option and its
default and ends with example invocations that parse; ``shapes3d --help`` fits one screen, one line a command."""

from __future__ import annotations

import argparse
import shlex

import pytest

from shapes3d.cli.common import HelpFormatter, default_note
from shapes3d.cli.main import build_parser, main

SKIP = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def _tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every parser of the command tree (groups such as ``shapes3d sdf`` and their actions), root first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _tree(sub, (*path, name))


PARSER = build_parser()
TREE = dict(_tree(PARSER))
IDS = [" ".join(p) or "shapes3d" for p in TREE]


def _name(path, action) -> str:
    return f"shapes3d {' '.join(path)} {action.option_strings[0] if action.option_strings else action.dest}"


def _problems(path, parser) -> list[str]:
    """What an option's help lacks: text at all, or (for one that can be omitted) what happens then."""
    found = []
    for a in parser._actions:
        if isinstance(a, SKIP):
            continue
        omittable = (bool(a.option_strings) and not a.required) or a.nargs in ("?", "*")
        if not (a.help or "").strip():
            found.append(f"{_name(path, a)}: no help text")
        elif omittable and "default" not in (a.help + default_note(a)).lower():
            found.append(f"{_name(path, a)}: its default is {a.default!r}; say in its help what happens when it "
                         f"is omitted, e.g. '(default: ...)'")
    return found


def _help(path, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_the_tree_has_every_command():
    leaves = [p for p, parser in TREE.items() if not parser._subparsers]
    assert len(leaves) >= 20 and ("sdf", "fit-views") in leaves and ("style", "views") in leaves


@pytest.mark.parametrize("path", list(TREE), ids=IDS)
def test_every_option_documents_itself_and_its_default(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    parser = TREE[path]
    assert isinstance(parser.formatter_class, type) and issubclass(parser.formatter_class, HelpFormatter)
    assert not _problems(path, parser), "\n".join(_problems(path, parser))
    text = _help(path, capsys)
    for a in parser._actions:
        if a.help and not isinstance(a, SKIP) and a.option_strings:
            assert a.option_strings[-1] in text, (path, a.option_strings)
    assert "(default: None)" not in text and "default: []" not in text


@pytest.mark.parametrize("path", list(TREE), ids=IDS)
def test_help_ends_with_examples_that_parse(path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = _help(path, capsys)
    assert "\nexamples:\n" in text, f"shapes3d {' '.join(path)} --help has no examples"
    tail = text[text.rindex("\nexamples:\n") + len("\nexamples:\n"):].splitlines()
    assert 1 <= len(tail) <= 3 and all(line.startswith("  shapes3d ") for line in tail), tail  # the help's end
    for example in tail:
        argv = shlex.split(example)
        assert argv[0] == "shapes3d" and tuple(argv[1:1 + len(path)]) == path, example
        PARSER.parse_args(argv[1:])  # real option names and valid values (argparse exits 2 otherwise)


def test_a_new_option_without_help_is_named():
    p = argparse.ArgumentParser(prog="x")
    p.add_argument("--thing", type=int, default=None)
    p.add_argument("--other", type=int, default=3, help="something")
    assert _problems(("x",), p) == ["shapes3d x --thing: no help text"]
    q = argparse.ArgumentParser(prog="x")
    q.add_argument("--thing", type=int, default=None, help="a thing")
    assert "shapes3d x --thing: its default is None" in _problems(("x",), q)[0]


def test_defaults_are_shown_without_writing_them_twice(monkeypatch):
    from pathlib import Path

    from shapes3d.cli.common import Parser, examples

    monkeypatch.setenv("COLUMNS", "200")
    p = Parser(prog="shapes3d x", epilog=examples("shapes3d x --size 64"))
    p.add_argument("--size", type=int, default=128, help="image side (default 128)")
    p.add_argument("--up", default="z", help="up axis")
    p.add_argument("--modes", nargs="+", default=["shaded", "depth"], help="image kinds")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "x", help="cache folder")
    p.add_argument("--resume", action="store_true", help="continue")
    p.add_argument("--rate", type=float, default=0.5, help="50%% of it")
    text = p.format_help()
    assert "image side (default 128)\n" in text  # written by hand: not appended again
    assert "up axis (default: z)" in text and "image kinds (default: shaded depth)" in text
    assert "cache folder (default: ~/.cache/x)" in text and "continue (default: off)" in text
    assert "50% of it (default: 0.5)" in text
    assert text.endswith("examples:\n  shapes3d x --size 64\n")


def test_top_level_help_is_one_screen_with_one_line_per_command(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = _help((), capsys)
    lines = text.splitlines()
    assert len(lines) <= 40, text
    commands = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction))
    for name in commands.choices:
        i = next(i for i, line in enumerate(lines) if line.startswith(f"    {name} "))
        assert not lines[i + 1].startswith(" " * 6), f"the help of {name} wraps: {lines[i]!r} {lines[i + 1]!r}"
