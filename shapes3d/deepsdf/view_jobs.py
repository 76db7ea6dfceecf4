"""The DeepSDF jobs on multi-view renders as functions: fit a code to views, stylise a shape.

Each returns a result dataclass and writes exactly the files of its command (``shapes3d sdf fit-views``,
``shapes3d style shape``), atomically, with names taken from shapes or files through
:func:`~shapes3d.utils.io.safe_child`. Nothing here prints; the CLI reports the results.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shapes3d.deepsdf.codes import code_or_none, save_code, shape_code
from shapes3d.deepsdf.reconstruction import extract_shape, reconstruction_metrics
from shapes3d.deepsdf.trainer import load_deepsdf
from shapes3d.deepsdf.views_config import ViewsConfig
from shapes3d.utils.io import atomic_write_text, safe_child

if TYPE_CHECKING:
    from shapes3d.deepsdf.stylization import StylizeResult
    from shapes3d.deepsdf.view_fitting import ViewsFitResult
    from shapes3d.render.images import LabelledRow

log = logging.getLogger(__name__)

_FIT_PANELS = {"loss": ["total"], "silhouette": ["silhouette"], "ssim": ["ssim_shaded", "ssim_normals"],
               "perceptual": ["perceptual_shaded", "perceptual_normals"]}
_STYLE_PANELS = {"loss": ["total"], "style": ["style"], "preserve": ["preserve"]}


SHEET_MIN_SIZE = 192  #: pixels per view of the before/after sheets (smaller renders are scaled up)


def _view_heads(cfg: ViewsConfig, n: int) -> list[str] | None:
    """Column names (azimuth, elevation) of the sheets' views, elevation-major as ``view_cameras``."""
    r = cfg.render
    heads = [f"az {k * 360.0 / r.views:g}\u00b0, el {e:g}\u00b0" for e in r.elevations for k in range(r.views)]
    return heads if len(heads) == n else None


def _write_config(cfg, out: Path) -> Path:
    from shapes3d.config import config_to_toml

    atomic_write_text(out / "config.toml", config_to_toml(cfg, header="Resolved configuration written by shapes3d."))
    return out / "config.toml"


# ----------------------------------------------------------------------------- fit views
@dataclass
class FitViewsResult:
    """The fit (code, losses, final renders), the number of views, seconds from loading to the fitted code, and the
    files: code, sheet (target vs fitted), mesh (None when the code has no surface: ``reason``), metrics (vs the
    target mesh; None for a targets folder)."""

    label: str
    fit: ViewsFitResult
    views: int
    seconds: float
    out: Path
    code_path: Path
    sheet_path: Path
    mesh_path: Path | None = None
    metrics: dict | None = None
    reason: str = ""


def _load_targets(targets: Path, model, cfg: ViewsConfig):
    """(ViewTargets, cameras, Transform or None, the mesh or None, label) from a mesh file or a targets folder."""
    from shapes3d.deepsdf.view_targets import read_view_targets
    from shapes3d.deepsdf.views import targets_from_mesh, view_cameras
    from shapes3d.geometry.io import load_mesh
    from shapes3d.geometry.normalize import normalize

    if targets.is_dir():
        images, cams, t = read_view_targets(targets)
        return images, cams, t, None, (targets.parent.name if targets.name == "targets" else targets.name)
    mesh = load_mesh(targets)
    # The training shapes' normalisation (sdf sampling): bounding-box centre, unit sphere with a margin.
    unit, t = normalize(mesh, mode="sphere", margin=model.config.samples.margin, center="bbox")
    cams = view_cameras(cfg.render)
    return targets_from_mesh(unit, cams, ambient=cfg.render.ambient), cams, t, mesh, targets.stem


