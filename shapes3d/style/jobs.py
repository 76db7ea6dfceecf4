"""The image style jobs as functions: read the images, optimise, write the result, its loss curve and config.

Each job writes into ``out``: ``NAME.png`` (the optimised image), ``loss.png`` (loss per L-BFGS step) and
``config.toml`` (the resolved config); ``NAME`` is ``texture`` or ``transfer``.
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


@dataclass
class StyleJobResult:
    """The image written, the optimisation's result (image (1, 3, H, W), per-step history), first and last loss."""

    path: Path
    result: StyleResult
    first_loss: float
    last_loss: float

    @property
    def reduction(self) -> float:
        """How many times lower the last loss is than the first."""
        return self.first_loss / max(self.last_loss, 1e-30)


def texture(image, cfg: StyleConfig, out: str | Path) -> StyleJobResult:
    """A new texture with the Gram statistics of ``image`` (a path, ``skimage:NAME``, or a numpy (H, W[, 3])
    image), ``cfg.size`` pixels on its longer side; writes ``out/texture.png``, ``loss.png``, ``config.toml``."""
    from shapes3d.style.synthesis import synthesize_texture

    example = _image_tensor(image, cfg.size)
    return _save(synthesize_texture(example, cfg), Path(out), cfg, "texture")


def transfer(content, style, cfg: StyleConfig, out: str | Path) -> StyleJobResult:
    """``content`` re-rendered with the Gram statistics of ``style`` (each a path, ``skimage:NAME`` or numpy
    image); writes ``out/transfer.png``, ``loss.png``, ``config.toml``."""
    from shapes3d.style.synthesis import style_transfer

    content_t, style_t = _image_tensor(content, cfg.size), _image_tensor(style, cfg.size)
    return _save(style_transfer(content_t, style_t, cfg), Path(out), cfg, "transfer")


def _image_tensor(image, size: int):
    from shapes3d.render.images import read_image, to_image_tensor

    return to_image_tensor(read_image(str(image)) if isinstance(image, (str, Path)) else image, size)


def _save(result: StyleResult, out: Path, cfg: StyleConfig, name: str) -> StyleJobResult:
    from shapes3d.config import config_to_toml
    from shapes3d.engine.plots import plot_curves
    from shapes3d.render.images import write_image
    from shapes3d.utils.io import atomic_write_text

    path = write_image(out / f"{name}.png", result.image)
    rows = [{"epoch": h["step"], **{f"train_{k}": v for k, v in h.items() if k != "step"}} for h in result.history]
    plot_curves(rows, out / "loss.png", title=f"{name}: loss per L-BFGS step")
    atomic_write_text(out / "config.toml", config_to_toml(cfg, header="Resolved configuration written by shapes3d."))
    first, last = result.history[0]["total"], result.history[-1]["total"]
    log.info("%s: loss %.4g -> %.4g", name, first, last)
    return StyleJobResult(path, result, first, last)
