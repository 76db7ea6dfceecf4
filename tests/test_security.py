"""Security checks: no code execution from files, no writes outside the chosen output folder.

1. A static scan (AST, not grep) of ``shapes3d/`` for ``eval``/``exec``, unsafe YAML,
   ``pickle.load``, ``torch.load`` without ``weights_only=True``, ``np.load`` with
   ``allow_pickle=True`` and shell commands; the scanner is itself tested on snippets.
2. Pickles naming ``os.system`` (raw, and inside torch zip files) are refused by the
   restricted unpickler and by ``weights_only=True`` loads, and their command never runs.
3. User-controlled names that become output paths go through ``safe_child``; manifests
   with ``../`` names never make preprocessing write outside its cache folder.
"""

from __future__ import annotations

import ast
import functools
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from shapes3d.data.cache import cache_location
from shapes3d.data.discovery import load_csv
from shapes3d.data.preprocess import run_preprocess
from shapes3d.data.tasks import voxel_task
from shapes3d.engine.checkpoint import load_checkpoint
from shapes3d.errors import CheckpointError, ConfigError, InputFileError, Shapes3DError
from shapes3d.pretrained import load_lpips_vgg, load_numpy_pickle, read_vgg_state
from shapes3d.utils.io import safe_child

PACKAGE = Path(__file__).resolve().parents[1] / "shapes3d"

# ---------------------------------------------------------------- 1. static scan


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _kw(call: ast.Call, name: str):
    """The keyword's constant value, ``<expr>`` if not a constant, or ``<absent>``."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return "<absent>"


def unsafe_calls(source: str | ast.AST, filename: str = "<src>") -> list[str]:
    """``file:line: call`` for every call the project forbids (see the module docstring)."""
    found = []
    tree = ast.parse(source, filename) if isinstance(source, str) else source
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        bad = None
        if name in ("eval", "exec", "builtins.eval", "builtins.exec", "compile", "__import__"):
            bad = "dynamic code"
        elif name.startswith("yaml.") and last in ("load", "load_all", "unsafe_load", "full_load", "unsafe_load_all"):
            loader = _kw(node, "Loader")
            if last != "load" or loader in ("<absent>", "<expr>") and "Safe" not in ast.unparse(node):
                bad = "unsafe YAML"
        elif name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "cPickle.loads",
                      "marshal.load", "marshal.loads", "shelve.open", "dill.load", "dill.loads", "joblib.load"):
            bad = "unrestricted unpickling"
        elif name == "torch.load" and _kw(node, "weights_only") is not True:
            bad = "torch.load without weights_only=True"
        elif last == "load" and name.split(".")[0] in ("np", "numpy") and _kw(node, "allow_pickle") not in (
                False, "<absent>"):
            bad = "np.load with allow_pickle"
        elif name in ("os.system", "os.popen") or (name.startswith("subprocess.") and _kw(node, "shell") is True):
            bad = "shell command"
        if bad:
            found.append(f"{filename}:{node.lineno}: {bad}: {ast.unparse(node)[:80]}")
    return found


def test_scanner_catches_each_pattern():
    cases = {
        "eval(x)": 1, "exec(code)": 1, "builtins.eval('1')": 1, "model.eval()": 0, "net.train().eval()": 0,
        "yaml.load(f)": 1, "yaml.load(f, Loader=yaml.SafeLoader)": 0, "yaml.unsafe_load(f)": 1, "yaml.safe_load(f)": 0,
        "pickle.load(f)": 1, "pickle.loads(b)": 1, "pickle.Unpickler(f).load()": 1,
        "torch.load(p)": 1, "torch.load(p, weights_only=False)": 1, "torch.load(p, weights_only=flag)": 1,
        "torch.load(p, map_location='cpu', weights_only=True)": 0,
        "np.load(p)": 0, "np.load(p, allow_pickle=False)": 0, "np.load(p, allow_pickle=True)": 1,
        "numpy.load(p, allow_pickle=ok)": 1, "os.system('ls')": 1, "subprocess.run(c, shell=True)": 1,
        "subprocess.run([exe, '-v'])": 0,
    }
    for src, n in cases.items():
        assert len(unsafe_calls(src)) == n, src


@functools.cache
def package_trees() -> dict[str, ast.AST]:
    return {str(f.relative_to(PACKAGE)): ast.parse(f.read_text(encoding="utf-8"), str(f))
            for f in sorted(PACKAGE.rglob("*.py"))}


def test_package_has_no_unsafe_calls():
    trees = package_trees()
    assert len(trees) > 30
    found = [hit for name, tree in trees.items() for hit in unsafe_calls(tree, name)]
    assert found == []


def test_no_aliased_imports_of_loaders():
    # Belt and braces for the scan above: count the calls, so a renamed import (`from torch import load`)
    # or an alias cannot hide one.
    for f, tree in package_trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "pickle", "yaml", "marshal"):
                names = {a.name for a in node.names}
                assert not names & {"load", "loads", "Unpickler", "unsafe_load"}, f"{f}: from {node.module} import"
            if isinstance(node, ast.Import):
                for a in node.names:
                    assert not (a.name in ("pickle", "torch") and a.asname not in (None,)), f"{f}: import {a.name} as"


# ---------------------------------------------------------------- 2. pickles that would run code


class _Touch:
    """Pickles to ``os.system("touch <marker>")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalCall:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "PWNED"


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_refuses_os_system(tmp_path, marker, protocol):
    path = tmp_path / "weights.ckpt"
    path.write_bytes(pickle.dumps({"VGG16_0": {"Conv_0": _Touch(marker)}}, protocol=protocol))
    with pytest.raises(CheckpointError) as info:
        load_numpy_pickle(path)
    assert str(info.value) == (f"{path}: refusing to unpickle forbidden global posix.system "
                               "(only numpy arrays are allowed)")
    for load in (lambda: read_vgg_state(path, "vgg16"), lambda: load_lpips_vgg(weights=path)):
        with pytest.raises(CheckpointError, match="forbidden global posix.system"):
            load()
    assert not marker.exists()


