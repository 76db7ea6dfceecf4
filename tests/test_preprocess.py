"""The preprocessing framework: cache keys and re-runs, per-file failures, workers, shards, cache integrity."""

from __future__ import annotations

import json
import logging
import os
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import real_subset

from shapes3d.data import cache as cache_mod
from shapes3d.data.cache import cache_location, iter_cache_files, load_cached, merge_caches, read_meta, write_cached
from shapes3d.data.discovery import discover
from shapes3d.data.preprocess import CRASH_REASON, PreprocessReport, parse_shard, run_preprocess
from shapes3d.errors import CheckpointError, ConfigError, MissingFileError

MARKERS = "SHAPES3D_TEST_MARKERS"


# Work functions live at module level so spawn-started workers can unpickle them by name.
# Each call drops a marker file: workers are separate processes, so a counter would not do.
def _mark(path: Path) -> None:
    folder = os.environ.get(MARKERS)
    if folder:
        Path(folder, f"{path.name}.{uuid.uuid4().hex}").touch()


def scaled_points(path: Path, *, scale: float) -> dict[str, np.ndarray]:
    _mark(path)
    pts = np.load(path, allow_pickle=False)
    return {"points": pts * np.float32(scale), "centroid": pts.mean(axis=0), "n": np.int64(len(pts))}


def mesh_stats(path: Path) -> dict[str, np.ndarray]:
    import trimesh  # here, not at the top: every spawned worker imports this module, and trimesh costs ~1 s

    _mark(path)
    mesh = trimesh.load(path, force="mesh", process=True)
    return {"vertices": np.asarray(mesh.vertices, np.float32), "faces": np.asarray(mesh.faces, np.int32)}


def crash_on_name(path: Path, *, scale: float) -> dict[str, np.ndarray]:
    if path.stem == "crash":
        os._exit(7)  # as a segfault or the OOM killer would: no exception, the process is gone
    return scaled_points(path, scale=scale)


def returns_objects(path: Path) -> dict[str, np.ndarray]:
    return {"bad": np.array([{"a": 1}], dtype=object)}


def real_points(path: Path) -> dict[str, np.ndarray]:
    from shapes3d.geometry.io import load_points

    pts = load_points(path)
    return {"lo": pts.min(axis=0), "hi": pts.max(axis=0)}


