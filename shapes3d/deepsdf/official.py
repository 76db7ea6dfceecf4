"""Experiments of the official DeepSDF release (facebookresearch/DeepSDF) in and out.

An official experiment folder holds ``specs.json`` (``NetworkSpecs``: ``dims``, ``dropout``, ``dropout_prob``,
``norm_layers``, ``latent_in``, ``xyz_in_all``, ``use_tanh``, ``latent_dropout``, ``weight_norm``; ``CodeLength``,
the schedule, ``ClampingDistance``, ...), ``ModelParameters/<epoch>.pth`` (``{"epoch", "model_state_dict"}``; the
decoder was trained under ``DataParallel``, so keys read ``module.lin{k}.weight_g`` / ``weight_v`` / ``bias``
for weight-normed layers, ``module.lin{k}.weight`` / ``bias`` otherwise) and ``LatentCodes/<epoch>.pth``
(``{"epoch", "latent_codes": {"weight": (S, L)}}``, the state of an ``nn.Embedding``; very old files hold a tensor
(S, 1, L)). Code k belongs to the k-th shape of the training split (``TrainSplit``).

The official decoder is ours (:class:`~shapes3d.models.deepsdf.SDFDecoder`) layer for layer: ``lin0..lin{n-1}``
are our hidden layers, ``lin{n}`` our output layer, the skip layers (``latent_in``) concatenate ``[h, z, xyz]`` in
the same order, and both end in one tanh. What ours cannot express is refused with the reason: ``use_tanh``
(a second tanh), ``xyz_in_all``, ``latent_dropout``, LayerNorm (``norm_layers`` without ``weight_norm``), unequal
widths in ``dims``, and dropout on only some hidden layers. Weight norm on only some layers is exact: a plain
layer ``W`` becomes ``v = W``, ``g = |W|`` per row. Files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from shapes3d.config import config_to_dict, config_to_toml
from shapes3d.data.deepsdf_layout import SDF_SAMPLES, read_normalization, read_split, write_split
from shapes3d.deepsdf.config import DeepSDFConfig, DeepSDFModelConfig, SDFTrainConfig
from shapes3d.deepsdf.trainer import FORMAT, build_decoder, load_deepsdf
from shapes3d.engine.checkpoint import load_checkpoint, save_checkpoint
from shapes3d.errors import CheckpointError, ConfigError, MissingFileError
from shapes3d.utils.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)
SPECS = "specs.json"
MODEL_DIR, CODES_DIR = "ModelParameters", "LatentCodes"


def _refuse(path: Path, what: str) -> None:
    raise ConfigError(f"{path}: {what}; shapes3d's decoder cannot reproduce it, so it is not imported")


def config_from_specs(specs: dict, path: Path) -> DeepSDFConfig:
    """Our config of an official ``specs.json`` (architecture exactly; schedule and loss where they map)."""
    try:
        net, latent = dict(specs["NetworkSpecs"]), int(specs["CodeLength"])
        dims = [int(d) for d in net["dims"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not an official DeepSDF specs file (needs NetworkSpecs.dims and CodeLength: "
                          f"{exc})") from None
    n = len(dims)
    if len(set(dims)) != 1:
        _refuse(path, f"dims {dims} has unequal widths")
    for key in ("use_tanh", "xyz_in_all", "latent_dropout"):
        if net.get(key):
            _refuse(path, f"NetworkSpecs.{key} is true")
    weight_norm = bool(net.get("weight_norm", False))
    norm = {int(k) for k in net.get("norm_layers") or ()}
    if norm & set(range(n)) and not weight_norm:
        _refuse(path, f"norm_layers {sorted(norm)} without weight_norm means LayerNorm")
    drop_layers = {int(k) for k in net.get("dropout") or ()} & set(range(n))
    p = float(net.get("dropout_prob", 0.0) or 0.0) if drop_layers else 0.0
    if p and drop_layers != set(range(n)):
        _refuse(path, f"dropout on layers {sorted(drop_layers)} only (of 0..{n - 1})")
    schedule = specs.get("LearningRateSchedule") or []
    lrs = [s for s in schedule if isinstance(s, dict) and s.get("Type") == "Step"]
    t = SDFTrainConfig()
    train = {"epochs": int(specs.get("NumEpochs", t.epochs)), "shapes_per_batch": int(specs.get("ScenesPerBatch",
             t.shapes_per_batch)), "samples_per_shape": int(specs.get("SamplesPerScene", t.samples_per_shape)),
             "clamp": float(specs.get("ClampingDistance", t.clamp)),
             "code_reg": float(specs.get("CodeRegularizationLambda", t.code_reg))
             if specs.get("CodeRegularization", True) else 0.0}
    if len(lrs) == 2:
        train.update(lr_decoder=float(lrs[0]["Initial"]), lr_codes=float(lrs[1]["Initial"]),
                     lr_interval=int(lrs[0]["Interval"]), lr_factor=float(lrs[0]["Factor"]))
    try:
        model = DeepSDFModelConfig(latent_size=latent, hidden=dims[0], layers=n,
                                   skip_at=tuple(int(k) for k in net.get("latent_in") or ()), dropout=p,
                                   weight_norm=weight_norm and bool(norm & set(range(n))),
                                   code_init_std=float(specs.get("CodeInitStdDev", 1.0)) / max(latent, 1) ** 0.5,
                                   code_max_norm=float(specs.get("CodeBound") or 0.0))
        return replace(DeepSDFConfig(), model=model, train=replace(t, **train))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def specs_from_config(cfg: DeepSDFConfig, *, train_split: str | None = None) -> dict:
    """An official ``specs.json`` for our config (the official trainer and reconstructor read it)."""
    m, t = cfg.model, cfg.train
    hidden = list(range(m.layers))
    step = [{"Type": "Step", "Initial": lr, "Interval": t.lr_interval, "Factor": t.lr_factor}
            for lr in (t.lr_decoder, t.lr_codes)]
    specs = {"Description": ["Exported by shapes3d."], "DataSource": "data", "NetworkArch": "deep_sdf_decoder",
             "NetworkSpecs": {"dims": [m.hidden] * m.layers, "dropout": hidden if m.dropout else [],
                              "dropout_prob": m.dropout, "norm_layers": hidden if m.weight_norm else [],
                              "latent_in": list(m.skip_at), "xyz_in_all": False, "use_tanh": False,
                              "latent_dropout": False, "weight_norm": m.weight_norm},
             "CodeLength": m.latent_size, "NumEpochs": t.epochs, "LearningRateSchedule": step,
             "SamplesPerScene": t.samples_per_shape, "ScenesPerBatch": t.shapes_per_batch,
             "ClampingDistance": t.clamp, "CodeRegularization": t.code_reg > 0,
             "CodeRegularizationLambda": t.code_reg, "CodeBound": m.code_max_norm or None,
             "CodeInitStdDev": (m.code_init_std or m.latent_size ** -0.5) * max(m.latent_size, 1) ** 0.5}
    if train_split:
        specs["TrainSplit"] = train_split
    return specs


def _official_weight(state: dict, k: int, path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(v or W, bias, g or None) of official layer k, whichever weight-norm spelling the file uses."""
    pre = f"lin{k}."
    get = state.get
    if pre + "weight_v" in state:
        return state[pre + "weight_v"], state[pre + "bias"], state[pre + "weight_g"]
    if pre + "parametrizations.weight.original1" in state:  # torch.nn.utils.parametrizations.weight_norm
        return state[pre + "parametrizations.weight.original1"], state[pre + "bias"], \
            state[pre + "parametrizations.weight.original0"]
    if get(pre + "weight") is None or get(pre + "bias") is None:
        raise CheckpointError(path, f"model_state_dict lacks lin{k} (has {', '.join(sorted(state)[:6])}, ...)")
    return state[pre + "weight"], state[pre + "bias"], None


