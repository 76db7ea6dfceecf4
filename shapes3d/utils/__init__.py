"""Small helpers every layer may use: progress bars, atomic writes, hashing, data root, lazy faces.

A lazy face itself: names resolve on first use.
"""

from shapes3d.utils.lazy import lazy_face

__getattr__, __dir__, __all__ = lazy_face(__name__, {
    "atomic_write": "shapes3d.utils.io",
    "atomic_write_text": "shapes3d.utils.io",
    "atomic_write_bytes": "shapes3d.utils.io",
    "atomic_write_csv": "shapes3d.utils.io",
    "sha256_file": "shapes3d.utils.io",
    "safe_child": "shapes3d.utils.io",
    "data_root": "shapes3d.utils.io",
    "pick_device": "shapes3d.utils.device",
    "lazy_face": "shapes3d.utils.lazy",
    "env_rank": "shapes3d.utils.ranks",
    "is_main_process": "shapes3d.utils.ranks",
})
