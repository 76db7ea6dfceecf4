"""The image style jobs as functions: read the images, optimise, write the result, its loss curve and config.

Each job writes into ``out``: ``NAME.png`` (the optimised image), ``panel.png`` (labelled inputs beside the
result: exemplar | texture, or content | style | result), ``loss.png`` (loss per L-BFGS step) and ``config.toml``
(the resolved config); ``NAME`` is ``texture`` or ``transfer``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shapes3d.style.config import StyleConfig

if TYPE_CHECKING:
    from shapes3d.style.synthesis import StyleResult

log = logging.getLogger(__name__)


PANEL_MIN_SIZE = 192  #: pixels of the shorter side of each panel image (smaller images are scaled up)


@dataclass
class StyleJobResult:
    """The image written, the optimisation's result (image (1, 3, H, W), per-step history), first and last loss,
    and the labelled panel of inputs and result."""

    path: Path
    result: StyleResult
    first_loss: float
    last_loss: float
    panel: Path | None = None

    @property
    def reduction(self) -> float:
        """How many times lower the last loss is than the first."""
        return self.first_loss / max(self.last_loss, 1e-30)


def texture(image, cfg: StyleConfig, out: str | Path) -> StyleJobResult:
    """A new texture with the Gram statistics of ``image`` (a path, ``skimage:NAME``, or a numpy (H, W[, 3])
    image), ``cfg.size`` pixels on its longer side; writes ``out/texture.png``, ``panel.png`` (exemplar |
    texture), ``loss.png``, ``config.toml``."""
    from shapes3d.style.synthesis import synthesize_texture

    example = _image_tensor(image, cfg.size)
    res = synthesize_texture(example, cfg)
    return _save(res, Path(out), cfg, "texture", inputs=[(f"exemplar {_name(image)}", example)])


def transfer(content, style, cfg: StyleConfig, out: str | Path) -> StyleJobResult:
    """``content`` re-rendered with the Gram statistics of ``style`` (each a path, ``skimage:NAME`` or numpy
    image); writes ``out/transfer.png``, ``panel.png`` (content | style | result), ``loss.png``, ``config.toml``."""
    from shapes3d.style.synthesis import style_transfer

    content_t, style_t = _image_tensor(content, cfg.size), _image_tensor(style, cfg.size)
    res = style_transfer(content_t, style_t, cfg)
    return _save(res, Path(out), cfg, "transfer",
                 inputs=[(f"content {_name(content)}", content_t), (f"style {_name(style)}", style_t)])


def _name(image) -> str:
    if isinstance(image, (str, Path)):
        text = str(image)
        return text.split(":", 1)[1] if text.startswith("skimage:") else Path(text).name
    return "(array)"


def _image_tensor(image, size: int):
    from shapes3d.render.images import read_image, to_image_tensor

    return to_image_tensor(read_image(str(image)) if isinstance(image, (str, Path)) else image, size)


def panel_tiles(images):
    """Tensors (1, 3, h, w) of possibly different sizes -> (N, H, W, 3) numpy tiles, each centred on white."""
    import numpy as np

    arrays = [np.moveaxis(t.detach().cpu().numpy()[0], 0, -1) for t in images]
    h, w = max(a.shape[0] for a in arrays), max(a.shape[1] for a in arrays)
    tiles = np.ones((len(arrays), h, w, 3))
    for k, a in enumerate(arrays):
        y, x = (h - a.shape[0]) // 2, (w - a.shape[1]) // 2
        tiles[k, y:y + a.shape[0], x:x + a.shape[1]] = a
    return tiles


def write_panel(inputs, result: StyleResult, path: Path, *, name: str, cfg: StyleConfig) -> Path:
    """``inputs`` (label, image (1, 3, h, w)) and the result side by side, labelled, at >= ``PANEL_MIN_SIZE`` px."""
    from shapes3d.render.sheet import contact_sheet

    heads = [label for label, _ in inputs] + [f"{name} (colour: {result.color})"]
    tiles = panel_tiles([t for _, t in inputs] + [result.image])
    title = (f"style {name} ({path.parent.name}): {cfg.kind} style term, {cfg.arch}, {cfg.steps} L-BFGS steps at "
             f"{cfg.size} px")
    return contact_sheet(tiles, path, cols=len(heads), col_labels=heads, title=title, min_size=PANEL_MIN_SIZE)


def _save(result: StyleResult, out: Path, cfg: StyleConfig, name: str, *, inputs=()) -> StyleJobResult:
    from shapes3d.config import config_to_toml
    from shapes3d.engine.plots import plot_curves
    from shapes3d.render.images import write_image
    from shapes3d.utils.io import atomic_write_text

    path = write_image(out / f"{name}.png", result.image)
    panel = write_panel(inputs, result, out / "panel.png", name=name, cfg=cfg) if inputs else None
    rows = [{"step": h["step"], **{f"train_{k}": v for k, v in h.items() if k != "step"}} for h in result.history]
    plot_curves(rows, out / "loss.png", x="step", title=f"style {name} ({out.name}): loss per L-BFGS step, "
                                                        f"{result.color} colour")
    atomic_write_text(out / "config.toml", config_to_toml(cfg, header="Resolved configuration written by shapes3d."))
    first, last = result.history[0]["total"], result.history[-1]["total"]
    log.info("%s: loss %.4g -> %.4g", name, first, last)
    return StyleJobResult(path, result, first, last, panel)
