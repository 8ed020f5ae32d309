"""Point clouds: unproject/project identities, the z-buffer, PLY I/O (ours and plyfile's), merging
and voxel downsampling."""
import os

import numpy as np
import pytest

from zoomscape.cameras import from_wire, look_at, pixel_grid, pixels_to_world, world_to_pixels
from zoomscape.pointcloud import (PLY_DTYPE, PointCloud, footprint_pixels, footprint_radius,
                                  footprint_ratio, merge, project, read_ply, unproject,
                                  voxel_downsample, write_ply)

RED, BLUE = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)


def camera(eye, target, width=96, height=72, f=80.0, name="cam"):
    return from_wire({"name": name, "matrix_world": look_at(eye, target).tolist(), "fx": f,
                      "fy": f, "cx": width / 2, "cy": height / 2, "width": width,
                      "height": height})


def random_cloud(rng, n):
    return PointCloud(rng.normal(size=(n, 3)), rng.random((n, 3), dtype=np.float32),
                      rng.uniform(0.001, 0.1, n).astype(np.float32))


# --- φ2→3 and φ3→2 ----------------------------------------------------------------------------

def test_unproject_then_project_is_identity():
    rng = np.random.default_rng(0)
    cam = from_wire({"name": "c", "matrix_world": look_at((2, -6, 1.5), (0, 0, 0.5)).tolist(),
                     "fx": 90.0, "fy": 104.0, "cx": 41.3, "cy": 37.9, "width": 80, "height": 70})
    image = rng.random((70, 80, 3), dtype=np.float32)
    depth = rng.uniform(2.0, 9.0, (70, 80))  # every pixel at an unrelated depth
    cloud = unproject(cam, image, depth)
    assert len(cloud) == 80 * 70
    assert cloud.xyz.dtype == np.float64 and cloud.rgb.dtype == np.float32
    uv, z = world_to_pixels(cam, cloud.xyz)
    np.testing.assert_allclose(uv, pixel_grid(80, 70), atol=1e-9)
    np.testing.assert_allclose(z, depth.ravel(), rtol=1e-12)

    proj = project(cloud, cam)
    assert proj.mask.all()                                 # full coverage
    np.testing.assert_array_equal(proj.image, image)       # the same colours, exactly
    np.testing.assert_allclose(proj.depth, depth, rtol=1e-6)
    np.testing.assert_array_equal(proj.index, np.arange(80 * 70).reshape(70, 80))


def test_unproject_keeps_masked_finite_positive_pixels_only():
    cam = camera((0, -5, 0), (0, 0, 0), 32, 24)
    depth = np.full((24, 32), 4.0)
    depth[0, 0], depth[0, 1], depth[0, 2] = np.nan, np.inf, 0.0
    depth[0, 3] = -1.0
    mask = np.ones((24, 32), bool)
    mask[5] = False
    image = np.zeros((24, 32, 3), np.float32)
    image[..., 1] = np.arange(32 * 24).reshape(24, 32) / 1000.0
    cloud = unproject(cam, image, depth, mask)
    assert len(cloud) == 32 * 24 - 32 - 4
    proj = project(cloud, cam)
    np.testing.assert_array_equal(proj.mask, mask & (depth > 0) & np.isfinite(depth))
    np.testing.assert_array_equal(proj.image[proj.mask], image[proj.mask])
    assert np.isinf(proj.depth[~proj.mask]).all() and (proj.index[~proj.mask] == -1).all()
    assert (proj.image[~proj.mask] == 0).all()


def test_unproject_radius_is_the_pixel_footprint():
    cam = camera((0, -5, 0), (0, 0, 0), 32, 24, f=100.0)
    cloud = unproject(cam, np.zeros((24, 32, 3)), np.full((24, 32), 5.0))
    # Neighbouring points are z/f apart; their splats (radius ≈ 0.71 · spacing) overlap.
    np.testing.assert_allclose(cloud.radius, 5.0 / 100.0 * np.sqrt(0.5), rtol=1e-6)
    spacing = np.linalg.norm(cloud.xyz[1] - cloud.xyz[0])
    assert spacing == pytest.approx(0.05)
    assert 0.5 * spacing < cloud.radius[0] < spacing


