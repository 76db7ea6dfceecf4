"""Loss functions: pure functions over batches (image losses over (B*V, 3, H, W); SDF losses over (N,)).

Gram and MRF style, content, TV, SSIM, PSNR, LPIPS; the DeepSDF objective.

A lazy face: names resolve on first use. ``sdf_objective`` is the function; its module is reached
with ``from shapes3d.losses.sdf_objective import ...``.
"""

from shapes3d.utils.lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    # image losses and measures
    "content_loss": "shapes3d.losses.image",
    "gram_matrix": "shapes3d.losses.image",
    "l1": "shapes3d.losses.image",
    "l2": "shapes3d.losses.image",
    "mse": "shapes3d.losses.image",
    "psnr": "shapes3d.losses.image",
    "rmse": "shapes3d.losses.image",
    "ssim": "shapes3d.losses.image",
    "style_loss": "shapes3d.losses.image",
    "total_variation": "shapes3d.losses.image",
    # MRF (patch nearest-neighbour) style
    "mrf_loss": "shapes3d.losses.mrf",
    "mrf_style_loss": "shapes3d.losses.mrf",
    "style_patches": "shapes3d.losses.mrf",
    "extract_patches": "shapes3d.losses.mrf",
    "nearest_patches": "shapes3d.losses.mrf",
    # one style term, Gram or MRF, as a config chooses
    "StyleTerm": "shapes3d.losses.style_term",
    "build_style_term": "shapes3d.losses.style_term",
    "style_term_for": "shapes3d.losses.style_term",
    "style_layers_for": "shapes3d.losses.style_term",
    # LPIPS (VGG16 features + learned linear layers)
    "LPIPSVGG": "shapes3d.losses.lpips",
    "lpips_from_features": "shapes3d.losses.lpips",
    # DeepSDF objective
    "sdf_objective": "shapes3d.losses.sdf_objective",
    "clamped_l1": "shapes3d.losses.sdf_objective",
    "latent_regulariser": "shapes3d.losses.sdf_objective",
})
