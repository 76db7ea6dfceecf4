"""Data sets of both pipelines: discovery, the built-in synthetic set, cached preprocessing, datasets.

A lazy face: names resolve on first use.
"""

from shapes3d.utils.lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    # finding shapes
    "discover": "shapes3d.data.discovery",
    "load_csv": "shapes3d.data.discovery",
    "Manifest": "shapes3d.data.discovery",
    "ManifestEntry": "shapes3d.data.discovery",
    # the built-in data set
    "write_dataset": "shapes3d.data.synth",
    "FAMILIES": "shapes3d.data.synth",
    "SynthConfig": "shapes3d.data.configs",
    # cached, sharded, parallel preprocessing
    "VoxelCacheConfig": "shapes3d.data.configs",
    "run_preprocess": "shapes3d.data.preprocess",
    "PreprocessReport": "shapes3d.data.preprocess",
    "merge_caches": "shapes3d.data.cache",
    "voxel_task": "shapes3d.data.tasks",
    "sdf_task": "shapes3d.data.tasks",
    # datasets
    "build_voxel_set": "shapes3d.data.voxel_dataset",
    "fetch_dataset": "shapes3d.data.fetch",
    "FetchResult": "shapes3d.data.fetch",
    "VoxelSet": "shapes3d.data.voxel_dataset",
    "VoxelRotations": "shapes3d.data.voxel_dataset",
    "stratified_split": "shapes3d.data.voxel_dataset",
    "SDFDataset": "shapes3d.data.sdf_dataset",
    "SDFChunks": "shapes3d.data.sdf_dataset",
    "ShapeSamples": "shapes3d.data.sdf_dataset",
    "build_sdf_dataset": "shapes3d.data.sdf_dataset",
})
