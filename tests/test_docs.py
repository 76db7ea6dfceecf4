"""The documents name only what exists: repository paths, modules and module attributes."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "data" / "README.md"]
DOCS = [d for d in DOCS if d.exists()]
# Repository paths: a top-level folder of ours, then a file with an extension we ship.
PATH = re.compile(r"(?<![\w/.~-])((?:shapes3d|benchmarks|tests|scripts|docs|configs|requirements)/[\w./-]*\w)")
# Dotted names inside backticks, e.g. `shapes3d.deepsdf.extract_shape` or `s3.voxelize`.
DOTTED = re.compile(r"`((?:shapes3d|s3)(?:\.\w+)+)")


def _names(pattern: re.Pattern, doc: Path) -> list[str]:
    return sorted(set(pattern.findall(doc.read_text())))


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_named_paths_exist(doc):
    missing = [p for p in _names(PATH, doc) if not (ROOT / p).exists() and "*" not in p]
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def _resolves(dotted: str) -> bool:
    parts = dotted.replace("s3.", "shapes3d.", 1).split(".") if dotted.startswith("s3.") else dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_named_python_objects_exist(doc):
    missing = [n for n in _names(DOTTED, doc) if not _resolves(n)]
    assert not missing, f"{doc.name} names Python objects that do not exist: {missing}"


def test_checkers_see_a_missing_path_and_name():
    """Guards against a test that cannot fail."""
    assert PATH.findall("see shapes3d/engine/loop.py and `benchmarks/nope.py`.") == [
        "shapes3d/engine/loop.py", "benchmarks/nope.py"]
    assert DOTTED.findall("call `s3.voxelize(mesh)` or `shapes3d.deepsdf.nope`") == ["s3.voxelize", "shapes3d.deepsdf.nope"]
    assert _resolves("shapes3d.errors.Shapes3DError") and not _resolves("shapes3d.errors.Nope")
    assert not _resolves("shapes3d.no_such_module.thing")