@pytest.mark.parametrize("payload", [_EvalCall(), getattr, os.getcwd, np.load])
def test_restricted_unpickler_refuses_other_globals(tmp_path, payload):
    path = tmp_path / "w.ckpt"
    path.write_bytes(pickle.dumps([payload], protocol=2))
    with pytest.raises(CheckpointError, match="refusing to unpickle forbidden global"):
        load_numpy_pickle(path)


def test_restricted_unpickler_still_loads_numpy_arrays(tmp_path):
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [np.float64(2.5), {"c": np.zeros(2, np.int8)}]}
    for protocol in (2, 4, 5):
        path = tmp_path / f"ok{protocol}.pkl"
        path.write_bytes(pickle.dumps(tree, protocol=protocol))
        out = load_numpy_pickle(path)
        np.testing.assert_array_equal(out["a"], tree["a"])
        assert out["b"][0] == 2.5 and out["b"][1]["c"].dtype == np.int8


def test_weights_only_refuses_code_inside_torch_zip(tmp_path, marker):
    path = tmp_path / "evil.pt"
    torch.save({"model": _Touch(marker), "features.0.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: not a readable checkpoint")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        read_vgg_state(path, "vgg16")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_lpips_vgg(weights=path)
    assert not marker.exists()


def test_raw_pickle_as_checkpoint_is_refused(tmp_path, marker):
    path = tmp_path / "raw.pt"
    path.write_bytes(pickle.dumps({"model": _Touch(marker)}, protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


# ---------------------------------------------------------------- 3. names that become paths

UNSAFE_NAMES = ["../evil", "..", ".", "", "/etc/passwd", "a/b", "a\\b", "ev\x00il", "line\nbreak", "C:evil", "..\\x"]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_safe_child_refuses_unsafe_names(tmp_path, name):
    with pytest.raises(InputFileError) as info:
        safe_child(tmp_path, name)
    assert str(info.value).startswith(f"{tmp_path}: unsafe name {name!r} for an output path: ")


def test_safe_child_message(tmp_path):
    with pytest.raises(InputFileError) as info:
        safe_child(tmp_path, "../evil", what="shape name")
    assert str(info.value) == (f"{tmp_path}: unsafe shape name '../evil' for an output path: it contains a path "
                               "separator; expected a single file or folder name inside this folder")


@pytest.mark.parametrize("name", ["chair_0001.ply", "...ply", "résumé.off", "a b", ".hidden", "x..y"])
def test_safe_child_accepts_plain_names(tmp_path, name):
    assert safe_child(tmp_path, name) == tmp_path / name


def test_safe_child_refuses_symlink_out_of_root(tmp_path):
    root, outside = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(InputFileError, match="symlink leading outside"):
        safe_child(root, "link")
    (root / "inner").mkdir()
    (root / "ok").symlink_to(root / "inner")
    assert safe_child(root, "ok") == root / "ok"


@pytest.mark.parametrize("key", ["../" + "a" * 62, "..", "/etc", "ab/../../x", "AB" + "0" * 62, "a"])
def test_cache_location_refuses_non_hex_keys(tmp_path, key):
    with pytest.raises((ConfigError, InputFileError)):
        cache_location(tmp_path, key)


def test_cache_location_of_a_real_key(tmp_path):
    key = "ab" + "0" * 62
    assert cache_location(tmp_path, key) == tmp_path / "ab" / f"{key}.npz"


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_manifest_names_never_leave_the_cache_folder(tmp_path):
    """Class names and paths in a manifest are labels and inputs; outputs are keyed by content hash."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    off = "OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 2 1\n3 0 1 3\n3 1 2 3\n3 0 3 2\n"
    (tmp_path / "outside.off").write_text(off)
    (data / "sub" / "inside.off").write_text(off.replace("1 0 0\n", "2 0 0\n"))
    csv_path = data / "sub" / "manifest.csv"
    csv_path.write_text("class,split,path\n../../evil,train,../../outside.off\n/abs/evil,test,inside.off\n")
    manifest = load_csv(csv_path)
    assert [e.class_name for e in manifest] == ["../../evil", "/abs/evil"]
    cache = tmp_path / "deep" / "cache"
    before = _tree(tmp_path)
    report = run_preprocess(manifest.entries, voxel_task, params={"resolution": 8, "object_size": 6,
                                                                  "rotations": 1}, cache_dir=cache)
    assert report.computed == 2 and not report.skipped
    created = _tree(tmp_path) - before
    assert created and all(p == cache.parent or cache in (p, *p.parents) for p in created)
    assert not (tmp_path / "evil").exists() and not Path("/abs/evil").exists()


@pytest.mark.parametrize("family", ["../evil", "/tmp/evil", "chair/../../evil", ""])
def test_synth_refuses_family_names_that_are_paths(tmp_path, family):
    from shapes3d.data.synth import write_dataset

    out = tmp_path / "synth"
    with pytest.raises((ValueError, Shapes3DError), match="unknown shape family"):
        write_dataset(out, per_class=1, families=(family,), resolution=16)
    assert not (tmp_path / "evil").exists() and _tree(tmp_path) <= {out}
