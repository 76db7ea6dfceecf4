"""The malformed-input corpus (tests/corpus/): every file ends in our own error naming it.

Each case runs under a wall-clock deadline (a hang fails the test instead of stalling the
suite) and under tracemalloc, which sees numpy's allocations: a loader that sizes arrays from
a header's declared counts before comparing them with the file's size fails the memory bound.
Then batch preprocessing runs over the whole corpus plus valid meshes and must report every
bad file as skipped.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
import signal
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

import shapes3d.errors as errors
from shapes3d.config import load_config
from shapes3d.data.configs import VoxelCacheConfig
from shapes3d.data.preprocess import run_preprocess
from shapes3d.data.tasks import voxel_task
from shapes3d.engine.checkpoint import load_checkpoint, save_checkpoint
from shapes3d.errors import CheckpointError, InputFileError, Shapes3DError
from shapes3d.geometry.io import load_geometry, load_mesh, load_points
from shapes3d.pretrained import read_vgg_state

CORPUS = Path(__file__).parent / "corpus"
ROWS = list(csv.DictReader(open(CORPUS / "manifest.csv", newline="", encoding="utf-8")))
SHAPE_LOADERS = ("mesh", "points", "geometry")
# Loads fine as a mesh: it is only malformed for the point-cloud loader its row names.
VALID_AS_GEOMETRY = {"mesh_as_points.off"}
# Cases that still crash, with the reason; each is marked xfail(strict=True), so that a fix (an XPASS)
# fails the suite until its entry is deleted here.
KNOWN_BUGS: dict[str, str] = {}
MAX_SECONDS = 10.0
MAX_ALLOC_BYTES = 64 << 20  # the corpus files are < 1 KB; real work on them needs far less

LOADERS = {
    "mesh": load_mesh,
    "points": load_points,
    "geometry": load_geometry,
    "config": lambda p: load_config(VoxelCacheConfig, p),
    "checkpoint": load_checkpoint,
    "weights": lambda p: read_vgg_state(p, "vgg16"),
}


@contextlib.contextmanager
def guarded(seconds: float = MAX_SECONDS):
    """Fail on a hang (SIGALRM after ``seconds``) or a large allocation (tracemalloc peak)."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds} s (hang?)")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    tracemalloc.start()
    try:
        yield
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert peak < MAX_ALLOC_BYTES, f"peak allocation {peak / 2**20:.0f} MiB"


def expect_error(loader, path: Path, error: str, fragment: str) -> Shapes3DError:
    with guarded(), pytest.raises(Shapes3DError) as info:
        loader(path)
    err = info.value
    assert type(err).__name__ == error, f"{type(err).__name__}: {err}"
    message = str(err)
    assert message.startswith(f"{path}: "), message
    if isinstance(err, InputFileError):
        assert err.path == str(path)
    assert fragment in message
    assert "MemoryError" not in message  # an allocation was attempted from declared sizes
    return err


def test_corpus_is_complete():
    files = {p.name for p in CORPUS.iterdir() if p.is_file()} - {"README.md", "manifest.csv", "make_corpus.py"}
    listed = [r["file"] for r in ROWS]
    assert len(listed) == len(set(listed)) and set(listed) == files
    assert len(files) >= 30
    readme = (CORPUS / "README.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in readme for name in listed)
    for r in ROWS:
        assert issubclass(getattr(errors, r["error"]), Shapes3DError)
        assert r["loader"] in LOADERS
    assert all((CORPUS / name).stat().st_size < 4096 for name in files)


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(r, id=r["file"], marks=pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[r["file"]]))
        if r["file"] in KNOWN_BUGS
        else pytest.param(r, id=r["file"])
        for r in ROWS
    ],
)
def test_corpus_file_raises_our_error_naming_it(row):
    expect_error(LOADERS[row["loader"]], CORPUS / row["file"], row["error"], row["fragment"])


@pytest.mark.parametrize("row", [r for r in ROWS if r["loader"] in ("mesh", "points")], ids=lambda r: r["file"])
def test_load_geometry_also_refuses(row):
    if row["file"] in VALID_AS_GEOMETRY:
        pytest.skip("valid for load_geometry")
    path = CORPUS / row["file"]
    with guarded(), pytest.raises(Shapes3DError) as info:
        load_geometry(path)
    assert str(info.value).startswith(f"{path}: ")


# ---------------------------------------------------------------- checkpoints made here


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "real.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(2000, dtype=torch.float32)}, "step": 7, "config": {"a": 1}})
    assert load_checkpoint(path)["step"] == 7
    return path


def _variant(tmp_path: Path, name: str, data: bytes) -> Path:
    out = tmp_path / name
    out.write_bytes(data)
    return out


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_truncated_checkpoint(tmp_path, checkpoint, cut):
    data = checkpoint.read_bytes()
    path = _variant(tmp_path, "cut.pt", data[: int(len(data) * cut)])
    expect_error(load_checkpoint, path, "CheckpointError", "")


