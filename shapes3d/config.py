"""Frozen dataclass configs and the one strict TOML loader.

Configs are frozen dataclasses defined next to what they configure; every field is
declared with :func:`option`, which records its docstring (``--help`` and the
docs read it). :func:`load_config` reads a TOML file, applies ``--set key=value``
overrides and validates every key and type: an unknown key or a wrong type is a
:class:`~shapes3d.errors.ConfigError` naming the key, the expected type and the file.

Presets are TOML files shipped inside the package (``shapes3d/configs/*.toml``; the repository's
top-level ``configs/`` is a link to that folder, not a copy). :func:`find_preset` finds one by bare
name, and :func:`load_config` accepts a bare name wherever it accepts a path: a path that exists wins.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from shapes3d.errors import ConfigError

C = TypeVar("C")

_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, doc: str = "", *, factory: Any = _MISSING) -> Any:
    """Declare a config field with its docstring: ``resolution: int = option(32, "Voxels per axis.")``."""
    if not doc:
        raise ValueError("every config option needs a docstring")
    if factory is not _MISSING:
        return dataclasses.field(default_factory=factory, metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


def field_docs(cls) -> dict[str, str]:
    """Field name -> docstring for a config dataclass."""
    return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        args = get_args(tp)
        name = origin.__name__
        if not args:
            return name
        if len(args) == 2 and args[1] is Ellipsis:
            return f"{name}[{_type_name(args[0])}, ...]"
        return f"{name}[{', '.join(_type_name(a) for a in args)}]"
    if tp is type(None):
        return "none"
    if dataclasses.is_dataclass(tp):
        return f"table ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against ``tp``; return the converted value or raise _Mismatch."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _Mismatch
        return _build(tp, value, prefix=key + ".", source=source)
    if origin is Literal:
        if value in get_args(tp) and type(value) in {type(a) for a in get_args(tp)}:
            return value
        raise _Mismatch
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() == "none" and type(None) in args):
            if type(None) in args:
                return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, source)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = get_args(tp)
        if not args:
            items = list(value)
        elif len(args) == 2 and args[1] is Ellipsis:
            items = [_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
        else:
            if len(value) != len(args):
                raise _Mismatch
            items = [_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args))]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _Mismatch
    raise ConfigError(f"{source}: key '{key}' has unsupported annotation {tp!r}")


def _build(cls: type[C], data: Mapping[str, Any], *, prefix: str = "", source: str = "<dict>") -> C:
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"{source}: unknown key '{prefix}{unknown[0]}' for {cls.__name__}; valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = prefix + name
        try:
            kwargs[name] = _coerce(value, tp, key, source)
        except _Mismatch:
            raise ConfigError(
                f"{source}: key '{key}' expects {_type_name(tp)}, got {type(value).__name__} {value!r}"
            ) from None
    missing = [n for n, f in fields.items()
               if n not in kwargs and f.default is _MISSING and f.default_factory is _MISSING]
    if missing:
        raise ConfigError(f"{source}: missing required key '{prefix}{missing[0]}' for {cls.__name__}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, ConfigError) as e:
        msg = str(e)
        head = msg.split("=", 1)[0].split(" ", 1)[0].split("[", 1)[0]
        if prefix and head in fields:  # "lr=inf is out of range ..." -> "train.lr=inf is out of range ..."
            msg = prefix + msg
        raise ConfigError(f"{source}: invalid {cls.__name__}: {msg}") from None


#: Seeds must fit torch's and numpy's generators: 0 <= seed <= MAX_SEED.
MAX_SEED = 2**63 - 1


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    left = "(-inf" if lo is None else f"{'(' if lo_open else '['}{lo}"
    right = "inf)" if hi is None else f"{hi}{')' if hi_open else ']'}"
    return f"{left}, {right}"


def check_range(name: str, value: Any, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                hi_open: bool = False) -> None:
    """For a config's ``__post_init__``: raise ``ValueError("name=value is out of range [lo, hi]")`` unless
    ``value`` is a finite number in the interval (``None`` bounds are open; ``lo_open``/``hi_open`` exclude the
    bound). The loader turns it into a one-line ConfigError naming the key and the file."""
    interval = _interval(lo, hi, lo_open, hi_open)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}={value!r} is not a number (valid range {interval})")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is not a finite number (valid range {interval})")
    if (lo is not None and (value < lo or (lo_open and value == lo))) or \
            (hi is not None and (value > hi or (hi_open and value == hi))):
        raise ValueError(f"{name}={value!r} is out of range {interval}")


def check_ranges(cfg: Any, **ranges: tuple) -> None:
    """:func:`check_range` for several fields of ``cfg``: ``name=(lo, hi)`` or ``name=(lo, hi, lo_open,
    hi_open)``; a tuple-valued field is checked item by item. Also every float field not named must be finite."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        spec = ranges.get(f.name)
        items = list(value) if isinstance(value, (tuple, list)) else [value]
        for i, v in enumerate(items):
            name = f.name if not isinstance(value, (tuple, list)) else f"{f.name}[{i}]"
            if spec is not None:
                lo, hi, *flags = spec
                check_range(name, v, lo, hi, lo_open=bool(flags and flags[0]), hi_open=len(flags) > 1 and flags[1])
            elif isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{name}={v!r} is not a finite number")


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=1e-3"`` -> ``("train.lr", 0.001)``; the value is parsed as TOML, else kept as a string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, RecursionError):
        value = raw
    return key, value


