"""Contact sheets: many renders tiled into one PNG (e.g. rows = shapes, columns = views)."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from shapes3d.utils.io import atomic_write_bytes

_PAD = 2  # pixels of background between tiles
_TEXT_H = 12  # height of one line of PIL's default bitmap font, with a little air


def depth_to_image(depth: np.ndarray, *, background: float = 1.0) -> np.ndarray:
    """Depth maps (V, H, W) with ``inf`` misses -> grey images (V, H, W) in [0, 1].

    Near is dark, far is light, per view over its own hit range; misses get ``background``.
    """
    dep = np.asarray(depth, dtype=np.float64)
    if dep.ndim != 3:
        raise ValueError(f"depth must have shape (V, H, W), got {dep.shape}")
    out = np.full(dep.shape, float(background))
    for i, dv in enumerate(dep):
        hit = np.isfinite(dv)
        if hit.any():
            lo, hi = dv[hit].min(), dv[hit].max()
            out[i][hit] = 0.1 + 0.8 * (dv[hit] - lo) / max(hi - lo, 1e-12)
    return out


def _to_uint8(images) -> np.ndarray:
    arr = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] != 3) or arr.shape[0] == 0:
        raise ValueError(f"images must have shape (V, H, W) or (V, H, W, 3) with V >= 1, got {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"images contain {int(bad.sum())} non-finite values; map depth with depth_to_image first")
    return np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)


def contact_sheet(
    images,
    path: str | os.PathLike,
    *,
    cols: int | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Tile V images into a grid PNG written atomically to ``path``; returns the path.

    ``images``: (V, H, W) grey or (V, H, W, 3) RGB, as floats in [0, 1], bool or uint8
    (numpy or torch). ``cols`` tiles per row (default ``ceil(sqrt(V))``); ``labels``: one
    caption per image, drawn under it; ``title``: one line above the grid. Tiles are
    separated by 2 white pixels, so without labels or title the sheet is
    ``cols * (W + 2) + 2`` wide and ``rows * (H + 2) + 2`` high.
    """
    tiles = _to_uint8(images)
    v, h, w = tiles.shape[:3]
    if tiles.ndim == 3:
        tiles = np.repeat(tiles[..., None], 3, axis=-1)
    if cols is None:
        cols = math.ceil(math.sqrt(v))
    if isinstance(cols, bool) or int(cols) != cols or cols < 1:
        raise ValueError(f"cols must be a positive integer, got {cols!r}")
    cols = int(min(cols, v))
    if labels is not None and len(labels) != v:
        raise ValueError(f"labels must give one caption per image: {v} images, {len(labels)} labels")
    rows = math.ceil(v / cols)
    label_h = _TEXT_H if labels is not None else 0
    title_h = _TEXT_H + _PAD if title else 0
    tile_h = h + label_h + _PAD
    sheet = Image.new("RGB", (cols * (w + _PAD) + _PAD, title_h + rows * tile_h + _PAD), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    if title:
        draw.text((_PAD, _PAD), str(title), fill=(0, 0, 0), font=font)
    for i in range(v):
        r, c = divmod(i, cols)
        x, y = _PAD + c * (w + _PAD), title_h + _PAD + r * tile_h
        sheet.paste(Image.fromarray(tiles[i]), (x, y))
        if labels is not None:
            draw.text((x, y + h), str(labels[i]), fill=(0, 0, 0), font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path
