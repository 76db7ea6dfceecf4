"""Networks: tensors in, tensors out (no files, configs or device choices).

A lazy face: ``import shapes3d.models`` does not import torch; the first name read does.
"""

from shapes3d.utils.lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "VoxNet": "shapes3d.models.voxnet",
    "MVCNN": "shapes3d.models.mvcnn",
    "SDFDecoder": "shapes3d.models.deepsdf",
    "LatentCodes": "shapes3d.models.deepsdf",
    "FrozenSDFField": "shapes3d.models.deepsdf",
    "VGGFeatures": "shapes3d.models.vgg",
})
