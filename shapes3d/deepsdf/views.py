"""SDF jobs driven by 2D losses on multi-view renders of a DeepSDF decoder.

* :func:`fit_code_to_views` - a shape from images alone: a latent code (decoder frozen)
  whose renders match target silhouettes, shaded images and/or normal maps under a
  silhouette loss (BCE or L2 on the soft silhouette), 1 - SSIM and a VGG perceptual
  (content) loss, plus the code regulariser.
* :func:`stylize_shape` - the Gram statistics (Gatys et al.) of a style image imposed on
  the shaded renders of a shape, by optimising its code or a copy of the decoder, while
  an L1 term keeps the SDF on fixed points near the original surface where it was.

Both render with :func:`shapes3d.render.sdf_render.render_sdf` in groups of ``render.group``
views and backpropagate each group before the next is rendered: the autograd graph of
a render spans every pixel, so one graph over all views would hold all their
activations at once. Renders are grey (Lambert, headlight), so the style image's
luminance is what the renders can match. Nothing here writes files; the CLI does.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from shapes3d.deepsdf.reconstruction import decoder_field
from shapes3d.deepsdf.views_config import ViewRenderConfig, ViewsConfig
from shapes3d.losses.image import content_loss, gram_matrix, ssim, style_loss
from shapes3d.models.deepsdf import SDFDecoder
from shapes3d.models.vgg import VGGFeatures
from shapes3d.pretrained import load_vgg
from shapes3d.render.cameras import Camera, cameras_on_sphere
from shapes3d.render.mesh import MeshScene, as_camera_list, render_mesh
from shapes3d.render.sdf_render import SDFRenders, render_sdf, shade_by_differences
from shapes3d.utils.progress import progress

log = logging.getLogger(__name__)

# ITU-R BT.601 luma weights: RGB targets and style images become grey, like the renders.
_LUMA = (0.299, 0.587, 0.114)


# ----------------------------------------------------------------------------- cameras, targets, renders
def view_cameras(cfg: ViewRenderConfig) -> list[Camera]:
    """``len(elevations) * views`` cameras on a sphere, looking at the origin (elevation-major)."""
    azimuths = np.arange(cfg.views) * 360.0 / cfg.views
    return cameras_on_sphere(elevations_deg=cfg.elevations, azimuths_deg=azimuths, distance=cfg.distance,
                             up=cfg.up, fov_deg=cfg.fov_deg, width=cfg.size, height=cfg.size)


def _as_float_tensor(value, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value))
    if t.dtype == torch.bool:
        t = t.float()
    elif t.dtype == torch.uint8:
        t = t.float() / 255.0
    t = t.float()
    if not torch.isfinite(t).all():
        raise ValueError(f"target {name} contains non-finite values")
    return t


@dataclass(frozen=True)
class ViewTargets:
    """Target images, one per camera (torch float32 on CPU; give any subset, at least one).

    ``silhouette`` (V, H, W) in [0, 1] (bool accepted); ``shaded`` (V, H, W) grey in [0, 1],
    or RGB (V, H, W, 3), which is converted to luminance; ``normals`` (V, H, W, 3) unit
    world-space normals, 0 where the shape is missed.
    """

    silhouette: torch.Tensor | None = None
    shaded: torch.Tensor | None = None
    normals: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.silhouette is None and self.shaded is None and self.normals is None:
            raise ValueError("targets must give at least one of silhouette, shaded or normals")
        for name in ("silhouette", "shaded", "normals"):
            value = getattr(self, name)
            if value is None:
                continue
            t = _as_float_tensor(value, name)
            if name == "shaded" and t.ndim == 4 and t.shape[-1] == 3:
                t = t @ torch.tensor(_LUMA)
            want = "(V, H, W, 3)" if name == "normals" else "(V, H, W)"
            if t.ndim != (4 if name == "normals" else 3) or (name == "normals" and t.shape[-1] != 3):
                raise ValueError(f"target {name} must have shape {want}, got {tuple(t.shape)}")
            object.__setattr__(self, name, t)
        sizes = {tuple(getattr(self, n).shape[:3]) for n in ("silhouette", "shaded", "normals")
                 if getattr(self, n) is not None}
        if len(sizes) != 1:
            raise ValueError(f"targets must share one (V, H, W), got {sorted(sizes)}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(V, H, W)."""
        t = next(getattr(self, n) for n in ("silhouette", "shaded", "normals") if getattr(self, n) is not None)
        return tuple(t.shape[:3])  # type: ignore[return-value]

    def mask(self) -> torch.Tensor | None:
        """(V, H, W) bool: where the target shape is (from the silhouette, else from non-zero normals)."""
        if self.silhouette is not None:
            return self.silhouette > 0.5
        if self.normals is not None:
            return self.normals.abs().sum(-1) > 0
        return None


