"""'Start from my scene': the zoom camera's render → init_rgbd. The depth sent equals the analytic
z-depth (not the ray length) in Cycles and EEVEE, colours are the render's, background is +inf,
and the user's settings come back untouched."""
import base64
import math

import numpy as np
import pytest

import bpy

from conftest import add_camera, import_backend, use_engine

W, H = 96, 64
EMISSION = (0.8, 0.25, 0.05)  # linear; the PNG holds sRGB of it (Standard view transform)


@pytest.fixture(scope="module")
def init_view():
    """The backend's zoomscape.init_view (numpy only for depth; PIL is not in Blender)."""
    return import_backend("zoomscape.init_view")


def srgb(c):
    c = np.asarray(c, np.float64)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def emissive_plane(scene, size, location, rotation):
    bpy.ops.mesh.primitive_plane_add(size=size, location=location, rotation=rotation)
    obj = bpy.context.active_object
    mat = bpy.data.materials.new("Glow")
    if bpy.app.version < (5, 0, 0):  # always on in 5.x
        mat.use_nodes = True
    nodes = mat.node_tree.nodes
    nodes.clear()
    emit = nodes.new("ShaderNodeEmission")
    emit.inputs["Color"].default_value = (*EMISSION, 1.0)
    out = nodes.new("ShaderNodeOutputMaterial")
    mat.node_tree.links.new(emit.outputs[0], out.inputs["Surface"])
    obj.data.materials.append(mat)
    return obj


def set_engine(scene, engine):
    r = scene.render
    use_engine(scene, engine, 2 if engine == "CYCLES" else 1)
    if engine == "CYCLES":
        scene.cycles.filter_width = 0.01  # samples at pixel centres: depth at the centre, exactly
        scene.cycles.use_denoising = False
    else:
        r.filter_size = 0.0


def tilted_set(zs):
    """A camera turned and lifted over a plane tilted 25° away from it; sky over the top third.

    → (scene, camera object, plane point p0 [3], plane normal n [3]) in world coordinates.
    """
    scene = bpy.context.scene
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = W, H, 100
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure, scene.view_settings.gamma = 0.0, 1.0
    cam = add_camera("Shot", (0.7, -3.0, 1.2), (math.radians(84), 0.0, math.radians(12)), lens=24.0)
    cam.data.clip_end = 200.0
    plane = emissive_plane(scene, 8.0, (0.5, 2.0, 0.0), (math.radians(65), 0.0, math.radians(10)))
    bpy.context.view_layer.update()
    p0 = np.array(plane.matrix_world.translation)
    n = np.array(plane.matrix_world.to_3x3() @ plane.data.polygons[0].normal)
    return scene, cam, p0, n / np.linalg.norm(n)


def analytic_depth(wire, p0, n, half=4.0, plane_obj=None):
    """z-depth of the plane n·(X − p0) = 0 at every pixel centre: [H, W] (+inf where the ray misses
    the plane's square or hits it behind the camera)."""
    M = np.array(wire["matrix_world"])
    R, C = M[:3, :3], M[:3, 3]
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    # OpenCV ray with z = 1 → Blender camera axes (x right, y up, looking down −z)
    x = (u - wire["cx"]) / wire["fx"]
    y = (v - wire["cy"]) / wire["fy"]
    d_world = np.stack([x, -y, -np.ones_like(x)], axis=-1) @ R.T  # world offset per unit z-depth
    z = (n @ (p0 - C)) / (d_world @ n)
    hit = C + z[..., None] * d_world
    if plane_obj is not None:  # inside the square?
        local = (hit - p0) @ np.array(plane_obj.matrix_world.to_3x3().normalized())
        inside = (np.abs(local[..., 0]) < half) & (np.abs(local[..., 1]) < half)
        z = np.where(inside & (z > 0), z, np.inf)
    return z


