"""Multi-view renders of a DeepSDF decoder for 2D losses: cameras, target images, and the rendering both view jobs share.

The jobs themselves:

* :func:`shapes3d.deepsdf.view_fitting.fit_code_to_views` - a shape from images alone: a latent
  code (decoder frozen) whose renders match target silhouettes, shaded images and/or normal maps
  under a silhouette loss (BCE or L2 on the soft silhouette), 1 - SSIM and a VGG perceptual
  (content) loss, plus the code regulariser.
* :func:`shapes3d.deepsdf.stylization.stylize_shape` - the Gram statistics (Gatys et al.) of a
  style image imposed on the shaded renders of a shape, by optimising its code or a copy of the
  decoder, while an L1 term keeps the SDF on fixed points near the original surface where it was.

Both render with :func:`shapes3d.render.sdf_render.render_sdf` in groups of ``render.group``
views and backpropagate each group before the next is rendered: the autograd graph of
a render spans every pixel, so one graph over all views would hold all their
activations at once. Renders are grey (Lambert, headlight), so the style image's
luminance is what the renders can match. Nothing here writes files (see :mod:`shapes3d.deepsdf.view_jobs`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from shapes3d.deepsdf.views_config import ViewRenderConfig
from shapes3d.models.deepsdf import SDFDecoder
from shapes3d.render.cameras import Camera, cameras_on_sphere
from shapes3d.render.mesh import MeshScene, render_mesh
from shapes3d.render.sdf_render import SDFRenders, render_sdf, shade_by_differences

#: ITU-R BT.601 luma weights: RGB targets and style images become grey, like the renders.
LUMA = (0.299, 0.587, 0.114)


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
                t = t @ torch.tensor(LUMA)
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


def loss_images(sdf_fn, renders: SDFRenders, cameras: Sequence[Camera], cfg: ViewRenderConfig) -> SDFRenders:
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


def view_groups(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` of ``n`` views (rendered and backpropagated together)."""
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def energy_weights(features: dict[str, torch.Tensor], layers: Sequence[str]) -> dict[str, float]:
    """Scale-free layer weights (as in shapes3d.style.synthesis): each layer divided by its target energy."""
    return {k: 1.0 / max(float(features[k].pow(2).mean()), 1e-12) / len(layers) for k in layers}


@dataclass
class FrozenDecoder:
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


def device_of(decoder: SDFDecoder) -> torch.device:
    """The device of the decoder's parameters."""
    return next(decoder.parameters()).device
