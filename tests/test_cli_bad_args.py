"""Every subcommand, walked from the parser, fails cleanly on bad arguments: exit 2, one ``error:`` line (or
argparse's usage error), no traceback, and nothing runs (every case fails in validation, so this file is fast)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from shapes3d.cli import common
from shapes3d.cli.main import build_parser, main


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _leaves(sub, (*path, name))


LEAVES = dict(_leaves(build_parser()))
#: Commands with nothing a user must give: bare, they run (info prints, demo trains); not walked here.
RUNS_BARE = {("info",), ("demo",)}
#: Commands whose only required argument is an output (data synth --out): no input file to get wrong.
NO_INPUTS = {("data", "synth"), ("data", "fetch")}  # fetch: no input path (and never a real download)
NAMES = {"a", "b", "shape", "shapes"}  # positional shape names / indices, not files


def _args(parser):
    return [a for a in parser._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def _required(parser):
    return [a for a in _args(parser) if a.required or (not a.option_strings and a.nargs not in ("*",))]


def _fill(parser, tmp: Path) -> list[str]:
    """Required arguments: inputs that do not exist, a fresh output folder, names as indices."""
    argv: list[str] = []
    for a in _required(parser):
        if a.dest == "out":
            value = str(tmp / "new-out")
        elif a.dest in NAMES:
            value = "0"
        elif a.choices:
            value = next(iter(a.choices))
        else:
            value = str(tmp / "missing" / f"{a.dest}.off")
        argv += ([a.option_strings[0]] if a.option_strings else []) + [value]
    return argv


def _assert_clean(capsys, code, *, argparse_error: bool | None = None) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    is_usage = err.startswith("usage: ") and "error: " in err
    assert err.startswith("error: ") or is_usage, err
    if argparse_error is not None:
        assert is_usage == argparse_error, err
    if err.startswith("error: "):
        assert err.count("\n") == 1, err  # one line
    return err


def _run(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's usage errors
        return e.code


WALKED = sorted(p for p in LEAVES if p not in RUNS_BARE)


def test_every_command_is_walked():
    assert len(WALKED) >= 20 and ("classify", "train") in WALKED and ("sdf", "interpolate") in WALKED


@pytest.mark.parametrize("path", [p for p in WALKED if _required(LEAVES[p])], ids=" ".join)
def test_missing_required_argument_is_a_usage_error(path, capsys):
    _assert_clean(capsys, _run([*path]))  # argparse's usage error, or the command's own "give either ..."


@pytest.mark.parametrize("path", [p for p in WALKED if p not in NO_INPUTS], ids=" ".join)
def test_nonexistent_input_is_one_error_line(path, tmp_path, capsys):
    argv = ["-q", *path, *_fill(LEAVES[path], tmp_path)]  # -q: info logs are not part of the error
    _assert_clean(capsys, _run(argv))
    assert not (tmp_path / "new-out").exists() or not any((tmp_path / "new-out").iterdir())  # nothing written


def _range_cases():
    """Every range-checked option (``int_range``/``float_range`` carry ``.bounds``) just outside each end;
    plain ``int`` options are left to the command's config or job."""
    for path in WALKED:
        for a in _args(LEAVES[path]):
            bounds = getattr(a.type, "bounds", None)
            if bounds is not None:
                lo, hi = bounds
                below = lo if getattr(a.type, "open_ends", False) else lo - 1
                yield path, a.option_strings[0], below, True
                if hi is not None:
                    yield path, a.option_strings[0], hi if getattr(a.type, "open_ends", False) else hi + 1, True
            elif a.type is int:  # validated by the command's config or job (other commands' own checks)
                yield path, a.option_strings[0], -1, None


def _interval(parse) -> str:
    lo, hi = parse.bounds
    if getattr(parse, "open_ends", False):
        return f"({lo}, {hi})"
    return f"[{lo}, {'inf)' if hi is None else f'{hi}]'}"


@pytest.mark.parametrize("path,option,value,at_parse", list(_range_cases()),
                         ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v))
def test_out_of_range_number_is_refused_before_anything_runs(path, option, value, at_parse, tmp_path, capsys):
    parser = LEAVES[path]
    argv = [*path, *_fill(parser, tmp_path), option, str(value)]
    err = _assert_clean(capsys, _run(argv), argparse_error=at_parse)
    if at_parse:
        action = next(a for a in _args(parser) if option in a.option_strings)
        assert f"argument {option}: {value} is out of range {_interval(action.type)}" in err
        assert err.startswith(f"usage: shapes3d {' '.join(path)} ")


#: Commands whose every number flag is range-checked by argparse (the leftover of issues 14/15).
RANGE_CHECKED = [p for p in WALKED if p[0] == "vis"] + [("style", "views"), ("style", "shape")]


