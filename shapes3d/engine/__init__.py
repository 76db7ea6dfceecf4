"""The one training loop (resume, signals, checkpoint cadence, RNG), checkpoint IO, distributed, plots.

A lazy face: ``import shapes3d.engine`` does not import torch; the first name read does.
"""

from shapes3d.utils.lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    # the loop: a pipeline's Task, run by fit
    "Task": "shapes3d.engine.loop",
    "LoopResult": "shapes3d.engine.loop",
    "fit": "shapes3d.engine.loop",
    # checkpoints (atomic, checksummed, weights_only)
    "save_checkpoint": "shapes3d.engine.checkpoint",
    "load_checkpoint": "shapes3d.engine.checkpoint",
    "require_keys": "shapes3d.engine.checkpoint",
    # randomness
    "seed_all": "shapes3d.engine.rng",
    "rng_state": "shapes3d.engine.rng",
    "set_rng_state": "shapes3d.engine.rng",
    # ranks and stop requests
    "Dist": "shapes3d.engine.distributed",
    "is_main_process": "shapes3d.engine.distributed",
    "main_process_first": "shapes3d.engine.distributed",
    "wrap_ddp": "shapes3d.engine.distributed",
    "StopFlag": "shapes3d.engine.distributed",
    "interrupted_exit_code": "shapes3d.engine.distributed",
    # what every job shares: data arguments and cache folders
    "load_manifest": "shapes3d.engine.jobs",
    "default_cache_dir": "shapes3d.engine.jobs",
    "expand_shape_paths": "shapes3d.engine.jobs",
    "unique_names": "shapes3d.engine.jobs",
    "check_run_folder": "shapes3d.engine.run_folder",
    # plots and logs
    "plot_curves": "shapes3d.engine.plots",
    "plot_confusion": "shapes3d.engine.plots",
    "plot_filters": "shapes3d.engine.plots",
    "curves_figure": "shapes3d.engine.plots",
    "filters_figure": "shapes3d.engine.plots",
    "confusion_figure": "shapes3d.engine.plots",
    "log_ticks": "shapes3d.engine.plots",
    "plot_image_strip": "shapes3d.engine.plots",
    "write_step_log": "shapes3d.engine.plots",
    # optional TensorBoard events beside log.csv (train.tensorboard)
    "TensorBoardLog": "shapes3d.engine.tensorboard",
})
