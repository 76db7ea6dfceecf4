"""The one epoch loop (shapes3d.engine.loop) with a tiny fake task: resume, stop requests, cadence, RNG."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from shapes3d.engine import loop, rng
from shapes3d.engine.checkpoint import load_checkpoint
from shapes3d.engine.distributed import Dist

CPU = Dist(device=torch.device("cpu"))


class FakeTask(loop.Task):
    """Linear regression with dropout (global RNG) and input noise (the loop's generator): 10 samples."""

    required_keys = ("model", "optimizer")
    sum_keys = ("loss",)

    def __init__(self, *, stop_at_call: int | None = None) -> None:
        self.model = torch.nn.Sequential(torch.nn.Dropout(0.3), torch.nn.Linear(3, 1))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=0.05)
        self.x = torch.linspace(-1, 1, 30).reshape(10, 3)
        self.y = self.x.sum(1, keepdim=True)
        self.calls, self.stop_at_call, self.best = 0, stop_at_call, float("inf")

    def epoch_order(self, epoch, gen):
        return torch.randperm(len(self.x), generator=gen)

    def step(self, batch, epoch, gen):
        self.calls += 1
        if self.calls == self.stop_at_call:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the loop's StopFlag after this step
        x = self.x[batch] + 0.01 * torch.randn(len(batch), 3, generator=gen)
        loss = torch.nn.functional.mse_loss(self.model(x), self.y[batch])
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.item()}, len(batch)

    def end_epoch(self, epoch, totals, elapsed):
        return {"epoch": epoch, "train_loss": totals["loss"] / len(self.x), "seconds": elapsed()}

    def is_better(self, row):
        improved, self.best = row["train_loss"] < self.best, min(self.best, row["train_loss"])
        return improved

    def payload(self):
        return {"format": "fake-v1", "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "best": self.best}

    def load(self, ck):
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.best = ck["best"]


def _fit(out, *, dist=CPU, stop_at_call=None, best_epoch=None, **kw):
    gen = rng.seed_all(0)
    task = FakeTask(stop_at_call=stop_at_call)  # built after seeding, as the trainers do
    if best_epoch is not None:
        task.is_better = lambda row: row["epoch"] == best_epoch
    return loop.fit(task, out, dist=dist, gen=gen, **{"epochs": 3, "batch_size": 4, **kw})


def _assert_same_run(a, b):
    ca, cb = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert ca["epoch"] == cb["epoch"] and ca["position"] is None and cb["position"] is None
    for k in ca["model"]:
        assert torch.equal(ca["model"][k], cb["model"][k]), k
    assert [h["train_loss"] for h in ca["history"]] == [h["train_loss"] for h in cb["history"]]


def test_stop_request_saves_the_position_and_resume_is_bit_identical(tmp_path):
    straight = _fit(tmp_path / "a")
    assert straight.interrupted is None and len(straight.history) == 3
    before = signal.getsignal(signal.SIGTERM)
    # 3 steps per epoch (4 + 4 + 2 samples): call 5 is epoch 2, step 2
    stopped = _fit(tmp_path / "b", stop_at_call=5)
    assert stopped.interrupted == "SIGTERM" and signal.getsignal(signal.SIGTERM) is before
    ck = load_checkpoint(tmp_path / "b" / "last.pt")
    assert ck["epoch"] == 1 and ck["position"]["epoch"] == 2 and ck["position"]["step"] == 2
    assert ck["position"]["order"].shape == (10,) and ck["position"]["sums"]["loss"] > 0
    assert len(ck["history"]) == 1
    resumed = _fit(tmp_path / "b", resume=True)
    assert resumed.interrupted is None
    _assert_same_run(tmp_path / "a", tmp_path / "b")


def test_stop_after_then_resume_equals_one_run(tmp_path):
    _fit(tmp_path / "a")
    first = _fit(tmp_path / "b", stop_after=1)
    assert [h["epoch"] for h in first.history] == [1]
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    second = _fit(tmp_path / "b", resume=True, stop_after=1)
    assert [h["epoch"] for h in second.history] == [1, 2]
    _fit(tmp_path / "b", resume=True)
    _assert_same_run(tmp_path / "a", tmp_path / "b")
    for name in ("log.csv", "curves.png", "best.pt"):
        assert (tmp_path / "b" / name).stat().st_size > 0, name


def test_checkpoint_cadence(tmp_path, monkeypatch):
    saved = []
    real = loop.save_checkpoint

    def spy(path, payload):
        pos = payload["position"]
        saved.append((path.name, payload["epoch"], pos["step"] if pos else None))
        return real(path, payload)

    monkeypatch.setattr(loop, "save_checkpoint", spy)
    _fit(tmp_path / "run", epochs=5, checkpoint_every=2, checkpoint_steps=2, best_epoch=2)
    # in-epoch saves after step 2 of 3 (not after the last step), epoch ends every 2 epochs and the last one
    in_epoch = [(n, e, s) for n, e, s in saved if s is not None]
    assert in_epoch == [("last.pt", e, 2) for e in range(5)]
    assert [(n, e) for n, e, s in saved if s is None] == [("best.pt", 2), ("last.pt", 2), ("last.pt", 4),
                                                         ("last.pt", 5)]
    saved.clear()
    _fit(tmp_path / "sdf-like", epochs=4, checkpoint_every=3, stop_after=2)
    assert [(n, e) for n, e, _ in saved if n == "last.pt"] == [("last.pt", 2)]  # the call's last epoch


def test_other_ranks_write_nothing(tmp_path):
    _fit(tmp_path / "r1", dist=Dist(rank=1, world=1, device=torch.device("cpu")))
    assert not (tmp_path / "r1").exists() or not any((tmp_path / "r1").iterdir())


def test_cuda_rng_state_is_saved_and_restored(tmp_path, monkeypatch):
    """With a CUDA device the checkpoint's rng has "cuda" and resume hands it to torch.cuda.set_rng_state."""
    fake_state = torch.arange(16, dtype=torch.uint8)
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device=None: fake_state.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device=None: restored.append((state, device)))
    real_load = loop.load_checkpoint
    monkeypatch.setattr(loop, "load_checkpoint", lambda path, map_location=None: real_load(path))
    cuda = Dist(device=torch.device("cuda"))  # the fake task computes on the CPU; only the RNG calls see CUDA
    _fit(tmp_path / "run", dist=cuda, stop_after=1)
    state = load_checkpoint(tmp_path / "run" / "last.pt")["rng"]
    assert set(state) == {"torch", "generator", "cuda"} and torch.equal(state["cuda"], fake_state)
    _fit(tmp_path / "run", dist=cuda, resume=True)
    assert len(restored) == 1 and torch.equal(restored[0][0], fake_state)
    assert restored[0][0].device.type == "cpu" and restored[0][1] == torch.device("cuda")


