"""Lazy package faces: names resolved on first use (PEP 562), so ``import shapes3d`` stays light.

A face is a package ``__init__`` that maps each public name to where it lives::

    __getattr__, __dir__, __all__ = lazy_face(__name__, {
        "voxelize": "shapes3d.geometry.voxelize:voxelize_solid",   # module:attribute (a rename)
        "load_mesh": "shapes3d.geometry.io",                       # module (same attribute name)
        "geometry": "shapes3d.geometry:",                          # module: (the module itself)
    })

Nothing is imported until a name is first read; the value is then cached in the package, so
later reads cost a dict lookup. Only the standard library is imported here.

An exported name may equal one of the package's submodules (``shapes3d.losses.sdf_objective``
is both a function and a module). Importing the submodule would normally rebind the
package attribute to the module; the face keeps the export instead, so a face's name always
means the same object. Reach such a submodule with ``from shapes3d.losses.sdf_objective import ...``.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable, Mapping


class _Face(types.ModuleType):
    """A package module whose exported names are not rebound by submodule imports."""

    def __setattr__(self, name: str, value) -> None:
        exports = self.__dict__.get("__lazy_exports__", {})
        if (name in exports and isinstance(value, types.ModuleType)
                and value.__name__ == f"{self.__name__}.{name}" and exports[name] != f"{value.__name__}:"):
            return  # the import system binding a submodule that shares an exported name: keep the export
        super().__setattr__(name, value)


def resolve(target: str, name: str):
    """The object ``target`` ("module", "module:attribute" or "module:") names, for export ``name``."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    if target.endswith(":"):
        return module
    return getattr(module, attr or name)


def lazy_face(package: str, exports: Mapping[str, str]) -> tuple[Callable, Callable, list[str]]:
    """``(__getattr__, __dir__, __all__)`` for the package named ``package`` exporting ``exports``.

    ``exports`` maps each public name to ``"module"`` (same attribute name there),
    ``"module:attribute"`` or ``"module:"`` (the module itself).
    """
    exports = dict(exports)
    module = sys.modules[package]
    module.__dict__["__lazy_exports__"] = exports
    if type(module) is types.ModuleType:
        module.__class__ = _Face

    def __getattr__(name: str):
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = resolve(target, name)
        module.__dict__[name] = value  # later reads skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(module.__dict__) | set(exports))

    return __getattr__, __dir__, list(exports)


__all__ = ["lazy_face", "resolve"]