def targets_from_mesh(mesh, cameras: Camera | Sequence[Camera], *, ambient: float = 0.2) -> ViewTargets:
    """Silhouettes, shaded images and normals of a mesh (already in the decoder's frame) by CPU ray casting."""
    r = render_mesh(mesh if isinstance(mesh, MeshScene) else MeshScene.build(mesh), cameras, ambient=ambient)
    return ViewTargets(silhouette=torch.from_numpy(r.silhouette), shaded=torch.from_numpy(r.shaded),
                       normals=torch.from_numpy(r.normals))


def render_views(sdf_fn, cameras: Sequence[Camera], cfg: ViewRenderConfig, *,
                 device: torch.device | None = None) -> SDFRenders:
    """:func:`render_sdf` with the near/far range of cameras at ``cfg.distance`` around the unit box."""
    reach = math.sqrt(3.0) + 0.05  # the box [-1, 1]^3 lies within this distance of the origin
    return render_sdf(sdf_fn, cameras, near=max(cfg.distance - reach, 1e-3), far=cfg.distance + reach,
                      max_steps=cfg.max_steps, silhouette_samples=cfg.silhouette_samples,
                      soft_silhouette_sharpness=cfg.sharpness, ambient=cfg.ambient, background=1.0, device=device)


def _shading(sdf_fn, renders: SDFRenders, cameras: Sequence[Camera], cfg: ViewRenderConfig) -> SDFRenders:
    """``renders`` with the images the losses see: shading and normals by differences (``cfg.normal_eps > 0``)
    composited over the white background by the soft silhouette.

    Why the composite: pixels flipping between hit and miss change a hard image by a jump
    that no gradient sees, and Gram statistics are dominated by those edges. Misses take
    the grazing-angle shade (``ambient``), so ``s * shade + (1 - s) * 1`` is continuous
    across the silhouette, where ``s`` = 0.5 on both sides.
    """
    if cfg.normal_eps <= 0:
        return renders
    shaded, normals = shade_by_differences(sdf_fn, renders, cameras, eps=cfg.normal_eps, ambient=cfg.ambient)
    s = renders.silhouette_soft
    shaded = s * torch.where(renders.hit, shaded, torch.full_like(shaded, cfg.ambient)) + (1.0 - s)
    return SDFRenders(depth=renders.depth, normals=normals, shaded=shaded, silhouette_soft=s, hit=renders.hit)


def grey_to_rgb(images: torch.Tensor) -> torch.Tensor:
    """(V, H, W) -> (V, 3, H, W)."""
    return images[:, None].expand(-1, 3, -1, -1)


def normal_image(normals: torch.Tensor, hit: torch.Tensor) -> torch.Tensor:
    """Normals (V, H, W, 3) and hit mask (V, H, W) -> (V, 3, H, W) RGB ``(n + 1) / 2``, white where missed."""
    img = torch.where(hit[..., None], (normals + 1.0) / 2.0, torch.ones_like(normals))
    return img.permute(0, 3, 1, 2)