def _fit_sheet_rows(targets, res: ViewsFitResult) -> list[LabelledRow]:
    from shapes3d.render.images import sdf_images

    kinds = ("shaded", "normals", "silhouette")
    fitted = dict(zip(kinds, sdf_images(res.renders, list(kinds), soft_silhouette=True)))
    rows = []
    for kind in kinds:
        tgt = getattr(targets, kind)
        if tgt is None:
            continue
        tgt = tgt.numpy()
        if kind == "normals":
            tgt = np.where(np.abs(tgt).sum(-1, keepdims=True) > 0, (tgt + 1) / 2, 1.0)
        elif kind == "silhouette":
            tgt = 1.0 - tgt
        rows += [(f"target {kind}", tgt), (f"fitted {kind}", fitted[kind])]
    return rows


def fit_views(checkpoint: str | Path, targets: str | Path, *, cfg: ViewsConfig, out: str | Path | None = None,
              resolution: int = 96, format: str = "ply") -> FitViewsResult:
    """Fit a code (decoder frozen) so that its renders match ``targets``: a mesh (rendered from ``cfg.render``'s
    cameras after the training shapes' normalisation) or a targets folder (cameras.json + PNGs, as written into
    ``OUT/targets``). The label is the mesh's stem, or the targets folder's name (its parent's for ``targets``).

    Writes into ``out`` (default ``fit-views/LABEL`` beside the checkpoint): ``targets/`` (mesh targets only),
    ``LABEL.pt``, ``sheet.png``, ``log.csv``, ``loss.png``, ``config.toml``, ``LABEL.FORMAT`` (ply, obj, off or
    glb) and, for a mesh, ``LABEL.json`` (metrics, loss, fit seconds).
    """
    from shapes3d.deepsdf.view_fitting import fit_code_to_views
    from shapes3d.deepsdf.view_targets import write_view_targets
    from shapes3d.engine.plots import write_step_log
    from shapes3d.geometry.export import export_mesh
    from shapes3d.render.images import write_sheet

    start = time.perf_counter()
    checkpoint, targets = Path(checkpoint), Path(targets)
    model = load_deepsdf(checkpoint, device=cfg.fit.device)
    images, cams, t, mesh, label = _load_targets(targets, model, cfg)
    out = Path(out) if out is not None else safe_child(checkpoint.parent / "fit-views", label, what="target name")
    res = fit_code_to_views(model.decoder, images, cams, cfg=cfg, codes=model.codes)
    seconds = time.perf_counter() - start
    if mesh is not None:
        write_view_targets(out / "targets", images, cams, t)
    code_path = save_code(safe_child(out, f"{label}.pt", what="target name"), res.code, t, loss=res.loss,
                          source=str(targets), partial="views")
    sheet = write_sheet(_fit_sheet_rows(images, res), out / "sheet.png", min_size=SHEET_MIN_SIZE,
                        col_labels=_view_heads(cfg, len(cams)),
                        title=f"fit-views {label} ({checkpoint.parent.name}/{checkpoint.name}): target vs fitted, "
                              f"{cfg.render.size} px renders shown at >= {SHEET_MIN_SIZE} px")
    write_step_log(res.history, out, title=f"fit-views {label} ({checkpoint.parent.name}/{checkpoint.name})",
                   panels=_FIT_PANELS)
    _write_config(cfg, out)
    result = FitViewsResult(label, res, len(cams), seconds, out, code_path, sheet)
    ext = extract_shape(model.decoder, res.code, resolution=resolution, transform=t)
    if ext.empty:
        result.reason = ext.reason
        return result
    result.mesh_path = export_mesh(ext.mesh, safe_child(out, f"{label}.{format}", what="target name"))
    if mesh is not None:
        result.metrics = reconstruction_metrics(ext.mesh, mesh, t)
        atomic_write_text(safe_child(out, f"{label}.json", what="target name"),
                          json.dumps({**result.metrics, "loss": res.loss, "fit_seconds": seconds}, indent=2))
    return result


# ----------------------------------------------------------------------------- stylise
@dataclass
class StylizeJobResult:
    """The stylisation (decoder, code, before/after renders, history, final terms), seconds to the stylised model,
    and the files: sheet (before/after), code file, whole model (``optimise = "decoder"`` only), mesh (None when
    the stylised shape has no surface: ``reason``)."""

    label: str
    style: StylizeResult
    optimise: str
    seconds: float
    sheet_path: Path
    code_path: Path
    model_path: Path | None = None
    mesh_path: Path | None = None
    reason: str = ""


