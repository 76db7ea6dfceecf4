"""Cameras, mesh renders, the differentiable SDF renderer and contact sheets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh
from conftest import real_subset
from PIL import Image

from shapes3d.render.cameras import Camera, cameras_on_sphere
from shapes3d.render.mesh import MeshScene, render_mesh
from shapes3d.render.sdf_render import render_sdf
from shapes3d.render.sheet import contact_sheet, depth_to_image

CENTRE = np.array([0.1, -0.05, 0.02])
RADIUS = 0.6


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """The renders here are many small tensor ops; on a loaded 2-core machine two OpenMP
    threads made them ~20x slower (spin-waiting), one thread is fast and deterministic."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def analytic_sphere(cam: Camera, centre=CENTRE, radius=RADIUS):
    """Reference ray-sphere intersection: (hit (H*W,), ray length t, z-depth, unit normal)."""
    o, d = cam.rays()
    oc = o - centre
    b = np.einsum("ij,ij->i", oc, d)
    disc = b * b - (np.einsum("ij,ij->i", oc, oc) - radius**2)
    hit = disc > 0
    t = np.where(hit, -b - np.sqrt(np.where(hit, disc, 0.0)), np.inf)
    z = t * (d @ cam.forward)
    with np.errstate(invalid="ignore"):
        n = (o + t[:, None] * d - centre) / radius
    return hit, t, z, n


def shifted_icosphere(subdivisions=5):
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=RADIUS)
    m.apply_translation(CENTRE)
    return m


# ----------------------------------------------------------------------------- cameras
@pytest.mark.parametrize("up", ["z", "y", "x"])
def test_cameras_on_sphere_distance_elevation_azimuth(up):
    target = np.array([0.3, -0.2, 0.5])
    elev, azim = [-30.0, 0.0, 45.0], [0.0, 90.0, 200.0]
    cams = cameras_on_sphere(elevations_deg=elev, azimuths_deg=azim, distance=2.5, look_at=target, up=up,
                             width=33, height=31)
    assert len(cams) == 9
    axis = {"x": 0, "y": 1, "z": 2}[up]
    h1, h2 = {"z": (0, 1), "y": (2, 0), "x": (1, 2)}[up]
    for i, cam in enumerate(cams):
        e, a = elev[i // 3], azim[i % 3]
        rel = np.asarray(cam.position) - target
        assert np.linalg.norm(rel) == pytest.approx(2.5)
        assert math.degrees(math.asin(rel[axis] / 2.5)) == pytest.approx(e)
        if abs(e) < 89:
            assert math.degrees(math.atan2(rel[h2], rel[h1])) % 360 == pytest.approx(a % 360)
        # The centre pixel's ray passes through the target, and the target projects there.
        o, d = cam.rays()
        centre_ray = d[15 * 33 + 16]
        np.testing.assert_allclose(centre_ray, (target - cam.position) / 2.5, atol=1e-12)
        np.testing.assert_allclose(cam.project(target[None])[0], [16.0, 15.0], atol=1e-9)
        # The world up axis points to the top of the image (negative camera y).
        up_vec = np.eye(3)[axis]
        assert (cam.rotation @ up_vec)[1] < 0


def test_camera_frame_is_opencv_and_extrinsics_map_position_to_origin():
    cam = Camera(position=(3.0, 1.0, 2.0), look_at=(0.0, 0.5, 0.0), up=(0, 0, 1), width=40, height=30, fov_deg=50)
    r = cam.rotation
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    ext = cam.extrinsics
    p = ext @ np.array([*cam.position, 1.0])
    np.testing.assert_allclose(p[:3], 0.0, atol=1e-12)
    q = ext @ np.array([*cam.look_at, 1.0])
    dist = np.linalg.norm(np.subtract(cam.look_at, cam.position))
    np.testing.assert_allclose(q[:3], [0.0, 0.0, dist], atol=1e-12)
    k = cam.intrinsics
    # fov is vertical: the top edge of row 0 sits at half the fov above the axis.
    assert math.degrees(2 * math.atan((k[1, 2] + 0.5) / k[1, 1])) == pytest.approx(50.0)
    assert k[0, 0] == k[1, 1] and (k[0, 2], k[1, 2]) == (19.5, 14.5)


def test_elevation_90_is_a_valid_view_continuous_with_89_9():
    top = cameras_on_sphere(elevations_deg=[90.0], azimuths_deg=[30.0], distance=2.0)[0]
    near_top = cameras_on_sphere(elevations_deg=[89.9], azimuths_deg=[30.0], distance=2.0)[0]
    np.testing.assert_allclose(top.rotation, near_top.rotation, atol=1e-2)


def test_projection_inverts_the_pixel_rays(rng):
    cam = Camera(position=(0.5, -2.0, 1.0), look_at=(0, 0, 0.2), up=(0, 0, 1), width=24, height=18, fx=30.0,
                 fy=25.0, cx=11.0, cy=9.5)
    o, d = cam.rays()
    pts = o + rng.uniform(0.5, 4.0, size=(len(d), 1)) * d
    uv = cam.project(pts)
    rows, cols = np.divmod(np.arange(len(d)), 24)
    np.testing.assert_allclose(uv, np.stack([cols, rows], axis=1), atol=1e-9)
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0)
    behind = cam.project(o[:1] - d[:1])
    assert np.isnan(behind).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"position": (0, 0, 0)}, "equals look_at"),
        ({"position": (0, 0, 2)}, "is parallel to the view direction"),
        ({"fov_deg": 180.0}, "fov_deg must be in (0, 180)"),
        ({"fx": 10.0}, "give both fx and fy or neither"),
        ({"width": 0}, "camera width must be a positive integer, got 0"),
        ({"position": (1, float("nan"), 0)}, "camera position must be 3 finite numbers"),
    ],
)
def test_camera_validation_messages(kwargs, message):
    args = {"position": (2.0, 0.0, 0.0), "up": (0, 0, 1)} | kwargs
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Camera(**args)


