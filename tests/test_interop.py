"""Conventions users bring from other tools: LPIPS's input range, torch Datasets, TensorBoard events, GLB with
normals, NeRF/Blender transforms.json, and the PCD cases a generic reader gets wrong."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import struct
import sys
import types

import numpy as np
import pytest
import torch
import trimesh
from torch.utils.data import DataLoader

from shapes3d.classify.config import ClassifyConfig
from shapes3d.data.sdf_dataset import SDFDataset, ShapeSamples
from shapes3d.data.voxel_dataset import GridStack, VoxelSet
from shapes3d.engine import loop, tensorboard
from shapes3d.engine.distributed import Dist
from shapes3d.errors import ConfigError, CorruptFileError, InputFileError
from shapes3d.geometry.export import export_mesh
from shapes3d.geometry.pcd import read_pcd
from shapes3d.losses.lpips import LPIPS_CHANNELS, LPIPS_TAPS, LPIPSVGG
from shapes3d.models.vgg import VGGFeatures
from shapes3d.render.cameras import Camera, cameras_on_sphere
from shapes3d.render.nerf_transforms import read_transforms, write_transforms


# ------------------------------------------------------------------ LPIPS input range
@pytest.fixture(scope="module")
def lpips_model() -> LPIPSVGG:
    torch.manual_seed(4)
    return LPIPSVGG(VGGFeatures("vgg16", taps=LPIPS_TAPS), [torch.rand(c) for c in LPIPS_CHANNELS])


def test_lpips_default_range_is_minus_one_to_one_and_normalize_takes_unit_images(lpips_model):
    x, y = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    unit = lpips_model(x, y, normalize=True)
    signed = lpips_model(2 * x - 1, 2 * y - 1)  # the reference lpips package's default range
    torch.testing.assert_close(unit, signed, rtol=1e-5, atol=1e-7)
    assert (unit > 0).all()


def test_lpips_warns_once_when_default_inputs_look_like_unit_images(caplog):
    torch.manual_seed(4)
    m = LPIPSVGG(VGGFeatures("vgg16", taps=LPIPS_TAPS), [torch.rand(c) for c in LPIPS_CHANNELS])
    x = torch.rand(1, 3, 16, 16)
    with caplog.at_level(logging.WARNING, logger="shapes3d.losses.lpips"):
        m(x, x.flip(-1))
        m(x, x.flip(-1))
    warned = [r.getMessage() for r in caplog.records if "normalize=True" in r.getMessage()]
    assert len(warned) == 1 and "look like [0, 1] images" in warned[0]
    caplog.clear()
    quiet = LPIPSVGG(m.vgg, m.lin.split(list(LPIPS_CHANNELS)))
    with caplog.at_level(logging.WARNING, logger="shapes3d.losses.lpips"):
        quiet(2 * x - 1, 2 * x.flip(-1) - 1)
        quiet(x, x, normalize=True)
    assert not caplog.records


# ------------------------------------------------------------------ torch Dataset views
def _voxel_set(stack: bool) -> VoxelSet:
    rng = np.random.default_rng(0)
    grids = (rng.random((5, 3, 6, 6, 6)) > 0.5).astype(np.uint8)
    g = GridStack(list(grids)) if stack else grids
    return VoxelSet(g, np.array([0, 1, 1, 0, 2]), [f"s{i}.off" for i in range(5)], ["a", "b", "c"])


@pytest.mark.parametrize("stack", [False, True], ids=["array", "gridstack"])
def test_voxel_set_is_a_torch_dataset_for_a_dataloader(stack):
    vs = _voxel_set(stack)
    assert isinstance(vs, torch.utils.data.Dataset)
    grids, labels = zip(*DataLoader(vs, batch_size=2, num_workers=0), strict=True)
    assert [tuple(g.shape) for g in grids] == [(2, 1, 6, 6, 6), (2, 1, 6, 6, 6), (1, 1, 6, 6, 6)]
    assert grids[0].dtype == torch.float32 and labels[0].dtype == torch.int64
    np.testing.assert_array_equal(torch.cat(grids)[:, 0].numpy(), np.asarray(vs.grids)[:, 0])
    assert torch.cat(labels).tolist() == [0, 1, 1, 0, 2]
    rot = vs.all_rotations()
    assert len(rot) == 15
    g, label = rot[3 * 4 + 2]  # shape 4, rotation 2
    np.testing.assert_array_equal(g[0].numpy(), np.asarray(vs.grids)[4, 2])
    assert int(label) == 2
    with pytest.raises(IndexError, match="index 15 out of range for 15 items"):
        rot[15]


def test_voxel_set_dataloader_with_a_worker_process():
    vs = _voxel_set(True)
    batches = list(DataLoader(vs, batch_size=3, num_workers=1))
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 1, 1, 0, 2]


def _sdf_set() -> SDFDataset:
    rng = np.random.default_rng(1)
    shapes = []
    for i in range(4):
        pos = np.c_[rng.normal(size=(20 + i, 3)), rng.uniform(0.01, 1, 20 + i)]
        neg = np.c_[rng.normal(size=(9, 3)), -rng.uniform(0, 1, 9)]
        shapes.append(ShapeSamples(pos, neg))
    return SDFDataset(shapes)


def test_sdf_chunks_are_the_trainers_batches():
    from shapes3d.deepsdf.trainer import _mix, sample_batch

    data = _sdf_set()
    view = data.chunks(8, seed=3, epoch=2, seed_for=_mix)  # the trainer's per-(seed, epoch, shape) streams
    assert isinstance(view, torch.utils.data.Dataset) and len(view) == 4
    xyz, sdf, idx = next(iter(DataLoader(view, batch_size=3, shuffle=False, num_workers=0)))
    assert xyz.shape == (3, 8, 3) and sdf.shape == (3, 8) and idx.tolist() == [0, 1, 2]
    ref_xyz, ref_sdf = sample_batch(data, idx, 8, seed=3, epoch=2)
    torch.testing.assert_close(xyz.reshape(-1, 3), ref_xyz, rtol=0, atol=0)
    torch.testing.assert_close(sdf.reshape(-1), ref_sdf, rtol=0, atol=0)
    assert ((sdf > 0).sum(1) == 4).all()  # balanced: half of each chunk from each side
    again = data.chunks(8, seed=3, epoch=2, seed_for=_mix)[1]
    torch.testing.assert_close(again[0], xyz[1], rtol=0, atol=0)  # an item does not depend on its batch
    view.set_epoch(3)
    assert not torch.equal(view[1][0], xyz[1])


def test_sdf_chunks_with_a_worker_process_and_default_seeds():
    view = _sdf_set().chunks(6)
    first = torch.cat([b[0] for b in DataLoader(view, batch_size=2, num_workers=1)])
    second = torch.cat([b[0] for b in DataLoader(view, batch_size=4, num_workers=0)])
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    with pytest.raises(ValueError, match="samples_per_shape must be >= 1, got 0"):
        _sdf_set().chunks(0)


# ------------------------------------------------------------------ TensorBoard
class _TinyTask(loop.Task):
    def __init__(self) -> None:
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.opt = torch.optim.SGD([self.w], lr=0.1)

    def epoch_order(self, epoch, gen):
        return torch.arange(4)

    def step(self, batch, epoch, gen):
        loss = (self.w - 1).pow(2).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.item()}, len(batch)

    def end_epoch(self, epoch, totals, elapsed):
        return {"epoch": epoch, "train_loss": totals["loss"] / 4, "note": "text is not a scalar"}

    def payload(self):
        return {"w": self.w.detach()}


def _fit(out, *, on: bool):
    cfg = ClassifyConfig()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, tensorboard=on))
    return loop.fit(_TinyTask(), out, dist=Dist(device=torch.device("cpu")), gen=torch.Generator().manual_seed(0),
                    epochs=3, batch_size=2, config=cfg)


def test_tensorboard_missing_is_a_one_line_error_naming_the_install(tmp_path, monkeypatch):
    monkeypatch.setattr(tensorboard, "tensorboard_available", lambda: False)
    with pytest.raises(ConfigError) as info:
        _fit(tmp_path / "run", on=True)
    msg = str(info.value)
    assert "\n" not in msg and "pip install tensorboard" in msg and "train.tensorboard = false" in msg
    assert not (tmp_path / "run" / "log.csv").exists()  # refused before training
    res = _fit(tmp_path / "off", on=False)  # switched off: no tensorboard needed, the CSV as always
    assert len(res.history) == 3 and not (tmp_path / "off" / "tensorboard").exists()


def test_tensorboard_scalars_are_the_csv_columns_per_epoch(tmp_path, monkeypatch):
    written = []

    class FakeWriter:  # stands in for torch.utils.tensorboard.SummaryWriter, installed or not
        def __init__(self, log_dir):
            self.log_dir = log_dir

        def add_scalar(self, tag, value, global_step):
            written.append((tag, value, global_step))

        def flush(self):
            pass

        def close(self):
            written.append("closed")

    monkeypatch.setattr(tensorboard, "tensorboard_available", lambda: True)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    res = _fit(tmp_path / "run", on=True)
    rows = [(t, v, s) for t, v, s in written[:-1]]
    assert rows == [("train_loss", r["train_loss"], r["epoch"]) for r in res.history] and written[-1] == "closed"
    assert (tmp_path / "run" / "log.csv").exists()  # the CSV stays


def test_tensorboard_event_files_when_installed(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = _fit(tmp_path / "run", on=True)
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    got = [(e.step, e.value) for e in acc.Scalars("train_loss")]
    assert [s for s, _ in got] == [1, 2, 3]
    np.testing.assert_allclose([v for _, v in got], [r["train_loss"] for r in res.history], rtol=1e-6)


# ------------------------------------------------------------------ meshes: GLB and normals
@pytest.fixture()
def small_mesh() -> trimesh.Trimesh:
    m = trimesh.creation.icosphere(subdivisions=2)
    m.vertices = m.vertices * 1e-3 + [0.5, -2.0, 1e-7]  # small and offset coordinates: OBJ must stay exact
    return m


def test_glb_round_trip_with_normals(tmp_path, small_mesh):
    path = export_mesh(small_mesh, tmp_path / "m.glb")
    scene = trimesh.load(path, process=False)
    (back,) = scene.geometry.values()
    np.testing.assert_array_equal(back.faces, small_mesh.faces)
    np.testing.assert_allclose(back.vertices, small_mesh.vertices, rtol=1e-6, atol=0)  # float32 positions
    raw = path.read_bytes()
    doc = json.loads(raw[20:20 + struct.unpack("<I", raw[12:16])[0]])
    assert set(doc["meshes"][0]["primitives"][0]["attributes"]) == {"POSITION", "NORMAL"}
    np.testing.assert_allclose(back.vertex_normals, small_mesh.vertex_normals, atol=1e-6)
    from shapes3d.geometry.io import load_mesh

    assert load_mesh(path).faces.shape == small_mesh.faces.shape


def test_ply_and_obj_carry_vertex_normals_and_obj_stays_exact(tmp_path, small_mesh):
    ply = export_mesh(small_mesh, tmp_path / "m.ply")
    with open(ply, "rb") as f:
        kw = trimesh.exchange.ply.load_ply(f)
    np.testing.assert_allclose(kw["vertex_normals"], small_mesh.vertex_normals, atol=1e-6)
    obj = export_mesh(small_mesh, tmp_path / "m.obj")
    lines = obj.read_text().splitlines()
    vn = np.array([[float(t) for t in ln.split()[1:]] for ln in lines if ln.startswith("vn ")])
    v = np.array([[float(t) for t in ln.split()[1:]] for ln in lines if ln.startswith("v ")])
    np.testing.assert_allclose(vn, small_mesh.vertex_normals, atol=1e-12)
    np.testing.assert_array_equal(v, small_mesh.vertices)  # exact, also the 1e-7 coordinates
    back = trimesh.load(obj, force="mesh", process=False)
    np.testing.assert_array_equal(back.faces, small_mesh.faces)
    assert "vn " not in export_mesh(small_mesh, tmp_path / "m.off").read_text()


# ------------------------------------------------------------------ transforms.json
def _pinhole_pixel(doc: dict, frame: dict, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A naive NeRF-convention projection: OpenGL camera (looks down -z, y up), focal from camera_angle_x,
    pixel i spanning [i, i + 1). Returns the continuous (u, v) and the pixel (column, row)."""
    w2c = np.linalg.inv(np.asarray(frame["transform_matrix"]))
    x, y, z = (w2c @ np.append(point, 1.0))[:3]
    w, h = doc["w"], doc["h"]
    f = 0.5 * w / math.tan(0.5 * doc["camera_angle_x"])
    uv = np.array([w / 2 + f * x / -z, h / 2 - f * y / -z])
    return uv, np.floor(uv)


