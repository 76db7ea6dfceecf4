"""Faults the malformed-input corpus does not cover: each test stands for a class of fault.

Transposed arrays, zero-extent geometry, unreadable files, OFF variants the format allows,
decompression bombs, LZF speed and correctness, symlink loops, non-UTF-8 manifests, cache
entries copied over each other, worker caps, SIGTERM, per-file time limits and stale temp files.

Top-level imports stay light: spawn-started workers import this module to find its work functions.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from shapes3d.errors import (
    CheckpointError,
    ConfigError,
    CorruptFileError,
    DegenerateGeometryError,
    InputFileError,
    Interrupted,
    Shapes3DError,
    TooLargeError,
)

MARKERS = "SHAPES3D_TEST_MARKERS"
LIMIT_NOTE = "on decompressed input (decompression bomb?); raise it with SHAPES3D_MAX_UNCOMPRESSED if the file is genuine"


# ---------------------------------------------------------------- work functions (module level, for workers)


def points_task(path: Path, *, seconds: float = 0.0) -> dict[str, np.ndarray]:
    """The file's points; files named ``slow*`` first sleep ``seconds`` (dropping a ``<pid>.slow`` marker)."""
    if path.name.startswith("slow"):
        folder = os.environ.get(MARKERS)
        if folder:
            Path(folder, f"{os.getpid()}.slow").touch()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.05)
    return {"points": np.load(path, allow_pickle=False)}


def normalized_task(path: Path) -> dict[str, np.ndarray]:
    """Normalise the file's points (raises DegenerateGeometryError naming "input" for zero extent)."""
    from shapes3d.geometry.normalize import normalize

    pts, t = normalize(np.load(path, allow_pickle=False).astype(np.float64))
    return {"points": pts, "scale": np.float64(t.scale)}


def sigterm_self_on_second(path: Path) -> dict[str, np.ndarray]:
    """In-process: the second file sends SIGTERM to this very process (as a service manager would)."""
    if path.stem == "b":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises Interrupted during this sleep
    return {"points": np.load(path, allow_pickle=False)}


def _guarded(seconds: float = 10.0):
    from test_corpus import guarded  # lazily: test_corpus imports torch, which workers must not pay for

    return guarded(seconds)


def _save(path: Path, arr) -> Path:
    np.save(path, np.asarray(arr))
    return path


# ---------------------------------------------------------------- transposed arrays


@pytest.mark.parametrize("n", [1, 2, 4, 1000])
def test_transposed_point_arrays_are_refused(tmp_path, n):
    from shapes3d.geometry.io import load_points

    for name in ("t.npy", "t.npz"):
        p = tmp_path / name
        arr = np.arange(3 * n, dtype=np.float32).reshape(3, n)
        np.save(p, arr) if name.endswith(".npy") else np.savez(p, points=arr)
        with pytest.raises(CorruptFileError) as info:
            load_points(p)
        assert str(info.value) == (f"{p}: array looks transposed: shape (3, {n}); expected (N, 3) points "
                                   "(one row per point: save arr.T)")


def test_point_arrays_n_by_3_and_wider_load_as_before(tmp_path):
    from shapes3d.geometry.io import load_points

    square = np.arange(9.0).reshape(3, 3)
    assert np.array_equal(load_points(_save(tmp_path / "sq.npy", square)), square)  # (3, 3): three points
    wide = np.arange(24.0).reshape(4, 6)
    assert np.array_equal(load_points(_save(tmp_path / "w.npy", wide)), wide[:, :3])
    tall = np.arange(3000.0).reshape(1000, 3)
    assert np.array_equal(load_points(_save(tmp_path / "t.npy", tall)), tall)


# ---------------------------------------------------------------- zero-extent geometry


def test_normalize_of_coincident_points_raises_a_shapes3d_error():
    from shapes3d.geometry.normalize import fit_transform, normalize

    with pytest.raises(DegenerateGeometryError) as info:
        normalize(np.ones((5, 3)))
    assert str(info.value) == "input: cannot normalise: all points coincide (5 points, zero extent)"
    assert isinstance(info.value, Shapes3DError) and isinstance(info.value, ValueError)
    named = info.value.for_path("/data/x.npy")
    assert str(named) == "/data/x.npy: cannot normalise: all points coincide (5 points, zero extent)"
    with pytest.raises(DegenerateGeometryError):
        fit_transform(np.array([[0.0, 0, 0], [5e-324, 0, 0]]), mode="cube")  # extent too small to scale


