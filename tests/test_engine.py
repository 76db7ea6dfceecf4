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


# ----------------------------------------------------------------------------- run folders, identity, divergence
def test_check_run_folder_refuses_what_would_lose_or_mix_runs(tmp_path):
    from shapes3d.errors import RunFolderError

    run = tmp_path / "run"
    assert loop.check_run_folder(run, resume=False) is None  # nothing there: a fresh run
    with pytest.raises(RunFolderError, match="no checkpoint \\(last.pt\\) to resume from"):
        loop.check_run_folder(run, resume=True)
    _fit(run, stop_after=1)
    with pytest.raises(RunFolderError) as err:
        loop.check_run_folder(run, resume=False)
    msg = str(err.value)
    assert str(run) in msg and "--resume" in msg and "--overwrite" in msg and "\n" not in msg
    assert loop.check_run_folder(run, resume=True, epochs=3) == run / "last.pt"  # 1 of 3 epochs: resumable
    _fit(run, resume=True)  # to the end
    with pytest.raises(RunFolderError, match="the run is finished \\(epoch 3 of 3\\)"):
        loop.check_run_folder(run, resume=True, epochs=3)
    with pytest.raises(RunFolderError, match="exclude each other"):
        loop.check_run_folder(run, resume=True, overwrite=True)
    assert loop.check_run_folder(run, resume=False, overwrite=True) is None
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file, expected a run folder"):
        loop.check_run_folder(tmp_path / "file", resume=False)


def test_architecture_change_is_named_before_resuming(tmp_path):
    from shapes3d.classify.config import ClassifyConfig, VoxNetConfig
    from shapes3d.config import config_to_dict
    from shapes3d.errors import RunFolderError

    run = tmp_path / "run"
    cfg = ClassifyConfig()
    task = FakeTask()
    task.payload = lambda: {**FakeTask.payload(task), "config": config_to_dict(cfg)}  # as the trainers' payloads
    loop.fit(task, run, dist=CPU, gen=rng.seed_all(0), epochs=3, batch_size=4, stop_after=1, config=cfg)
    wider = ClassifyConfig(model=VoxNetConfig(hidden=256))
    with pytest.raises(RunFolderError, match="model.hidden 128 -> 256"):
        loop.check_run_folder(run, resume=True, config=wider, architecture_keys=("model",))
    loop.check_run_folder(run, resume=True, config=cfg, architecture_keys=("model",))


class _IdTask(FakeTask):
    def __init__(self, identity, **kw):
        super().__init__(**kw)
        self._identity = identity

    def identity(self):
        return self._identity


def _id(names, sha, ordered=False, what="class list"):
    return {"what": what, "names": names, "files": [f"{n}.off" for n in sha], "sha256": sha, "ordered": ordered}


def test_resume_refuses_other_inputs_and_says_what_changed(tmp_path, caplog):
    from shapes3d.errors import RunFolderError

    def fit(identity, **kw):
        gen = rng.seed_all(0)
        return loop.fit(_IdTask(identity), tmp_path / "run", dist=CPU, gen=gen, epochs=3, batch_size=4, **kw)

    fit(_id(["chair", "table"], ["a", "b", "c"]), stop_after=1)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["identity"]["names"] == ["chair", "table"]
    with pytest.raises(RunFolderError, match="class list changed: 'table' renamed/removed, 'desk' added"):
        fit(_id(["chair", "desk"], ["a", "b", "c"]), resume=True)
    with pytest.raises(RunFolderError, match="training files changed: 1 removed or edited \\('c.off'\\)"):
        fit(_id(["chair", "table"], ["a", "b", "z"]), resume=True)
    fit(_id(["chair", "table"], ["c", "a", "b"]), resume=True, stop_after=1)  # same files, other order: fine
    # a checkpoint written before identities existed resumes with a warning
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    del ck["identity"]
    loop.save_checkpoint(tmp_path / "run" / "last.pt", ck)
    with caplog.at_level("WARNING", logger="shapes3d.engine.loop"):
        fit(_id(["other"], ["q"]), resume=True)
    assert "before checkpoints recorded their inputs" in caplog.text