def test_cameras_on_sphere_rejects_bad_up_and_distance():
    with pytest.raises(ValueError, match="up must be one of 'x', 'y', 'z', got 'w'"):
        cameras_on_sphere(elevations_deg=[0], azimuths_deg=[0], distance=2, up="w")
    with pytest.raises(ValueError, match="distance must be finite and > 0, got -1"):
        cameras_on_sphere(elevations_deg=[0], azimuths_deg=[0], distance=-1)


# ----------------------------------------------------------------------------- mesh renders
@pytest.fixture(scope="module")
def sphere_views():
    cams = cameras_on_sphere(elevations_deg=[-20, 35], azimuths_deg=[10, 130, 250], distance=2.2, look_at=CENTRE,
                             width=64, height=48, fov_deg=45)
    return cams, render_mesh(shifted_icosphere(), cams)


def test_mesh_depth_of_icosphere_matches_analytic_sphere(sphere_views):
    cams, r = sphere_views
    mesh = shifted_icosphere()
    # Largest gap between the sphere and the inscribed mesh (at face centres).
    sagitta = RADIUS - np.abs(np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles_center - CENTRE)).min()
    for v, cam in enumerate(cams):
        hit, _, z, n = analytic_sphere(cam)
        both = hit & r.silhouette[v].ravel()
        _, d = cam.rays()
        cos_inc = np.abs(np.einsum("ij,ij->i", n[both], d[both]))
        steep = cos_inc > 0.3
        err = r.depth[v].ravel()[both] - z[both]
        # The mesh lies inside the sphere: never nearer, and no farther than the sagitta along the ray.
        assert err.min() > -1e-5
        bound = sagitta / cos_inc * (d[both] @ cam.forward) + 1e-5
        assert np.all(err[steep] <= bound[steep])
        assert np.isinf(r.depth[v].ravel()[~r.silhouette[v].ravel()]).all()


def test_mesh_silhouette_area_matches_analytic_disc():
    cam = Camera(position=tuple(CENTRE + [0.0, -2.5, 0.0]), look_at=tuple(CENTRE), up=(0, 0, 1), width=101,
                 height=101, fov_deg=40)
    r = render_mesh(shifted_icosphere(), cam)
    rho = cam.intrinsics[0, 0] * math.tan(math.asin(RADIUS / 2.5))  # disc radius in pixels
    area = math.pi * rho**2
    assert r.silhouette.sum() == pytest.approx(area, rel=0.01)
    assert r.silhouette.shape == (1, 101, 101) and r.silhouette.dtype == bool