def test_preprocess_names_the_file_with_zero_extent(tmp_path):
    from shapes3d.data.preprocess import run_preprocess

    flat = _save(tmp_path / "flat.npy", np.full((7, 3), 2.5))
    good = _save(tmp_path / "good.npy", np.eye(3))
    report = run_preprocess([flat, good], normalized_task, params={}, cache_dir=tmp_path / "c")
    assert report.computed == 1
    assert report.skipped == [(flat, f"DegenerateGeometryError: {flat}: cannot normalise: all points coincide "
                                     "(7 points, zero extent)")]


def test_voxel_task_on_a_single_repeated_point_is_skipped_naming_it(tmp_path):
    from shapes3d.data.preprocess import run_preprocess
    from shapes3d.data.tasks import voxel_task

    one = _save(tmp_path / "one.npy", np.zeros((4, 3)))
    report = run_preprocess([one], voxel_task, params={"resolution": 8, "object_size": 6}, cache_dir=tmp_path / "c")
    ((path, reason),) = report.skipped
    assert path == one and reason.startswith(f"DegenerateGeometryError: {one}: cannot normalise")


# ---------------------------------------------------------------- unreadable files


def test_permission_denied_is_an_input_file_error(tmp_path, monkeypatch):
    import builtins

    from shapes3d.geometry import io as gio

    p = tmp_path / "locked.off"
    p.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    real_open = builtins.open

    def deny(file, *args, **kwargs):
        if Path(file) == p:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", deny)
    for loader in (gio.load_mesh, gio.load_geometry):
        with pytest.raises(InputFileError) as info:
            loader(p)
        assert str(info.value) == f"{p}: cannot read the file (Permission denied)"
        assert not isinstance(info.value, PermissionError)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_by_mode(tmp_path):
    from shapes3d.geometry.io import load_points

    p = _save(tmp_path / "locked.npy", np.eye(3))
    p.chmod(0)
    with pytest.raises(InputFileError, match="cannot read the file"):
        load_points(p)


def test_folders_fifos_and_unreadable_inputs_in_preprocess(tmp_path):
    from shapes3d.data.preprocess import run_preprocess
    from shapes3d.geometry.io import load_mesh, load_points

    folder = tmp_path / "folder.off"
    folder.mkdir()
    with pytest.raises(InputFileError) as info:
        load_mesh(folder)
    assert str(info.value) == f"{folder}: is a directory, expected a mesh file"
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    with _guarded(), pytest.raises(InputFileError) as info:  # must not block waiting for a writer
        load_points(fifo)
    assert str(info.value) == f"{fifo}: is not a regular file (a device, FIFO or socket), expected a point cloud file"
    report = run_preprocess([folder], points_task, params={}, cache_dir=tmp_path / "c")
    assert report.skipped == [(folder, f"MissingFileError: {folder}: is a directory, expected a shape file")]


# ---------------------------------------------------------------- OFF variants and speed


TRI = "0 0 0\n1 0 0\n0 1 0\n0 0 1\n"


def _off(tmp_path: Path, data: bytes | str, name: str = "m.off") -> Path:
    p = tmp_path / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


@pytest.mark.parametrize("faces", [
    "3 0 1 2 0.5 0.5 0.5\n3 0 1 3 0.1 0.2 0.3\n",        # float RGB
    "3 0 1 2 0.5 0.5 0.5 1.0\n3 0 1 3 0.1 0.2 0.3 0.5\n",  # float RGBA
    "3 0 1 2 255 0 0\n3 0 1 3 0 255 0 255\n",             # integer colours, mixed widths
    "3 0 1 2\n3 0 1 3 1.0 0.0 0.0\n",                     # some faces coloured
])
def test_off_face_colours_are_ignored(tmp_path, faces):
    from shapes3d.geometry.off import read_off

    v, f = read_off(_off(tmp_path, f"COFF\n4 2 0\n{TRI}{faces}"))
    assert v.shape == (4, 3) and f.tolist() == [[0, 1, 2], [0, 1, 3]]


