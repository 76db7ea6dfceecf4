"""Jobs on the shared VGG features: texture synthesis and style transfer (Gram or MRF style), view-consistent
style on multi-view renders, feature inversion, DeepDream, and gradient-ascent visualisation of VGG units and
ImageNet classes.

Jobs: :func:`texture`, :func:`transfer`, :func:`views`, :func:`invert`, :func:`dream`, :func:`dream_views`,
:func:`classviz_vgg`. A lazy face: names resolve on first use.
"""

from shapes3d.utils.lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "texture": "shapes3d.style.jobs",
    "transfer": "shapes3d.style.jobs",
    "StyleConfig": "shapes3d.style.config",
    "synthesize_texture": "shapes3d.style.synthesis",
    "style_transfer": "shapes3d.style.synthesis",
    "views": "shapes3d.style.view_consistency",
    "StyleViewsConfig": "shapes3d.style.views_config",
    "view_pairs": "shapes3d.style.view_warp",
    "warp": "shapes3d.style.view_warp",
    "consistency_loss": "shapes3d.style.view_warp",
    "warped_difference": "shapes3d.style.view_warp",
    "invert": "shapes3d.style.inversion",
    "tv_beta": "shapes3d.style.inversion",
    "dream": "shapes3d.style.dream",
    "dream_views": "shapes3d.style.dream",
    "classviz_vgg": "shapes3d.style.classviz",
    "load_vgg_classifier": "shapes3d.style.classviz",
    "InversionConfig": "shapes3d.style.vis_config",
    "DreamConfig": "shapes3d.style.vis_config",
    "ClassVizConfig": "shapes3d.style.vis_config",
})