@pytest.fixture
def markers(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "markers"
    folder.mkdir()
    monkeypatch.setenv(MARKERS, str(folder))
    return folder


def calls(markers: Path) -> int:
    return len(list(markers.iterdir()))


@pytest.fixture
def point_files(tmp_path) -> list[Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):
        p = folder / f"s{i}.npy"
        np.save(p, rng.normal(size=(5 + i, 3)).astype(np.float32))
        paths.append(p)
    return paths


def tetra_off(path: Path, shift: float) -> Path:
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float) + shift
    f = [[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]
    body = "\n".join(" ".join(map(str, r)) for r in v) + "\n" + "\n".join("3 " + " ".join(map(str, r)) for r in f)
    path.write_text(f"OFF\n4 4 0\n{body}\n")
    return path


def file_bytes(cache_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in iter_cache_files(cache_dir)}


# --- shards -------------------------------------------------------------------------------


def test_parse_shard_accepts_i_of_n():
    assert parse_shard("2/4") == (2, 4)
    assert parse_shard("0/1") == (0, 1)


@pytest.mark.parametrize("text", ["4/4", "-1/2", "a/b", "1", "1/0", "1/2/3", ""])
def test_parse_shard_rejects_bad_values(text):
    with pytest.raises(ConfigError) as info:
        parse_shard(text)
    assert str(info.value) == f"shard {text!r}: expected 'i/n' with integers 0 <= i < n, e.g. '0/4'"


def test_shards_partition_inputs_and_merged_caches_equal_an_unsharded_run(tmp_path, point_files):
    n = 3
    shuffled = point_files[::-1]  # order of the input must not matter
    reports = [
        run_preprocess(shuffled, scaled_points, params={"scale": 2.0}, cache_dir=tmp_path / f"c{i}", shard=(i, n))
        for i in range(n)
    ]
    parts = [set(r.results) for r in reports]
    assert [sorted(p) for p in parts] == [sorted(point_files)[i::n] for i in range(n)]
    assert set().union(*parts) == set(point_files)
    assert sum(len(p) for p in parts) == len(point_files)  # disjoint

    merged = merge_caches([tmp_path / f"c{i}" for i in range(n)], tmp_path / "merged")
    assert (merged.copied, merged.duplicates, merged.invalid) == (len(point_files), 0, [])
    whole = run_preprocess(point_files, scaled_points, params={"scale": 2.0}, cache_dir=tmp_path / "whole")
    assert whole.computed == len(point_files)
    assert file_bytes(tmp_path / "merged") == file_bytes(tmp_path / "whole")
    again = run_preprocess(point_files, scaled_points, params={"scale": 2.0}, cache_dir=tmp_path / "merged")
    assert (again.computed, again.cached) == (0, len(point_files))
    assert merge_caches([tmp_path / "c0"], tmp_path / "merged").duplicates == len(parts[0])


def test_more_shards_than_inputs_gives_empty_shard(tmp_path, point_files):
    report = run_preprocess(point_files[:2], scaled_points, params={"scale": 1}, cache_dir=tmp_path / "c", shard="5/9")
    assert (report.computed, report.cached, report.skipped, report.results) == (0, 0, [], {})


# --- caching and re-runs ----------------------------------------------------------------------


def test_rerun_uses_cache_and_changed_params_or_version_recompute(tmp_path, point_files, markers):
    cache = tmp_path / "cache"
    first = run_preprocess(point_files, scaled_points, params={"scale": 2.0}, cache_dir=cache)
    assert (first.computed, first.cached, first.skipped, calls(markers)) == (7, 0, [], 7)
    second = run_preprocess(point_files, scaled_points, params={"scale": 2.0}, cache_dir=cache)
    assert (second.computed, second.cached, calls(markers)) == (0, 7, 7)
    assert second.results == first.results

    third = run_preprocess(point_files, scaled_points, params={"scale": 3.0}, cache_dir=cache)
    assert (third.computed, third.cached, calls(markers)) == (7, 0, 14)
    assert set(third.results.values()).isdisjoint(first.results.values())
    fourth = run_preprocess(point_files, scaled_points, params={"scale": 2.0}, cache_dir=cache, version="2")
    assert (fourth.computed, calls(markers)) == (7, 21)

    arrays = load_cached(third.results[point_files[0]])
    pts = np.load(point_files[0])
    np.testing.assert_array_equal(arrays["points"], pts * np.float32(3.0))
    assert arrays["n"] == len(pts) and arrays["n"].shape == ()


def test_changed_input_content_recomputes(tmp_path, point_files, markers):
    cache = tmp_path / "cache"
    run_preprocess(point_files[:1], scaled_points, params={"scale": 1}, cache_dir=cache)
    np.save(point_files[0], np.zeros((2, 3), np.float32))
    report = run_preprocess(point_files[:1], scaled_points, params={"scale": 1}, cache_dir=cache)
    assert (report.computed, report.cached, calls(markers)) == (1, 0, 2)


def test_identical_inputs_are_computed_once(tmp_path, point_files, markers):
    twin = point_files[0].with_name("twin.npy")
    twin.write_bytes(point_files[0].read_bytes())
    report = run_preprocess([point_files[0], twin], scaled_points, params={"scale": 1}, cache_dir=tmp_path / "c")
    assert (report.computed, calls(markers)) == (2, 1)
    assert report.results[twin] == report.results[point_files[0]]


# --- one bad file never stops the batch --------------------------------------------------------


def test_corrupt_and_missing_inputs_are_skipped_with_reasons(tmp_path, markers):
    good = [tetra_off(tmp_path / f"t{i}.off", float(i)) for i in range(3)]
    garbage = tmp_path / "garbage.off"
    garbage.write_text("OFF\n3 1 0\n0 0 0\n1 0 garbage\n")
    missing = tmp_path / "missing.off"
    report = run_preprocess([garbage, *good, missing], mesh_stats, params={}, cache_dir=tmp_path / "c")
    assert report.computed == 3 and sorted(report.results) == sorted(good)
    assert report.skipped == [
        (garbage, "ValueError: could not convert string to float: 'garbage'"),
        (missing, f"MissingFileError: {missing}: file does not exist"),
    ]
    arrays = load_cached(report.results[good[1]])
    assert arrays["faces"].shape == (4, 3) and arrays["vertices"].min() == 1.0


def test_result_that_cannot_be_cached_is_skipped(tmp_path, point_files):
    report = run_preprocess(point_files[:1], returns_objects, params={}, cache_dir=tmp_path / "c")
    assert report.skipped == [
        (point_files[0], "TypeError: array 'bad' has dtype object: expected numeric or bool data (caches never pickle)")
    ]
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]


