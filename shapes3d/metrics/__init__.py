"""Shape metrics: named Chamfer variants, F-score, normal consistency, IoU, Hausdorff, EMD."""

from shapes3d.metrics.shape import (
    DEFAULT_THRESHOLDS,
    chamfer,
    chamfer_deepsdf,
    chamfer_l2_mean,
    emd_approx,
    fscore,
    hausdorff,
    mesh_metrics,
    nearest_distances,
    normal_consistency,
    sample_surface,
    volumetric_iou,
)

__all__ = [
    "DEFAULT_THRESHOLDS",
    "chamfer",
    "chamfer_deepsdf",
    "chamfer_l2_mean",
    "emd_approx",
    "fscore",
    "hausdorff",
    "mesh_metrics",
    "nearest_distances",
    "normal_consistency",
    "sample_surface",
    "volumetric_iou",
]
