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

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "shapes3d" / "configs"  # the shipped presets; the top-level configs/ links here


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
    """Every shipped preset and the config dataclass (and table) it is loaded into."""
    from shapes3d.classify.config import ClassifyConfig
    from shapes3d.data.configs import SynthConfig, VoxelCacheConfig
    from shapes3d.deepsdf.config import DeepSDFConfig
    from shapes3d.deepsdf.views_config import ViewsConfig
    from shapes3d.style.config import StyleConfig

    return {"synth": (SynthConfig, None), "voxels": (VoxelCacheConfig, None),
            "voxnet": (ClassifyConfig, None), "modelnet10": (ClassifyConfig, None), "shrec11": (ClassifyConfig, None),
            "modelnet40": (ClassifyConfig, None),
            "style": (StyleConfig, None), "deepsdf": (DeepSDFConfig, None), "views": (ViewsConfig, None),
            "demo-voxnet": (ClassifyConfig, None), "demo-deepsdf": (DeepSDFConfig, None),
            "mvcnn-shrec11": (ClassifyConfig, None), "mvcnn-modelnet10": (ClassifyConfig, None),
            "mvcnn-modelnet40": (ClassifyConfig, None),
            "demo-mvcnn": (ClassifyConfig, None),
            "deepsdf-fast": (DeepSDFConfig, None),
            "demo-style": (StyleConfig, None)}


def test_shipped_presets_load_strictly_and_are_documented():
    from shapes3d.config import presets

    shipped = {p.stem for p in CONFIG_DIR.glob("*.toml")}
    assert set(presets()) == shipped
    classes = _config_classes()
    assert shipped == set(classes), f"presets without a loader test: {shipped - set(classes)}"
    for name, (cls, section) in classes.items():
        cfg = load_config(cls, name, section=section)  # by bare name, as the CLI's --config NAME
        assert cfg == load_config(cls, CONFIG_DIR / f"{name}.toml", section=section)
        _assert_documented(cfg)


def test_top_level_configs_is_the_shipped_folder():
    """One source of truth: the repository's configs/ is a link to the package's presets, not a copy."""
    top = REPO / "configs"
    assert top.is_symlink() and top.resolve() == CONFIG_DIR.resolve()


def test_find_preset_from_any_folder_and_a_path_wins(tmp_path, monkeypatch):
    from shapes3d.config import find_preset, locate_config, presets

    monkeypatch.chdir(tmp_path)
    assert find_preset("voxnet") == find_preset("voxnet.toml") == CONFIG_DIR / "voxnet.toml"
    assert locate_config("voxnet") == CONFIG_DIR / "voxnet.toml"
    (tmp_path / "voxnet.toml").write_text("epochs = 1\n")
    assert locate_config("voxnet.toml") == Path("voxnet.toml")  # an existing path wins over the preset
    assert load_config(Outer, "voxnet.toml").epochs == 1
    with pytest.raises(ConfigError) as e:
        find_preset("voxnett")
    assert str(e.value) == f"voxnett: no such config file or shipped preset; presets: {', '.join(presets())}"
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="missing.toml: config file does not exist"):
        load_config(Outer, "sub/missing.toml")  # a path with a folder is never a preset name


def _bench_recipes() -> dict:
    """benchmarks/bench_classify.py's DATASETS overrides, read without importing the benchmark (torch)."""
    import ast

    tree = ast.parse((REPO / "benchmarks" / "bench_classify.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DATASETS" for t in node.targets):
            return {name: overrides for name, (_, overrides) in ast.literal_eval(node.value).items()}
    raise AssertionError("DATASETS not found in benchmarks/bench_classify.py")


@pytest.mark.skipif(not (REPO / "benchmarks" / "bench_classify.py").exists(), reason="benchmarks not present")
@pytest.mark.parametrize("name", ["modelnet10", "modelnet40", "shrec11"])
def test_data_set_presets_hold_the_benchmark_recipes(name):
    from shapes3d.classify.config import ClassifyConfig

    expected = load_config(ClassifyConfig, "voxnet", overrides=_bench_recipes()[name])
    assert load_config(ClassifyConfig, name) == expected


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


def test_range_checks_name_the_full_key_the_value_and_the_range():
    import math

    from shapes3d.classify.config import ClassifyTrainConfig
    from shapes3d.config import check_range
    from shapes3d.deepsdf.config import DeepSDFConfig
    from shapes3d.deepsdf.views_config import ViewsConfig
    from shapes3d.style.config import StyleConfig

    cases = [
        (DeepSDFConfig, "train.lr_decoder=nan", "train.lr_decoder=nan is not a finite number (valid range (0.0, inf))"),
        (DeepSDFConfig, "train.clamp=-1", "train.clamp=-1.0 is out of range (0.0, inf)"),
        (DeepSDFConfig, "fit.restarts=0", "fit.restarts=0 is out of range [1, 10000]"),
        (DeepSDFConfig, "model.skip_at=[8]", "model.skip_at[0]=8 is out of range [1, 7]"),
        (DeepSDFConfig, "samples.seed=-1", "samples.seed=-1 is out of range [0, 9223372036854775807]"),
        (ViewsConfig, "render.size=100000", "render.size=100000 is out of range [11, 4096]"),
        (ViewsConfig, "fit.steps=0", "fit.steps=0 is out of range [1, 10000000]"),
        (StyleConfig, "tv_weight=inf", "tv_weight=inf is not a finite number (valid range [0.0, inf))"),
    ]
    for cls, override, expected in cases:
        with pytest.raises(ConfigError) as err:
            load_config(cls, None, overrides=[override])
        assert expected in str(err.value) and "\n" not in str(err.value), (override, str(err.value))
    with pytest.raises(ValueError, match="lr=inf is not a finite number"):  # direct construction: the same check
        ClassifyTrainConfig(lr=math.inf)
    with pytest.raises(ValueError, match=r"x=True is not a number"):
        check_range("x", True, 0, 1)
    check_range("x", 0.5, 0, 1)
