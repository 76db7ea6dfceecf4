"""Interop with the official DeepSDF release, from the formats' descriptions (no official code is shipped).

The reference decoder below is written from the release's architecture description: ``lin0..lin{n}`` linear
layers (weight-normed where listed in ``norm_layers``), ReLU between them, the input ``[z, xyz]`` concatenated
again before each ``latent_in`` layer, and a final tanh.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from shapes3d.cli.main import main
from shapes3d.deepsdf.official import export_official, import_official
from shapes3d.deepsdf.trainer import load_deepsdf
from shapes3d.errors import ConfigError

L, DIMS, LATENT_IN = 6, [24, 24, 24, 24], [2]


class ReferenceDecoder(nn.Module):
    def __init__(self, latent: int, dims: list[int], latent_in, norm_layers) -> None:
        super().__init__()
        d = [latent + 3, *dims, 1]
        self.latent_in, self.n = tuple(latent_in), len(d) - 1
        for k in range(self.n):
            out = d[k + 1] - d[0] if k + 1 in latent_in else d[k + 1]
            lin = nn.Linear(d[k], out)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.nn.utils.weight_norm is deprecated; the release uses it
                setattr(self, f"lin{k}", nn.utils.weight_norm(lin) if k in norm_layers else lin)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = inp
        for k in range(self.n):
            if k in self.latent_in:
                x = torch.cat([x, inp], 1)
            x = getattr(self, f"lin{k}")(x)
            if k < self.n - 1:
                x = torch.relu(x)
        return torch.tanh(x)


def write_experiment(folder: Path, *, norm_layers=(0, 1, 2, 3), n_codes: int = 3, **net) -> ReferenceDecoder:
    torch.manual_seed(0)
    ref = ReferenceDecoder(L, DIMS, LATENT_IN, norm_layers)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith("weight_g"):
                p.mul_(torch.rand_like(p) + 0.5)  # g no longer equals |v|
    specs = {"NetworkSpecs": {"dims": DIMS, "dropout": [0, 1, 2, 3], "dropout_prob": 0.2,
                              "norm_layers": list(norm_layers), "latent_in": LATENT_IN, "xyz_in_all": False,
                              "use_tanh": False, "latent_dropout": False, "weight_norm": True, **net},
             "CodeLength": L, "NumEpochs": 9, "ClampingDistance": 0.1, "CodeBound": 1.0, "TrainSplit": "split.json"}
    (folder / "ModelParameters").mkdir(parents=True)
    (folder / "LatentCodes").mkdir()
    (folder / "specs.json").write_text(json.dumps(specs))
    (folder / "split.json").write_text(json.dumps({"ShapeNetV2": {"03001627": [f"c{k}" for k in range(n_codes)]}}))
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}  # trained under DataParallel
    torch.save({"epoch": 9, "model_state_dict": state}, folder / "ModelParameters" / "latest.pth")
    codes = torch.randn(n_codes, L) * 0.3
    torch.save({"epoch": 9, "latent_codes": {"weight": codes}}, folder / "LatentCodes" / "latest.pth")
    return ref


def ours(model, k: int, xyz: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.decoder(model.codes[k].expand(len(xyz), -1), xyz)


def theirs(ref: nn.Module, codes: torch.Tensor, k: int, xyz: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return ref(torch.cat([codes[k].expand(len(xyz), -1), xyz], 1)).squeeze(1)


@pytest.mark.parametrize("norm_layers", [(0, 1, 2, 3), (0, 2)])
def test_imported_experiment_gives_the_reference_decoders_values(tmp_path, norm_layers):
    ref = write_experiment(tmp_path / "exp", norm_layers=norm_layers)
    r = import_official(tmp_path / "exp")
    model = load_deepsdf(r.checkpoint, device="cpu")
    assert r.epoch == 9 and model.names == ["03001627/c0", "03001627/c1", "03001627/c2"]
    assert model.config.model.skip_at == (2,) and model.config.train.epochs == 9
    codes = torch.load(tmp_path / "exp" / "LatentCodes" / "latest.pth", weights_only=True)["latent_codes"]["weight"]
    xyz = torch.rand(500, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for k in range(3):
        torch.testing.assert_close(ours(model, k, xyz), theirs(ref, codes, k, xyz), atol=1e-6, rtol=0)
    field = model.decoder.freeze(model.codes[1])
    torch.testing.assert_close(field(xyz), theirs(ref, codes, 1, xyz), atol=1e-5, rtol=0)


def test_export_then_official_load_and_reimport_reproduce_the_values(tmp_path):
    write_experiment(tmp_path / "exp")
    model = load_deepsdf(import_official(tmp_path / "exp").checkpoint, device="cpu")
    export_official(import_official(tmp_path / "exp").checkpoint, tmp_path / "out")
    specs = json.loads((tmp_path / "out" / "specs.json").read_text())
    params = torch.load(tmp_path / "out" / "ModelParameters" / "latest.pth", weights_only=True)
    codes = torch.load(tmp_path / "out" / "LatentCodes" / "latest.pth", weights_only=True)["latent_codes"]["weight"]
    assert specs["CodeLength"] == L and specs["NetworkSpecs"]["latent_in"] == LATENT_IN and params["epoch"] == 9
    net = specs["NetworkSpecs"]
    ref = ReferenceDecoder(specs["CodeLength"], net["dims"], net["latent_in"], net["norm_layers"])
    ref.load_state_dict({k.removeprefix("module."): v for k, v in params["model_state_dict"].items()})
    again = load_deepsdf(import_official(tmp_path / "out", tmp_path / "again.pt").checkpoint, device="cpu")
    assert again.names == model.names
    xyz = torch.rand(400, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1
    for k in range(3):
        torch.testing.assert_close(theirs(ref, codes, k, xyz), ours(model, k, xyz), atol=1e-6, rtol=0)
        torch.testing.assert_close(ours(again, k, xyz), ours(model, k, xyz), atol=1e-6, rtol=0)


@pytest.mark.parametrize("net, match", [({"use_tanh": True}, "use_tanh"), ({"xyz_in_all": True}, "xyz_in_all"),
                                        ({"weight_norm": False}, "LayerNorm"), ({"dropout": [0, 1]}, "dropout on")])
def test_what_our_decoder_cannot_express_is_refused(tmp_path, net, match):
    write_experiment(tmp_path / "exp", **net)
    with pytest.raises(ConfigError, match=match):
        import_official(tmp_path / "exp")


def test_cli_import_and_export(tmp_path, capsys):
    write_experiment(tmp_path / "exp")
    assert main(["-q", "sdf", "import-official", str(tmp_path / "exp"), "--epoch", "latest",
                 "--out", str(tmp_path / "ck" / "last.pt")]) == 0
    assert main(["-q", "sdf", "export-official", str(tmp_path / "ck" / "last.pt"), str(tmp_path / "back")]) == 0
    assert "imported epoch 9 with 3 codes" in capsys.readouterr().out
    assert json.loads((tmp_path / "back" / "split.json").read_text()) == {"ShapeNetV2": {"03001627": ["c0", "c1",
                                                                                                      "c2"]}}


def test_official_samples_drop_nan_rows_and_convert_the_offset_sign(tmp_path):
    from shapes3d.data.deepsdf_layout import convert_offset, read_official_samples, write_official_shape

    pos = np.array([[0.1, 0.2, 0.3, 0.05], [np.nan, 0, 0, 0.1], [0.0, 0.0, 0.0, np.nan]], np.float32)
    neg = np.array([[0.0, 0.1, 0.0, -0.02]], np.float32)
    centre, scale = np.array([1.0, -2.0, 0.5]), 0.25
    write_official_shape(tmp_path, "D", "cls", "s1", pos=pos, neg=neg, offset=centre, scale=scale)
    norm = np.load(tmp_path / "NormalizationParameters" / "D" / "cls" / "s1.npz")
    x = np.array([3.0, 1.0, -1.0])
    official = (x + norm["offset"]) * norm["scale"][0]
    np.testing.assert_allclose(official, (x - centre) * scale, rtol=1e-6)  # the two conventions agree
    np.testing.assert_array_equal(convert_offset(convert_offset(centre)), centre)
    a = read_official_samples(tmp_path / "SdfSamples" / "D" / "cls" / "s1.npz")
    assert a["dropped"] == 2 and len(a["points"]) == 2
    np.testing.assert_allclose(a["offset"], centre) and a["scale"] == pytest.approx(scale)


def test_export_orders_codes_as_its_split_file_groups_them(tmp_path):
    from shapes3d.engine.checkpoint import load_checkpoint, save_checkpoint

    write_experiment(tmp_path / "exp")
    ck = import_official(tmp_path / "exp").checkpoint
    payload = load_checkpoint(ck)
    payload["names"] = ["a/x", "b/y", "a/z"]  # classes interleaved in code order
    save_checkpoint(tmp_path / "mixed.pt", payload)
    export_official(tmp_path / "mixed.pt", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "split.json").read_text()) == {"ShapeNetV2": {"a": ["x", "z"], "b": ["y"]}}
    codes = torch.load(tmp_path / "out" / "LatentCodes" / "latest.pth", weights_only=True)["latent_codes"]["weight"]
    torch.testing.assert_close(codes, payload["codes"]["embedding.weight"][[0, 2, 1]])