def test_off_bom_and_latin1_comments(tmp_path):
    from shapes3d.geometry.off import read_off

    body = b"OFF\n# auteur: Ren\xe9 M\xfcller\n4 2 0\n0 0 0\n1 0 0 # coin \xb0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n"
    for data in (b"\xef\xbb\xbf" + body, body, b"\xef\xbb\xbf" + body.replace(b"\xe9", b"\xc3\xa9")):
        v, f = read_off(_off(tmp_path, data))
        assert v.shape == (4, 3) and f.tolist() == [[0, 1, 2], [0, 1, 3]]


def test_off_non_utf8_outside_comments_is_still_refused(tmp_path):
    from shapes3d.geometry.off import read_off

    data = b"\xef\xbb\xbfOFF\n# caf\xe9\n3 1 0\n0 0 0\n1 0 \xe9\n0 1 0\n3 0 1 2\n"
    p = _off(tmp_path, data)
    with pytest.raises(CorruptFileError) as info:
        read_off(p)
    offset = data.index(b"0 \xe9") + 2
    assert str(info.value) == f"{p}: not a text OFF file (undecodable byte at offset {offset})"


def test_off_mixed_polygons_keep_file_order(tmp_path):
    from shapes3d.geometry.off import read_off

    _, f = read_off(_off(tmp_path, "OFF\n5 3 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n0 0 1\n"
                                   "3 0 1 4\n4 0 1 2 3 255 0 0\n3 1 2 4 0.5 0.5 0.5\n"))
    assert f.tolist() == [[0, 1, 4], [0, 1, 2], [0, 2, 3], [1, 2, 4]]


@pytest.mark.parametrize("text, message", [
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2.5 0.5 0.5 0.5\n",
     "non-integer face index (invalid literal for int() with base 10: '2.5')"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n1000000000 0 1 2\n", "face 0 declares 1000000000 vertices but lists 3"),
    ("OFF\n3 1 0\n0 0 0\n1 0\n0 1 0\n3 0 1 2\n", "vertex 1 has 2 coordinates, expected 3"),
])
def test_off_fast_path_falls_back_to_exact_errors(tmp_path, text, message):
    from shapes3d.geometry.off import read_off

    p = _off(tmp_path, text)
    with _guarded(), pytest.raises(CorruptFileError) as info:
        read_off(p)
    assert str(info.value) == f"{p}: {message}"


