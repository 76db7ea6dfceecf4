"""Property-based fuzzing of every loader and the config parser: only our own errors come out.

Random bytes under every extension, valid files of every format with bytes flipped,
inserted, deleted or cut off, token soups for the OFF and PCD parsers, and random TOML
text, value dicts and ``--set`` overrides for the config loader. A loader may succeed
(then its output must be valid) or raise a :class:`~shapes3d.errors.Shapes3DError`;
anything else (IndexError, OverflowError, MemoryError, RecursionError, ...) is a bug.

The default run is small and derandomized so the suite stays fast and stable; set
``SHAPES3D_FUZZ_EXAMPLES=2000`` (say) for a longer, randomized session.
"""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import trimesh
from hypothesis import given, settings
from hypothesis import strategies as st

from shapes3d.config import config_from_dict, load_config
from shapes3d.data.configs import VoxelCacheConfig
from shapes3d.deepsdf.config import DeepSDFConfig
from shapes3d.errors import ConfigError, Shapes3DError
from shapes3d.geometry.io import MESH_EXTENSIONS, POINT_EXTENSIONS, load_geometry, load_mesh, load_points
from shapes3d.geometry.off import read_off
from shapes3d.geometry.pcd import read_pcd

_LONG = int(os.environ.get("SHAPES3D_FUZZ_EXAMPLES", "0"))
MAX_ALLOC_BYTES = 64 << 20


def fuzz(n: int):
    """Hypothesis settings: ``n`` examples by default (derandomized), more when asked for."""
    return settings(max_examples=_LONG or n, deadline=None, database=None, derandomize=not _LONG)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check_result(result) -> None:
    """A successful load must give finite coordinates and in-range faces."""
    if isinstance(result, trimesh.Trimesh):
        v, f = np.asarray(result.vertices), np.asarray(result.faces)
        assert len(v) and len(f) and np.isfinite(v).all()
        assert f.min() >= 0 and f.max() < len(v)
    else:
        pts = np.asarray(result)
        assert pts.ndim == 2 and pts.shape[1] == 3 and len(pts) and np.isfinite(pts).all()


def load_all(path: Path) -> None:
    """Every loader that accepts this extension: a valid result or our own error naming the file."""
    ext = path.suffix.lower()
    loaders = [load_geometry]
    if ext in MESH_EXTENSIONS:
        loaders.append(load_mesh)
    if ext in POINT_EXTENSIONS:
        loaders.append(load_points)
    for loader in loaders:
        tracemalloc.start()
        try:
            result = loader(path)
        except Shapes3DError as e:
            assert str(path) in str(e)
            assert "MemoryError" not in str(e)
        else:
            check_result(result)
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        # Inputs are < 2 KB: a large peak means an array was sized from a declared count.
        assert peak < MAX_ALLOC_BYTES, f"{loader.__name__}({path.name}) allocated {peak / 2**20:.0f} MiB"


# ---------------------------------------------------------------- valid seeds of every format


def _lzf_literal(data: bytes) -> bytes:
    """LZF 'compression' using literal runs only: valid input for any LZF decoder."""
    out = bytearray()
    for i in range(0, len(data), 32):
        chunk = data[i:i + 32]
        out += bytes([len(chunk) - 1]) + chunk
    return bytes(out)


def _pcd(kind: str, points: np.ndarray) -> bytes:
    n = len(points)
    head = (f"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\n"
            f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {kind}\n").encode()
    p = points.astype("<f4")
    if kind == "ascii":
        return head + "".join(f"{a} {b} {c}\n" for a, b, c in p.tolist()).encode()
    if kind == "binary":
        return head + p.tobytes()
    raw = np.ascontiguousarray(p.T).tobytes()  # field-major
    comp = _lzf_literal(raw)
    return head + struct.pack("<II", len(comp), len(raw)) + comp


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _npz(compressed: bool = False, **arrays) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def _seeds() -> list[tuple[str, bytes]]:
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    tetra = "OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 2 1\n3 0 1 3\n3 1 2 3\n3 0 3 2\n"
    pts = np.random.default_rng(0).normal(size=(8, 3))
    return [
        (".off", tetra.encode()),
        (".off", b"OFF4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n4 0 1 2 3\n3 0 1 3\n3 1 2 3\n3 0 3 2\n"),
        (".obj", box.export(file_type="obj").encode()),
        (".ply", box.export(file_type="ply")),
        (".ply", box.export(file_type="ply", encoding="ascii")),
        (".stl", box.export(file_type="stl")),
        (".stl", box.export(file_type="stl_ascii").encode()),
        (".glb", box.export(file_type="glb")),
        (".gltf", trimesh.exchange.gltf.export_gltf(box, embed_buffers=True)["model.gltf"]),
        (".pcd", _pcd("ascii", pts)),
        (".pcd", _pcd("binary", pts)),
        (".pcd", _pcd("binary_compressed", pts)),
        (".xyz", "".join(f"{a} {b} {c}\n" for a, b, c in pts.tolist()).encode()),
        (".npy", _npy(pts)),
        (".npz", _npz(points=pts)),
        (".npz", _npz(compressed=True, points=pts)),
    ]


SEEDS = _seeds()


def test_seeds_are_valid(work):
    for k, (ext, data) in enumerate(SEEDS):
        path = work / f"seed{k}{ext}"
        path.write_bytes(data)
        check_result(load_geometry(path))


ALL_EXTENSIONS = sorted(set(MESH_EXTENSIONS) | set(POINT_EXTENSIONS) | {".abc", ""})


@fuzz(80)
@given(data=st.binary(max_size=600), ext=st.sampled_from(ALL_EXTENSIONS))
def test_random_bytes_under_every_extension(work, data, ext):
    path = work / f"random{ext}"
    path.write_bytes(data)
    load_all(path)


_MUTATION = st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "cut"]),
                      st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255))


def mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for op, where, byte in edits:
        if not buf:
            break
        i = int(where * len(buf))
        if op == "flip":
            buf[i] ^= 1 << (byte % 8)
        elif op == "set":
            buf[i] = byte
        elif op == "insert":
            buf[i:i] = bytes([byte])
        elif op == "delete":
            del buf[i]
        else:
            del buf[i:]
    return bytes(buf)


@fuzz(100)
@given(seed=st.sampled_from(range(len(SEEDS))), edits=st.lists(_MUTATION, min_size=1, max_size=6))
def test_mutated_valid_files(work, seed, edits):
    ext, data = SEEDS[seed]
    path = work / f"mutated{ext}"
    path.write_bytes(mutate(data, edits))
    load_all(path)


# ---------------------------------------------------------------- parsers on token soups

_OFF_TOKENS = ["OFF", "COFF", "4OFF", "OFF3", "3", "4", "0", "1", "2", "-1", "7", "0.5", "1e999", "-inf", "nan",
               "99999999999999999999", "x", "#", " ", " ", "\n", "\n", "\r\n", "\t"]


@fuzz(80)
@given(st.lists(st.sampled_from(_OFF_TOKENS), max_size=60))
def test_off_parser_token_soup(work, tokens):
    path = work / "soup.off"
    path.write_text(" ".join(tokens) if tokens[:1] != ["OFF"] else "".join(tokens))
    try:
        v, f = read_off(path)
    except Shapes3DError as e:
        assert str(e).startswith(f"{path}: ")
    else:
        assert v.ndim == 2 and v.shape[1] == 3 and f.ndim == 2 and f.shape[1] == 3
    load_all(path)


_PCD_KEYS = ["VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA", "#"]
_PCD_VALUES = ["x", "y", "z", "rgb", "_", "1", "2", "3", "4", "8", "0", "-1", "F", "I", "U", "Q", "ascii", "binary",
               "binary_compressed", "4294967295", "99999999999", "0.7"]


@fuzz(80)
@given(header=st.lists(st.tuples(st.sampled_from(_PCD_KEYS), st.lists(st.sampled_from(_PCD_VALUES), max_size=5)),
                       max_size=12),
       body=st.binary(max_size=200))
def test_pcd_parser_header_soup(work, header, body):
    path = work / "soup.pcd"
    path.write_bytes("".join(f"{k} {' '.join(v)}\n" for k, v in header).encode() + body)
    try:
        pts = read_pcd(path)
    except Shapes3DError as e:
        assert str(e).startswith(f"{path}: ")
    else:
        assert pts.ndim == 2 and pts.shape[1] == 3
    load_all(path)


@fuzz(60)
@given(n=st.integers(1, 4), usize=st.integers(0, 2**32 - 1), body=st.binary(max_size=120))
def test_pcd_lzf_blocks(work, n, usize, body):
    head = _pcd("binary_compressed", np.zeros((n, 3))).split(b"DATA binary_compressed\n")[0]
    path = work / "lzf.pcd"
    path.write_bytes(head + b"DATA binary_compressed\n" + struct.pack("<II", len(body), usize) + body)
    load_all(path)


@fuzz(60)
@given(shape=st.lists(st.integers(0, 2**40), min_size=0, max_size=3), descr=st.sampled_from(["<f8", "<f4", "|u1",
                                                                                             "|O", "<i8", "<U3"]),
       body=st.binary(max_size=100), as_npz=st.booleans())
