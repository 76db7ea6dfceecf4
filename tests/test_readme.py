"""README.md's Python section runs as written, in order, in an empty folder (its sizes are already tiny)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of the ``## Python`` section."""
    match = re.search(r"^## Python\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, "README.md has no '## Python' section"
    return re.findall(r"^```python\n(.*?)^```", match.group(1), flags=re.S | re.M)


def test_the_python_section_uses_only_the_public_api():
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 3
    code = "\n".join(blocks)
    imports = re.findall(r"^\s*(?:from|import) (\S+)", code, flags=re.M)
    assert set(imports) <= {"shapes3d", "torch", "numpy"}, imports
    assert "from shapes3d" not in code


def test_the_python_section_runs(tmp_path, monkeypatch, capsys):
    from shapes3d.errors import WeightsNotFoundError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SHAPES3D_CACHE", str(tmp_path / "cache"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead
    namespace: dict = {"__name__": "readme"}
    try:
        for i, block in enumerate(python_blocks(README.read_text())):
            try:
                exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
            except WeightsNotFoundError as e:  # pretrained VGG weights are an optional install
                pytest.skip(f"README block {i + 1} needs pretrained weights: {e}")
    finally:
        torch.set_num_threads(n)
    assert (tmp_path / "runs" / "classify" / "last.pt").exists()
    assert (tmp_path / "runs" / "deepsdf" / "last.pt").exists()
    assert len(namespace["out"].mesh.faces) > 0
    assert (tmp_path / "runs" / "texture" / "texture.png").exists()