def soft_normal_image(renders: SDFRenders) -> torch.Tensor:
    """(V, 3, H, W) normal image composited over white by the soft silhouette (misses: mid-grey normals)."""
    s = renders.silhouette_soft[:, None]
    n = torch.where(renders.hit[..., None], (renders.normals + 1.0) / 2.0, torch.full_like(renders.normals, 0.5))
    return s * n.permute(0, 3, 1, 2) + (1.0 - s)


def _groups(n: int, size: int) -> list[slice]:
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def _energy_weights(features: dict[str, torch.Tensor], layers: Sequence[str]) -> dict[str, float]:
    # Scale-free weights (as in shapes3d.style.synthesis): each layer divided by its target energy.
    return {k: 1.0 / max(float(features[k].pow(2).mean()), 1e-12) / len(layers) for k in layers}


@dataclass
class _Frozen:
    """Decoder in eval mode with gradients off for the duration of a ``with`` block; restored after."""

    decoder: SDFDecoder
    flags: list[bool] = field(default_factory=list)
    training: bool = False

    def __enter__(self) -> SDFDecoder:
        self.flags = [p.requires_grad for p in self.decoder.parameters()]
        self.training = self.decoder.training
        self.decoder.eval().requires_grad_(False)
        return self.decoder

    def __exit__(self, *exc) -> None:
        for p, f in zip(self.decoder.parameters(), self.flags):
            p.requires_grad_(f)
        self.decoder.train(self.training)


def _device_of(decoder: SDFDecoder) -> torch.device:
    return next(decoder.parameters()).device


# ----------------------------------------------------------------------------- fit a code to views
@dataclass
class ViewsFitResult:
    """The best code (L,), its final loss, per-step history of the winning restart, its final renders."""

    code: torch.Tensor
    loss: float
    history: list[dict]
    renders: SDFRenders
    restart_losses: list[float] = field(default_factory=list)
    final: dict = field(default_factory=dict)  #: loss terms of the final renders


class _ViewObjective:
    """The fit-views loss terms of one group of views (targets and target features prepared once)."""

    def __init__(self, targets: ViewTargets, cfg: ViewsConfig, vgg: VGGFeatures | None, device: torch.device):
        f = cfg.fit
        self.cfg = f
        self.sil = None if targets.silhouette is None or f.silhouette_weight == 0 else targets.silhouette.to(device)
        mask = targets.mask()
        self.images: dict[str, torch.Tensor] = {}
        if targets.shaded is not None:
            self.images["shaded"] = grey_to_rgb(targets.shaded).to(device)
        if targets.normals is not None:
            hit = mask if mask is not None else targets.normals.abs().sum(-1) > 0
            self.images["normals"] = normal_image(targets.normals, hit).to(device)
        self.vgg = vgg if f.perceptual_weight > 0 and self.images else None
        self.feats: dict[str, dict[str, torch.Tensor]] = {}
        self.weights: dict[str, dict[str, float]] = {}
        if self.vgg is not None:
            with torch.no_grad():
                for kind, img in self.images.items():
                    self.feats[kind] = {k: v for k, v in self.vgg(img).items() if k in f.perceptual_layers}
                    self.weights[kind] = _energy_weights(self.feats[kind], f.perceptual_layers)

    def __call__(self, r: SDFRenders, views: slice) -> dict[str, torch.Tensor]:
        f = self.cfg
        terms: dict[str, torch.Tensor] = {}
        if self.sil is not None:
            p, t = r.silhouette_soft, self.sil[views]
            if f.silhouette_loss == "bce":
                loss = F.binary_cross_entropy(p.clamp(1e-6, 1 - 1e-6), t)
            else:
                loss = (p - t).pow(2).mean()
            terms["silhouette"] = f.silhouette_weight * loss
        pred = {"shaded": lambda: grey_to_rgb(r.shaded), "normals": lambda: soft_normal_image(r)}
        for kind, target in self.images.items():
            x, y = pred[kind](), target[views]
            if f.ssim_weight > 0:
                terms[f"ssim_{kind}"] = f.ssim_weight * (1.0 - ssim(x, y)).mean()
            if self.vgg is not None:
                feats = {k: v[views] for k, v in self.feats[kind].items()}
                terms[f"perceptual_{kind}"] = f.perceptual_weight * content_loss(
                    self.vgg(x), feats, layers=f.perceptual_layers, weights=self.weights[kind]).mean()
        return terms


