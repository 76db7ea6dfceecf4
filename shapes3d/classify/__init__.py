"""Shape classification (VoxNet on voxel grids, or a multi-view CNN on rendered views): config, job functions
that write their outputs, and the trained model.

Jobs (each writes its outputs into a folder and returns what it wrote): :func:`train`,
:func:`evaluate`, :func:`predict`, :func:`filters`, :func:`classviz_voxnet` (what the network thinks a class
looks like). A lazy face: names resolve on first use.
"""

from shapes3d.utils.lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    # jobs
    "train": "shapes3d.classify.jobs",
    "evaluate": "shapes3d.classify.jobs",
    "predict": "shapes3d.classify.prediction",
    "filters": "shapes3d.classify.jobs",
    "classviz_voxnet": "shapes3d.classify.visualize",
    # config
    "ClassifyConfig": "shapes3d.classify.config",
    "VoxNetConfig": "shapes3d.classify.config",
    "MVCNNConfig": "shapes3d.classify.config",
    "AugmentConfig": "shapes3d.classify.config",
    "ClassifyTrainConfig": "shapes3d.classify.config",
    # the trained model
    "build_model": "shapes3d.classify.model",
    "load_classifier": "shapes3d.classify.evaluation",
    "predict_proba": "shapes3d.classify.evaluation",
    "view_evidence": "shapes3d.classify.mvcnn_views",
})