def _grid_off(path: Path, n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    side = int(np.sqrt(n_faces / 2)) + 2
    x, y = np.meshgrid(np.arange(side), np.arange(side))
    v = np.c_[x.ravel() * 0.01, y.ravel() * 0.01, np.sin(x.ravel() * 0.1)]
    idx = np.arange(side * side).reshape(side, side)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    f = np.r_[np.c_[a, b, d], np.c_[a, d, c]][:n_faces]
    with open(path, "w") as fh:
        fh.write(f"OFF\n# grid\n{len(v)} {len(f)} 0\n")
        np.savetxt(fh, v, fmt="%.6f")
        np.savetxt(fh, np.c_[np.full(len(f), 3), f], fmt="%d")
    return np.round(v, 6), f


def test_large_off_reads_fast_and_exactly(tmp_path):
    from shapes3d.geometry.off import read_off

    p = tmp_path / "big.off"
    v_ref, f_ref = _grid_off(p, 400_000)
    start = time.perf_counter()
    v, f = read_off(p)
    seconds = time.perf_counter() - start
    assert np.allclose(v, v_ref, atol=1e-9) and np.array_equal(f, f_ref)
    assert seconds < 4.0, f"{seconds:.1f} s for 400k faces (the per-line reader took ~6 s)"


@pytest.mark.data
def test_vectorised_off_matches_trimesh_on_real_files(real_data):
    import trimesh
    from conftest import real_subset

    from shapes3d.geometry.off import read_off

    files = sorted(real_subset(real_data, "modelnet_off_samples").rglob("*.off"))[:6]
    assert files
    for p in files:
        v, f = read_off(p)
        ref = trimesh.load(p, file_type="off", process=False, force="mesh")
        assert np.allclose(v, ref.vertices) and np.array_equal(f, ref.faces), p


# ---------------------------------------------------------------- decompression bombs


def _deflated_npz(path: Path, arr: np.ndarray) -> Path:
    np.savez_compressed(path, points=arr)
    return path


def test_npz_inflating_past_the_limit_is_refused(tmp_path, monkeypatch):
    from shapes3d.geometry import limits
    from shapes3d.geometry.io import load_points

    p = _deflated_npz(tmp_path / "bomb.npz", np.zeros((200_000, 3)))  # 4.8 MB of zeros, ~5 KB on disk
    assert p.stat().st_size < 20_000
    monkeypatch.setattr(limits, "MAX_UNCOMPRESSED_BYTES", 1 << 20)
    with _guarded(), pytest.raises(TooLargeError) as info:
        load_points(p)
    assert str(info.value) == (f"{p}: NPZ array 'points' (shape (200000, 3) of float64) declares 4800000 bytes "
                               f"uncompressed, over the limit of 1048576 bytes {LIMIT_NOTE}")
    monkeypatch.setattr(limits, "MAX_UNCOMPRESSED_BYTES", 8 << 20)
    assert load_points(p).shape == (200_000, 3)
    monkeypatch.setenv("SHAPES3D_MAX_UNCOMPRESSED", "1M")  # the environment wins (and reaches workers)
    with pytest.raises(TooLargeError, match="over the limit of 1048576 bytes"):
        load_points(p)
    monkeypatch.setenv("SHAPES3D_MAX_UNCOMPRESSED", "lots")
    with pytest.raises(ConfigError, match="SHAPES3D_MAX_UNCOMPRESSED='lots': expected a positive byte count"):
        load_points(p)


def test_inflated_bytes_are_counted_not_the_declared_sizes(tmp_path):
    from shapes3d.geometry.limits import BoundedReader

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("m", b"\0" * 3_000_000)
    with zipfile.ZipFile(buf) as zf, zf.open("m") as fh:
        reader = BoundedReader(fh, "x.npz", "member 'm'", limit=1_000_000)
        with _guarded(), pytest.raises(TooLargeError) as info:
            reader.read()
    assert str(info.value) == f"x.npz: member 'm' decompresses to more than 1000000 bytes, over the limit of " \
                              f"1000000 bytes {LIMIT_NOTE}"


def test_pcd_compressed_block_over_the_limit(tmp_path, monkeypatch):
    from shapes3d.geometry import limits
    from shapes3d.geometry.io import load_points

    n = 100_000
    head = (f"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\nPOINTS {n}\n"
            "DATA binary_compressed\n").encode()
    p = tmp_path / "bomb.pcd"
    p.write_bytes(head + struct.pack("<II", 4, 12 * n) + b"\x00abc")
    monkeypatch.setattr(limits, "MAX_UNCOMPRESSED_BYTES", 1 << 20)
    with pytest.raises(TooLargeError) as info:
        load_points(p)
    assert str(info.value) == (f"{p}: binary_compressed block declares 1200000 bytes uncompressed, over the limit "
                               f"of 1048576 bytes {LIMIT_NOTE}")


def test_gltf_buffer_that_is_not_a_regular_file(tmp_path):
    import json

    from shapes3d.geometry.io import load_mesh

    os.mkfifo(tmp_path / "buf.bin")
    p = tmp_path / "m.gltf"
    p.write_text(json.dumps({"asset": {"version": "2.0"}, "buffers": [{"uri": "buf.bin", "byteLength": 36}]}))
    with _guarded(), pytest.raises(CorruptFileError) as info:
        load_mesh(p)
    assert str(info.value) == f"{p}: glTF buffer 0 refers to 'buf.bin', which is not a regular file"


# ---------------------------------------------------------------- LZF


def _lzf_literal(data: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(data), 32):
        chunk = data[i:i + 32]
        out += bytes([len(chunk) - 1]) + chunk
    return bytes(out)


def test_lzf_overlapping_and_long_back_references():
    from shapes3d.geometry.pcd import _lzf_decompress

    # "ab", then copy 8 bytes from distance 2 (overlapping: "abababab"), then a long copy (7 + 20 + 2 bytes)
    stream = b"\x01ab" + bytes([(6 << 5) | 0, 1]) + bytes([(7 << 5) | 0, 20, 9])
    out = _lzf_decompress(stream, 2 + 8 + 29)
    assert out == (b"ab" * 20)[:39]
    with pytest.raises(ValueError, match="back reference before start of output"):
        _lzf_decompress(b"\x00a" + bytes([(1 << 5) | 0, 5]), 4)
    with pytest.raises(ValueError, match="decompressed data longer than declared"):
        _lzf_decompress(b"\x01ab" + bytes([(6 << 5) | 0, 1]), 4)


def test_lzf_pcd_python_and_open3d_paths_agree(tmp_path, monkeypatch):
    import open3d as o3d

    from shapes3d.geometry import pcd

    rng = np.random.default_rng(0)
    pts = np.round(rng.normal(size=(60_000, 3)), 2)
    p = tmp_path / "c.pcd"
    o3d.io.write_point_cloud(str(p), o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts)), compressed=True)
    native = pcd.read_pcd(p)  # open3d is imported: the native decoder runs
    monkeypatch.setattr(pcd, "_read_with_open3d", lambda *a: None)
    start = time.perf_counter()
    python = pcd.read_pcd(p)
    assert time.perf_counter() - start < 5.0
    assert np.array_equal(native, python)
    assert np.allclose(python, pts.astype(np.float32))


