"""View-consistent style on multi-view renders of a mesh: ``shapes3d style views``.

The mesh, normalised into the unit sphere, is rendered from V cameras on a circle (:func:`render_mesh`: the
Lambert shading is the content; depth and cameras give the exact correspondences of
:mod:`shapes3d.style.view_warp`). All views x = (V, 3, H, W) are optimised jointly with L-BFGS (as
:mod:`shapes3d.style.synthesis`) for

    L = alpha L_content + beta L_style + gamma mean_i sum_(j neighbour of i) (1/D) sum_k c_k ||x_i,k - w_j->i,k||^2

the last term Ruder et al.'s (2016) temporal loss with the neighbour's current stylised view warped into view i
(differentiable through the neighbour) and c the depth-tested mask on the shape. The background stays white:
the optimised pixels are composited over it by the silhouette before every loss.

Measured: the *warped difference* (:func:`~shapes3d.style.view_warp.warped_difference`, the mean squared
difference between a view and its warped neighbours over the masked pixels) after every step. With
``compare`` the same problem is also solved with gamma = 0, and both runs are compared at *matched style
loss*: each run returns its iterate of lowest total loss, the higher of the two returned style losses is the
level, and each run's first iterate at or below it is taken.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from shapes3d.losses.image import content_loss
from shapes3d.losses.style_term import StyleTerm, style_layers_for, style_term_for
from shapes3d.models.vgg import VGGFeatures
from shapes3d.style.inversion import ImageLike, as_image, vgg_for, write_config
from shapes3d.style.view_warp import ViewPairs, consistency_loss, ring_pairs, view_pairs, warped_difference
from shapes3d.style.views_config import StyleViewsConfig
from shapes3d.utils.device import pick_device
from shapes3d.utils.io import atomic_write_csv, atomic_write_text
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)


@dataclass
class ViewRenders:
    """The content of the job: V renders of the normalised mesh and what the warp needs."""

    content: torch.Tensor  #: (V, 3, H, W) grey shading in [0, 1], white background
    mask: torch.Tensor  #: (V, 1, H, W) float silhouette
    depth: np.ndarray  #: (V, H, W) depth along each camera's z axis, inf where missed
    cameras: list  #: V :class:`~shapes3d.render.cameras.Camera`


def render_views(mesh, cfg: StyleViewsConfig) -> ViewRenders:
    """Normalise ``mesh`` (a trimesh or a mesh file) into the unit sphere and render it from ``cfg.views``
    cameras evenly spaced on a circle at ``cfg.elevation``."""
    from shapes3d.geometry.normalize import normalize
    from shapes3d.render.cameras import cameras_on_sphere
    from shapes3d.render.mesh import render_mesh

    if isinstance(mesh, (str, os.PathLike)):
        from shapes3d.geometry.io import load_mesh

        mesh = load_mesh(mesh)
    unit, _ = normalize(mesh, mode="sphere", margin=0.0)
    cams = cameras_on_sphere(elevations_deg=[cfg.elevation], azimuths_deg=np.arange(cfg.views) * 360.0 / cfg.views,
                             distance=cfg.distance, up=cfg.up, fov_deg=cfg.fov_deg, width=cfg.size, height=cfg.size)
    r = render_mesh(unit, cams, ambient=cfg.ambient, background=1.0)
    content = torch.from_numpy(np.ascontiguousarray(r.shaded, dtype=np.float32))[:, None].expand(-1, 3, -1, -1)
    mask = torch.from_numpy(r.silhouette.astype(np.float32))[:, None]
    return ViewRenders(content.contiguous(), mask, r.depth, cams)


@dataclass
class ViewsRun:
    """One joint optimisation: the best iterate's composited views and, per iterate t = 0..steps, the
    unweighted terms."""

    gamma: float
    images: torch.Tensor  #: (V, 3, H, W) in [0, 1], the iterate of lowest total loss
    history: list[dict]  #: step, total, content, style, consistency, warped_difference
    best_step: int = 0  #: the iterate ``images`` is

    @property
    def best(self) -> dict:
        """The history row of the returned iterate."""
        return self.history[self.best_step]


@dataclass
class _Problem:
    vgg: VGGFeatures
    term: StyleTerm
    content: dict[str, torch.Tensor]  #: {tap: (V, C, h, w)} of the content renders
    content_weights: dict[str, float]
    mask: torch.Tensor  #: (V, 1, H, W)
    pairs: ViewPairs
    cfg: StyleViewsConfig

    def composite(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask * x + (1.0 - self.mask)

    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.composite(x)
        f = self.vgg(e)
        return {"content": content_loss(f, self.content, layers=self.cfg.content_layers,
                                        weights=self.content_weights).mean(),
                "style": self.term(f).mean(), "consistency": consistency_loss(e, self.pairs).mean()}


def _problem(renders: ViewRenders, style: torch.Tensor, cfg: StyleViewsConfig, vgg: VGGFeatures | None) -> _Problem:
    device = pick_device(cfg.device)
    taps = tuple(dict.fromkeys((*style_layers_for(cfg), *cfg.content_layers)))
    net = vgg_for(cfg, taps, device, vgg)
    with torch.no_grad():
        term = style_term_for(cfg, net(style.to(device)))
        content = {k: v for k, v in net(renders.content.to(device)).items() if k in cfg.content_layers}
    cw = {k: 1.0 / max(float(content[k].pow(2).mean()), 1e-12) / len(cfg.content_layers) for k in content}
    pairs = view_pairs(renders.depth, renders.cameras, ring_pairs(cfg.views, cfg.neighbours),
                       tolerance=cfg.depth_tolerance).to(device)
    return _Problem(net, term, content, cw, renders.mask.to(device), pairs, cfg)


def optimise_views(problem: _Problem, x0: torch.Tensor, *, gamma: float, desc: str) -> ViewsRun:
    """L-BFGS on all views x (V, 3, H, W) at once, clamped to [0, 1] after every iteration.

    The clamp is a projection L-BFGS's curvature pairs do not know about; late in a run it can throw the iterate
    off (measured: the gamma = 0 run's loss rose after ~45 of 60 steps). Every projected iterate is therefore
    measured and the one of lowest total loss is returned (as :func:`shapes3d.style.inversion.invert_layer`).
    """
    cfg = problem.cfg
    weights = {"content": cfg.content_weight, "style": cfg.style_weight, "consistency": gamma}
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=1, history_size=20)
    history: list[dict] = []
    best: dict = {"total": float("inf"), "step": 0, "x": x0}

    def record(terms: dict[str, torch.Tensor], total: torch.Tensor) -> None:
        if float(total.detach()) < best["total"]:
            best.update(total=float(total.detach()), step=len(history), x=x.detach().clone())
        history.append({"step": len(history), "total": float(total.detach()),
                        **{k: float(v.detach()) for k, v in terms.items()},
                        "warped_difference": warped_difference(problem.composite(x.detach()), problem.pairs)})

    def closure():
        opt.zero_grad()
        terms = problem.terms(x)
        total = sum(weights[k] * v for k, v in terms.items())
        total.backward()
        record(terms, total)
        return total

    for _ in progress(range(cfg.steps), desc=desc, unit="step", leave=False):
        opt.step(closure)
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
    with torch.no_grad():
        terms = problem.terms(x)
        record(terms, sum(weights[k] * v for k, v in terms.items()))
    return ViewsRun(gamma, problem.composite(best["x"]).cpu(), history, best["step"])


def matched(runs: list[ViewsRun]) -> tuple[float, list[dict]]:
    """The matched style level (the highest style loss of the runs' returned iterates) and each run's first
    history row at or below it, up to its returned iterate."""
    level = max(r.best["style"] for r in runs)
    return level, [next(h for h in r.history[:r.best_step + 1] if h["style"] <= level) for r in runs]


@dataclass
class StyleViewsReport:
    """What :func:`views` wrote and measured (warped differences: see :mod:`shapes3d.style.view_warp`)."""

    sheet: Path
    images: list[Path]
    log_csv: Path
    metrics_json: Path
    metrics: dict  #: content / consistent / plain (gamma = 0) summaries, ratio at matched style loss
    consistent: ViewsRun
    plain: ViewsRun | None


def _summaries(problem: _Problem, content: torch.Tensor, runs: list[ViewsRun]) -> dict:
    level, rows = matched(runs)
    out = {"content_warped_difference": warped_difference(content.to(problem.mask.device), problem.pairs),
           "matched_style": level, "masked_fraction": float(problem.pairs.mask.mean())}
    for name, run, row in zip(("consistent", "plain"), runs, rows):
        out[name] = {"gamma": run.gamma, "final_step": run.best_step, "final_style": run.best["style"],
                     "final_warped_difference": run.best["warped_difference"], "matched_step": row["step"],
                     "matched_style": row["style"], "matched_warped_difference": row["warped_difference"]}
    if len(runs) == 2:
        out["ratio_at_matched_style"] = (out["consistent"]["matched_warped_difference"]
                                         / max(out["plain"]["matched_warped_difference"], 1e-30))
    return out


def views(mesh, style: ImageLike, *, out: str | os.PathLike, cfg: StyleViewsConfig | None = None,
          views: int | None = None, vgg: VGGFeatures | None = None) -> StyleViewsReport:
    """Stylise ``cfg.views`` renders of ``mesh`` (trimesh or mesh file) jointly with ``style`` (a path,
    ``skimage:NAME``, numpy image or (1, 3, H, W) tensor), with the multi-view consistency term.

    ``views`` overrides ``cfg.views``. Writes ``view_<i>.png`` (the stylised views), ``sheet.png`` (rows:
    content renders, stylised with gamma, and with gamma = 0 when ``cfg.compare``), ``log.csv`` (per run and
    iterate: content, style, consistency, warped difference), ``consistency.json`` (the summaries of
    :attr:`StyleViewsReport.metrics`) and ``config.toml``.
    """
    import json

    cfg = replace(cfg or StyleViewsConfig(), **({} if views is None else {"views": views}))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    renders = render_views(mesh, cfg)
    problem = _problem(renders, as_image(style, cfg.style_size), cfg, vgg)
    device = problem.mask.device
    if cfg.init == "content":
        x0 = renders.content.to(device)
    else:
        x0 = torch.rand(renders.content.shape, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    runs = [optimise_views(problem, x0, gamma=cfg.consistency_weight, desc="style views")]
    if cfg.compare:
        runs.append(optimise_views(problem, x0, gamma=0.0, desc="style views (gamma 0)"))
    metrics = _summaries(problem, renders.content, runs)
    paths = _write(out, renders, runs, metrics, cfg)
    atomic_write_csv(out / "log.csv", [{"run": n, **h} for n, r in zip(("consistent", "plain"), runs)
                                       for h in r.history])
    atomic_write_text(out / "consistency.json", json.dumps(metrics, indent=2) + "\n")
    write_config(cfg, out)
    c = metrics["consistent"]
    log.info("style views: warped difference %.4g (content %.4g) at style %.4g%s", c["final_warped_difference"],
             metrics["content_warped_difference"], c["final_style"],
             f"; ratio to gamma 0 at matched style {metrics['ratio_at_matched_style']:.3f}" if cfg.compare else "")
    return StyleViewsReport(out / "sheet.png", paths, out / "log.csv", out / "consistency.json", metrics, runs[0],
                            runs[1] if cfg.compare else None)


def _write(out: Path, renders: ViewRenders, runs: list[ViewsRun], metrics: dict, cfg: StyleViewsConfig) -> list[Path]:
    from shapes3d.render.images import write_image
    from shapes3d.render.sheet import contact_sheet

    paths = [write_image(out / f"view_{i}.png", img) for i, img in enumerate(runs[0].images)]
    rows = [renders.content] + [r.images for r in runs]
    names = ["content"] + [f"gamma {r.gamma:g}: d {r.best['warped_difference']:.4f}" for r in runs]
    tiles = torch.cat(rows).permute(0, 2, 3, 1).clamp(0, 1).numpy()
    labels = [name if i == 0 else "" for name in names for i in range(cfg.views)]
    title = f"style views ({cfg.kind}): warped difference, content {metrics['content_warped_difference']:.4f}"
    contact_sheet(tiles, out / "sheet.png", cols=cfg.views, labels=labels, title=title)
    return paths
