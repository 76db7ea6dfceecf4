"""Inputs of the multi-view classifier: cached views, the VGG that turns them into features, cached features.

Views are a preprocessing task (:func:`shapes3d.render.multiview.views_task` through
:func:`~shapes3d.data.preprocess.run_preprocess`): rendered once per shape, keyed by the file's content and the
render settings. With a frozen VGG the per-view features are cached too, one entry per views entry, keyed by
that entry's key (so by the input's content and the render settings), the VGG architecture, the tap, the
spatial pooling and the **weights' identity** (the sha256 of the weight file, or ``random:<arch>:seed0``).
Training then only runs the head. A set is a :class:`~shapes3d.data.voxel_dataset.VoxelSet` whose ``grids``
are per-shape features (S, V, D) float32, or views (S, V, C, H, W) uint8 when fine-tuning.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shapes3d.classify.config import ClassifyConfig, MVCNNConfig
from shapes3d.data.cache import cache_key, cache_location, canonical_json, load_cached, write_cached
from shapes3d.data.discovery import ManifestEntry
from shapes3d.data.preprocess import PreprocessReport, run_preprocess
from shapes3d.data.voxel_dataset import GridStack, VoxelSet
from shapes3d.errors import CheckpointError, ConfigError, Shapes3DError
from shapes3d.models.mvcnn import spatial_pool
from shapes3d.models.vgg import VGGFeatures
from shapes3d.render.multiview import VIEWS_VERSION, views_task
from shapes3d.utils.io import sha256_file
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)
FEATURES_VERSION = "1"
FEATURES_FN = "shapes3d.classify.mvcnn_data.features"
_BATCH_VIEWS = 48  # views per VGG forward pass


def view_params(cfg: ClassifyConfig) -> dict:
    """The :func:`~shapes3d.render.multiview.render_views` settings of a config (part of the views cache key)."""
    m = cfg.model.mvcnn
    return {"views": m.views, "elevation": m.elevation, "size": m.image_size, "channels": m.channels,
            "up_axis": cfg.data.up_axis, "point_radius": m.point_radius}


# ---------------------------------------------------------------- the VGG
@functools.lru_cache(maxsize=4)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def _weights_file(m: MVCNNConfig) -> Path:
    from shapes3d.pretrained import _not_found, find_vgg_weights

    if m.weights != "auto":
        return Path(m.weights)
    sources = find_vgg_weights(m.arch)
    hit = next((s for s in sources if s.found), None)
    if hit is None:
        raise _not_found(m.arch, sources)
    return hit.path


def load_backbone(m: MVCNNConfig) -> tuple[VGGFeatures, dict]:
    """The VGG of ``m`` (stopping at its tap) and its identity ``{"weights": ..., "preprocess": ...}``."""
    from shapes3d.pretrained import load_vgg

    if m.weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            vgg = VGGFeatures(m.arch, taps=[m.tap])
        return vgg, {"weights": f"random:{m.arch}:seed0", "preprocess": vgg.preprocess}
    path = _weights_file(m)
    vgg = load_vgg(m.arch, weights=path, taps=[m.tap])
    st = os.stat(path)
    return vgg, {"weights": _file_sha256(str(path), st.st_size, st.st_mtime_ns), "preprocess": vgg.preprocess}


def check_source(found: dict, expected: dict | None, where: str) -> None:
    """CheckpointError when the VGG found now is not the one a checkpoint's features came from."""
    if expected is not None and found.get("weights") != expected.get("weights"):
        raise CheckpointError(where, f"was trained on features of VGG weights {expected.get('weights')!r}, but the "
                                     f"weights found now are {found.get('weights')!r}: set model.mvcnn.weights to "
                                     "the same file")


