"""Shape metrics: named Chamfer variants, F-score, normal consistency, IoU, Hausdorff, EMD, mesh accuracy and
completion.

A lazy face: names resolve on first use.
"""

from shapes3d.utils.lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {name: "shapes3d.metrics.shape" for name in (
    "DEFAULT_THRESHOLDS",
    "chamfer",
    "chamfer_deepsdf",
    "chamfer_l2_mean",
    "cloud_metrics",
    "emd_approx",
    "fscore",
    "hausdorff",
    "mesh_accuracy",
    "mesh_completion",
    "mesh_metrics",
    "nearest_distances",
    "normal_consistency",
    "sample_surface",
    "volumetric_iou",
)})