def _apply_override(data: dict, cls, key: str, value: Any) -> None:
    parts = key.split(".")
    node, node_cls = data, cls
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(node_cls)} if dataclasses.is_dataclass(node_cls) else {}
        if part not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"--set: unknown key '{'.'.join(parts[:i + 1])}' for {node_cls.__name__}; valid keys: {valid}")
        if i == len(parts) - 1:
            node[part] = value
            return
        node_cls = get_type_hints(node_cls)[part]
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            if dataclasses.is_dataclass(node_cls):  # e.g. `train = 5` in the file, then --set train.lr=...
                raise ConfigError(f"--set {key}: key '{'.'.join(parts[:i + 1])}' expects {_type_name(node_cls)}, "
                                  f"got {type(child).__name__} {child!r}")
            child = {}  # a scalar field: the next part is reported as an unknown key
        node = child


def presets() -> list[str]:
    """Names of the shipped presets (``shapes3d/configs/NAME.toml``), sorted."""
    folder = resources.files("shapes3d") / "configs"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def find_preset(name: str) -> Path:
    """Path of the shipped preset ``name`` (``"voxnet"`` or ``"voxnet.toml"``), from any folder.

    An unknown name is a :class:`ConfigError` listing the shipped presets.
    """
    stem = name[: -len(".toml")] if name.endswith(".toml") else name
    if stem and stem in presets():
        return Path(str(resources.files("shapes3d") / "configs" / f"{stem}.toml"))
    raise ConfigError(f"{name}: no such config file or shipped preset; presets: {', '.join(presets())}")


def locate_config(path: str | os.PathLike) -> Path:
    """A config path as given when it exists or names a folder; else the shipped preset of that bare name."""
    path = Path(path)
    if path.exists() or path.parent != Path("."):
        return path
    return find_preset(path.name)


def config_from_dict(cls: type[C], data: Mapping[str, Any], *, source: str = "<dict>") -> C:
    """Validate a plain mapping (e.g. from a checkpoint) into ``cls``."""
    return _build(cls, data, source=source)


def load_config(
    cls: type[C],
    path: str | os.PathLike | None = None,
    *,
    overrides: Sequence[str] = (),
    section: str | None = None,
) -> C:
    """Load ``cls`` from a TOML file (optionally one ``[section]``), then apply ``key=value`` overrides.

    ``path`` is a TOML file or the bare name of a shipped preset (see :func:`locate_config`); with
    ``path=None`` the defaults are used. Errors name the key, the expected type and the file.
    """
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        path = locate_config(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
        except RecursionError:  # tomllib recurses once per nesting level of arrays and inline tables
            raise ConfigError(f"{path}: not valid TOML (arrays or tables nested too deeply)") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config file ({e.__class__.__name__}: {e})") from None
        if section is not None:
            if section not in data or not isinstance(data[section], dict):
                raise ConfigError(f"{path}: missing table [{section}]")
            data = data[section]
    try:
        data = json.loads(json.dumps(data, default=str))  # deep copy of plain types
    except RecursionError:
        raise ConfigError(f"{source}: values nested too deeply") from None
    for text in overrides:
        key, value = parse_override(text)
        _apply_override(data, cls, key, value)
    if overrides:
        source = f"{source} (with --set {' '.join(overrides)})"
    return _build(cls, data, source=source)


def apply_overrides(cfg: C, overrides: Sequence[str]) -> C:
    """A copy of ``cfg`` with ``key=value`` overrides applied and validated (e.g. a checkpoint's config)."""
    data = config_to_dict(cfg)
    for text in overrides:
        key, value = parse_override(text)
        _apply_override(data, type(cfg), key, value)
    return _build(type(cfg), data, source=f"--set {' '.join(overrides)}")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples -> lists, paths -> str); the inverse of config_from_dict."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v
    return conv(cfg)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def config_to_toml(cfg: Any, *, header: str = "") -> str:
    """Serialise a config to TOML text that :func:`load_config` reads back to an equal config.

    ``None`` values are omitted (TOML has no null), so they fall back to the default on reload.
    """
    lines = [f"# {line}" for line in header.splitlines()] if header else []

    def emit(d: dict, table: str) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict) and v is not None}
        tables = {k: v for k, v in d.items() if isinstance(v, dict)}
        if table and scalars:
            lines.append(f"\n[{table}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
        for k, v in tables.items():
            emit(v, f"{table}.{k}" if table else k)

    emit(config_to_dict(cfg), "")
    return "\n".join(lines).strip() + "\n"


def describe_config(cls, *, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) rows for every field, nested tables flattened, for --help."""
    rows = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe_config(tp, prefix=f"{prefix}{f.name}."))
            continue
        default = f.default if f.default is not _MISSING else (
            f.default_factory() if f.default_factory is not _MISSING else "(required)")
        rows.append((prefix + f.name, _type_name(tp), repr(default), f.metadata.get("doc", "")))
    return rows


__all__ = [
    "option", "field_docs", "load_config", "config_from_dict", "config_to_dict", "config_to_toml",
    "parse_override", "describe_config", "apply_overrides", "ConfigError", "presets", "find_preset", "locate_config",
    "check_range", "check_ranges", "MAX_SEED",
]
_ = typing  # keep typing importable for forward references in configs