@pytest.mark.parametrize("engine", ["CYCLES", "EEVEE"])
def test_render_depth_is_analytic_z_depth_and_colours_match(zs, init_view, tmp_path, engine):
    scene, cam, p0, n = tilted_set(zs)
    plane = next(o for o in scene.objects if o.type == "MESH")
    set_engine(scene, engine)
    wire = zs.scene_io.camera_to_wire(cam, scene)
    init = zs.rgbd.render_init_rgbd(scene, cam, wire)
    assert (init["camera"], init["width"], init["height"]) == ("Shot", W, H)

    D = init_view.decode_depth(init_view.decode_base64(init["depth"], "depth"), W, H)  # the backend's decoder
    expected = analytic_depth(wire, p0, n, plane_obj=plane)
    hit = np.isfinite(expected)
    assert 0.3 < hit.mean() < 0.9, hit.mean()  # plane and sky both in view
    # compare away from the plane's silhouette (antialiased edge pixels mix plane and sky)
    edge = np.zeros_like(hit)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            edge |= np.roll(np.roll(hit, dy, 0), dx, 1) != hit
    inner, sky = hit & ~edge, ~hit & ~edge
    rel = np.abs(D[inner] - expected[inner]) / expected[inner]
    assert rel.max() < 1e-3, (engine, rel.max())
    # ray length differs from z-depth by > 1 % off-centre: the check above would have caught it
    x = (np.arange(W) + 0.5 - wire["cx"]) / wire["fx"]
    y = (np.arange(H) + 0.5 - wire["cy"]) / wire["fy"]
    stretch = np.sqrt(1 + x[None] ** 2 + y[:, None] ** 2)
    assert (stretch[inner] > 1.01).mean() > 0.5
    assert np.all(np.isposinf(D[sky]))

    png = tmp_path / "rgb.png"
    png.write_bytes(base64.b64decode(init["rgb_png"]))
    img = bpy.data.images.load(str(png))
    assert tuple(img.size) == (W, H)
    px = np.empty(W * H * img.channels, np.float32)
    img.pixels.foreach_get(px)
    rgb = px.reshape(H, W, img.channels)[::-1, :, :3]  # Blender's rows start at the bottom
    np.testing.assert_allclose(np.median(rgb[inner], axis=0), srgb(EMISSION), atol=2.5 / 255)
    assert np.abs(rgb[inner] - srgb(EMISSION)).max() < 0.03
    assert rgb[sky].max() < 0.05  # the empty world is black


def test_settings_are_restored(zs):
    scene, cam, p0, n = tilted_set(zs)
    set_engine(scene, "CYCLES")
    other = add_camera("Other", (0.0, -8.0, 1.0))
    scene.camera = other
    layer = scene.view_layers[0]
    layer.use_pass_z = False
    r = scene.render
    r.image_settings.file_format = "JPEG"
    r.image_settings.quality = 71
    r.use_compositing, r.use_sequencer = True, True
    before = (r.image_settings.file_format, r.image_settings.color_mode, r.image_settings.color_depth,
              r.image_settings.exr_codec, r.image_settings.compression, r.image_settings.quality)
    zs.rgbd.render_init_rgbd(scene, cam, zs.scene_io.camera_to_wire(cam, scene))
    after = (r.image_settings.file_format, r.image_settings.color_mode, r.image_settings.color_depth,
             r.image_settings.exr_codec, r.image_settings.compression, r.image_settings.quality)
    assert after == before
    assert scene.camera == other and layer.use_pass_z is False
    assert (r.use_compositing, r.use_sequencer) == (True, True)


def test_a_camera_that_sees_nothing_is_a_clear_error(zs):
    scene, cam, p0, n = tilted_set(zs)
    set_engine(scene, "CYCLES")
    cam.rotation_euler = (math.radians(-80), 0.0, 0.0)  # up into the empty sky
    bpy.context.view_layer.update()
    with pytest.raises(zs.rgbd.RgbdError, match="'Shot' sees almost nothing.*turn off 'Start from my scene'"):
        zs.rgbd.render_init_rgbd(scene, cam, zs.scene_io.camera_to_wire(cam, scene))


def test_depth_from_z_marks_background(zs):
    slack = zs.rgbd.far_slack(0.1, 100.0)
    assert 0.01 < slack < 0.05  # 4 float32 depth-buffer steps at 100 m with clip_start 0.1: 100²/0.1·2^-22
    Z = np.array([[1e10, 100.0 - slack / 2, 99.9], [0.0, -1.0, np.nan], [np.inf, 2.5, 1001.02]], np.float32)
    D = zs.rgbd.depth_from_z(Z, 0.1, 100.0)
    assert D.dtype == np.float32
    np.testing.assert_array_equal(np.isfinite(D), [[False, False, True], [False, False, False],
                                                   [False, True, False]])
    assert D[0, 2] == np.float32(99.9) and D[2, 1] == 2.5 and np.all(np.isposinf(D[~np.isfinite(D)]))
