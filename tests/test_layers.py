"""The import graph follows the layer order of docs/ARCHITECTURE.md: no module imports a layer above its own,
the pipeline packages do not import each other, and the CLI's command modules do not import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import shapes3d

PKG = Path(shapes3d.__file__).parent

# Lower number = lower layer. A module may import its own layer or lower ones.
RANKS = {
    "errors": 0, "utils": 0, "__init__": 0,
    "config": 1,
    "geometry": 2,
    "data": 3,
    "models": 4,
    "losses": 5, "metrics": 5,
    "pretrained": 6, "render": 6,
    "engine": 7,
    "classify": 8, "deepsdf": 8, "style": 8,
    "cli": 9,
}
# The pipeline packages share everything below them and nothing with each other.
PIPELINES = {"classify", "deepsdf", "style"}
# models/ are tensors in, tensors out: torch and the base layer only.
MODELS_MAY_IMPORT = {"errors", "utils", "models"}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, module: str) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = package[: len(package) - (node.level - 1)]
                found.append(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.append(node.module)
    return [m for m in found if m == "shapes3d" or m.startswith("shapes3d.")]


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        yield path, ".".join(rel.parts)


def test_every_module_has_a_known_layer():
    unknown = {_layer(m) for _, m in _modules()} - set(RANKS)
    assert not unknown, f"modules outside the layer table (add them to the layer table of docs/ARCHITECTURE.md): {unknown}"


def test_no_upward_imports():
    violations = []
    for path, module in _modules():
        src = _layer(module)
        for target in _imports(path, module):
            dst = _layer(target)
            if dst not in RANKS:
                continue
            if RANKS[dst] > RANKS[src]:
                violations.append(f"{module} ({src}) imports {target} ({dst})")
            if src in PIPELINES and dst in PIPELINES and src != dst:
                violations.append(f"{module} ({src}) imports {target}: pipelines do not import each other")
            if src == "models" and dst not in MODELS_MAY_IMPORT:
                violations.append(f"{module} (models) imports {target}: models take tensors, not files/configs")
    assert not violations, "upward imports:\n" + "\n".join(violations)


def test_checker_catches_an_upward_edge(tmp_path):
    """The walker itself must see an upward import (guards against a test that cannot fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from shapes3d.cli.main import main\nimport shapes3d.models.vgg\n")
    assert _imports(bad, "shapes3d.geometry.bad") == ["shapes3d.cli.main", "shapes3d.models.vgg"]


# Modules of the CLI that are not commands: shared helpers every command may use.
CLI_SHARED = {"shapes3d.cli", "shapes3d.cli.common", "shapes3d.cli.main"}


def test_cli_command_modules_do_not_import_each_other():
    edges = []
    for path, module in _modules():
        if _layer(module) != "cli" or module in CLI_SHARED:
            continue
        for target in _imports(path, module):
            if _layer(target) == "cli" and target not in CLI_SHARED and target != module:
                edges.append(f"{module} imports {target}")
    assert not edges, "command modules import each other:\n" + "\n".join(edges)


def test_no_import_cycle_among_cli_modules():
    graph = {}
    for path, module in _modules():
        if _layer(module) == "cli":
            graph[module] = {t for t in _imports(path, module) if _layer(t) == "cli" and t != module}
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