def test_unproject_rejects_images_of_the_wrong_size():
    cam = camera((0, -5, 0), (0, 0, 0), 32, 24)
    with pytest.raises(ValueError, match=r"depth.*\(24, 32\)"):
        unproject(cam, np.zeros((24, 32, 3)), np.ones((32, 24)))
    with pytest.raises(ValueError, match="image"):
        unproject(cam, np.zeros((24, 32)), np.ones((24, 32)))


def two_planes(cam, near_depth=2.0, far_depth=5.0, box=(20, 52, 30, 66)):
    """A far plane filling cam's view and a near square (rows i0:i1, cols j0:j1) in front."""
    H, W = cam.height, cam.width
    far = unproject(cam, np.broadcast_to(np.float32(BLUE), (H, W, 3)), np.full((H, W), far_depth))
    i0, i1, j0, j1 = box
    m = np.zeros((H, W), bool)
    m[i0:i1, j0:j1] = True
    near = unproject(cam, np.broadcast_to(np.float32(RED), (H, W, 3)),
                     np.full((H, W), near_depth), m)
    return near, far


def near_region(cam_a, cam_b, near_depth, box):
    """Pixels of cam_b whose rays hit cam_a's near square (analytically): [H, W] bool, eroded by
    one pixel so the test does not depend on how splats round at the silhouette."""
    uv = pixel_grid(cam_b.width, cam_b.height)
    # Intersect cam_b's pixel rays with the plane z_a = near_depth of cam_a.
    far_pts = pixels_to_world(cam_b, uv, np.ones(len(uv)))
    o_a = cam_a.w2c[:3, :3] @ cam_b.center + cam_a.w2c[:3, 3]
    d_a = (far_pts - cam_b.center) @ cam_a.w2c[:3, :3].T
    t = (near_depth - o_a[2]) / d_a[:, 2]
    hit = o_a + t[:, None] * d_a
    u = cam_a.K[0, 0] * hit[:, 0] / hit[:, 2] + cam_a.K[0, 2]
    v = cam_a.K[1, 1] * hit[:, 1] / hit[:, 2] + cam_a.K[1, 2]
    i0, i1, j0, j1 = box
    # In cam_a the square spans pixel centres j0+0.5 … j1-0.5; its edge splats reach ±0.71 px.
    inside = (t > 0) & (u > j0 + 1.5) & (u < j1 - 1.5) & (v > i0 + 1.5) & (v < i1 - 1.5)
    return inside.reshape(cam_b.height, cam_b.width)


@pytest.mark.parametrize("order", ["near_first", "far_first"])
def test_zbuffer_near_plane_hides_far_plane(order):
    cam = camera((0, -6, 1), (0, 0, 1))
    box = (20, 52, 30, 66)
    near, far = two_planes(cam, box=box)
    cloud = merge(near, far) if order == "near_first" else merge(far, near)
    is_near = np.zeros(len(cloud), bool)
    is_near[:len(near)] = order == "near_first"
    is_near[len(far):] |= order == "far_first"

    proj = project(cloud, cam)
    assert proj.mask.all()
    inside = np.zeros((cam.height, cam.width), bool)
    inside[box[0]:box[1], box[2]:box[3]] = True
    assert is_near[proj.index[inside]].all()
    assert not is_near[proj.index[~inside]].any()
    np.testing.assert_array_equal(proj.image[inside], np.broadcast_to(RED, (inside.sum(), 3)))
    np.testing.assert_allclose(proj.depth[inside], 2.0, rtol=1e-6)
    np.testing.assert_allclose(proj.depth[~inside], 5.0, rtol=1e-6)


@pytest.mark.parametrize("move", [(0.4, 0.0, 0.0), (-0.3, 0.2, 0.25), (0.0, 0.3, -0.2),
                                  (0.1, -0.1, 0.5)])  # the last magnifies the near plane 1.33×
def test_zbuffer_holds_from_a_translated_viewpoint(move):
    """From a new viewpoint the near square's splats leave no pinholes for the far plane."""
    cam_a = camera((0, -6, 1), (0, 0, 1))
    box = (20, 52, 30, 66)
    near, far = two_planes(cam_a, box=box)
    cloud = merge(far, near)
    is_near = np.arange(len(cloud)) >= len(far)
    # Translate cam_a in its own camera frame (x right, y down, z forward), keep its rotation.
    c2w = cam_a.c2w.copy()
    c2w[:3, 3] += c2w[:3, :3] @ np.asarray(move)
    M = c2w @ np.diag([1.0, -1.0, -1.0, 1.0])
    cam_b = from_wire({**cam_a.to_wire(), "matrix_world": M.tolist(), "name": "b"})

    proj = project(cloud, cam_b)
    region = near_region(cam_a, cam_b, 2.0, box)
    assert region.sum() > 500
    assert proj.mask[region].all()                            # no pinholes
    assert is_near[proj.index[region]].all()                  # the far plane never wins there
    np.testing.assert_array_equal(proj.image[region], np.broadcast_to(RED, (region.sum(), 3)))
    # The far plane still shows where nothing is in front of it.
    visible_far = proj.mask & ~is_near[np.maximum(proj.index, 0)]
    assert visible_far.sum() > 0.3 * proj.mask.size


def test_points_behind_the_camera_are_ignored():
    cam = camera((0, -5, 0), (0, 0, 0), 40, 30)
    rng = np.random.default_rng(1)
    front = unproject(cam, np.broadcast_to(np.float32(RED), (30, 40, 3)),
                      rng.uniform(3.0, 6.0, (30, 40)))
    # Mirror every point through the camera centre: same pixel, negative depth, |z| smaller.
    behind_xyz = cam.center + (cam.center - front.xyz) * 0.5
    behind = PointCloud(behind_xyz, np.broadcast_to(np.float32(BLUE), (len(front), 3)),
                        front.radius)
    uv_b, z_b = world_to_pixels(cam, behind.xyz)
    np.testing.assert_allclose(uv_b, pixel_grid(40, 30), atol=1e-9)
    assert (z_b < 0).all()
    proj = project(merge(behind, front), cam)
    assert proj.mask.all()
    assert (proj.index >= len(behind)).all()
    assert (proj.image[..., 0] == 1.0).all() and (proj.image[..., 2] == 0.0).all()

    only_behind = project(behind, cam)
    assert not only_behind.mask.any()
    assert (only_behind.index == -1).all() and np.isinf(only_behind.depth).all()


def test_points_outside_the_image_do_not_wrap_to_another_row():
    cam = camera((0, -5, 0), (0, 0, 0), 40, 30)
    # Points just right of the image and just below it, at pixel-sized footprints.
    uv = np.array([[40 + 2.5, 10.5], [10.5, 30 + 2.5], [-2.5, 3.5], [45.0, -3.0]])
    xyz = pixels_to_world(cam, uv, np.full(4, 4.0))
    cloud = PointCloud(xyz, np.ones((4, 3)), np.full(4, 4.0 / 80.0 * np.sqrt(0.5)))
    assert not project(cloud, cam).mask.any()
    # A point half a pixel outside still covers the border pixel its footprint reaches.
    edge = PointCloud(pixels_to_world(cam, np.array([[40.1, 10.5]]), np.array([4.0])),
                      np.ones((1, 3)), np.array([4.0 / 80.0 * np.sqrt(0.5)]))
    p = project(edge, cam)
    assert p.mask.sum() == 1 and p.mask[10, 39]


def test_splat_footprint_grows_with_radius_and_is_capped():
    cam = camera((0, -5, 0), (0, 0, 0), 64, 64, f=64.0)
    X = pixels_to_world(cam, np.array([[32.0, 32.0]]), np.array([4.0]))
    pixel = 4.0 / 64.0                                  # one pixel at this depth, in metres
    for r_px, side in [(0.0, 1), (1.0, 2), (2.0, 4), (3.2, 6)]:
        p = project(PointCloud(X, np.ones((1, 3)), np.array([r_px * pixel])), cam)
        assert p.mask.sum() == side * side, r_px
    p = project(PointCloud(X, np.ones((1, 3)), np.array([100 * pixel])), cam, max_splat=3.0)
    assert p.mask.sum() == 6 * 6


def test_footprint_ratio_inverts_footprint_radius():
    """A point a camera lifted spans one of its pixel footprints; seen from twice as far, half."""
    cam = camera((0, -5, 0), (0, 0, 0), 64, 48, f=64.0)
    z = np.array([1.0, 4.0, 9.5])
    r = footprint_radius(cam, z)
    np.testing.assert_allclose(footprint_ratio(cam, r, z), 1.0, rtol=1e-6)
    np.testing.assert_allclose(footprint_ratio(cam, r, 2 * z), 0.5, rtol=1e-6)


def test_footprint_pixels_are_the_pixels_project_draws_for_whole_splats():
    """Each point's listed pixels are exactly those project() covers with that point alone; points
    whose splat crosses the image border or lies behind the camera are not whole and list none."""
    rng = np.random.default_rng(5)
    cam = camera((0, -5, 0), (0, 0, 0), 64, 48, f=64.0)
    cloud = random_cloud(rng, 300)
    pix, owner, whole = footprint_pixels(cloud, cam)
    assert 50 < whole.sum() < 300 and set(np.unique(owner)) == set(np.flatnonzero(whole))
    for k in np.flatnonzero(whole)[:40]:
        alone = project(cloud.select(np.array([k])), cam)
        assert np.array_equal(np.sort(pix[owner == k]), np.flatnonzero(alone.mask.reshape(-1)))
    _, z = world_to_pixels(cam, cloud.xyz)
    assert not whole[z <= 0].any()
    edge = np.flatnonzero(~whole & (z > 0))
    for k in edge[:20]:                      # partly outside: project() clips, nothing is whole
        alone = project(cloud.select(np.array([k])), cam)
        assert alone.mask.sum() < len(_full_span(cloud, cam, k))


def _full_span(cloud, cam, k):
    """The pixels of point k's square splat without clipping to the image (may lie outside)."""
    uv, z = world_to_pixels(cam, cloud.xyz[k:k + 1])
    r = min(float(cloud.radius[k]) * cam.K[0, 0] / z[0], 8.0)
    span = lambda c: range(int(min(np.ceil(c - r - 0.5), np.floor(c))), int(max(np.floor(c + r - 0.5), np.floor(c))) + 1)
    return [(i, j) for i in span(uv[0, 1]) for j in span(uv[0, 0])]


def test_project_empty_cloud():
    cam = camera((0, -5, 0), (0, 0, 0), 16, 12)
    p = project(PointCloud.empty(), cam)
    assert p.image.shape == (12, 16, 3) and p.depth.shape == (12, 16) and p.index.shape == (12, 16)
    assert not p.mask.any()


# --- containers ----------------------------------------------------------------------------------

def test_merge_and_select():
    rng = np.random.default_rng(2)
    a, b = random_cloud(rng, 5), random_cloud(rng, 7)
    m = merge(a, b)
    assert len(m) == 12
    np.testing.assert_array_equal(m.xyz[5:], b.xyz)
    np.testing.assert_array_equal(m.select(np.arange(5)).rgb, a.rgb)
    np.testing.assert_array_equal(merge([a, b]).radius, m.radius)
    assert len(merge()) == 0 and len(merge(PointCloud.empty(), a)) == 5
    sel = m.select(m.xyz[:, 0] > 0)
    assert len(sel) == int((m.xyz[:, 0] > 0).sum())
    with pytest.raises(ValueError, match="mask"):
        m.select(np.ones(3, bool))
    with pytest.raises(ValueError, match="same length"):
        PointCloud(np.zeros((3, 3)), np.zeros((2, 3)), np.zeros(3))


def test_voxel_downsample_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    cloud = PointCloud(rng.uniform(-1.0, 1.0, (400, 3)), rng.random((400, 3), dtype=np.float32),
                       rng.uniform(0.0, 0.05, 400).astype(np.float32))
    voxel = 0.5
    out = voxel_downsample(cloud, voxel)
    groups = {}
    for k, cell in enumerate(map(tuple, np.floor(cloud.xyz / voxel).astype(int))):
        groups.setdefault(cell, []).append(k)
    assert len(out) == len(groups) <= 64
    for cell, xyz, rgb, rad in zip(sorted(groups), out.xyz, out.rgb, out.radius):
        idx = groups[cell]
        np.testing.assert_allclose(xyz, cloud.xyz[idx].mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(rgb, cloud.rgb[idx].mean(axis=0), rtol=1e-6)
        assert rad == cloud.radius[idx].max()
        assert (np.floor(xyz / voxel) == cell).all()


def test_voxel_downsample_edge_cases():
    pts = np.array([[0.1, 0.1, 0.1], [0.2, 0.3, 0.1], [1.6, 0.1, 0.1], [-0.1, 0.1, 0.1]])
    c = PointCloud(pts, np.zeros((4, 3)), np.array([0.1, 0.3, 0.2, 0.4]))
    out = voxel_downsample(c, 1.0)
    assert len(out) == 3                                # -0.1 is in another voxel than 0.1
    assert len(voxel_downsample(PointCloud.empty(), 0.1)) == 0
    for bad in (0.0, -1.0, np.nan):
        with pytest.raises(ValueError, match="voxel"):
            voxel_downsample(c, bad)


# --- PLY -----------------------------------------------------------------------------------------

def representable_cloud(rng, n):
    """A cloud that survives float32 positions and 8-bit colours exactly."""
    xyz = rng.normal(scale=10.0, size=(n, 3)).astype(np.float32).astype(np.float64)
    rgb = (rng.integers(0, 256, (n, 3)) / 255.0).astype(np.float32)
    return PointCloud(xyz, rgb, rng.uniform(0, 0.1, n).astype(np.float32))


def test_ply_round_trip_is_exact(tmp_path):
    cloud = representable_cloud(np.random.default_rng(4), 1000)
    path = tmp_path / "pc.ply"
    write_ply(path, cloud)
    assert not os.path.exists(str(path) + ".tmp")
    header = path.read_bytes()[:300].split(b"end_header\n")[0].decode()
    assert "format binary_little_endian 1.0" in header and "element vertex 1000" in header
    assert os.path.getsize(path) == len(header) + len("end_header\n") + 1000 * PLY_DTYPE.itemsize
    back = read_ply(path)
    np.testing.assert_array_equal(back.xyz, cloud.xyz)
    np.testing.assert_array_equal(back.rgb, cloud.rgb)
    np.testing.assert_array_equal(back.radius, cloud.radius)


def test_ply_write_rounds_and_clips_colours(tmp_path):
    c = PointCloud(np.zeros((3, 3)), np.array([[0.5, 1.2, -0.1], [0.999, 0.001, 0.2]] + [[0, 0, 0]]),
                   np.zeros(3))
    write_ply(tmp_path / "c.ply", c)
    rgb = read_ply(tmp_path / "c.ply").rgb * 255.0
    np.testing.assert_allclose(rgb[:2], [[128, 255, 0], [255, 0, 51]], atol=1e-4)


def test_empty_ply_round_trip(tmp_path):
    write_ply(tmp_path / "e.ply", PointCloud.empty())
    assert len(read_ply(tmp_path / "e.ply")) == 0


def test_plyfile_reads_our_files(tmp_path):
    plyfile = pytest.importorskip("plyfile")
    cloud = representable_cloud(np.random.default_rng(5), 50)
    write_ply(tmp_path / "pc.ply", cloud)
    ply = plyfile.PlyData.read(str(tmp_path / "pc.ply"))
    assert not ply.text and ply.byte_order == "<"
    v = ply["vertex"]
    assert [p.name for p in v.properties] == ["x", "y", "z", "red", "green", "blue", "radius"]
    assert [v.data.dtype[p.name].str for p in v.properties] == ["<f4"] * 3 + ["|u1"] * 3 + ["<f4"]
    np.testing.assert_array_equal(np.stack([v["x"], v["y"], v["z"]], 1), cloud.xyz)
    np.testing.assert_array_equal(np.stack([v["red"], v["green"], v["blue"]], 1),
                                  np.round(cloud.rgb * 255).astype(np.uint8))
    np.testing.assert_array_equal(v["radius"], cloud.radius)


def test_read_ply_from_plyfile_with_extra_properties_and_float_colours(tmp_path):
    plyfile = pytest.importorskip("plyfile")
    rng = np.random.default_rng(6)
    n = 20
    data = np.empty(n, [("nx", "<f4"), ("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "<f4"),
                        ("green", "<f4"), ("blue", "<f4"), ("alpha", "u1")])
    for k in ("nx", "x", "y", "z", "red", "green", "blue"):
        data[k] = rng.random(n)
    data["alpha"] = 255
    faces = np.array([([0, 1, 2],)], dtype=[("vertex_indices", "i4", (3,))])
    camera_el = np.array([(1.0, 2.0)], dtype=[("a", "<f4"), ("b", "<f4")])
    big = tmp_path / "other.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(camera_el, "camera"),
                     plyfile.PlyElement.describe(data, "vertex"),
                     plyfile.PlyElement.describe(faces, "face")]).write(str(big))
    c = read_ply(big)
    np.testing.assert_array_equal(c.xyz, np.stack([data["x"], data["y"], data["z"]], 1))
    np.testing.assert_array_equal(c.rgb, np.stack([data["red"], data["green"], data["blue"]], 1))
    assert (c.radius == 0).all()

    be = tmp_path / "be.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(data[["x", "y", "z"]].astype(
        [("x", ">f4"), ("y", ">f4"), ("z", ">f4")]), "vertex")], byte_order=">").write(str(be))
    c = read_ply(be)
    np.testing.assert_allclose(c.xyz[:, 1], data["y"], rtol=1e-6)
    np.testing.assert_array_equal(c.rgb, 0.5)


def test_read_ply_rejects_what_it_cannot_read(tmp_path):
    plyfile = pytest.importorskip("plyfile")
    data = np.zeros(4, [("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    plyfile.PlyData([plyfile.PlyElement.describe(data, "vertex")], text=True).write(
        str(tmp_path / "a.ply"))
    with pytest.raises(ValueError, match="ascii.*not supported"):
        read_ply(tmp_path / "a.ply")

    (tmp_path / "n.ply").write_bytes(b"solid cube\n")
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(tmp_path / "n.ply")

    noxyz = np.zeros(4, [("x", "<f4"), ("y", "<f4")])
    plyfile.PlyData([plyfile.PlyElement.describe(noxyz, "vertex")]).write(str(tmp_path / "b.ply"))
    with pytest.raises(ValueError, match=r"lacks properties \['z'\]"):
        read_ply(tmp_path / "b.ply")

    write_ply(tmp_path / "t.ply", representable_cloud(np.random.default_rng(7), 10))
    raw = (tmp_path / "t.ply").read_bytes()
    (tmp_path / "t.ply").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_ply(tmp_path / "t.ply")


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "pc.ply"
    good = representable_cloud(np.random.default_rng(8), 10)
    write_ply(path, good)

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)   # fails after the .tmp is written
    with pytest.raises(OSError):
        write_ply(path, representable_cloud(np.random.default_rng(9), 20))
    monkeypatch.undo()
    assert not os.path.exists(str(path) + ".tmp")
    assert sorted(os.listdir(tmp_path)) == ["pc.ply"]
    np.testing.assert_array_equal(read_ply(path).xyz, good.xyz)


def test_project_in_batches_matches_one_pass(monkeypatch):
    """Large splats are z-buffered in batches of fragments; batching must not change the result."""
    import zoomscape.pointcloud as pc_module
    rng = np.random.default_rng(10)
    cam = camera((0, -5, 0), (0, 0, 0), 48, 40)
    cloud = PointCloud(rng.uniform(-1.5, 1.5, (3000, 3)), rng.random((3000, 3), dtype=np.float32),
                       rng.uniform(0.0, 0.15, 3000).astype(np.float32))
    cloud.radius[::7] = np.nan                               # treated as a one-pixel splat
    one = project(cloud, cam)
    monkeypatch.setattr(pc_module, "FRAGMENT_CHUNK", 500)
    assert len(pc_module._chunks(np.full(3000, 9), 500)) > 10
    many = project(cloud, cam)
    assert one.mask.mean() > 0.5
    for a, b in ((one.index, many.index), (one.depth, many.depth), (one.image, many.image)):
        np.testing.assert_array_equal(a, b)
    # Every winner is the nearest point covering its pixel (checked point by point here).
    uv, z = world_to_pixels(cam, cloud.xyz)
    for i, j in [(20, 24), (5, 5), (35, 40), (12, 30)]:
        r = np.nan_to_num(cloud.radius.astype(np.float64)) * 80.0 / z
        covers = ((np.abs(uv[:, 0] - (j + 0.5)) <= r) | (np.floor(uv[:, 0]) == j)) & \
                 ((np.abs(uv[:, 1] - (i + 0.5)) <= r) | (np.floor(uv[:, 1]) == i)) & (z > 0)
        if covers.any():
            assert one.index[i, j] == np.flatnonzero(covers)[np.argmin(z[covers])]
        else:
            assert one.index[i, j] == -1


def test_project_on_a_pixel_subset_matches_the_full_projection(monkeypatch):
    """project(pixels=S) renders S exactly as the full projection does (large, overlapping and
    tied splats, points behind, beside and outside the camera, in one batch and in many) and
    leaves every other pixel empty."""
    import zoomscape.pointcloud as pc_module
    rng = np.random.default_rng(11)
    cam = camera((0, -5, 0), (0, 0, 0), 48, 40)
    n = 4000
    xyz = np.concatenate([rng.uniform(-1.5, 1.5, (n - 200, 3)), rng.uniform(-9, 9, (200, 3))])
    cloud = PointCloud(xyz, rng.random((n, 3), dtype=np.float32),
                       rng.uniform(0.0, 0.15, n).astype(np.float32))
    cloud.xyz[100:110] = cloud.xyz[0]                        # ties: the lower index wins
    cloud.radius[::7] = np.nan                               # treated as a one-pixel splat
    cloud.xyz[7] = np.nan
    S = rng.random((40, 48)) < 0.3
    S[10:20, 5:30] = True
    for chunk in (pc_module.FRAGMENT_CHUNK, 300):
        monkeypatch.setattr(pc_module, "FRAGMENT_CHUNK", chunk)
        full, part = project(cloud, cam), project(cloud, cam, pixels=S)
        assert full.mask[S].mean() > 0.5 and full.mask[~S].any()
        for a, b in ((full.index, part.index), (full.depth, part.depth), (full.image, part.image),
                     (full.mask, part.mask)):
            np.testing.assert_array_equal(a[S], b[S])
        assert not part.mask[~S].any() and (part.index[~S] == -1).all()
        assert np.isinf(part.depth[~S]).all() and not part.image[~S].any()
    assert not project(cloud, cam, pixels=np.zeros((40, 48), bool)).mask.any()
    with pytest.raises(ValueError, match="pixels"):
        project(cloud, cam, pixels=np.ones((48, 40), bool))