def test_lzf_damage_is_reported_by_our_decoder_after_open3d_refuses(tmp_path):
    import open3d  # noqa: F401  (imported: read_pcd tries open3d first)

    from shapes3d.geometry.io import load_points

    head = b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 4\nHEIGHT 1\nPOINTS 4\n" \
           b"DATA binary_compressed\n"
    p = tmp_path / "bad.pcd"
    p.write_bytes(head + struct.pack("<II", 3, 48) + b"\xe0\x10\x05")
    with pytest.raises(CorruptFileError) as info:
        load_points(p)
    assert str(info.value) == f"{p}: corrupt LZF data (back reference before start of output)"


# ---------------------------------------------------------------- discovery


def test_symlinked_folders_are_followed_and_loops_reported(tmp_path, caplog):
    from shapes3d.data.discovery import discover

    root, elsewhere = tmp_path / "ds", tmp_path / "elsewhere"
    for rel in ("chair/train/a.off", "chair/test/b.off"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    (elsewhere / "train").mkdir(parents=True)
    (elsewhere / "train" / "t.off").write_text("x")
    (root / "table").symlink_to(elsewhere, target_is_directory=True)   # a class kept elsewhere
    (root / "chair" / "train" / "loop").symlink_to(root, target_is_directory=True)  # back to the root
    (root / "chair" / "self").symlink_to(root / "chair", target_is_directory=True)
    (root / "chair" / "train" / "gone.off").symlink_to(tmp_path / "missing.off")
    with _guarded(), caplog.at_level(logging.WARNING, logger="shapes3d.data.discovery"):
        manifest = discover(root)
    assert sorted(str(e.path.relative_to(root)) for e in manifest) == [
        "chair/test/b.off", "chair/train/a.off", "table/train/t.off"]
    assert f"{root / 'chair' / 'train' / 'loop'}: symlink loop (leads back to {root}, a folder above it)" in caplog.text
    assert f"{root / 'chair' / 'self'}: symlink loop" in caplog.text
    assert f"{root / 'chair' / 'train' / 'gone.off'}: broken or looping symlink" in caplog.text


def test_manifest_csv_latin1_and_bom(tmp_path, caplog):
    from shapes3d.data.discovery import load_csv

    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfclass,split,path\nchaise,train,a.off\n")
    assert [(e.class_name, e.path) for e in load_csv(bom)] == [("chaise", tmp_path / "a.off")]
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"class,split,path\nchaise,train,caf\xe9.off\n")
    with caplog.at_level(logging.WARNING, logger="shapes3d.data.discovery"):
        entries = list(load_csv(latin))
    assert [e.path.name for e in entries] == ["caf\xe9.off"]
    assert f"{latin}: not UTF-8 (byte 0xe9 at offset 33); reading it as Latin-1" in caplog.text
    nul = tmp_path / "nul.csv"
    nul.write_bytes(b"class,split,path\nx,train,a\x00.off\n")
    with pytest.raises(CorruptFileError) as info:
        load_csv(nul)
    assert str(info.value) == f"{nul}: contains a NUL byte (offset 26): not a CSV text file"


# ---------------------------------------------------------------- cache identity


