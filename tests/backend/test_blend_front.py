"""blend_front: the dream's Î_i interpolates the front surface's points instead of taking the
z-buffer's nearest one (pointcloud.blend_front, dream.py's φ3→2)."""
import numpy as np

from zoomscape.cameras import from_wire, look_at, pixel_grid, pixels_to_world
from zoomscape.pointcloud import PointCloud, blend_front, footprint_radius, merge, project, unproject

W, H, F = 96, 72, 80.0


def camera(eye, target, name="cam"):
    return from_wire({"name": name, "matrix_world": look_at(eye, target).tolist(), "fx": F, "fy": F,
                      "cx": W / 2, "cy": H / 2, "width": W, "height": H})


def texture(xyz: np.ndarray) -> np.ndarray:
    """A smooth colour on the wall y = 0 (x, z in metres): [N, 3] float32 in [0, 1]."""
    x, z = xyz[:, 0], xyz[:, 2]
    return np.stack([0.5 + 0.4 * np.sin(2.1 * x + 0.3), 0.5 + 0.4 * np.cos(1.7 * z - 0.2),
                     0.5 + 0.3 * np.sin(1.3 * x + 1.1 * z)], axis=1).astype(np.float32)


def wall_view(cam):
    """cam's view of the wall y = 0: (image [H, W, 3], depth [H, W]) from the exact ray hits."""
    uv = pixel_grid(W, H)
    d1 = pixels_to_world(cam, uv, np.ones(len(uv)))          # the points at z-depth 1
    o = cam.center
    t = -o[1] / (d1[:, 1] - o[1])                            # z-depth where the ray meets y = 0
    hit = o + t[:, None] * (d1 - o)
    return texture(hit).reshape(H, W, 3), t.reshape(H, W)


def test_own_view_comes_back_unchanged():
    """From the camera that lifted them every tent is 0 at the neighbours' centres."""
    rng = np.random.default_rng(3)
    cam = camera((0.3, -5, 1.2), (0, 0, 1))
    image = rng.random((H, W, 3), dtype=np.float32)
    depth = rng.uniform(3.0, 6.0, (H, W))                   # every pixel at its own depth
    cloud = unproject(cam, image, depth)
    out = blend_front(cloud, cam, project(cloud, cam))
    np.testing.assert_allclose(out, image, atol=1e-5)


def test_resampling_from_another_camera_interpolates_the_texture():
    """A wall lifted from camera A, seen from B (moved and turned): the blended image is far
    closer to B's true view than the z-buffer's nearest point."""
    cam_a = camera((0.0, -5.0, 1.0), (0.0, 0.0, 1.0), "a")
    image, depth = wall_view(cam_a)
    cloud = unproject(cam_a, image, depth)
    for eye, target in [((0.37, -4.6, 1.13), (0.2, 0.0, 1.1)), ((-0.5, -5.4, 0.8), (0.1, 0.0, 0.9))]:
        cam_b = camera(eye, target, "b")
        proj = project(cloud, cam_b)
        truth, _ = wall_view(cam_b)
        inside = proj.mask.copy()
        inside[:3], inside[-3:], inside[:, :3], inside[:, -3:] = False, False, False, False
        assert inside.mean() > 0.5
        err_nearest = np.sqrt(np.mean((proj.image[inside] - truth[inside]) ** 2))
        out = blend_front(cloud, cam_b, proj)
        err_blend = np.sqrt(np.mean((out[inside] - truth[inside]) ** 2))
        assert err_blend < 0.5 * err_nearest, (err_blend, err_nearest)
        np.testing.assert_array_equal(out[~proj.mask], 0.0)  # nothing where nothing is


def test_only_the_front_surface_blends():
    """A red square 2 m in front of a blue wall: no blue reaches a pixel the square covers; its
    red reaches the wall only as an anti-aliased edge, on the wall's pixels next to it."""
    from scipy.ndimage import binary_dilation
    cam = camera((0, -6, 1), (0, 0, 1))
    uv = pixel_grid(W, H)
    box = np.zeros((H, W), bool)
    box[20:52, 30:66] = True
    near = PointCloud(pixels_to_world(cam, uv[box.ravel()], np.full(box.sum(), 2.0)),
                      np.tile(np.float32([1, 0, 0]), (box.sum(), 1)),
                      footprint_radius(cam, np.full(box.sum(), 2.0)).astype(np.float32))
    far = PointCloud(pixels_to_world(cam, uv, np.full(len(uv), 5.0)),
                     np.tile(np.float32([0, 0, 1]), (len(uv), 1)),
                     footprint_radius(cam, np.full(len(uv), 5.0)).astype(np.float32))
    c2w = cam.c2w.copy()
    c2w[:3, 3] += c2w[:3, :3] @ np.array([0.15, -0.1, 0.0])
    side = from_wire({**cam.to_wire(), "matrix_world": (c2w @ np.diag([1.0, -1.0, -1.0, 1.0])).tolist()})
    cloud = merge(far, near)
    for view in (cam, side):
        proj = project(cloud, view)
        out = blend_front(cloud, view, proj)
        red = proj.depth < 3.0                               # the square is the front surface
        assert red.sum() > 800
        np.testing.assert_allclose(out[red], np.broadcast_to([1, 0, 0], (red.sum(), 3)), atol=1e-6)
        edge = binary_dilation(red) & ~red
        wall = proj.mask & ~red & ~edge
        np.testing.assert_allclose(out[wall], np.broadcast_to([0, 0, 1], (wall.sum(), 3)), atol=1e-6)
        assert out[edge, 0].max() < 0.5                      # the wall stays mostly blue there
        if view is cam:                                      # from the lifting camera: exact
            np.testing.assert_allclose(out[edge], np.broadcast_to([0, 0, 1], (edge.sum(), 3)), atol=1e-5)


def test_batches_match_one_pass(monkeypatch):
    import zoomscape.pointcloud as pc_module
    rng = np.random.default_rng(11)
    cam = camera((0, -5, 0), (0, 0, 0))
    cloud = PointCloud(rng.uniform(-1.5, 1.5, (4000, 3)), rng.random((4000, 3), dtype=np.float32),
                       rng.uniform(0.0, 0.08, 4000).astype(np.float32))
    proj = project(cloud, cam)
    one = blend_front(cloud, cam, proj)
    monkeypatch.setattr(pc_module, "FRAGMENT_CHUNK", 700)
    many = blend_front(cloud, cam, proj)
    assert proj.mask.mean() > 0.3
    np.testing.assert_allclose(one, many, atol=1e-6)
    assert np.abs(one - proj.image)[proj.mask].max() > 0.05  # it does blend random clouds
