"""Image style jobs: texture synthesis and transfer through the CLI and the Python API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from shapes3d.cli.main import main
from shapes3d.config import load_config
from shapes3d.pretrained import find_vgg_weights
from shapes3d.render.images import to_image_tensor
from shapes3d.style.config import StyleConfig
from shapes3d.style.synthesis import style_transfer, synthesize_texture


def _cfg(**kw) -> StyleConfig:
    base = {"size": 32, "steps": 4, "device": "cpu", "style_layers": ("relu1_1", "relu2_1"),
            "content_layers": ("relu2_1",), "weights": "random"}
    base.update(kw)
    return StyleConfig(**base)


def test_transfer_with_zero_style_weight_keeps_the_content():
    torch.manual_seed(0)
    content = torch.rand(1, 3, 32, 32)
    style = torch.rand(1, 3, 32, 32)
    res = style_transfer(content, style, _cfg(style_weight=0.0, init="content"))
    torch.testing.assert_close(res.image, content, atol=1e-6, rtol=0)
    assert res.history[-1]["content"] == pytest.approx(0.0, abs=1e-12)


def test_texture_loss_decreases_and_output_is_an_image():
    torch.manual_seed(0)
    example = to_image_tensor((np.random.default_rng(0).random((40, 60)) * 255).astype(np.uint8), 32)
    assert example.shape == (1, 3, 21, 32)
    res = synthesize_texture(example, _cfg(steps=6))
    assert res.image.shape == example.shape and 0 <= res.image.min() and res.image.max() <= 1
    assert res.history[-1]["total"] < res.history[0]["total"]


def test_cli_texture_from_skimage_with_real_weights(tmp_path, capsys):
    cfg = load_config(StyleConfig, "configs/style.toml")
    if not any(s.found for s in find_vgg_weights(cfg.arch)):
        pytest.skip(f"no pretrained {cfg.arch} weights installed")
    out = tmp_path / "tex"
    assert main(["-q", "style", "texture", "skimage:brick", "--out", str(out), "--set", "size=32",
                 "--set", "steps=8", "--set", "style_layers=['relu1_1', 'relu2_1', 'relu3_1']"]) == 0
    text = capsys.readouterr().out
    ratio = float(text.rsplit("(", 1)[1].split("x lower")[0].split(",")[-1])
    assert ratio > 10, text
    img = Image.open(out / "texture.png")
    assert img.size == (32, 32) and (out / "loss.png").exists() and (out / "config.toml").exists()


def test_cli_reports_a_bad_image(tmp_path, capsys):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    assert main(["style", "texture", str(bad), "--out", str(tmp_path)]) == 2
    assert f"error: {bad}: not a readable image" in capsys.readouterr().err
    assert main(["style", "texture", "skimage:nope", "--out", str(tmp_path)]) == 2
    assert "scikit-image has no sample image 'nope'" in capsys.readouterr().err


def test_cli_style_shape_reports_a_bad_style_image_and_a_bad_config_key(tmp_path, capsys):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"not a png")
    ck = tmp_path / "model.pt"
    ck.write_bytes(b"never read: the image and the config are checked before the checkpoint is loaded")
    assert main(["style", "shape", str(ck), "--shape", "0", "--style", str(bad), "--out", str(tmp_path)]) == 2
    assert f"error: {bad}: not a readable image" in capsys.readouterr().err
    assert main(["style", "shape", str(ck), "--shape", "0", "--style", "skimage:brick", "--set",
                 "style.stepz=3"]) == 2
    assert "unknown key 'style.stepz' for StyleShapeConfig" in capsys.readouterr().err


def test_transfer_job_writes_the_image_curve_and_config(tmp_path):
    from shapes3d.config import load_config as load
    from shapes3d.style.jobs import transfer

    rng = np.random.default_rng(0)
    content = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
    style_png = tmp_path / "style.png"
    Image.fromarray((rng.random((24, 24, 3)) * 255).astype(np.uint8)).save(style_png)
    cfg = _cfg(steps=3)
    job = transfer(content, style_png, cfg, tmp_path / "out")
    assert job.path == tmp_path / "out" / "transfer.png" and Image.open(job.path).size == (32, 32)
    assert (tmp_path / "out" / "loss.png").stat().st_size > 0
    assert load(StyleConfig, tmp_path / "out" / "config.toml") == cfg
    assert job.first_loss == job.result.history[0]["total"] and job.reduction == job.first_loss / job.last_loss


# ------------------------------------------------------------------ style.kind: Gram or MRF
def test_texture_with_mrf_lowers_its_mrf_loss():
    from shapes3d.losses.mrf import mrf_style_loss
    from shapes3d.pretrained import load_vgg

    torch.manual_seed(0)
    example = to_image_tensor((np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8), 32)
    cfg = _cfg(kind="mrf", steps=6)
    vgg = load_vgg(cfg.arch, weights="random", taps=cfg.mrf_layers, pool=cfg.pool)
    res = synthesize_texture(example, cfg, vgg=vgg)
    x0 = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(cfg.seed))
    with torch.no_grad():
        fa, f0, f1 = vgg(example), vgg(x0), vgg(res.image)
    for tap in cfg.mrf_layers:  # the plain MRF energy of Li & Wand, layer by layer, drops from the start
        assert float(mrf_style_loss(f1[tap], fa[tap], k=3)[0]) < float(mrf_style_loss(f0[tap], fa[tap], k=3)[0])
    assert res.history[-1]["style"] < res.history[0]["style"]


def test_mrf_configs_round_trip_through_the_strict_loader(tmp_path):
    from shapes3d.config import config_to_toml
    from shapes3d.deepsdf.views_config import ViewsConfig
    from shapes3d.errors import ConfigError
    from shapes3d.style.views_config import StyleViewsConfig

    cases = [(StyleConfig, ['kind="mrf"', "mrf_patch=5", "mrf_layers=['relu2_1', 'relu3_1']", "mrf_chunk=64"]),
             (ViewsConfig, ['style.kind="mrf"', "style.mrf_patch=2"]),
             (StyleViewsConfig, ['kind="mrf"', "views=3"])]
    for cls, overrides in cases:
        cfg = load_config(cls, overrides=overrides)
        path = tmp_path / f"{cls.__name__}.toml"
        path.write_text(config_to_toml(cfg))
        back = load_config(cls, path)
        assert back == cfg and (back.style.kind if cls is ViewsConfig else back.kind) == "mrf"
    assert StyleConfig().kind == "gram" and ViewsConfig().style.kind == "gram"
    with pytest.raises(ConfigError, match="kind"):
        load_config(StyleConfig, overrides=['kind="patches"'])
    with pytest.raises(ValueError, match="need kind gram or mrf"):
        StyleConfig(kind="patches")


def test_the_gram_style_term_is_the_energy_weighted_gram_loss():
    from shapes3d.losses.image import gram_matrix, style_loss
    from shapes3d.losses.style_term import build_style_term

    g = torch.Generator().manual_seed(0)
    style = {"a": torch.rand(1, 4, 6, 6, generator=g), "b": torch.rand(1, 8, 3, 3, generator=g)}
    x = {"a": torch.rand(2, 4, 6, 6, generator=g), "b": torch.rand(2, 8, 3, 3, generator=g)}
    term = build_style_term(style, kind="gram", layers=("a", "b"))
    grams = {k: gram_matrix(v) for k, v in style.items()}
    weights = {k: 1.0 / float(v.pow(2).mean()) / 2 for k, v in grams.items()}
    torch.testing.assert_close(term(x), style_loss(x, grams, weights=weights))
    mrf = build_style_term(style, kind="mrf", layers=("a",), patch=3)
    assert mrf.targets["a"].shape == (16, 4, 3, 3)
    assert float(mrf({"a": style["a"]})[0]) == pytest.approx(0.0, abs=1e-10)  # its own patches: zero