@pytest.mark.parametrize("path", RANGE_CHECKED, ids=" ".join)
def test_number_options_of_vis_and_style_views_are_range_checked(path):
    numeric = [a for a in _args(LEAVES[path])
               if a.type in (int, float) or getattr(a.type, "__name__", "") in ("int", "float")]
    assert numeric, path
    unchecked = [a.option_strings[0] for a in numeric if getattr(a.type, "bounds", None) is None]
    assert not unchecked, f"shapes3d {' '.join(path)}: {unchecked} take a number without int_range/float_range"


@pytest.mark.parametrize("argv,expected", [
    (["vis", "invert", "skimage:astronaut", "--size", "8"], "argument --size: 8 is out of range [16, 4096]"),
    (["vis", "dream", "--shape", "m.off", "--views", "0"], "argument --views: 0 is out of range [1, 360]"),
    (["vis", "classviz", "--vgg", "--clip-small", "1.5"], "argument --clip-small: 1.5 is out of range [0, 1]"),
    (["vis", "classviz", "--vgg", "--lr", "0"], "argument --lr: 0 is out of range (0, 1000000.0)"),
    (["vis", "classviz", "--vgg", "--channels", "1", "-2"], "argument --channels: -2 is out of range [0, 65535]"),
    (["style", "views", "m.off", "skimage:brick", "--views", "1"], "argument --views: 1 is out of range [2, 360]"),
    (["style", "views", "m.off", "skimage:brick", "--steps", "0"],
     "argument --steps: 0 is out of range [1, 1000000]"),
    (["sdf", "extract", "ck.pt", "--bound", "0"], "argument --bound: 0 is out of range (0, 100)"),
])
def test_vis_and_style_usage_messages(argv, expected, capsys):
    err = _assert_clean(capsys, _run(argv), argparse_error=True)
    assert err.startswith(f"usage: shapes3d {argv[0]} {argv[1]} ") and expected in err, err


def _out_cases():
    for path in WALKED:
        for a in _args(LEAVES[path]):
            if a.type in (common.output_folder, common.output_file):
                yield path, a.option_strings[0], a.type is common.output_folder


@pytest.mark.parametrize("path,option,wants_folder", list(_out_cases()),
                         ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v))
def test_output_of_the_wrong_kind_is_refused(path, option, wants_folder, tmp_path, capsys):
    existing = tmp_path / "thing"
    if wants_folder:
        existing.write_text("a file")
    else:
        existing.mkdir()
    argv = [*path, *[x for x in _fill(LEAVES[path], tmp_path)], option, str(existing)]
    err = _assert_clean(capsys, _run(argv), argparse_error=True)
    assert ("is a file, expected a folder" if wants_folder else "is a folder, expected a file path") in err


def test_messages_name_option_value_and_range(tmp_path, capsys):
    ck = tmp_path / "ck.pt"
    ck.write_text("not used")
    cases = [
        (["sdf", "interpolate", str(ck), "0", "1", "--steps", "1"], "argument --steps: 1 is out of range [2, 1000]"),
        (["classify", "predict", str(ck), str(ck), "--top-k", "0"], "argument --top-k: 0 is out of range [1, 1000]"),
        (["render", str(ck), "--views", "0"], "argument --views: 0 is out of range [1, 360]"),
        (["sdf", "extract", str(ck), "--resolution", "4000"], "argument --resolution: 4000 is out of range [2, 1024]"),
        (["sdf", "evaluate", str(ck), "--points", "0"], "argument --points: 0 is out of range [1, 100000000]"),
        (["sdf", "evaluate", str(ck), "--limit", "0"], "argument --limit: 0 is out of range [1, inf)"),
        (["data", "preprocess", str(tmp_path), "--out", str(tmp_path / "c"), "--workers", "0"],
         "argument --workers: 0 is out of range [1, 1024]"),
        (["render", str(ck), "--elevations", "90"], "argument --elevations: 90 is out of range (-90, 90)"),
        (["classify", "predict", str(ck), str(ck), "--top-k", "x"], "argument --top-k: 'x' is not an integer"),
    ]
    for argv, expected in cases:
        assert _run(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (argv, err)


@pytest.mark.parametrize("override,expected", [
    ("train.lr=inf", "train.lr=inf is not a finite number (valid range (0.0, inf))"),
    ("train.lr=-0.1", "train.lr=-0.1 is out of range (0.0, inf)"),
    ("model.hidden=0", "model.hidden=0 is out of range [1, 65536]"),
    ("data.rotations=1000000", "data.rotations=1000000 is out of range [1, 360]"),
    ("data.resolution=10000", "data.resolution=10000 is out of range [4, 256]"),
    ("train.seed=18446744073709551616", "train.seed=18446744073709551616 is out of range [0, 9223372036854775807]"),
])
def test_config_values_are_checked_before_anything_runs(override, expected, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    code = _run(["classify", "train", "--data", str(data), "--out", str(tmp_path / "run"), "--set", override])
    err = _assert_clean(capsys, code, argparse_error=False)
    assert expected in err
    assert not (tmp_path / "run").exists()