def _check_views(targets: ViewTargets, cams: list[Camera]) -> None:
    v, h, w = targets.shape
    if (v, h, w) != (len(cams), cams[0].height, cams[0].width):
        raise ValueError(f"targets are {v} views of {h}x{w} but there are {len(cams)} cameras of "
                         f"{cams[0].height}x{cams[0].width}")


def _start_code(decoder: SDFDecoder, codes: torch.Tensor | None, init: str) -> torch.Tensor:
    device = _device_of(decoder)
    if init == "mean" and codes is not None and codes.numel():
        if codes.ndim != 2 or codes.shape[1] != decoder.latent_size:
            raise ValueError(f"codes must have shape (S, {decoder.latent_size}), got {tuple(codes.shape)}")
        return codes.detach().float().mean(0).to(device)
    if init == "mean":
        log.info("no trained codes given: starting from the zero code")
    return torch.zeros(decoder.latent_size, device=device)


def fit_code_to_views(decoder: SDFDecoder, targets: ViewTargets, cameras: Camera | Sequence[Camera], *,
                      cfg: ViewsConfig, codes: torch.Tensor | None = None,
                      vgg: VGGFeatures | None = None) -> ViewsFitResult:
    """A code (L,) whose renders from ``cameras`` match ``targets``; the decoder stays frozen.

    ``cfg.render`` sets the renderer (``size``/``views`` are not used: the cameras are
    given), ``cfg.fit`` the losses and Adam. ``codes`` (S, L): the trained codes, whose
    mean is the start (``fit.init = "mean"``; zeros when not given). ``vgg``: a feature
    network with the ``fit.perceptual_layers`` taps (built from ``fit.arch``/``weights``
    when needed and not given). Restart ``r > 0`` starts from the start code plus
    N(0, ``init_std``^2) noise; the restart with the lowest final loss wins.
    """
    if decoder.latent_size == 0:
        raise ValueError("the decoder has latent_size 0 (single-shape mode): there is no code to fit")
    cams = as_camera_list(cameras)
    _check_views(targets, cams)
    f, rc = cfg.fit, cfg.render
    device = _device_of(decoder)
    if vgg is None and f.perceptual_weight > 0 and (targets.shaded is not None or targets.normals is not None):
        vgg = load_vgg(f.arch, weights=f.weights, taps=f.perceptual_layers).to(device)
    objective = _ViewObjective(targets, cfg, vgg, device)
    start = _start_code(decoder, codes, f.init)
    gen = torch.Generator().manual_seed(f.seed)
    groups = _groups(len(cams), rc.group)
    best: ViewsFitResult | None = None
    restart_losses = []
    with _Frozen(decoder):
        for r in range(f.restarts):
            noise = torch.randn(decoder.latent_size, generator=gen).to(device) * f.init_std if r else 0.0
            code = (start + noise).clone().requires_grad_(True)
            opt = torch.optim.Adam([code], lr=f.lr)
            history: list[dict] = []
            bar = progress(range(f.steps), desc=f"fit-views {r + 1}/{f.restarts}", unit="step")
            for step in bar:
                opt.zero_grad(set_to_none=True)
                sums: dict[str, float] = {}
                for g in groups:
                    fn = decoder_field(decoder, code)
                    out = _shading(fn, render_views(fn, cams[g], rc, device=device), cams[g], rc)
                    terms = objective(out, g)
                    share = (g.stop - g.start) / len(cams)
                    total = sum(terms.values())
                    if isinstance(total, torch.Tensor) and total.requires_grad:
                        (share * total).backward()
                    for k, v in terms.items():
                        sums[k] = sums.get(k, 0.0) + share * float(v.detach())
                reg = f.code_reg * code.pow(2).sum()
                reg.backward()
                opt.step()
                sums["code"] = float(reg.detach())
                history.append({"step": step + 1, "total": sum(sums.values()), **sums})
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{history[-1]['total']:.4g}")
            final_code = code.detach().clone()
            renders, final = _final(decoder, final_code, cams, rc, objective, f.code_reg, device)
            restart_losses.append(final["total"])
            log.info("fit-views restart %d/%d: final loss %.5f", r + 1, f.restarts, final["total"])
            if best is None or final["total"] < best.loss:
                best = ViewsFitResult(final_code, final["total"], history, renders, final=final)
    assert best is not None
    best.restart_losses = restart_losses
    return best