def test_transforms_json_round_trip_and_projection_agree(tmp_path):
    cams = cameras_on_sphere(elevations_deg=[-90, 25, 90], azimuths_deg=[0, 130], distance=2.5, width=64,
                             height=48, up="y")
    odd = Camera(position=(1.0, 2.0, 3.0), look_at=(0.1, 0, 0), width=40, height=30, fov_deg=None, fx=50.0,
                 fy=55.0, cx=18.0, cy=16.0)
    path = write_transforms(tmp_path / "transforms.json", [*cams, odd])
    back, frames = read_transforms(tmp_path)  # the folder or the file
    assert len(back) == 7 and frames[0]["file_path"] == "view_00.png"
    for a, b in zip([*cams, odd], back, strict=True):
        np.testing.assert_allclose(b.extrinsics, a.extrinsics, atol=1e-12)
        np.testing.assert_allclose(b.intrinsics, a.intrinsics, atol=1e-12)
        assert (b.width, b.height) == (a.width, a.height)
    assert back[1].fov_deg == pytest.approx(40.0) and back[-1].fx == 50.0
    doc = json.loads(path.read_text())
    rng = np.random.default_rng(0)
    for cam, frame in zip(cams, doc["frames"][:len(cams)], strict=True):  # the centred ones
        c2w = np.asarray(frame["transform_matrix"])
        assert np.allclose(-c2w[:3, 2], cam.forward) and np.allclose(c2w[:3, 3], cam.position)  # looks down -z
        for p in rng.uniform(-0.5, 0.5, (20, 3)):
            uv, pixel = _pinhole_pixel(doc, frame, p)
            ours = cam.project(p[None])[0]
            np.testing.assert_allclose(ours + 0.5, uv, atol=1e-9)  # half a pixel: centre vs corner origin
            np.testing.assert_array_equal(np.floor(ours + 0.5), pixel)


