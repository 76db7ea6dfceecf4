"""The strict TOML config loader: unknown keys, wrong types, overrides, round trip, docs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from shapes3d.config import (
    config_from_dict,
    config_to_dict,
    config_to_toml,
    describe_config,
    load_config,
    option,
    parse_override,
)
from shapes3d.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class Inner:
    lr: float = option(1e-3, "Learning rate.")
    steps: tuple[int, ...] = option((10, 20), "Milestones.")


@dataclass(frozen=True)
class Outer:
    name: str = option("x", "Run name.")
    epochs: int = option(3, "Epochs.")
    mode: str = option("a", "Mode.")
    flag: bool = option(False, "A flag.")
    size: tuple[int, int] = option((2, 3), "Pair.")
    maybe: float | None = option(None, "Optional value.")
    inner: Inner = option(doc="Nested table.", factory=Inner)


def write(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_file(tmp_path):
    assert load_config(Outer) == Outer()
    p = write(tmp_path, 'name = "run"\nepochs = 7\n[inner]\nlr = 1\nsteps = [1, 2, 3]\n')
    cfg = load_config(Outer, p)
    assert cfg.name == "run" and cfg.epochs == 7 and cfg.inner.lr == 1.0 and cfg.inner.steps == (1, 2, 3)
    assert isinstance(cfg.inner.lr, float)


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "epoch = 7\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, p)
    assert str(e.value) == (f"{p}: unknown key 'epoch' for Outer; valid keys: epochs, flag, inner, maybe, mode, name, size")
    p = write(tmp_path, "[inner]\nlrr = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'inner\.lrr' for Inner; valid keys: lr, steps"):
        load_config(Outer, p)


@pytest.mark.parametrize("text,message", [
    ('epochs = "3"', "key 'epochs' expects int, got str '3'"),
    ("epochs = 3.5", "key 'epochs' expects int, got float 3.5"),
    ("epochs = true", "key 'epochs' expects int, got bool True"),
    ("flag = 1", "key 'flag' expects bool, got int 1"),
    ("size = [1]", "key 'size' expects tuple[int, int], got list [1]"),
    ('maybe = "x"', "key 'maybe' expects float | none, got str 'x'"),
    ("inner = 3", "key 'inner' expects table (Inner), got int 3"),
    ('[inner]\nsteps = [1, "a"]', "key 'inner.steps' expects tuple[int, ...], got list [1, 'a']"),
])
def test_wrong_type_names_key_expected_type_and_file(tmp_path, text, message):
    p = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(Outer, p)
    assert str(e.value) == f"{p}: {message}"


def test_overrides(tmp_path):
    cfg = load_config(Outer, overrides=["epochs=9", "inner.lr=0.5", "name=hello world", "maybe=0.25"])
    assert (cfg.epochs, cfg.inner.lr, cfg.name, cfg.maybe) == (9, 0.5, "hello world", 0.25)
    with pytest.raises(ConfigError, match=r"--set: unknown key 'inner\.nope' for Inner; valid keys: lr, steps"):
        load_config(Outer, overrides=["inner.nope=1"])
    with pytest.raises(ConfigError, match=r"key 'epochs' expects int, got str 'many'"):
        load_config(Outer, overrides=["epochs=many"])
    with pytest.raises(ConfigError, match=r"--set 'epochs': expected key=value"):
        parse_override("epochs")
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])


def test_bad_toml_and_missing_file(tmp_path):
    p = write(tmp_path, "epochs = = 3\n")
    with pytest.raises(ConfigError, match=rf"^{p}: not valid TOML"):
        load_config(Outer, p)
    with pytest.raises(ConfigError, match="config file does not exist"):
        load_config(Outer, tmp_path / "missing.toml")


def test_round_trip_through_toml(tmp_path):
    cfg = load_config(Outer, overrides=["epochs=4", "inner.steps=[5]", "flag=true", "maybe=2.0"])
    p = write(tmp_path, config_to_toml(cfg, header="resolved"))
    assert load_config(Outer, p) == cfg
    assert config_from_dict(Outer, config_to_dict(cfg)) == cfg


def test_every_option_is_documented():
    with pytest.raises(ValueError, match="every config option needs a docstring"):
        option(3)
    rows = describe_config(Outer)
    assert ("inner.lr", "float", "0.001", "Learning rate.") in rows


def _config_classes():
    """Every config dataclass that a file in configs/ is loaded into."""
    from shapes3d.classify.config import ClassifyConfig
    from shapes3d.data.configs import SynthConfig, VoxelCacheConfig
    from shapes3d.deepsdf.config import DeepSDFConfig
    from shapes3d.deepsdf.views_config import ViewsConfig
    from shapes3d.style.config import StyleConfig

    return {"synth.toml": (SynthConfig, None), "voxels.toml": (VoxelCacheConfig, None),
            "voxnet.toml": (ClassifyConfig, None), "style.toml": (StyleConfig, None),
            "deepsdf.toml": (DeepSDFConfig, None), "views.toml": (ViewsConfig, None)}


def test_shipped_configs_load_strictly_and_are_documented():
    shipped = {p.name for p in CONFIG_DIR.glob("*.toml")}
    classes = _config_classes()
    assert shipped <= set(classes), f"configs without a loader test: {shipped - set(classes)}"
    for name, (cls, section) in classes.items():
        cfg = load_config(cls, CONFIG_DIR / name, section=section)
        _assert_documented(cfg)


def _assert_documented(cfg):
    for f in dataclasses.fields(cfg):
        assert f.metadata.get("doc"), f"{type(cfg).__name__}.{f.name} has no docstring"
        if dataclasses.is_dataclass(getattr(cfg, f.name)):
            _assert_documented(getattr(cfg, f.name))


def test_apply_overrides_to_a_loaded_config():
    from shapes3d.config import apply_overrides

    cfg = apply_overrides(Outer(), ["inner.lr=0.25", "epochs=5"])
    assert cfg.inner.lr == 0.25 and cfg.epochs == 5 and cfg.name == "x"
    with pytest.raises(ConfigError, match="unknown key 'inner.nope'"):
        apply_overrides(Outer(), ["inner.nope=1"])