def stylize(checkpoint: str | Path, shape: str, style, *, cfg: ViewsConfig, out: str | Path,
            resolution: int = 96, format: str = "ply") -> StylizeJobResult:
    """Give training shape (name or index) or code file ``shape`` the Gram statistics of ``style`` (an image path,
    ``skimage:NAME`` or numpy image) by optimising its code or a copy of the decoder (``cfg.style.optimise``).

    Writes into ``out``: ``sheet.png`` (before/after), ``log.csv``, ``loss.png``, ``config.toml``,
    ``LABEL-styled.pt`` (code file), ``LABEL-styled-model.pt`` (with ``optimise = "decoder"``: the checkpoint with
    the tuned decoder, which every command reads) and ``LABEL-styled.FORMAT`` (ply, obj, off or glb).
    """
    from shapes3d.deepsdf.stylization import stylize_shape
    from shapes3d.deepsdf.views import view_cameras
    from shapes3d.engine.plots import write_step_log
    from shapes3d.geometry.export import export_mesh
    from shapes3d.render.images import label_rows, read_image, sdf_images, write_sheet

    start = time.perf_counter()
    checkpoint, out = Path(checkpoint), Path(out)
    named = isinstance(style, (str, Path))
    image = read_image(str(style)) if named else style  # a bad image fails before the model loads
    model = load_deepsdf(checkpoint, device=cfg.style.device)
    label, code, t = shape_code(model, str(shape))
    cams = view_cameras(cfg.render)
    res = stylize_shape(model.decoder, code_or_none(code), image, cams, cfg=cfg)
    seconds = time.perf_counter() - start
    optimise = cfg.style.optimise
    rows = [row for name, renders in (("before", res.before), ("after", res.after))
            for row in label_rows(name, ("shaded", "normals"), sdf_images(renders, ["shaded", "normals"]))]
    sheet = write_sheet(rows, out / "sheet.png", min_size=SHEET_MIN_SIZE, col_labels=_view_heads(cfg, len(cams)),
                        title=f"style shape {label} ({checkpoint.parent.name}/{checkpoint.name}, optimise "
                              f"{optimise}): before vs after, {cfg.render.size} px renders shown at >= "
                              f"{SHEET_MIN_SIZE} px")
    write_step_log(res.history, out, title=f"style shape {label} ({checkpoint.parent.name}/{checkpoint.name}, "
                                           f"optimise {optimise})", panels=_STYLE_PANELS)
    _write_config(cfg, out)
    code_path = save_code(safe_child(out, f"{label}-styled.pt", what="shape name"), res.code, t,
                          source=str(checkpoint), shape=label, style=str(style) if named else "<image>",
                          optimise=optimise)
    result = StylizeJobResult(label, res, optimise, seconds, sheet, code_path)
    if optimise == "decoder":
        result.model_path = _save_styled_model(checkpoint, res, safe_child(out, f"{label}-styled-model.pt",
                                                                           what="shape name"),
                                               shape=label, style=str(style) if named else "<image>")
    ext = extract_shape(res.decoder, res.code, resolution=resolution, transform=t)
    if ext.empty:
        result.reason = ext.reason
        return result
    result.mesh_path = export_mesh(ext.mesh, safe_child(out, f"{label}-styled.{format}", what="shape name"))
    return result


def _save_styled_model(checkpoint: Path, res: StylizeResult, path: Path, *, shape: str, style: str) -> Path:
    """A whole model (the source checkpoint with the tuned decoder), so that ``sdf extract``, ``render`` and
    ``sdf fit`` use the stylised decoder with every code; a code file alone would pair with the original."""
    from shapes3d.engine.checkpoint import load_checkpoint, save_checkpoint

    source = load_checkpoint(checkpoint)
    source["decoder"] = {k: v.detach().cpu() for k, v in res.decoder.state_dict().items()}
    source["optimizer"] = {}
    source["style"] = {"shape": shape, "style": style}
    return save_checkpoint(path, source)
