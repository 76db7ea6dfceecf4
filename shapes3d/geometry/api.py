"""Keyword shortcuts for the package faces (``s3.sample_sdf(mesh, n_samples=20_000)``).

The kernels take one config object so that a cache key, a checkpoint and a TOML file hold the
same numbers; interactive use wants single keywords. These wrappers build the config and call
the kernel, nothing else.
"""

from __future__ import annotations

import dataclasses

import trimesh

from shapes3d.geometry.sampling import SDFSampleConfig, SDFSamples
from shapes3d.geometry.sampling import sample_sdf as _sample_sdf

_RECIPE = SDFSampleConfig()


def sample_sdf(mesh: trimesh.Trimesh, *, config: SDFSampleConfig | None = None, seed: int = 0,
               **options) -> SDFSamples:
    """DeepSDF samples of ``mesh`` (SDF negative inside): ``config``, or its fields as keywords.

    ``options`` are :class:`~shapes3d.geometry.sampling.SDFSampleConfig` fields (``n_samples``,
    ``n_uniform``, ``variances``, ``margin``, ``bound``, ``sign_method``) replacing those of
    ``config`` (default: the DeepSDF recipe). Given ``n_samples`` without ``n_uniform``, the
    recipe's uniform share (30 000 of 500 000) is kept, rounded so that the near-surface count
    divides by the number of variances. Returns ``pos`` (P, 4) and ``neg`` (Q, 4) rows
    ``[x, y, z, sdf]`` in the normalised frame, ``P + Q == n_samples``.
    """
    base = _RECIPE if config is None else config
    if not isinstance(base, SDFSampleConfig):
        raise ValueError(f"config must be an SDFSampleConfig, got {type(base).__name__}")
    fields = {f.name for f in dataclasses.fields(SDFSampleConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"sample_sdf: unknown option {unknown[0]!r}; valid options: {', '.join(sorted(fields))}")
    if "n_samples" in options and "n_uniform" not in options:
        n, k = options["n_samples"], max(len(options.get("variances", base.variances)), 1)
        if isinstance(n, int) and n > 0:
            uniform = round(n * base.n_uniform / base.n_samples)
            options["n_uniform"] = uniform + (n - uniform) % k  # near-surface count divisible by k
    cfg = dataclasses.replace(base, **options) if options else base
    return _sample_sdf(mesh, config=cfg, seed=seed)


__all__ = ["sample_sdf"]
