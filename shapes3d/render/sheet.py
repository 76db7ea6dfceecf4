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
FONT_SIZE = 14  #: pixels of the captions (titles are 4 larger)


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


def sheet_font(size: int = FONT_SIZE):
    """PIL's default font at ``size`` pixels (a scalable TrueType font where Pillow has FreeType, else the bitmap)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, AttributeError, OSError):  # pragma: no cover - Pillow < 10.1 or without FreeType
        return ImageFont.load_default()


def _text_h(font) -> int:
    box = font.getbbox("Ag(|")
    return int(box[3] - min(box[1], 0)) + 4


def _text_w(font, texts) -> int:
    return max((int(font.getbbox(str(t))[2]) for t in texts), default=0)


def wrap_text(text: str, font, width: int) -> list[str]:
    """``text`` broken at spaces (and at its newlines) into lines at most ``width`` pixels wide in ``font``
    (a single word wider than that keeps its own line)."""
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            trial = f"{line} {word}" if line else word
            if line and _text_w(font, [trial]) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def upscale_tiles(tiles: np.ndarray, min_size: int) -> np.ndarray:
    """uint8 tiles (V, H, W, 3) -> the same, scaled up (bicubic) so their shorter side is at least ``min_size``."""
    v, h, w = tiles.shape[:3]
    factor = min_size / min(h, w)
    if factor <= 1:
        return tiles
    size = (int(round(w * factor)), int(round(h * factor)))
    return np.stack([np.asarray(Image.fromarray(t).resize(size, Image.BICUBIC)) for t in tiles])


_LABEL_KINDS = {"labels": ("one caption per image", "images"), "row_labels": ("one name per row", "rows"),
                "col_labels": ("one name per column", "columns")}


def _check_labels(**given) -> None:
    for name, (labels, want) in given.items():
        if labels is not None and len(labels) != want:
            what, unit = _LABEL_KINDS[name]
            raise ValueError(f"{name} must give {what}: {want} {unit}, {len(labels)} labels")


def contact_sheet(
    images,
    path: str | os.PathLike,
    *,
    cols: int | None = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    min_size: int | None = None,
) -> Path:
    """Tile V images into a grid PNG written atomically to ``path``; returns the path.

    ``images``: (V, H, W) grey or (V, H, W, 3) RGB, as floats in [0, 1], bool or uint8
    (numpy or torch). ``cols`` tiles per row (default ``ceil(sqrt(V))``); ``labels``: one
    caption per image, drawn under it; ``title``: one line above the grid; ``row_labels``:
    one name per row, in a margin left of it; ``col_labels``: one name per column, above the
    first row; ``min_size``: tiles smaller than this (shorter side, pixels) are scaled up to it.
    Tiles are separated by 2 white pixels, so without labels, title or scaling the sheet is
    ``cols * (W + 2) + 2`` wide and ``rows * (H + 2) + 2`` high.
    """
    tiles = _to_uint8(images)
    if tiles.ndim == 3:
        tiles = np.repeat(tiles[..., None], 3, axis=-1)
    v = tiles.shape[0]
    if cols is None:
        cols = math.ceil(math.sqrt(v))
    if isinstance(cols, bool) or int(cols) != cols or cols < 1:
        raise ValueError(f"cols must be a positive integer, got {cols!r}")
    cols = int(min(cols, v))
    rows = math.ceil(v / cols)
    _check_labels(labels=(labels, v), row_labels=(row_labels, rows), col_labels=(col_labels, cols))
    if min_size:
        tiles = upscale_tiles(tiles, int(min_size))
    sheet = _draw_sheet(tiles, cols, rows, labels=labels, title=title, row_labels=row_labels, col_labels=col_labels)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _draw_sheet(tiles: np.ndarray, cols: int, rows: int, *, labels, title, row_labels, col_labels) -> Image.Image:
    """The sheet of :func:`contact_sheet` from checked uint8 tiles (V, H, W, 3)."""
    h, w = tiles.shape[1:3]
    font, title_font = sheet_font(), sheet_font(FONT_SIZE + 4)
    label_h = _text_h(font) if labels is not None else 0
    left = _text_w(font, row_labels) + 3 * _PAD if row_labels is not None else 0
    width = left + cols * (w + _PAD) + _PAD
    title_lines = wrap_text(str(title), title_font, width - 2 * _PAD) if title else []
    title_h = len(title_lines) * _text_h(title_font) + _PAD if title else 0
    tile_h = h + label_h + _PAD
    top = title_h + (_text_h(font) if col_labels is not None else 0)
    sheet = Image.new("RGB", (width, top + rows * tile_h + _PAD), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, line in enumerate(title_lines):
        draw.text((_PAD, _PAD + k * _text_h(title_font)), line, fill=(0, 0, 0), font=title_font)
    for c, text in enumerate(col_labels or ()):
        x = left + _PAD + c * (w + _PAD) + max((w - _text_w(font, [text])) // 2, 0)
        draw.text((x, title_h), str(text), fill=(0, 0, 0), font=font)
    for r, text in enumerate(row_labels or ()):
        y = top + _PAD + r * tile_h + (h - _text_h(font)) // 2
        draw.text((left - 2 * _PAD - _text_w(font, [text]), y), str(text), fill=(0, 0, 0), font=font)
    for i in range(len(tiles)):
        r, c = divmod(i, cols)
        x, y = left + _PAD + c * (w + _PAD), top + _PAD + r * tile_h
        sheet.paste(Image.fromarray(tiles[i]), (x, y))
        if labels is not None:
            draw.text((x, y + h), str(labels[i]), fill=(0, 0, 0), font=font)
    return sheet