def test_cache_entry_copied_over_another_is_not_served(tmp_path, caplog):
    from shapes3d.data.cache import load_cached
    from shapes3d.data.preprocess import run_preprocess

    a = _save(tmp_path / "a.npy", np.full((2, 3), 1.0))
    b = _save(tmp_path / "b.npy", np.full((2, 3), 2.0))
    cache = tmp_path / "cache"
    first = run_preprocess([a, b], points_task, params={}, cache_dir=cache)
    loc_a, loc_b = first.results[a], first.results[b]
    shutil.copyfile(loc_a, loc_b)  # b's entry now holds a's arrays, with a's (valid) checksums
    with pytest.raises(CheckpointError) as info:
        load_cached(loc_b)
    assert str(info.value) == (f"{loc_b}: cache entry stores key {loc_a.stem[:16]}..., but its file name is key "
                               f"{loc_b.stem[:16]}... (copied or renamed over another entry)")
    with caplog.at_level(logging.WARNING, logger="shapes3d.data.preprocess"):
        again = run_preprocess([a, b], points_task, params={}, cache_dir=cache)
    assert (again.cached, again.computed, again.recomputed_corrupt) == (1, 1, 1)
    assert "copied or renamed over another entry" in caplog.text
    assert np.array_equal(load_cached(again.results[b])["points"], np.full((2, 3), 2.0))
    # A file outside the <key>.npz naming is still checked against the key asked for.
    other = tmp_path / "renamed.npz"
    shutil.copyfile(loc_a, other)
    with pytest.raises(CheckpointError, match="expected " + loc_b.stem[:16]):
        load_cached(other, expect_key=loc_b.stem)
    with pytest.raises(CheckpointError, match="it belongs to another input"):
        load_cached(other, expect_input_sha256="0" * 64)
    assert load_cached(other, expect_key=loc_a.stem)["points"].shape == (2, 3)


# ---------------------------------------------------------------- workers: caps, timeouts, SIGTERM


def test_workers_are_capped_by_cpus_and_memory(monkeypatch, caplog):
    from shapes3d.data import preprocess

    monkeypatch.setattr(preprocess, "available_cpus", lambda: 16)
    monkeypatch.setattr(preprocess, "available_memory_bytes", lambda: 1_300_000_000)
    with caplog.at_level(logging.INFO, logger="shapes3d.data.preprocess"):
        assert preprocess.cap_workers(8, 100) == 2
    assert ("workers=8 capped to 2: 16 CPUs usable by this process, 1.3 GB memory available "
            "(~600 MB assumed per worker)") in caplog.text
    monkeypatch.setattr(preprocess, "available_cpus", lambda: 3)
    monkeypatch.setattr(preprocess, "available_memory_bytes", lambda: None)
    assert preprocess.cap_workers(8, 100) == 3
    assert preprocess.cap_workers(8, 2) == 2
    assert preprocess.available_memory_bytes.__module__  # the real ones read the machine:
    monkeypatch.undo()
    assert preprocess.available_cpus() >= 1 and (preprocess.available_memory_bytes() or 1) > 0


def test_timeout_skips_the_slow_file_and_replaces_its_worker(tmp_path, monkeypatch):
    from shapes3d.data.preprocess import TIMEOUT_REASON, run_preprocess

    monkeypatch.setenv(MARKERS, str(tmp_path))
    files = [_save(tmp_path / f"{name}.npy", np.eye(3) * i) for i, name in enumerate(["a", "b", "c", "slow", "d"])]
    start = time.perf_counter()
    report = run_preprocess(files, points_task, params={"seconds": 60}, cache_dir=tmp_path / "c", workers=2,
                            timeout_s=2.0)
    assert time.perf_counter() - start < 45
    assert report.computed == 4
    assert report.skipped == [(tmp_path / "slow.npy", TIMEOUT_REASON.format(seconds=2.0))]
    assert report.skipped[0][1] == "timed out after 2 s (the per-file time limit); its worker process was replaced"
    assert not list((tmp_path / "c").rglob("*.tmp"))
    with pytest.raises(ConfigError, match="timeout_s -1: expected None or a number of seconds > 0"):
        run_preprocess(files, points_task, params={}, cache_dir=tmp_path / "c", timeout_s=-1)