@torch.no_grad()
def _final(decoder, code, cams, rc, objective, code_reg, device) -> tuple[SDFRenders, dict]:
    fn = decoder_field(decoder, code)
    out = _shading(fn, render_views(fn, cams, rc, device=device), cams, rc)
    terms = {k: float(v) for k, v in objective(out, slice(0, len(cams))).items()}
    terms["code"] = float(code_reg * code.pow(2).sum())
    terms["total"] = sum(terms.values())
    return out, terms


# ----------------------------------------------------------------------------- stylise a shape
@dataclass
class StylizeResult:
    """The stylised model (decoder: the caller's, or an optimised copy), before/after renders, history."""

    decoder: SDFDecoder
    code: torch.Tensor | None  #: (L,), or None for a single-shape decoder
    history: list[dict]  #: per step: total, style, preserve (measured before the step)
    before: SDFRenders
    after: SDFRenders
    points: torch.Tensor  #: (N, 3) fixed points of the preservation term
    final: dict = field(default_factory=dict)  #: style and preserve terms after the last step


def style_grams(style_image, vgg: VGGFeatures, layers: Sequence[str], *, size: int,
                device: torch.device) -> dict[str, torch.Tensor]:
    """Gram matrices {tap: (1, C, C)} of the luminance of a style image: numpy (H, W[, 3]) or tensor (1, 3, H, W)."""
    from shapes3d.render.images import to_image_tensor

    if isinstance(style_image, torch.Tensor):
        x = style_image.detach().float()
        if x.ndim != 4 or x.shape[:2] != (1, 3):
            raise ValueError(f"a style image tensor must have shape (1, 3, H, W), got {tuple(x.shape)}")
    else:
        x = to_image_tensor(np.asarray(style_image), size)
    luma = (x * torch.tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True).expand(-1, 3, -1, -1)
    with torch.no_grad():
        feats = vgg(luma.to(device))
    return {k: gram_matrix(feats[k]) for k in layers}


@torch.no_grad()
def preservation_points(sdf_fn, n: int, *, band: float, seed: int, device: torch.device,
                        candidates: int | None = None) -> torch.Tensor:
    """(n, 3) points in [-1, 1]^3 where ``|sdf_fn| < band`` (near the surface), topped up with uniform ones."""
    gen = torch.Generator().manual_seed(seed)
    m = candidates or max(16 * n, 65536)
    cand = (torch.rand(m, 3, generator=gen) * 2.0 - 1.0).to(device)
    vals = torch.cat([sdf_fn(cand[s:s + 16384]).reshape(-1) for s in range(0, m, 16384)])
    near = vals.abs() < band
    pts = torch.cat([cand[near], cand[~near]])[:n]
    log.debug("preservation points: %d of %d near the surface", min(int(near.sum()), n), n)
    return pts