@dataclass
class FeatureExtractor:
    """Per-view features of views (N, V, C, H, W) uint8 -> (N, V, D) float32 with a frozen VGG."""

    vgg: VGGFeatures
    cfg: MVCNNConfig
    source: dict
    device: torch.device

    @torch.no_grad()
    def __call__(self, views: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(np.asarray(views))
        n, nv, c, h, w = v.shape
        grey = v.reshape(n * nv * c, 1, h, w)
        out = []
        for start in range(0, len(grey), _BATCH_VIEWS):
            x = grey[start:start + _BATCH_VIEWS].to(self.device).float().div(255).expand(-1, 3, -1, -1)
            out.append(spatial_pool(self.vgg(x)[self.cfg.tap], self.cfg.spatial).cpu())
        return torch.cat(out).reshape(n, nv, -1).numpy().astype(np.float32)

    def key_params(self) -> dict:
        return {"arch": self.cfg.arch, "tap": self.cfg.tap, "spatial": self.cfg.spatial,
                "weights": self.source["weights"]}


def feature_extractor(cfg: ClassifyConfig, device: str | torch.device = "cpu") -> FeatureExtractor:
    from shapes3d.utils.device import pick_device

    vgg, source = load_backbone(cfg.model.mvcnn)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    return FeatureExtractor(vgg.to(dev).eval(), cfg.model.mvcnn, source, dev)


# ---------------------------------------------------------------- cached features
def _feature_location(views_location: Path, extractor: FeatureExtractor, cache_dir) -> tuple[str, str, Path]:
    views_key = Path(views_location).stem  # the views entry's key: input content + render settings
    params_json = canonical_json(extractor.key_params())
    key = cache_key(fn=FEATURES_FN, version=FEATURES_VERSION, params_json=params_json, input_sha256=views_key,
                    suffix=".views")
    return views_key, key, cache_location(cache_dir, key)


def cached_features(views_locations: Sequence[Path], extractor: FeatureExtractor, cache_dir, *,
                    desc: str = "features") -> tuple[list[np.ndarray], int]:
    """Per-view features (V, D) of each views cache entry, read from or written to ``cache_dir``; also how many
    were computed (the rest were cache hits)."""
    out: list[np.ndarray | None] = [None] * len(views_locations)
    todo = []
    for i, loc in enumerate(views_locations):
        views_key, key, feat_loc = _feature_location(loc, extractor, cache_dir)
        if feat_loc.exists():
            try:
                out[i] = load_cached(feat_loc, mmap=True, expect_key=key, expect_input_sha256=views_key)["features"]
                continue
            except CheckpointError as exc:
                log.warning("feature cache file is corrupt, recomputing it: %s", exc)
        todo.append((i, loc, views_key, key, feat_loc))
    per_batch = max(1, _BATCH_VIEWS // max(1, extractor.cfg.views))
    for start in progress(range(0, len(todo), per_batch), desc=desc, unit="batch"):
        chunk = todo[start:start + per_batch]
        feats = extractor(np.stack([load_cached(loc)["views"] for _, loc, *_ in chunk]))
        for (i, _, views_key, key, feat_loc), f in zip(chunk, feats):
            write_cached(feat_loc, {"features": f}, meta={"key": key, "fn": FEATURES_FN, "version": FEATURES_VERSION,
                                                          "params": extractor.key_params(), "input_sha256": views_key,
                                                          "input_suffix": ".views"})
            out[i] = f
    log.info("%s: %d computed, %d cached", desc, len(todo), len(out) - len(todo))
    return out, len(todo)


# ---------------------------------------------------------------- data sets
def _usable(entries: Sequence[ManifestEntry], classes: Sequence[str] | None):
    classes = list(classes) if classes is not None else sorted({e.class_name for e in entries})
    index = {c: i for i, c in enumerate(classes)}
    usable = [e for e in entries if e.class_name in index]
    skipped = [(e.path, f"class {e.class_name!r} is not one of the model's classes")
               for e in entries if e.class_name not in index]
    return classes, index, usable, skipped


def render_cached(paths: Sequence[Path], cfg: ClassifyConfig, cache_dir, *, workers: int = 1,
                  desc: str = "render views") -> PreprocessReport:
    """Render (or find in ``cache_dir``) the views of every path: one preprocessing pass."""
    return run_preprocess(paths, views_task, params=view_params(cfg), cache_dir=cache_dir, workers=workers,
                          desc=desc, version=VIEWS_VERSION)


def build_view_set(entries: Sequence[ManifestEntry], cfg: ClassifyConfig, *, cache_dir: str | Path,
                   classes: Sequence[str] | None = None, workers: int = 1, desc: str = "views",
                   extractor: FeatureExtractor | None = None) -> tuple[VoxelSet, PreprocessReport]:
    """The views (and, frozen, the features) of every entry through the cache; unknown or failed files skipped.

    ``extractor`` is required when ``cfg.model.mvcnn.frozen`` (the VGG whose features are cached).
    """
    if cfg.model.kind != "mvcnn":
        raise ConfigError(f"model.kind={cfg.model.kind!r}: view sets are for model.kind = 'mvcnn'")
    classes, index, usable, skipped = _usable(entries, classes)
    report = render_cached([e.path for e in usable], cfg, cache_dir, workers=workers, desc=f"render {desc}")
    kept = [e for e in usable if Path(e.path) in report.results]
    skipped += list(report.skipped)
    if not kept:
        raise Shapes3DError(f"no usable shapes out of {len(entries)} ({len(skipped)} skipped)")
    locations = [report.results[Path(e.path)] for e in kept]
    if cfg.model.mvcnn.frozen:
        if extractor is None:
            raise ConfigError("a frozen multi-view model needs the feature extractor")
        arrays, _ = cached_features(locations, extractor, cache_dir, desc=f"features {desc}")
    else:
        arrays = [load_cached(loc, mmap=True)["views"] for loc in locations]
    labels = np.asarray([index[e.class_name] for e in kept], dtype=np.int64)
    return VoxelSet(GridStack(arrays), labels, [Path(e.path) for e in kept], classes, skipped), report


def shape_inputs(files: Sequence[Path], cfg: ClassifyConfig, *, cache, extractor: FeatureExtractor | None):
    """(path, model input (V, D) or (V, C, H, W), or the reason it failed) per file; through ``cache`` if given."""
    if cache is not None:
        report = render_cached(files, cfg, cache)
        reasons = {Path(p): r for p, r in report.skipped}
        done = [p for p in files if Path(p) in report.results]
        locs = [report.results[Path(p)] for p in done]
        arrays = (cached_features(locs, extractor, cache)[0] if extractor is not None
                  else [load_cached(loc)["views"] for loc in locs])
        got = dict(zip(done, arrays))
        for path in files:
            yield path, got[path] if path in got else reasons.get(Path(path), "not rendered")
        return
    for path in progress(files, desc="predict", unit="shape"):
        try:
            views = views_task(path, **view_params(cfg))["views"]
        except (Shapes3DError, ValueError) as e:  # unreadable files; geometry the renderer refuses
            yield path, str(e)
            continue
        yield path, extractor(views[None])[0] if extractor is not None else views