@pytest.mark.parametrize("smooth", [False, True])
def test_mesh_normals_of_sphere_point_out_of_the_centre(sphere_views, smooth):
    cams, flat = sphere_views
    r = render_mesh(shifted_icosphere(), cams, smooth_normals=True) if smooth else flat
    for v, cam in enumerate(cams):
        o, d = cam.rays()
        sil = r.silhouette[v].ravel()
        t = r.depth[v].ravel()[sil] / (d[sil] @ cam.forward)
        p = o[sil] + t[:, None] * d[sil]
        expected = (p - CENTRE) / np.linalg.norm(p - CENTRE, axis=1, keepdims=True)
        dots = np.einsum("ij,ij->i", r.normals[v].reshape(-1, 3)[sil], expected)
        assert dots.min() > (0.99999 if smooth else 0.999)
        assert np.all(r.normals[v].reshape(-1, 3)[~sil] == 0)


def test_a_prebuilt_scene_renders_the_same_as_the_mesh(sphere_views):
    cams, ref = sphere_views
    scene = MeshScene.build(shifted_icosphere())
    for _ in range(2):  # reusable
        r = render_mesh(scene, cams)
        np.testing.assert_array_equal(r.depth, ref.depth)
        np.testing.assert_array_equal(r.shaded, ref.shaded)


def test_inconsistent_and_inverted_winding_render_the_same(sphere_views, rng):
    cams, ref = sphere_views
    mesh = shifted_icosphere()
    faces = mesh.faces.copy()
    flip = rng.random(len(faces)) < 0.5
    faces[flip] = faces[flip][:, ::-1]
    for f in (faces, mesh.faces[:, ::-1]):
        r = render_mesh(trimesh.Trimesh(mesh.vertices, f, process=False), cams)
        np.testing.assert_array_equal(r.silhouette, ref.silhouette)
        np.testing.assert_allclose(r.normals, ref.normals, atol=1e-6)
        np.testing.assert_allclose(r.shaded, ref.shaded, atol=1e-6)


def test_lambert_shading_headlight_and_back_light():
    cam = Camera(position=tuple(CENTRE + [2.5, 0.0, 0.0]), look_at=tuple(CENTRE), up=(0, 0, 1), width=21, height=21)
    mesh = shifted_icosphere()
    head = render_mesh(mesh, cam, ambient=0.25, background=0.5)
    assert head.shaded[0, 10, 10] == pytest.approx(1.0, abs=1e-3)  # normal faces the camera
    assert np.all(head.shaded[~head.silhouette] == 0.5)
    assert head.shaded.min() >= 0.25 and head.shaded.max() <= 1.0
    back = render_mesh(mesh, cam, light_dir=cam.forward, ambient=0.25)
    # Lit from behind: every visible face turns away from the light, leaving the ambient term.
    np.testing.assert_allclose(back.shaded[back.silhouette], 0.25, atol=1e-6)


def test_render_mesh_validation_messages():
    mesh = shifted_icosphere(1)
    a = Camera(position=(2, 0, 0), width=8, height=8)
    b = Camera(position=(2, 0, 0), width=8, height=9)
    with pytest.raises(ValueError, match=r"share one image size to be stacked, got \(H, W\) sizes \[\(8, 8\), \(9, 8\)\]"):
        render_mesh(mesh, [a, b])
    with pytest.raises(ValueError, match="non-empty sequence of Camera, got an empty sequence"):
        render_mesh(mesh, [])
    with pytest.raises(ValueError, match="ambient must be in \\[0, 1\\], got 1.5"):
        render_mesh(mesh, a, ambient=1.5)
    with pytest.raises(TypeError, match="mesh must be a trimesh.Trimesh or MeshScene, got ndarray"):
        render_mesh(np.zeros((3, 3)), a)