def test_sigterm_in_process_raises_interrupted_with_the_partial_report(tmp_path):
    from shapes3d.data.preprocess import run_preprocess

    files = [_save(tmp_path / f"{n}.npy", np.eye(3) * i) for i, n in enumerate("abc")]
    before = signal.getsignal(signal.SIGTERM)
    with _guarded(30), pytest.raises(Interrupted) as info:
        run_preprocess(files, sigterm_self_on_second, params={}, cache_dir=tmp_path / "c")
    err = info.value
    assert (err.signal_name, err.exit_code) == ("SIGTERM", 143)
    assert err.partial.computed == 1 and not isinstance(err, Exception)
    assert str(err).startswith("interrupted by SIGTERM: 1 of 3 inputs done (")
    assert str(err).endswith(f"finished entries are cached in {tmp_path / 'c'}: run the same command again to resume")
    assert signal.getsignal(signal.SIGTERM) == before
    assert not list((tmp_path / "c").rglob("*.tmp"))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def _children(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.add(int(entry))
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                continue
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigterm_stops_every_worker_and_leaves_a_consistent_cache(tmp_path):
    from shapes3d.data.cache import iter_cache_files, load_cached

    markers = tmp_path / "markers"
    markers.mkdir()
    files = [_save(tmp_path / f"{name}.npy", np.eye(3) * i)
             for i, name in enumerate(["a", "b", "slow1", "slow2", "slow3", "slow4"])]
    cache = tmp_path / "cache"
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from shapes3d.data.preprocess import run_preprocess
        from shapes3d.errors import Interrupted
        import test_hardening as th

        if __name__ == "__main__":
            try:
                run_preprocess({[str(f) for f in files]!r}, th.points_task, params={{"seconds": 120}},
                               cache_dir={str(cache)!r}, workers=2)
            except Interrupted as e:
                print("INTERRUPTED", e.signal_name, e.partial.computed, flush=True)
                sys.exit(e.exit_code)
            sys.exit(0)
    """))
    env = {**os.environ, MARKERS: str(markers)}
    proc = subprocess.Popen([sys.executable, str(driver)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 90
        while len(list(markers.glob("*.slow"))) < 2:  # both workers are inside slow jobs
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "workers never started their slow jobs"
            time.sleep(0.1)
        workers = {int(p.stem) for p in markers.glob("*.slow")}
        children = _children(proc.pid) | workers
        assert workers <= children and all(_alive(pid) for pid in workers)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert out.startswith("INTERRUPTED SIGTERM 2"), (out, err)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in children if _alive(pid)], "a worker process survived SIGTERM"
    entries = iter_cache_files(cache)
    assert len(entries) == 2  # a and b finished; nothing partial
    for loc in entries:
        load_cached(loc, verify=True)
    assert not [p for p in cache.rglob("*") if p.is_file() and p not in entries]


# ---------------------------------------------------------------- stale temporaries


def test_remove_stale_temporaries_only_removes_our_old_temp_files(tmp_path):
    import tempfile

    from shapes3d.utils.io import atomic_write_text, is_temporary, remove_stale_temporaries

    sub = tmp_path / "ab"
    sub.mkdir()
    old = time.time() - 7200

    def temp(folder: Path, target: str, age: float | None = old) -> Path:
        fd, name = tempfile.mkstemp(prefix=f".{target}.", suffix=".tmp", dir=folder)
        os.close(fd)
        if age is not None:
            os.utime(name, (age, age))
        return Path(name)

    stale = [temp(tmp_path, "report.json"), temp(sub, "ab12.npz")]
    young = temp(tmp_path, "model.pt", age=None)
    keep = [tmp_path / "notes.tmp", tmp_path / ".hidden.tmp", tmp_path / "data.abcdefgh.tmp", young]
    for p in keep[:3]:
        p.write_text("mine")
        os.utime(p, (old, old))
    link = tmp_path / ".x.npz.abcdefgh.tmp"
    link.symlink_to(tmp_path / "notes.tmp")
    atomic_write_text(tmp_path / "done.txt", "ok")
    assert all(is_temporary(p.name) for p in stale) and not is_temporary("data.abcdefgh.tmp")
    assert remove_stale_temporaries(tmp_path) == [stale[0]]
    assert remove_stale_temporaries(tmp_path, recursive=True) == [stale[1]]
    assert all(p.exists() for p in keep) and link.is_symlink() and (tmp_path / "done.txt").exists()
    assert remove_stale_temporaries(tmp_path, older_than_s=0) == [young]
    assert remove_stale_temporaries(tmp_path / "missing") == []