def test_cpu_rng_state_has_no_cuda_entry_and_old_states_restore():
    gen = rng.seed_all(3)
    state = rng.rng_state(gen, torch.device("cpu"))
    assert set(state) == {"torch", "generator"}
    a = torch.rand(3, generator=gen), torch.rand(3)
    rng.set_rng_state(state, gen, torch.device("cuda"))  # a checkpoint without "cuda": nothing to restore there
    assert torch.equal(torch.rand(3, generator=gen), a[0]) and torch.equal(torch.rand(3), a[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_rng_state_round_trips():
    dev = torch.device("cuda")
    gen = rng.seed_all(0)
    state = rng.rng_state(gen, dev)
    assert "cuda" in state
    a = torch.rand(4, device=dev)
    rng.set_rng_state({k: v.to(dev) for k, v in state.items()}, gen, dev)  # as loaded with map_location=cuda
    assert torch.equal(torch.rand(4, device=dev), a)


def test_default_cache_dir_reads_the_environment_at_each_call(tmp_path, monkeypatch):
    from shapes3d.engine.jobs import default_cache_dir

    monkeypatch.setenv("SHAPES3D_CACHE", str(tmp_path))
    assert default_cache_dir("voxels") == tmp_path / "voxels" and default_cache_dir() == tmp_path
    monkeypatch.delenv("SHAPES3D_CACHE")
    assert default_cache_dir("sdf") == Path.home() / ".cache" / "shapes3d" / "sdf"


def test_expand_shape_paths_skips_hidden_entries_inside_the_folder_only(tmp_path):
    from shapes3d.engine.jobs import expand_shape_paths

    root = tmp_path / ".hidden-parent" / "data"
    for rel in ("b/x.off", "a/y.ply", ".git/z.off", "a/.w.off", "a/notes.md"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("")
    assert expand_shape_paths(root) == [root / "a" / "y.ply", root / "b" / "x.off"]
    assert expand_shape_paths([root / "a/notes.md", root / "b"]) == [root / "a/notes.md", root / "b" / "x.off"]


def test_a_killed_runs_temporary_files_are_removed_on_start(tmp_path):
    """A SIGKILL between writing and renaming leaves ``.last.pt.XXXX.tmp``; the next start removes it."""
    stale = tmp_path / ".last.pt.abcd1234.tmp"
    stale.write_bytes(b"")
    keep = tmp_path / "notes.tmp"
    keep.write_text("not ours")
    _fit(tmp_path, epochs=1)
    assert not stale.exists() and keep.exists() and (tmp_path / "last.pt").exists()