def stylize_shape(decoder: SDFDecoder, code: torch.Tensor | None, style_image, cameras: Camera | Sequence[Camera], *,
                  cfg: ViewsConfig, optimise: str | None = None, vgg: VGGFeatures | None = None) -> StylizeResult:
    """Impose ``style_image``'s Gram statistics on the shaded renders of ``decoder``'s shape ``code`` (L,).

    ``optimise``: ``"code"`` (a new code; the decoder frozen) or ``"decoder"`` (the weights
    of a deep copy; the caller's decoder is never modified); default ``cfg.style.optimise``.
    The loss is ``style_weight * style + preserve_weight * mean |f_new(P) - f_orig(P)|``
    over ``preserve_points`` fixed points P near the original surface. ``style_image``:
    numpy (H, W[, 3]) (resized to ``style.style_size``) or a (1, 3, H, W) tensor in [0, 1].
    """
    s, rc = cfg.style, cfg.render
    optimise = optimise or s.optimise
    if optimise not in ("code", "decoder"):
        raise ValueError(f"optimise must be 'code' or 'decoder', got {optimise!r}")
    if decoder.latent_size and (code is None or code.shape != (decoder.latent_size,)):
        raise ValueError(f"code must have shape ({decoder.latent_size},), got "
                         f"{None if code is None else tuple(code.shape)}")
    if optimise == "code" and decoder.latent_size == 0:
        raise ValueError("the decoder has latent_size 0 (single-shape mode): optimise the decoder instead")
    cams = as_camera_list(cameras)
    device = _device_of(decoder)
    vgg = vgg or load_vgg(s.arch, weights=s.weights, taps=s.style_layers, pool=s.pool).to(device)
    grams = style_grams(style_image, vgg, s.style_layers, size=s.style_size, device=device)
    weights = _energy_weights(grams, s.style_layers)
    code0 = None if code is None or decoder.latent_size == 0 else code.detach().to(device).float()

    with _Frozen(decoder):
        field0 = decoder_field(decoder, code0)
        points = preservation_points(field0, s.preserve_points, band=s.preserve_band, seed=s.seed, device=device)
        with torch.no_grad():
            f_orig = field0(points)
            before = _shading(field0, render_views(field0, cams, rc, device=device), cams, rc)
    if optimise == "decoder":
        model = copy.deepcopy(decoder).eval()
        model.requires_grad_(True)
        z = code0
        params = list(model.parameters())
        lr = s.lr_decoder
    else:
        model = decoder
        z = code0.clone().requires_grad_(True)
        params, lr = [z], s.lr_code
    opt = torch.optim.Adam(params, lr=lr)
    groups = _groups(len(cams), rc.group)

    def preserve_term(fn) -> torch.Tensor:
        return s.preserve_weight * (fn(points) - f_orig).abs().mean()

    history: list[dict] = []
    with _Frozen(decoder) if optimise == "code" else contextlib.nullcontext():
        bar = progress(range(s.steps), desc=f"style shape ({optimise})", unit="step")
        for step in bar:
            opt.zero_grad(set_to_none=True)
            fn = decoder_field(model, z)
            style_sum = 0.0
            for g in groups:
                out = _shading(fn, render_views(fn, cams[g], rc, device=device), cams[g], rc)
                term = s.style_weight * style_loss(vgg(grey_to_rgb(out.shaded)), grams, weights=weights).mean()
                share = (g.stop - g.start) / len(cams)
                if term.requires_grad:
                    (share * term).backward()
                style_sum += share * float(term.detach())
            keep = preserve_term(fn)
            keep.backward()
            opt.step()
            history.append({"step": step + 1, "total": style_sum + float(keep.detach()), "style": style_sum,
                            "preserve": float(keep.detach())})
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{history[-1]['total']:.4g}")
        model.requires_grad_(False)
        fn = decoder_field(model, None if z is None else z.detach())
        with torch.no_grad():
            after = _shading(fn, render_views(fn, cams, rc, device=device), cams, rc)
            final_style = s.style_weight * style_loss(vgg(grey_to_rgb(after.shaded)), grams, weights=weights).mean()
            final = {"style": float(final_style), "preserve": float(preserve_term(fn)),
                     "mean_abs_sdf_change": float((fn(points) - f_orig).abs().mean())}
    log.info("style shape (%s): style %.4g -> %.4g, mean |SDF change| on %d points %.4g", optimise,
             history[0]["style"], final["style"], len(points), final["mean_abs_sdf_change"])
    return StylizeResult(model, None if z is None else z.detach().clone(), history, before, after, points, final)