def test_ordered_identity_compares_content_in_order():
    old = _id(["s0", "s1"], ["a", "b"], ordered=True, what="shape list")
    assert loop.identity_changes(old, _id(["x/s0", "x/s1"], ["a", "b"], ordered=True, what="shape list")) == []
    swapped = loop.identity_changes(old, _id(["s1", "s0"], ["b", "a"], ordered=True, what="shape list"))
    assert swapped and "in another order" in swapped[0]
    grown = loop.identity_changes(old, _id(["s0", "s1", "s2"], ["a", "b", "c"], ordered=True, what="shape list"))
    assert grown == ["shape list changed: 2 -> 3 inputs"]
    unhashed = {**old, "sha256": [None, None]}
    assert "renamed/removed" in loop.identity_changes(unhashed, {**unhashed, "names": ["s0", "s9"]})[0]


class _Diverging(FakeTask):
    """Finite until call ``bad_at``; then the loss is NaN (``mode="loss"``) or a weight is (``mode="weights"``)."""

    def __init__(self, bad_at, mode):
        super().__init__()
        self.bad_at, self.mode = bad_at, mode

    def step(self, batch, epoch, gen):
        stats, n = super().step(batch, epoch, gen)
        if self.calls >= self.bad_at:
            if self.mode == "loss":
                stats = {"loss": float("nan")}
            else:
                with torch.no_grad():
                    self.model[1].weight.fill_(float("inf"))
        return stats, n


@pytest.mark.parametrize("mode", ["loss", "weights"])
def test_non_finite_training_stops_and_keeps_the_last_good_checkpoint(tmp_path, mode):
    from shapes3d.errors import DivergedError

    run = tmp_path / "run"
    gen = rng.seed_all(0)
    good = loop.fit(FakeTask(), run, dist=CPU, gen=gen, epochs=1, batch_size=4)  # epoch 1, finite
    before = load_checkpoint(good.last_path)
    gen = rng.seed_all(0)
    with pytest.raises(DivergedError) as err:
        loop.fit(_Diverging(bad_at=2, mode=mode), run, dist=CPU, gen=gen, epochs=3, batch_size=4, resume=True)
    msg = str(err.value)
    assert "non-finite" in msg and f"the last good checkpoint is {run / 'last.pt'}" in msg and "\n" not in msg
    after = load_checkpoint(run / "last.pt")
    assert after["epoch"] == before["epoch"] == 1
    for k in before["model"]:
        assert torch.equal(before["model"][k], after["model"][k]) and torch.isfinite(after["model"][k]).all()


def test_deepsdf_trainer_checks_shapes_and_architecture_on_resume(tmp_path):
    """Shape i has code i: another shape list (by content, in order) or decoder width is refused by name."""
    import dataclasses

    import numpy as np

    from shapes3d.data.sdf_dataset import SDFDataset, ShapeSamples
    from shapes3d.deepsdf import trainer as sdf_train
    from shapes3d.deepsdf.config import DeepSDFConfig
    from shapes3d.errors import RunFolderError

    def shape(seed):
        r = np.random.default_rng(seed)
        p = r.uniform(-1, 1, (200, 3)).astype(np.float32)
        d = (np.linalg.norm(p, axis=1) - 0.5).astype(np.float32)
        s = np.concatenate([p, d[:, None]], 1)
        return ShapeSamples(s[d > 0], s[d <= 0], (0.0, 0.0, 0.0), 1.0)

    files = [tmp_path / f"s{i}.off" for i in range(3)]
    for i, f in enumerate(files):
        f.write_text(f"OFF {i}\n")
    data = SDFDataset([shape(i) for i in range(3)], names=[str(f) for f in files])
    cfg = DeepSDFConfig()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, latent_size=4, hidden=16, layers=3,
                                                             skip_at=(2,), dropout=0.0),
                              train=dataclasses.replace(cfg.train, epochs=2, shapes_per_batch=2, samples_per_shape=64,
                                                        device="cpu"))
    run = tmp_path / "run"
    sdf_train.train(cfg, data, run, stop_after=1)
    with pytest.raises(RunFolderError, match="already holds a training run"):
        sdf_train.train(cfg, data, run)
    files[1].write_text("OFF edited\n")
    with pytest.raises(RunFolderError, match="shape list changed: 1 of 3 inputs differ in content"):
        sdf_train.train(cfg, data, run, resume=True)
    wide = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, hidden=32))
    with pytest.raises(RunFolderError, match="model.hidden 16 -> 32"):
        sdf_train.train(wide, data, run, resume=True)
    files[1].write_text("OFF 1\n")
    assert len(sdf_train.train(cfg, data, run, resume=True).history) == 2