def test_bit_flip_in_payload_fails_checksum(tmp_path, checkpoint):
    data = bytearray(checkpoint.read_bytes())
    # Flip a byte inside the weights (the float data, not the zip structure): only the checksum sees it.
    start = data.find(np.arange(2000, dtype=np.float32).tobytes()[400:420])
    assert start > 0
    data[start + 3] ^= 0xFF
    path = _variant(tmp_path, "flip.pt", bytes(data))
    expect_error(load_checkpoint, path, "CheckpointError", "")


def test_flipped_bytes_anywhere_never_crash(tmp_path, checkpoint):
    data = checkpoint.read_bytes()
    rng = np.random.default_rng(0)
    for k, pos in enumerate(rng.integers(0, len(data), 12)):
        flipped = bytearray(data)
        flipped[pos] ^= 0x5A
        path = _variant(tmp_path, f"flip{k}.pt", bytes(flipped))
        try:
            with guarded():
                load_checkpoint(path)
        except CheckpointError as e:
            assert str(e).startswith(f"{path}: ")
        # (a flip in zip padding or a CRC-free region can leave a loadable file: not an error)


def test_envelope_without_payload(tmp_path):
    path = tmp_path / "nopayload.pt"
    torch.save({"magic": "shapes3d-checkpoint", "sha256": "0" * 64}, path)
    expect_error(load_checkpoint, path, "CheckpointError", "envelope")


def test_non_checkpoint_torch_file(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.zeros(3)}, path)
    expect_error(load_checkpoint, path, "CheckpointError", "not a shapes3d checkpoint")


# ---------------------------------------------------------------- batch preprocessing


def _valid_meshes(folder: Path) -> list[Path]:
    box = folder / "valid_box.ply"
    box.write_bytes(trimesh.creation.box(extents=(1, 2, 3)).export(file_type="ply"))
    sphere = folder / "valid_sphere.off"
    s = trimesh.creation.icosphere(subdivisions=1)
    lines = ["OFF", f"{len(s.vertices)} {len(s.faces)} 0"]
    lines += [" ".join(map(repr, v)) for v in s.vertices.tolist()] + [f"3 {a} {b} {c}" for a, b, c in s.faces]
    sphere.write_text("\n".join(lines) + "\n")
    return [box, sphere]


@pytest.fixture
def batch_folder(tmp_path) -> tuple[Path, list[Path], list[Path]]:
    folder = tmp_path / "dataset"
    folder.mkdir()
    bad = []
    for r in ROWS:
        if r["loader"] in SHAPE_LOADERS and r["file"] not in VALID_AS_GEOMETRY:
            bad.append(Path(shutil.copy(CORPUS / r["file"], folder / r["file"])))
    valid = _valid_meshes(folder) + [Path(shutil.copy(CORPUS / "mesh_as_points.off", folder / "mesh_as_points.off"))]
    return folder, sorted(bad), sorted(valid)


def test_batch_preprocess_over_corpus_skips_each_bad_file(tmp_path, batch_folder):
    folder, bad, valid = batch_folder
    params = {"resolution": 16, "object_size": 12, "rotations": 1}
    with guarded(120):
        report = run_preprocess(bad + valid, voxel_task, params=params, cache_dir=tmp_path / "cache")
    assert report.computed == len(valid) and report.cached == 0
    assert sorted(report.results) == valid
    skipped = dict(report.skipped)
    assert sorted(skipped) == bad
    for path, reason in skipped.items():
        assert str(path) in reason, reason  # our errors name the file
        name = reason.split(":", 1)[0]
        assert issubclass(getattr(errors, name), InputFileError), reason
    for loc in report.results.values():
        assert loc.is_file()
    # A re-run uses the cache for the valid files and tries the bad ones again.
    again = run_preprocess(bad + valid, voxel_task, params=params, cache_dir=tmp_path / "cache")
    assert again.cached == len(valid) and len(again.skipped) == len(bad)


def test_cli_preprocess_over_corpus_reports_every_bad_file(tmp_path, batch_folder, capsys):
    from shapes3d.cli.main import main
    from shapes3d.data.discovery import SHAPE_EXTENSIONS
    from shapes3d.data.preprocess import PreprocessReport

    folder, bad, valid = batch_folder
    out = tmp_path / "cache"
    argv = ["data", "preprocess", str(folder), "--out", str(out), "--set", "resolution=16",
            "--set", "object_size=12", "--set", "rotations=1"]
    with guarded(120):
        assert main(argv) == 1  # bad files skipped and reported: exit 1 with "N of M inputs skipped"
    printed = capsys.readouterr().out
    discovered_bad = [p for p in bad if p.suffix.lower() in SHAPE_EXTENSIONS]
    report = PreprocessReport.read(out / "report.json")
    assert report.computed == len(valid)
    assert sorted(p for p, _ in report.skipped) == discovered_bad
    lines = [line for line in printed.splitlines() if line.startswith("  skipped: ")]
    assert len(lines) == len(discovered_bad)
    for path, line in zip(discovered_bad, lines):
        assert f" {path}: " in line, line