def test_numpy_headers_with_any_declared_shape(work, shape, descr, body, as_npz):
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple(shape)}, }}".encode()
    header += b" " * ((64 - (11 + len(header)) % 64) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body
    if as_npz:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("points.npy", npy)
        path, data = work / "hdr.npz", buf.getvalue()
    else:
        path, data = work / "hdr.npy", npy
    path.write_bytes(data)
    load_all(path)


# ---------------------------------------------------------------- the config parser

_KEYS = ["resolution", "object_size", "rotations", "up_axis", "method", "point_dilation", "point_mode",
         "model", "train", "latent_size", "skip_at", "epochs", "lr", "a.b", "\"q\"", "x"]
_TOML_BITS = [" = ", "=", "\n", "[", "]", "[[", "]]", "{", "}", ",", ".", "\"", "'", "#", "1", "32", "-4", "1e400",
              "nan", "inf", "true", "false", "\"z\"", "'binary'", "1979-05-27", "0x1F", "[model]", "[train]", "\\",
              "\"\"\"", " "]


@fuzz(80)
@given(st.lists(st.sampled_from(_KEYS + _TOML_BITS), max_size=30), st.sampled_from([VoxelCacheConfig, DeepSDFConfig]))
def test_load_config_on_toml_like_text(work, parts, cls):
    path = work / "fuzz.toml"
    path.write_text("".join(parts))
    try:
        cfg = load_config(cls, path)
    except ConfigError as e:
        assert str(e).startswith(str(path))
    else:
        assert isinstance(cfg, cls)


_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                  st.sampled_from(["z", "binary", "count", "auto", "fp32", "none"]))
_SCALAR_OR_LIST = st.one_of(_LEAF, st.lists(_LEAF, max_size=4))
# Config tables nest one level (a table of scalars and lists), which is all a config can hold.
_VALUE = st.one_of(_SCALAR_OR_LIST, st.dictionaries(st.sampled_from(_KEYS), _SCALAR_OR_LIST, max_size=4))


@fuzz(100)
@given(st.dictionaries(st.one_of(st.sampled_from(_KEYS), st.text(max_size=4)), _VALUE, max_size=5),
       st.sampled_from([VoxelCacheConfig, DeepSDFConfig]))
def test_config_from_random_dicts(data, cls):
    try:
        cfg = config_from_dict(cls, data, source="fuzz.toml")
    except ConfigError as e:
        assert str(e).startswith("fuzz.toml")
    else:
        assert isinstance(cfg, cls)


_OVERRIDE_KEYS = ["resolution", "train", "train.epochs", "train.epochs.x", "model.skip_at", "model", "fit.lr", "",
                  "nope", "samples.variances", "model.latent_size"]


@fuzz(60)
@given(st.lists(st.tuples(st.sampled_from(_OVERRIDE_KEYS), st.sampled_from(["=", "", "=="]),
                          st.lists(st.sampled_from(_TOML_BITS), max_size=6)), max_size=3),
       st.sampled_from(["", "train = 5\n", "[model]\nskip_at = 3\n", "resolution = 8\n"]))
def test_overrides_on_any_file(work, overrides, text):
    path = work / "base.toml"
    path.write_text(text)
    args = [f"{k}{eq}{''.join(v)}" for k, eq, v in overrides]
    for cls in (VoxelCacheConfig, DeepSDFConfig):
        try:
            load_config(cls, path, overrides=args)
        except ConfigError:
            pass


@fuzz(60)
@given(total=st.integers(0, 2**32 - 1), chunk=st.integers(0, 2**32 - 1), kind=st.sampled_from([b"JSON", b"BIN\0"]),
       body=st.binary(max_size=80))
def test_glb_declared_lengths(work, total, chunk, kind, body):
    path = work / "hdr.glb"
    path.write_bytes(b"glTF" + struct.pack("<II", 2, total) + struct.pack("<I", chunk) + kind + body)
    load_all(path)


@fuzz(60)
@given(fmt=st.sampled_from(["ascii", "binary_little_endian", "binary_big_endian"]),
       counts=st.lists(st.integers(0, 2**40), min_size=1, max_size=3), body=st.binary(max_size=120))
def test_ply_declared_counts(work, fmt, counts, body):
    names = ["vertex", "face", "edge"]
    head = f"ply\nformat {fmt} 1.0\n"
    for name, n in zip(names, counts):
        head += f"element {name} {n}\n"
        head += ("property list uchar int vertex_indices\n" if name == "face"
                 else "property float x\nproperty float y\nproperty float z\n")
    path = work / "hdr.ply"
    path.write_bytes(head.encode() + b"end_header\n" + body)
    load_all(path)