def test_blender_style_transforms_take_the_size_from_the_image(tmp_path):
    from PIL import Image

    cam = cameras_on_sphere(elevations_deg=30, azimuths_deg=10, distance=3.0, width=32, height=32)[0]
    doc = write_transforms(tmp_path / "t.json", [cam], ["./train/r_0"]).read_text()
    blender = {k: v for k, v in json.loads(doc).items() if k in ("camera_angle_x", "frames")}
    (tmp_path / "train").mkdir()
    Image.new("RGBA", (32, 32)).save(tmp_path / "train" / "r_0.png")
    (tmp_path / "transforms.json").write_text(json.dumps(blender))
    (back,), _ = read_transforms(tmp_path / "transforms.json")
    np.testing.assert_allclose(back.extrinsics, cam.extrinsics, atol=1e-12)
    np.testing.assert_allclose(back.intrinsics, cam.intrinsics, atol=1e-12)
    blender["frames"][0]["transform_matrix"][0][0] = 2.0
    (tmp_path / "transforms.json").write_text(json.dumps(blender))
    with pytest.raises(InputFileError, match=r"transforms\.json: not a valid transforms\.json \(ValueError: frame 0: "
                                             r"transform_matrix's rotation is not a rotation"):
        read_transforms(tmp_path)


def test_view_targets_folder_also_holds_and_reads_transforms_json(tmp_path):
    from shapes3d.deepsdf.view_targets import read_view_targets, write_view_targets
    from shapes3d.deepsdf.views import ViewTargets

    cams = cameras_on_sphere(elevations_deg=20, azimuths_deg=[0, 90], distance=2.5, width=16, height=12)
    sil = torch.zeros(2, 12, 16)
    sil[:, 3:9, 4:12] = 1
    targets = ViewTargets(silhouette=sil, shaded=sil * 0.5)
    write_view_targets(tmp_path, targets, cams)
    frames = json.loads((tmp_path / "transforms.json").read_text())["frames"]
    assert [(f["file_path"], f["mask_path"]) for f in frames] == [("shaded_00.png", "silhouette_00.png"),
                                                                  ("shaded_01.png", "silhouette_01.png")]
    ours, ours_cams, _ = read_view_targets(tmp_path)
    (tmp_path / "cameras.json").unlink()
    nerf, nerf_cams, t = read_view_targets(tmp_path)
    assert t is None
    torch.testing.assert_close(nerf.silhouette, ours.silhouette)
    torch.testing.assert_close(nerf.shaded, ours.shaded)
    for a, b in zip(ours_cams, nerf_cams, strict=True):
        np.testing.assert_allclose(b.extrinsics, a.extrinsics, atol=1e-12)


