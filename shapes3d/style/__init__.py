"""Image style jobs with VGG Gram losses: texture synthesis and style transfer.

Jobs: :func:`texture`, :func:`transfer`. A lazy face: names resolve on first use.
"""

from shapes3d.utils.lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "texture": "shapes3d.style.jobs",
    "transfer": "shapes3d.style.jobs",
    "StyleConfig": "shapes3d.style.config",
    "synthesize_texture": "shapes3d.style.synthesis",
    "style_transfer": "shapes3d.style.synthesis",
})
