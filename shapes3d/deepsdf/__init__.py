"""DeepSDF auto-decoders: config, job functions that write their outputs, and the building blocks.

Jobs: :func:`train`, :func:`fit` (a new code from samples, a depth view or a crop), :func:`fit_views`
(a code from images), :func:`stylize`, :func:`interpolate`, :func:`extract`, :func:`evaluate`,
:func:`reconstruct` (the test protocol), :func:`import_official` and :func:`export_official` (the official
release's experiment folders).
A lazy face: names resolve on first use.
"""

from shapes3d.utils.lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    # jobs
    "train": "shapes3d.deepsdf.jobs",
    "fit": "shapes3d.deepsdf.jobs",
    "fit_views": "shapes3d.deepsdf.view_jobs",
    "stylize": "shapes3d.deepsdf.view_jobs",
    "interpolate": "shapes3d.deepsdf.jobs",
    "extract": "shapes3d.deepsdf.jobs",
    "evaluate": "shapes3d.deepsdf.jobs",
    "reconstruct": "shapes3d.deepsdf.protocol",
    "import_official": "shapes3d.deepsdf.official",
    "export_official": "shapes3d.deepsdf.official",
    # configs
    "DeepSDFConfig": "shapes3d.deepsdf.config",
    "ViewsConfig": "shapes3d.deepsdf.views_config",
    # building blocks
    "load_deepsdf": "shapes3d.deepsdf.trainer",
    "build_sdf_dataset": "shapes3d.data.sdf_dataset",
    "extract_shape": "shapes3d.deepsdf.reconstruction",
    "fit_code": "shapes3d.deepsdf.fitting",
    "interpolate_codes": "shapes3d.deepsdf.fitting",
    "save_code": "shapes3d.deepsdf.codes",
    "shape_code": "shapes3d.deepsdf.codes",
    "read_view_targets": "shapes3d.deepsdf.view_targets",
    "write_view_targets": "shapes3d.deepsdf.view_targets",
    "view_cameras": "shapes3d.deepsdf.views",
    "targets_from_mesh": "shapes3d.deepsdf.views",
    "ViewTargets": "shapes3d.deepsdf.views",
    "fit_code_to_views": "shapes3d.deepsdf.view_fitting",
    "stylize_shape": "shapes3d.deepsdf.stylization",
})