def decoder_state_from_official(state: dict, cfg: DeepSDFConfig, path: Path) -> dict:
    """Our :class:`SDFDecoder` state dict of an official ``model_state_dict`` (``module.`` prefixes dropped)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    n, out = cfg.model.layers, {}
    for k in range(n + 1):
        v, b, g = _official_weight(state, k, path)
        name = f"hidden_layers.{k}." if k < n else "output."
        if k == n or not cfg.model.weight_norm:  # a plain layer: the effective weight
            out[name + "weight"] = v if g is None else v * (g / v.norm(dim=1, keepdim=True))
        else:
            out[name + "weight_v"], out[name + "weight_g"] = v, (v.norm(dim=1, keepdim=True) if g is None else g)
        out[name + "bias"] = b
    extra = sorted(k for k in state if not any(k.startswith(f"lin{i}.") for i in range(n + 1)))
    if extra:
        raise CheckpointError(path, f"model_state_dict has parameters shapes3d's decoder lacks: {', '.join(extra[:4])}")
    return out


def official_state_from_decoder(decoder) -> dict:
    """The official ``model_state_dict`` (``DataParallel`` keys, ``module.lin{k}.*``) of our decoder."""
    out = {}
    layers = [*decoder.hidden_layers, decoder.output]
    for k, layer in enumerate(layers):
        for key, value in layer.state_dict().items():
            out[f"module.lin{k}.{key}"] = value.detach().cpu().clone()
    return out


def _torch_load(path: Path) -> dict:
    if not path.is_file():
        raise MissingFileError(path, "official DeepSDF file does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for unreadable or unsafe files
        raise CheckpointError(path, f"not a readable .pth file ({type(exc).__name__}: "
                                    f"{(str(exc).splitlines() or [''])[0][:160]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(path, f"expected a dict, got {type(data).__name__}")
    return data


def _codes(data: dict, path: Path) -> torch.Tensor:
    codes = data.get("latent_codes")
    if isinstance(codes, dict) and isinstance(codes.get("weight"), torch.Tensor):
        return codes["weight"].float()
    if isinstance(codes, torch.Tensor):
        return codes.reshape(codes.shape[0], -1).float()
    raise CheckpointError(path, "has no latent_codes {'weight': (S, L)}")


def _find_split(exp: Path, specs: dict, split: str | Path | None) -> Path | None:
    """The training split: ``split`` if given, else ``TrainSplit`` relative to the experiment or a folder above it
    (the release names it from its repository root, ``examples/splits/...``)."""
    if split is not None:
        return Path(split)
    rel = specs.get("TrainSplit")
    if not isinstance(rel, str):
        return None
    for base in (exp, *exp.resolve().parents[:3]):
        if (base / rel).is_file():
            return base / rel
    return None


def _shape_list(exp: Path, specs: dict, split, data, n: int) -> tuple[list[str], list[str], list[str], torch.Tensor,
                                                                      torch.Tensor]:
    """Ids, paths, classes and our normalisations of the n training shapes (from the split and the data source)."""
    split_path = _find_split(exp, specs, split)
    triples = read_split(split_path) if split_path is not None else []
    if len(triples) != n:
        if split_path is not None:
            log.warning("%s lists %d shapes but the experiment has %d codes: shapes are numbered", split_path,
                        len(triples), n)
        return ([f"shape_{k:04d}" for k in range(n)], [], [""] * n, torch.zeros(n, 3, dtype=torch.float64),
                torch.ones(n, dtype=torch.float64))
    names = [f"{c}/{i}" for _, c, i in triples]
    if len(set(names)) != n:
        raise ConfigError(f"{split_path}: a class/id appears twice; shape ids must be unique")
    paths, offsets, scales = [], torch.zeros(n, 3, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
    if data is not None:
        for k, (d, c, i) in enumerate(triples):
            p = (Path(data) / SDF_SAMPLES / d / c / f"{i}.npz").resolve()
            paths.append(str(p))
            o, s = read_normalization(p)
            offsets[k], scales[k] = torch.tensor(o, dtype=torch.float64), s
    return names, paths, [c for _, c, _ in triples], offsets, scales


@dataclass
class ImportResult:
    checkpoint: Path
    epoch: int
    shapes: int
    config: DeepSDFConfig


def import_official(experiment: str | Path, out: str | Path | None = None, *, epoch: str | int = "latest",
                    split: str | Path | None = None, data: str | Path | None = None) -> ImportResult:
    """An official experiment (``specs.json``, ``ModelParameters/<epoch>.pth``, ``LatentCodes/<epoch>.pth``) ->
    a shapes3d checkpoint (default ``EXPERIMENT/shapes3d/last.pt``, with ``config.toml`` beside it) that every
    ``sdf`` command reads. Shape ids come from the training split (``split`` or the specs' ``TrainSplit``),
    normalisations and sample paths from the data source ``data`` (``NormalizationParameters``) when given."""
    exp = Path(experiment)
    specs_path = exp / SPECS
    if not specs_path.is_file():
        raise MissingFileError(specs_path, "not an official DeepSDF experiment folder (no specs.json)")
    try:
        specs = json.loads(specs_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{specs_path}: not valid JSON ({exc})") from None
    cfg = config_from_specs(specs, specs_path)
    params = _torch_load(exp / MODEL_DIR / f"{epoch}.pth")
    if not isinstance(params.get("model_state_dict"), dict):
        raise CheckpointError(exp / MODEL_DIR / f"{epoch}.pth", "has no model_state_dict")
    decoder = build_decoder(cfg)
    state = decoder_state_from_official(params["model_state_dict"], cfg, exp / MODEL_DIR / f"{epoch}.pth")
    try:
        decoder.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(exp / MODEL_DIR / f"{epoch}.pth", f"does not match specs.json: "
                                                                 f"{str(exc).splitlines()[0][:200]}") from None
    codes = _codes(_torch_load(exp / CODES_DIR / f"{epoch}.pth"), exp / CODES_DIR / f"{epoch}.pth")
    if codes.shape[1] != cfg.model.latent_size:
        raise CheckpointError(exp / CODES_DIR / f"{epoch}.pth", f"codes of length {codes.shape[1]}, specs.json "
                                                                 f"says CodeLength {cfg.model.latent_size}")
    names, paths, classes, offsets, scales = _shape_list(exp, specs, split, data, len(codes))
    done = int(params.get("epoch", 0) or 0)
    target = Path(out) if out is not None else exp / "shapes3d" / "last.pt"
    save_checkpoint(target, {"format": FORMAT, "decoder": decoder.state_dict(),
                             "codes": {"embedding.weight": codes} if cfg.model.latent_size else {},
                             "config": config_to_dict(cfg), "names": names, "offsets": offsets, "scales": scales,
                             "paths": paths, "classes": classes, "epoch": done, "history": [],
                             "imported_from": str(exp.resolve())})
    atomic_write_text(target.parent / "config.toml", config_to_toml(cfg, header=f"imported from {exp}"))
    log.info("imported %s (epoch %d, %d shapes) -> %s", exp, done, len(codes), target)
    return ImportResult(target, done, len(codes), cfg)


@dataclass
class ExportResult:
    folder: Path
    files: list[Path]


def export_official(checkpoint: str | Path, folder: str | Path) -> ExportResult:
    """A shapes3d checkpoint -> an official experiment folder: ``specs.json``, ``ModelParameters/latest.pth``,
    ``LatentCodes/latest.pth`` (plain dicts of tensors, loadable with ``torch.load``), and ``split.json`` (the
    training shapes in code order, ``TrainSplit`` of the specs) when the shape ids are ``<class>/<id>``."""
    model = load_deepsdf(checkpoint, device="cpu")
    if model.config.model.pe_frequencies:
        raise ConfigError(f"{checkpoint}: the decoder encodes xyz with {model.config.model.pe_frequencies} "
                          "positional-encoding frequencies (model.pe_frequencies); the official DeepSDF decoder "
                          "reads plain xyz, so this checkpoint cannot be exported")
    raw = load_checkpoint(checkpoint)
    epoch = int(raw.get("epoch", 0) or 0)
    folder = Path(folder)
    files = []
    split = None
    codes = model.codes.detach().cpu() if model.codes is not None else torch.zeros(1, 0)
    if all(n.count("/") == 1 for n in model.names):
        datasets = [Path(p).parts[-3] if len(Path(p).parts) >= 4 and Path(p).parts[-4] == SDF_SAMPLES
                    else "ShapeNetV2" for p in (model.paths or [""] * len(model.names))]
        triples = [(d, *n.split("/")) for d, n in zip(datasets, model.names)]
        # a split file groups ids by dataset and class: order the codes the same way (stable, first appearance)
        first = {}
        for t in triples:
            first.setdefault(t[:2], len(first))
        order = sorted(range(len(triples)), key=lambda k: first[triples[k][:2]])
        files.append(write_split(folder / "split.json", [triples[k] for k in order]))
        codes = codes[order] if model.codes is not None else codes
        split = "split.json"
    atomic_write_text(folder / SPECS, json.dumps(specs_from_config(model.config, train_split=split), indent=2) + "\n")
    files.append(folder / SPECS)
    for sub, payload in ((MODEL_DIR, {"epoch": epoch, "model_state_dict": official_state_from_decoder(model.decoder)}),
                         (CODES_DIR, {"epoch": epoch, "latent_codes": {"weight": codes.clone()}})):
        path = folder / sub / "latest.pth"
        with atomic_write(path) as f:
            torch.save(payload, f)
        files.append(path)
    return ExportResult(folder, files)
