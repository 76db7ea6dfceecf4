"""Output a person can read: only rank 0 prints, each summary once, readable labels, plain progress lines when
stderr is not a terminal, and an estimate before long SDF renders and view fits."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import pytest

from shapes3d.cli.main import main
from shapes3d.utils import progress as prog

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shapes3d.cli.main", *args], env={**ENV, **env},
                          capture_output=True, text=True, timeout=300)


def test_only_rank_0_prints(tiny_synth):
    """torchrun sets RANK before the process starts: rank 1 prints nothing at all; rank 0 its summary."""
    one = _cli("data", "discover", str(tiny_synth), RANK="1", LOCAL_RANK="1", WORLD_SIZE="2")
    assert one.returncode == 0, one.stderr
    assert one.stdout == "" and one.stderr == ""
    zero = _cli("data", "discover", str(tiny_synth), RANK="0", LOCAL_RANK="0", WORLD_SIZE="2")
    assert zero.returncode == 0 and f"{tiny_synth}: 15 shapes, 3 classes" in zero.stdout


def test_other_ranks_still_report_errors(tmp_path):
    r = _cli("data", "discover", str(tmp_path / "missing"), RANK="1", WORLD_SIZE="2")
    assert r.returncode == 2 and r.stdout == "" and "does not exist" in r.stderr


def test_under_torchrun_rank_1_prints_nothing(tiny_synth, tmp_path):
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--redirects=3",
           f"--log-dir={logs}", "-m", "shapes3d.cli.main", "data", "discover", str(tiny_synth)]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = {int(p.parent.name): p.read_text() for p in logs.rglob("stdout.log")}
    err = {int(p.parent.name): p.read_text() for p in logs.rglob("stderr.log")}
    assert set(out) == {0, 1}, sorted(logs.rglob("*"))
    assert out[1] == "" and err[1] == ""
    assert out[0].count("15 shapes, 3 classes") == 1


def _once(capsys, argv: list[str], line: str) -> str:
    assert main(argv) == 0
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert text.count(line) == 1, text
    return text


def test_data_summaries_are_printed_once_with_readable_labels(tmp_path, capsys):
    data, cache = tmp_path / "data", tmp_path / "cache"
    _once(capsys, ["data", "synth", "--out", str(data), "--per-class", "1"], f"to {data}")
    text = _once(capsys, ["data", "preprocess", str(data), "--out", str(cache), "--set", "rotations=1"],
                 "voxels: 11 computed, 0 cached, 0 skipped")
    assert "shapes3d.data.tasks" not in text  # a qualified name is not a label
    _once(capsys, ["data", "merge", str(cache), "--out", str(tmp_path / "merged")], "merge: 11 copied")


class _Clock:
    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_progress_off_a_terminal_is_plain_lines_every_tenth():
    stream = io.StringIO()
    bar = prog.progress(range(100), desc="voxels", unit="shape", file=stream)
    assert isinstance(bar, prog.PlainProgress)
    assert list(bar) == list(range(100))
    text = stream.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and len(lines) == 10
    assert [line.split()[1] for line in lines] == [f"{k}/100" for k in range(10, 101, 10)]
    assert lines[0].startswith("voxels: 10/100 shapes (10%), ") and " left" in lines[0]
    assert "done in" in lines[-1]


def test_progress_off_a_terminal_writes_every_30_seconds():
    stream = io.StringIO()
    bar = prog.PlainProgress(total=1000, desc="fit", unit="step", file=stream, clock=_Clock(31.0))
    for _ in range(5):
        bar.update(1)  # 0.5 % each, but 31 s apart
    bar.set_postfix(loss="0.25")
    bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 6  # one per update, each 31 s after the last; close has nothing new to say
    assert lines[0] == "fit: 1/1000 steps (0%), 31 s/step, 8 h 36 min left"
    assert lines[-1].endswith(", loss=0.25")


def test_transient_bars_off_a_terminal_write_only_the_30_second_lines():
    stream = io.StringIO()
    fast = prog.PlainProgress(range(50), desc="epoch 1/3", leave=False, file=stream, clock=_Clock(0.01))
    assert sum(1 for _ in fast) == 50 and stream.getvalue() == ""
    slow = prog.PlainProgress(total=4, desc="epoch 2/3", leave=False, file=stream, clock=_Clock(40.0))
    for _ in range(4):
        slow.update()
    slow.close()
    assert len(stream.getvalue().splitlines()) == 4


def test_progress_on_a_terminal_is_a_bar_and_quiet_is_silent(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    bar = prog.progress(range(3), desc="x", file=stream)
    assert not isinstance(bar, prog.PlainProgress) and list(bar) == [0, 1, 2]
    monkeypatch.setattr(prog, "_enabled", False)
    quiet = io.StringIO()
    assert list(prog.progress(range(3), file=quiet)) == [0, 1, 2] and quiet.getvalue() == ""


def test_sdf_render_estimate_bounds_the_evaluations(caplog):
    import torch

    from shapes3d.render.images import sheet_cameras
    from shapes3d.render.sdf_render import evaluations_per_view, render_sdf

    counted = [0]

    def sphere(x: torch.Tensor) -> torch.Tensor:
        counted[0] += x.shape[0]
        return x.norm(dim=1) - 0.5

    cams = sheet_cameras(views=2, elevations=[25.0], size=24, up="z")
    with caplog.at_level(logging.INFO, logger="shapes3d"), torch.no_grad():
        r = render_sdf(sphere, cams, near=1.0, far=4.0, max_steps=32, silhouette_samples=8, announce=True)
    assert bool(r.hit.any())
    bound = evaluations_per_view(24, 24, max_steps=32, silhouette_samples=8)
    assert bound == 24 * 24 * (32 + 8 + 10 + 4)
    message = next(m for m in caplog.messages if m.startswith("sdf render: 2 views of 24x24"))
    assert f"up to {bound / 1000:.3g}k SDF evaluations per view" in message and "per second: at most " in message
    timed = min(32768, bound) + 64  # the estimate's own timed chunk and warm-up
    assert counted[0] - timed <= 2 * bound


def test_view_fit_announces_seconds_per_step(caplog):
    from shapes3d.deepsdf import view_fitting

    with caplog.at_level(logging.INFO, logger="shapes3d"):
        view_fitting._announce_steps("fit-views 1/2", 18.0, 60)
    assert caplog.messages == ["fit-views 1/2: 18 s per step (measured on the first); about 18 min 00 s for all "
                               "60 steps"]


def test_durations_read_as_people_say_them():
    assert [prog.format_duration(s) for s in (0.4, 42, 185, 7800)] == ["0 s", "42 s", "3 min 05 s", "2 h 10 min"]


@pytest.mark.parametrize("rank", ["0", "1"])
def test_setup_logging_by_rank(rank, monkeypatch, capsys):
    from shapes3d.cli.main import setup_logging

    setup_logging(rank=int(rank))
    log = logging.getLogger("shapes3d.test")
    log.info("an event")
    log.warning("a problem")
    err = capsys.readouterr().err
    if rank == "0":
        assert err == "an event\na problem\n" and prog.progress_enabled()
    else:
        assert err == "[rank 1] a problem\n" and not prog.progress_enabled()
    setup_logging()