# ------------------------------------------------------------------ PCD: what open3d's reader gets wrong
def _pcd(n: int, data: str, size: int = 4) -> bytes:
    return (f"VERSION 0.7\nFIELDS x y z\nSIZE {size} {size} {size}\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\n"
            f"POINTS {n}\nDATA {data}\n").encode()


def test_pcd_cases_open3d_reads_silently_wrong_are_exact_or_named(tmp_path):
    """open3d 0.20 reads float64 x/y/z as zeros, pads truncated ASCII with zeros and reads 'a' as 0; ours not."""
    pts = np.random.default_rng(0).random((50, 3))
    p = tmp_path / "f8.pcd"
    p.write_bytes(_pcd(50, "binary", size=8) + pts.astype("<f8").tobytes())
    np.testing.assert_array_equal(read_pcd(p), pts)
    p.write_bytes(_pcd(50, "ascii") + "\n".join(" ".join(f"{v:.9g}" for v in r) for r in pts[:30]).encode())
    with pytest.raises(CorruptFileError, match="truncated: 50 points declared, data for 30"):
        read_pcd(p)
    p.write_bytes(_pcd(2, "ascii") + b"a 1 2\n3 4 5\n")
    with pytest.raises(CorruptFileError, match="non-numeric value in ASCII data"):
        read_pcd(p)