def test_workers_match_in_process_run_and_a_crash_skips_only_its_file(tmp_path, point_files):
    crash = point_files[0].with_name("crash.npy")
    np.save(crash, np.ones((3, 3), np.float32))
    inputs = [*point_files, crash]
    serial = run_preprocess(point_files, crash_on_name, params={"scale": 2.0}, cache_dir=tmp_path / "serial")
    pooled = run_preprocess(inputs, crash_on_name, params={"scale": 2.0}, cache_dir=tmp_path / "pooled", workers=2)
    assert pooled.skipped == [(crash, CRASH_REASON)]
    assert (pooled.computed, pooled.cached) == (len(point_files), 0)
    assert file_bytes(tmp_path / "pooled") == file_bytes(tmp_path / "serial")
    assert {p: loc.name for p, loc in pooled.results.items()} == {p: loc.name for p, loc in serial.results.items()}


# --- cache integrity ------------------------------------------------------------------------------


@pytest.fixture
def one_cached(tmp_path, point_files) -> tuple[Path, Path]:
    report = run_preprocess(point_files[:1], scaled_points, params={"scale": 1}, cache_dir=tmp_path / "c")
    return point_files[0], report.results[point_files[0]]


def test_truncated_cache_raises_and_run_recomputes(tmp_path, one_cached, markers, caplog):
    src, loc = one_cached
    data = loc.read_bytes()
    loc.write_bytes(data[: len(data) // 2])
    for mmap in (False, True):
        with pytest.raises(CheckpointError) as info:
            load_cached(loc, mmap=mmap)
        assert str(info.value).startswith(f"{loc}: unreadable cache file")
    with caplog.at_level(logging.WARNING, logger="shapes3d.data.preprocess"):
        report = run_preprocess([src], scaled_points, params={"scale": 1}, cache_dir=tmp_path / "c")
    assert (report.computed, report.cached, report.recomputed_corrupt, calls(markers)) == (1, 0, 1, 1)
    assert f"cache file is corrupt, recomputing it: {loc}" in caplog.text
    assert loc.read_bytes() == data


@pytest.mark.parametrize("mmap", [False, True])
def test_flipped_byte_in_array_data_fails_checksum(one_cached, mmap):
    _, loc = one_cached
    data = bytearray(loc.read_bytes())
    with zipfile.ZipFile(loc) as zf:
        info = zf.getinfo("points.npy")
    # Flip a byte of the float data behind the member's .npy header (magic, version, 2-byte length, dict).
    start = data.index(b"\x93NUMPY", info.header_offset)
    header_len = int.from_bytes(data[start + 8 : start + 10], "little")
    data[start + 10 + header_len + 5] ^= 0xFF
    loc.write_bytes(bytes(data))
    # Copy loads stream the member through zipfile, whose CRC-32 check fires before our sha256;
    # memory maps bypass zipfile, so the sha256 is what catches it there.
    expected = {
        False: f"{loc}: unreadable cache file (BadZipFile: Bad CRC-32 for file 'points.npy')",
        True: f"{loc}: array 'points' fails its sha256 checksum (corrupted)",
    }[mmap]
    with pytest.raises(CheckpointError) as err:
        load_cached(loc, mmap=mmap)
    assert str(err.value) == expected


def test_pickled_or_foreign_npz_is_refused(tmp_path):
    evil = tmp_path / "evil.npz"
    np.savez(evil, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match=f"^{evil}: unreadable cache file"):
        load_cached(evil)
    with pytest.raises(MissingFileError, match="cache file does not exist"):
        load_cached(tmp_path / "nope.npz")


def test_mmap_and_copy_loads_agree_for_all_layouts(tmp_path):
    arrays = {
        "scalar": np.float32(2.5),
        "empty": np.zeros((0, 3)),
        "mask": np.array([True, False, True]),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
        "grid": np.arange(27, dtype=np.float64).reshape(3, 3, 3),
    }
    loc = cache_location(tmp_path, "ab" + "0" * 62)
    write_cached(loc, arrays, meta={"note": "test"})
    copied, mapped = load_cached(loc), load_cached(loc, mmap=True)
    assert isinstance(mapped["grid"], np.memmap) and not mapped["grid"].flags.writeable
    for name, arr in arrays.items():
        for got in (copied[name], mapped[name]):
            assert got.dtype == np.asarray(arr).dtype and got.shape == np.shape(arr)
            np.testing.assert_array_equal(got, arr)
    assert read_meta(loc)["note"] == "test"


def test_failed_write_leaves_previous_file_and_no_partial_file(tmp_path, monkeypatch):
    loc = cache_location(tmp_path, "cd" + "1" * 62)
    write_cached(loc, {"a": np.arange(4)}, meta={})
    before = loc.read_bytes()
    real_write = np.lib.format.write_array

    def write_then_fail(fp, array, **kwargs):
        real_write(fp, array, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(cache_mod.np.lib.format, "write_array", write_then_fail)
    with pytest.raises(OSError, match="No space left"):
        write_cached(loc, {"a": np.arange(100)}, meta={})
    with pytest.raises(OSError, match="No space left"):
        write_cached(cache_location(tmp_path, "ef" + "2" * 62), {"a": np.arange(100)}, meta={})
    assert loc.read_bytes() == before
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        loc.relative_to(tmp_path).as_posix()
    ]


def test_merge_leaves_out_corrupt_source_and_replaces_corrupt_destination(tmp_path, point_files):
    a = run_preprocess(point_files[:3], scaled_points, params={"scale": 1}, cache_dir=tmp_path / "a")
    bad_src = a.results[point_files[0]]
    bad_src.write_bytes(bad_src.read_bytes()[:-10])
    dst = tmp_path / "dst"
    good = a.results[point_files[1]]
    broken_dst = cache_location(dst, good.stem)
    broken_dst.parent.mkdir(parents=True)
    broken_dst.write_bytes(b"junk")
    report = merge_caches([tmp_path / "a"], dst)
    assert (report.copied, report.duplicates) == (2, 0)
    assert [p for p, _ in report.invalid] == [bad_src]
    assert report.invalid[0][1].startswith(f"{bad_src}: unreadable cache file")
    assert broken_dst.read_bytes() == good.read_bytes()
    with pytest.raises(MissingFileError, match="cache folder to merge does not exist"):
        merge_caches([tmp_path / "nope"], dst)


# --- report and validation -------------------------------------------------------------------------


def test_report_json_round_trip(tmp_path, point_files):
    missing = tmp_path / "gone.npy"
    report = run_preprocess(
        [*point_files[:2], missing], scaled_points, params={"scale": 1.5}, cache_dir=tmp_path / "c", shard=(0, 1)
    )
    out = tmp_path / "report" / "report.json"
    report.write(out)
    assert PreprocessReport.read(out) == report
    data = json.loads(out.read_text())
    assert data["skipped"] == [{"path": str(missing), "reason": f"MissingFileError: {missing}: file does not exist"}]
    assert data["params"] == {"scale": 1.5} and data["fn"] == "test_preprocess.scaled_points"
    assert report.summary().startswith("test_preprocess.scaled_points (shard 0/1): 2 computed, 0 cached, 1 skipped in ")


def closure_factory():
    def inner(path):
        return {}

    return inner


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fn": lambda p: {}}, "fn <lambda>: expected a module-level function (no lambda, closure or partial)"),
        (
            {"fn": closure_factory()},
            "fn closure_factory.<locals>.inner: expected a module-level function (no lambda, closure or partial)",
        ),
        ({"params": {"scale": {1, 2}}}, "params {'scale': {1, 2}}: expected JSON-like values"),
        ({"params": {"path": "x"}}, "params has a 'path' key: the input path is fn's first argument, not a param"),
        ({"workers": 0}, "workers 0: expected an integer >= 1"),
        ({"shard": (2, 2)}, "shard (2, 2): expected None or (i, n) with integers 0 <= i < n"),
    ],
)
def test_bad_arguments_raise_config_error(tmp_path, point_files, kwargs, message):
    args = {"fn": scaled_points, "params": {"scale": 1}, **kwargs}
    with pytest.raises(ConfigError) as info:
        run_preprocess(point_files, args.pop("fn"), cache_dir=tmp_path / "c", **args)
    assert str(info.value).startswith(message)


# --- real data ---------------------------------------------------------------------------------------


@pytest.mark.data
def test_real_modelnet_points_shard_and_rerun(real_data, tmp_path):
    manifest = discover(real_subset(real_data, "modelnet10_pcd1024")).filter(split="test", class_name="bathtub")
    entries = list(manifest)[:12]
    first = run_preprocess(entries, real_points, params={}, cache_dir=tmp_path / "c", shard="1/2")
    assert (first.computed, first.skipped) == (6, [])
    assert sorted(first.results) == sorted(e.path for e in entries)[1::2]
    for loc in first.results.values():
        arrays = load_cached(loc, mmap=True)
        assert arrays["lo"].shape == (3,) and np.all(arrays["lo"] <= arrays["hi"])
    again = run_preprocess(entries, real_points, params={}, cache_dir=tmp_path / "c", shard="1/2")
    assert (again.computed, again.cached) == (0, 6)


def test_atomic_writes_get_ordinary_file_permissions(tmp_path):
    import os

    from shapes3d.utils.io import atomic_write_text

    mask = os.umask(0o022)
    os.umask(mask)
    atomic_write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask
