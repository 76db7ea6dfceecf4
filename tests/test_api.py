"""The public API: ``import shapes3d as s3`` and its package faces resolve every name they list, lazily."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import types

import numpy as np
import pytest

import shapes3d as s3

FACES = ("geometry", "data", "models", "losses", "metrics", "render", "engine", "classify", "deepsdf", "style",
         "utils")
EVERYDAY = ("load_mesh", "load_points", "normalize", "voxelize", "signed_distance", "sample_sdf", "extract_mesh",
            "render_mesh")


def _names():
    yield from (("shapes3d", name) for name in s3.__all__)
    for face in FACES:
        module = importlib.import_module(f"shapes3d.{face}")
        yield from ((f"shapes3d.{face}", name) for name in module.__all__)


@pytest.mark.parametrize("package,name", list(_names()))
def test_every_listed_name_resolves(package, name):
    module = importlib.import_module(package)
    value = getattr(module, name)
    assert name in dir(module)
    target = module.__dict__.get("__lazy_exports__", {}).get(name, "")
    if not target.endswith(":") and name != "__version__":
        assert not isinstance(value, types.ModuleType), f"{package}.{name} is a module, not the exported object"


def test_everyday_calls_and_faces():
    assert set(EVERYDAY) <= set(s3.__all__)
    assert {f for f in FACES if f != "utils"} <= set(s3.__all__)
    assert s3.voxelize is s3.geometry.voxelize_solid
    assert s3.sample_sdf is s3.geometry.sample_sdf
    assert s3.models.VoxNet.__name__ == "VoxNet"
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = s3.geometry.nope


def test_exports_survive_importing_a_submodule_of_the_same_name():
    """``shapes3d.losses.sdf_objective`` stays the function after its module is imported (the import system
    would otherwise rebind the package attribute to the module)."""
    from shapes3d.losses.sdf_objective import sdf_objective

    importlib.import_module("shapes3d.losses.sdf_objective")
    assert s3.losses.sdf_objective is sdf_objective
    importlib.import_module("shapes3d.geometry.normalize")
    assert callable(s3.geometry.normalize) and not isinstance(s3.geometry.normalize, types.ModuleType)


_PROBE = """
import json, sys
import shapes3d as s3
for face in {faces!r}:
    getattr(s3, face) if face != "utils" else __import__("shapes3d.utils")
dir(s3); dir(s3.geometry)
print(json.dumps(sorted(m for m in ("torch", "open3d", "trimesh", "scipy", "skimage", "matplotlib")
                        if m in sys.modules)))
"""


def test_import_and_faces_are_light():
    r = subprocess.run([sys.executable, "-c", _PROBE.format(faces=FACES)], capture_output=True, text=True,
                       timeout=120, check=True)
    assert json.loads(r.stdout) == [], f"heavy modules imported by the faces: {r.stdout}"


def test_sample_sdf_keyword_shortcuts():
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=2)
    samples = s3.sample_sdf(mesh, n_samples=1000, seed=1)
    assert len(samples.pos) + len(samples.neg) == 1000
    assert samples.config.n_uniform == 60  # the recipe's 30 000 / 500 000 share
    assert (samples.neg[:, 3] <= 0).all() and (samples.pos[:, 3] > 0).all()
    inside = np.linalg.norm(samples.neg[:, :3], axis=1)
    assert inside.max() < 1 / 1.03 + 1e-3  # negative inside: in the normalised unit sphere
    odd = s3.sample_sdf(mesh, n_samples=1001, variances=[0.005, 0.0005], sign_method="parity")
    assert len(odd.all()) == 1001 and (1001 - odd.config.n_uniform) % 2 == 0
    base = s3.geometry.SDFSampleConfig(n_samples=2000, n_uniform=100)
    assert s3.sample_sdf(mesh, config=base, margin=0.1).config == s3.geometry.SDFSampleConfig(
        n_samples=2000, n_uniform=100, margin=0.1)
    with pytest.raises(ValueError, match="unknown option 'n_sample'"):
        s3.sample_sdf(mesh, n_sample=10)


def test_signed_distance_negative_inside():
    import trimesh

    mesh = trimesh.creation.box(extents=(2, 2, 2))
    sd = s3.signed_distance(mesh, np.array([[0.0, 0, 0], [2.0, 0, 0]]))
    np.testing.assert_allclose(sd.values, [-1.0, 1.0], atol=1e-9)