@pytest.mark.parametrize("command", [["extract", "CK"], ["fit", "CK", "MESH"], ["interpolate", "CK", "0", "1"]])
def test_mesh_writing_sdf_commands_take_glb(tmp_path, capsys, command):
    from shapes3d.cli.main import main

    args = [str(tmp_path / "missing.pt") if a == "CK" else str(tmp_path / "m.off") if a == "MESH" else a
            for a in command]
    assert main(["sdf", *args, "--format", "glb"]) == 2  # parsed; then the missing checkpoint is named
    assert "missing.pt: file does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sdf", *args, "--format", "stl"])
    assert "invalid choice: 'stl' (choose from 'ply', 'obj', 'off', 'glb')" in capsys.readouterr().err


def test_tensorboard_missing_is_refused_before_any_data_work(tmp_path, monkeypatch):
    from shapes3d.engine.run_folder import check_run_folder

    monkeypatch.setattr(tensorboard, "tensorboard_available", lambda: False)
    cfg = ClassifyConfig()
    on = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, tensorboard=True))
    with pytest.raises(ConfigError, match=r"needs the tensorboard package, which is not installed: pip install"):
        check_run_folder(tmp_path / "run", resume=False, config=on)  # what the train jobs call first
    assert check_run_folder(tmp_path / "run", resume=False, config=cfg) is None