def naive_first_hit(vertices: np.ndarray, faces: np.ndarray, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Moller-Trumbore against every face for every ray; nearest t > 0 or inf. (rays, faces) memory."""
    v0, v1, v2 = (vertices[faces[:, i]] for i in range(3))
    e1, e2 = v1 - v0, v2 - v0
    p = np.cross(d[:, None, :], e2[None])
    det = np.einsum("fk,rfk->rf", e1, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / det
        s = o[:, None, :] - v0[None]
        u = np.einsum("rfk,rfk->rf", s, p) * inv
        q = np.cross(s, e1[None])
        w = np.einsum("rk,rfk->rf", d, q) * inv
        t = np.einsum("fk,rfk->rf", e2, q) * inv
    ok = (np.abs(det) > 1e-12) & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 0)
    return np.where(ok, t, np.inf).min(axis=1)


@pytest.mark.data
def test_mesh_depth_matches_naive_ray_triangle_on_a_real_scan(real_data):
    from shapes3d.geometry.io import load_mesh
    from shapes3d.geometry.normalize import normalize

    mesh, _ = normalize(load_mesh(real_subset(real_data, "classic_scans") / "libigl" / "fandisk.off"))
    cams = cameras_on_sphere(elevations_deg=[25], azimuths_deg=[40, 220], distance=2.5, width=12, height=10)
    r = render_mesh(mesh, cams)
    assert r.silhouette.mean() > 0.1
    for v, cam in enumerate(cams):
        o, d = cam.rays()
        t_ref = naive_first_hit(np.asarray(mesh.vertices), np.asarray(mesh.faces), o, d)
        sil = r.silhouette[v].ravel()
        np.testing.assert_array_equal(sil, np.isfinite(t_ref))
        np.testing.assert_allclose(r.depth[v].ravel()[sil], t_ref[sil] * (d[sil] @ cam.forward), atol=1e-4)


# ----------------------------------------------------------------------------- SDF renderer
def sphere_fn(centre: torch.Tensor, radius: torch.Tensor):
    return lambda x: (x - centre).norm(dim=1) - radius


def test_sdf_render_of_sphere_matches_analytic_depth_and_normals():
    cams = cameras_on_sphere(elevations_deg=[15], azimuths_deg=[0, 100], distance=2.2, look_at=CENTRE, width=24,
                             height=20, fov_deg=45)
    c, r = torch.tensor(CENTRE), torch.tensor(RADIUS, dtype=torch.float64)
    out = render_sdf(sphere_fn(c, r), cams, near=0.1, far=5.0, eps=1e-9, max_steps=200, dtype=torch.float64)
    assert out.depth.shape == (2, 20, 24) and out.normals.shape == (2, 20, 24, 3)
    for v, cam in enumerate(cams):
        hit, _, z, n = analytic_sphere(cam)
        got = out.hit[v].ravel().numpy()
        # Only grazing rays (those needing > max_steps) may be lost.
        assert np.all(got <= hit) and got.sum() >= hit.sum() - 6
        np.testing.assert_allclose(out.depth[v].ravel().detach().numpy()[got], z[got], atol=1e-7)
        np.testing.assert_allclose(out.normals[v].reshape(-1, 3).detach().numpy()[got], n[got], atol=1e-6)
        assert torch.isinf(out.depth[v].ravel()[~torch.from_numpy(got)]).all()
        # Soft silhouette: sigmoid(-50 * min_t f), and min_t f = (distance of the ray line to the centre) - r.
        o, d = cam.rays()
        oc = o - CENTRE
        line_dist = np.linalg.norm(oc - np.einsum("ij,ij->i", oc, d)[:, None] * d, axis=1)
        expected = 1.0 / (1.0 + np.exp(50.0 * (line_dist - RADIUS)))
        np.testing.assert_allclose(out.silhouette_soft[v].ravel().detach().numpy(), expected, atol=0.03)


def test_sdf_render_matches_mesh_render_silhouette_and_shading(sphere_views):
    cams, mesh_r = sphere_views
    out = render_sdf(sphere_fn(torch.tensor(CENTRE, dtype=torch.float32), torch.tensor(RADIUS)), cams, near=0.1,
                     far=5.0, eps=1e-4)
    agree = (out.hit.numpy() == mesh_r.silhouette).mean()
    assert agree > 0.995
    both = out.hit.numpy() & mesh_r.silhouette
    assert np.abs(out.shaded.detach().numpy()[both] - mesh_r.shaded[both]).max() < 0.02


def _gradcheck_inputs(fn_of_params, cams, **kw):
    """Render outputs as one vector with the hit mask frozen at the unperturbed parameters."""
    def render(*params):
        out = render_sdf(fn_of_params(*params), cams, near=0.1, far=5.0, eps=1e-11, max_steps=400,
                         silhouette_samples=16, soft_silhouette_sharpness=10.0, dtype=torch.float64, **kw)
        depth = torch.where(out.hit, out.depth, torch.zeros_like(out.depth))
        return torch.cat([depth.ravel(), out.shaded.ravel(), out.silhouette_soft.ravel(), out.normals.ravel()])
    return render


def test_sdf_render_gradients_match_finite_differences_for_centre_and_radius():
    cams = cameras_on_sphere(elevations_deg=[20], azimuths_deg=[30], distance=2.0, width=7, height=6, fov_deg=40)
    centre = torch.tensor([0.05, -0.1, 0.08], dtype=torch.float64, requires_grad=True)
    radius = torch.tensor(0.55, dtype=torch.float64, requires_grad=True)
    fn = _gradcheck_inputs(sphere_fn, cams, light_dir=(0.3, -0.5, 1.0))
    assert torch.autograd.gradcheck(fn, (centre, radius), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


class TinyDecoder(torch.nn.Module):
    """A sphere plus a small MLP of (x, code): stands in for a DeepSDF decoder."""

    def __init__(self, latent: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(3 + latent, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        z = code.expand(x.shape[0], -1)
        return x.norm(dim=1) - 0.5 + 0.05 * torch.tanh(self.net(torch.cat([x, z], dim=1)))[:, 0]


def test_sdf_render_gradient_to_the_latent_code_matches_finite_differences():
    dec = TinyDecoder().double()
    code = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    cams = cameras_on_sphere(elevations_deg=[10], azimuths_deg=[70], distance=2.0, width=6, height=6, fov_deg=40)
    fn = _gradcheck_inputs(lambda z: (lambda x: dec(x, z)), cams)
    assert torch.autograd.gradcheck(fn, (code,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_sdf_render_backpropagates_to_decoder_weights_and_code():
    dec = TinyDecoder()
    code = torch.zeros(1, 4, requires_grad=True)
    cams = cameras_on_sphere(elevations_deg=[0], azimuths_deg=[0, 180], distance=2.0, width=10, height=10)
    out = render_sdf(lambda x: dec(x, code), cams, near=0.1, far=4.0)
    loss = out.shaded.mean() + out.silhouette_soft.mean() + out.depth[out.hit].mean()
    loss.backward()
    assert code.grad is not None and code.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dec.parameters())


def test_sdf_render_without_grad_still_gives_normals():
    cam = Camera(position=(2.0, 0.0, 0.0), width=9, height=9)
    radius = torch.tensor(0.5, requires_grad=True)
    with torch.no_grad():
        out = render_sdf(sphere_fn(torch.zeros(3), radius), cam, near=0.1, far=4.0)
    assert not out.shaded.requires_grad and not out.depth.requires_grad
    np.testing.assert_allclose(out.normals[0, 4, 4].numpy(), [1.0, 0.0, 0.0], atol=1e-4)
    assert out.depth[0, 4, 4].item() == pytest.approx(1.5, abs=1e-3)


def test_sdf_render_with_no_hits_still_has_a_silhouette_gradient():
    cam = Camera(position=(2.0, 0.0, 0.0), width=6, height=6, fov_deg=20)
    centre = torch.tensor([0.0, 0.0, 0.9], requires_grad=True)  # above the narrow view cone
    out = render_sdf(sphere_fn(centre, torch.tensor(0.1)), cam, near=0.1, far=4.0)
    assert not out.hit.any() and torch.isinf(out.depth).all()
    assert torch.all(out.shaded == 1.0) and torch.all(out.normals == 0)
    out.silhouette_soft.sum().backward()
    assert centre.grad[2] < 0  # moving the sphere down, into view, raises the silhouette


def test_sdf_render_validation_messages():
    cam = Camera(position=(2.0, 0.0, 0.0), width=4, height=4)
    with pytest.raises(ValueError, match=r"sdf_fn must map points \(N, 3\) to values \(N,\) or \(N, 1\); for N=\d+ "
                                         r"it returned shape \(\d+, 3\)"):
        render_sdf(lambda x: x, cam, near=0.1, far=4.0)
    with pytest.raises(ValueError, match="need 0 <= near < far < inf, got near=2.0, far=1.0"):
        render_sdf(lambda x: x.norm(dim=1) - 0.5, cam, near=2.0, far=1.0)
    with pytest.raises(ValueError, match="eps must be finite and > 0, got 0"):
        render_sdf(lambda x: x.norm(dim=1) - 0.5, cam, near=0.1, far=4.0, eps=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sdf_render_stays_on_cuda():
    dec = TinyDecoder().cuda()
    code = torch.zeros(1, 4, device="cuda", requires_grad=True)
    cam = Camera(position=(2.0, 0.0, 0.0), width=8, height=8)
    out = render_sdf(lambda x: dec(x, code), cam, near=0.1, far=4.0, device="cuda")
    assert out.shaded.is_cuda and out.hit.is_cuda
    out.shaded.sum().backward()
    assert code.grad.is_cuda


# ----------------------------------------------------------------------------- contact sheets
def test_contact_sheet_has_the_expected_size(tmp_path, sphere_views):
    _, r = sphere_views
    path = contact_sheet(r.shaded, tmp_path / "sheet.png", cols=3)
    with Image.open(path) as im:
        assert im.size == (3 * (64 + 2) + 2, 2 * (48 + 2) + 2) and im.mode == "RGB"
        px = np.asarray(im)
    # Tile 0 starts at (2, 2); its pixels are the render, quantised to 8 bits.
    np.testing.assert_allclose(px[2:50, 2:66, 0] / 255.0, r.shaded[0], atol=0.5 / 255 + 1e-6)
    labelled = contact_sheet(depth_to_image(r.depth), tmp_path / "d.png", cols=6, labels=list("abcdef"), title="t")
    with Image.open(labelled) as im:
        assert im.size[0] == 6 * 66 + 2 and im.size[1] > 48 + 4
    assert not list(tmp_path.glob(".*.tmp"))


def test_contact_sheet_rejects_inf_depth_and_bad_labels(tmp_path, sphere_views):
    _, r = sphere_views
    with pytest.raises(ValueError, match="non-finite values; map depth with depth_to_image first"):
        contact_sheet(r.depth, tmp_path / "x.png")
    with pytest.raises(ValueError, match="one caption per image: 6 images, 2 labels"):
        contact_sheet(r.shaded, tmp_path / "x.png", labels=["a", "b"])
    assert not (tmp_path / "x.png").exists()


def test_mesh_sheet_skips_bad_meshes_and_takes_other_rows(tmp_path):
    from shapes3d.errors import Shapes3DError
    from shapes3d.render.images import mesh_sheet

    good = tmp_path / "ball.ply"
    shifted_icosphere(subdivisions=2).export(good)
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0 0\nf 1 2 3\n")
    extra = tmp_path / "model.pt"
    calls = []

    def other_rows(path):
        calls.append(path)
        return [("code shaded", np.full((2, 16, 16), 0.5))]

    r = mesh_sheet([good, bad, extra], tmp_path / "sheet.png", views=2, size=16, modes=("shaded", "silhouette"),
                   other_rows=other_rows)
    assert (r.rows, r.views, calls) == (3, 2, [extra]) and len(r.skipped) == 1 and str(bad) in r.skipped[0]
    assert Image.open(r.path).size[0] >= 2 * 16
    with pytest.raises(Shapes3DError, match="nothing to render: every input was skipped\n  skipped: "):
        mesh_sheet([bad], tmp_path / "none.png", views=2, size=16)
