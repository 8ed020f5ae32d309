"""Scene → request: the request's intrinsics (wire.cameras.blender_intrinsics, the copy the extension
ships) agree with Blender's own world_to_camera_view and projection matrix, projected by the wire's
project_blender and by the backend's cameras.py; cameras are gathered and validated with clear errors."""
import base64

import numpy as np
import pytest

import bpy
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from conftest import add_camera

CASES = [  # sensor_fit, sensor w/h, shift, resolution, %, pixel aspect, lens
    ("AUTO", 36.0, 24.0, (0.0, 0.0), (96, 96), 100, (1.0, 1.0), 35.0),
    ("AUTO", 23.5, 15.6, (0.13, -0.07), (160, 90), 100, (1.0, 1.0), 28.0),
    ("AUTO", 36.0, 24.0, (-0.2, 0.11), (90, 160), 100, (1.0, 1.0), 50.0),
    ("HORIZONTAL", 30.0, 10.0, (0.05, 0.21), (160, 200), 50, (1.0, 1.0), 40.0),
    ("VERTICAL", 12.0, 30.0, (0.17, -0.09), (300, 128), 100, (1.0, 1.0), 24.0),
    ("AUTO", 36.0, 24.0, (0.1, 0.1), (200, 180), 100, (2.0, 1.0), 35.0),
    ("AUTO", 36.0, 24.0, (-0.1, 0.2), (180, 200), 100, (1.0, 1.7), 35.0),
    ("HORIZONTAL", 36.0, 20.0, (0.3, -0.2), (150, 150), 100, (1.0, 3.0), 60.0),
    ("VERTICAL", 18.0, 24.0, (-0.05, 0.15), (256, 100), 75, (1.5, 1.0), 20.0),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[4][0]}x{c[4][1]}-pa{c[6]}" for c in CASES])
def test_request_intrinsics_match_world_to_camera_view(zs, backend_cameras, case):
    fit, sw, sh, shift, res, pct, pa, lens = case
    scene = bpy.context.scene
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = *res, pct
    r.pixel_aspect_x, r.pixel_aspect_y = pa
    obj = add_camera("Cam", (0.3, -4.0, 1.2), (1.45, 0.1, 0.35), lens=lens)
    obj.scale = (1.0, 2.0, 0.5)  # scale must not leak into the wire matrix
    cam = obj.data
    cam.sensor_fit, cam.sensor_width, cam.sensor_height = fit, sw, sh
    cam.shift_x, cam.shift_y = shift
    bpy.context.view_layer.update()

    wire = zs.scene_io.camera_to_wire(obj, scene)
    W, H = res[0] * pct // 100, res[1] * pct // 100
    assert (wire["width"], wire["height"]) == (W, H)
    k = zs.wire.cameras.Intrinsics.from_dict(wire)

    rng = np.random.default_rng(CASES.index(case))  # deterministic (hash() of str is salted per run)
    ndc = np.column_stack([rng.uniform(0.02, 0.98, 50), rng.uniform(0.02, 0.98, 50)])
    depth = rng.uniform(0.5, 30.0, 50)
    # random visible points: unproject Blender's own view frame at random depths
    frame = [obj.matrix_world.normalized() @ v for v in cam.view_frame(scene=scene)]
    tr, br, bl, tl = (np.array(v) for v in frame)  # view_frame order: TR, BR, BL, TL
    centre = np.array(obj.matrix_world.normalized().translation)
    plane_depth = float(np.dot(tr - centre, -np.array(obj.matrix_world.normalized().col[2][:3])))
    on_plane = bl + ndc[:, :1] * (br - bl) + ndc[:, 1:] * (tl - bl)
    world = centre + (on_plane - centre) * (depth / plane_depth)[:, None]

    expected = []
    for p in world:
        v = world_to_camera_view(scene, obj, Vector(p))
        expected.append((v.x * W, (1.0 - v.y) * H))
    expected = np.array(expected)
    projections = {"wire": zs.wire.cameras.project_blender(wire["matrix_world"], k, world),
                   "backend": backend_cameras.world_to_pixels(backend_cameras.from_wire(wire), world)}
    for who, (uv, z) in projections.items():
        assert np.all(z > 0), who
        np.testing.assert_allclose(z, depth, rtol=1e-6, err_msg=who)
        assert np.abs(uv - expected).max() < 1e-4, (who, np.abs(uv - expected).max())
        np.testing.assert_allclose(uv, ndc * [W, H] * [1, -1] + [0, H], atol=1e-4, err_msg=who)


def test_intrinsics_formula_equals_blenders_projection_matrix(zs):
    """wire.cameras.blender_intrinsics over random lenses, sensors, fits, shifts, sizes and pixel
    aspects against Camera.calc_matrix_camera: u = (ndc_x + 1)·W/2, v = (1 − ndc_y)·H/2 with
    ndc = (P00·X/−Z − P02, P11·Y/−Z − P12), so fx = P00·W/2, cx = (1 − P02)·W/2,
    fy = P11·H/2, cy = (1 + P12)·H/2."""
    scene = bpy.context.scene
    obj = add_camera("Cam", (0.0, 0.0, 0.0))
    cam = obj.data
    rng = np.random.default_rng(3)
    for fit in ("AUTO", "HORIZONTAL", "VERTICAL"):
        for _ in range(20):
            lens, sw, sh = rng.uniform(10, 100), rng.uniform(5, 40), rng.uniform(5, 40)
            shift = rng.uniform(-0.5, 0.5, 2)
            W, H = (int(v) for v in rng.integers(64, 2048, 2))
            pa = rng.uniform(0.5, 3, 2)
            cam.lens, cam.sensor_width, cam.sensor_height, cam.sensor_fit = lens, sw, sh, fit
            cam.shift_x, cam.shift_y = shift
            k = zs.wire.cameras.blender_intrinsics(lens, sw, sh, fit, *shift, W, H, *pa)
            P = np.array(obj.calc_matrix_camera(bpy.context.evaluated_depsgraph_get(), x=W, y=H,
                                                scale_x=pa[0], scale_y=pa[1]), dtype=np.float64)
            blender = (P[0, 0] * W / 2, P[1, 1] * H / 2, (1 - P[0, 2]) * W / 2, (1 + P[1, 2]) * H / 2)
            assert (k.fx, k.fy, k.cx, k.cy) == pytest.approx(blender, rel=1e-6, abs=1e-4), \
                (fit, lens, sw, sh, shift, W, H, pa)
            assert (k.width, k.height) == (W, H)


def make_scene(zs):
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = 96
    props = scene.zoomscape
    props.scene_prompt = "a harbour"
    props.levels.add().prompt = "a window"
    cams = [add_camera(f"Cam.{i:03d}", (0.5 * i, -5.0, 1.0)) for i in (2, 0, 1)]
    return scene, props, cams


def test_request_sorted_by_name_and_zoom_camera_added(zs):
    scene, props, cams = make_scene(zs)
    zoom = add_camera("A zoom", (0.0, -6.0, 1.0))
    for o in bpy.context.scene.objects:
        o.select_set(o.name in ("Cam.002", "Cam.000"))
    props.zoom_camera = zoom
    props.zoom_factor, props.seed = 3.0, 11
    req = zs.scene_io.build_request(scene, bpy.context, props)
    assert [c["name"] for c in req["cameras"]] == ["A zoom", "Cam.000", "Cam.002"]
    assert req["zoom"] == {"camera": "A zoom", "factor": 3.0, "levels": [{"prompt": "a window"}],
                           "anchor": None, "mode": "dolly"}   # the panel's Zoom, Dolly by default
    props.zoom_mode = "LENS"
    assert zs.scene_io.build_request(scene, bpy.context, props)["zoom"]["mode"] == "lens"
    props.zoom_mode = "DOLLY"
    assert (req["seed"], req["engine"], req["init_rgbd"]) == (11, "procedural", None)
    M = np.array(req["cameras"][1]["matrix_world"])
    np.testing.assert_allclose(M, np.array(cams[1].matrix_world), atol=1e-7)

    props.camera_source = "COLLECTION"
    coll = bpy.data.collections.new("Rig")
    scene.collection.children.link(coll)
    coll.objects.link(cams[0])  # Cam.002
    target = bpy.data.objects.new("Target", None)
    target.location = (1.0, 2.0, 3.0)
    scene.collection.objects.link(target)
    props.camera_collection, props.zoom_target = coll, target
    bpy.context.view_layer.update()
    req = zs.scene_io.build_request(scene, bpy.context, props)
    assert [c["name"] for c in req["cameras"]] == ["A zoom", "Cam.002"]
    assert req["zoom"]["anchor"] == pytest.approx([1.0, 2.0, 3.0])


def test_extra_views_are_one_per_camera_by_default_or_the_count(zs):
    """Auto (the default): as many extra views as cameras sent, at most MAX_EXTRA_VIEWS; off: the
    Count; extra views off: none."""
    scene, props, cams = make_scene(zs)
    for o in bpy.context.scene.objects:
        o.select_set(o.name in ("Cam.002", "Cam.000"))
    props.zoom_camera = cams[2]   # Cam.001: sent too (3 cameras)
    assert props.use_extra_views and props.extra_views_auto and props.extra_views == 4
    req = zs.scene_io.build_request(scene, bpy.context, props)
    assert len(req["cameras"]) == 3 and req["extra_views"] == 3
    props.extra_views_auto, props.extra_views = False, 7
    assert zs.scene_io.build_request(scene, bpy.context, props)["extra_views"] == 7
    props.use_extra_views = False
    assert zs.scene_io.build_request(scene, bpy.context, props)["extra_views"] == 0
    props.use_extra_views, props.extra_views_auto = True, True
    limit = zs.wire.names.MAX_EXTRA_VIEWS
    assert zs.scene_io.extra_view_count(props, 40) == limit and zs.scene_io.extra_view_count(props, 1) == 1


@pytest.mark.parametrize("res,pct,axis,value", [((96, 63), 100, "height", 63),
                                                ((2049, 96), 100, "width", 2049),
                                                ((200, 200), 30, "width", 60)])
def test_bad_resolution_names_the_camera(zs, res, pct, axis, value):
    scene, props, cams = make_scene(zs)
    scene.render.resolution_x, scene.render.resolution_y = res
    scene.render.resolution_percentage = pct
    scene.camera = cams[1]
    with pytest.raises(zs.scene_io.SceneError) as err:
        zs.scene_io.build_request(scene, bpy.context, props)
    msg = str(err.value)
    assert "Cam.000" in msg and f"{axis} {value}" in msg and "64..2048" in msg


def test_non_perspective_and_empty_prompts_are_rejected(zs):
    scene, props, cams = make_scene(zs)
    scene.camera = cams[1]
    cams[1].data.type = "ORTHO"
    with pytest.raises(zs.scene_io.SceneError, match="Cam.000.*ORTHO.*perspective"):
        zs.scene_io.build_request(scene, bpy.context, props)
    cams[1].data.type = "PERSP"
    props.levels[0].prompt = "  "
    with pytest.raises(zs.scene_io.SceneError, match=r"zoom.levels\[0\].prompt"):
        zs.scene_io.build_request(scene, bpy.context, props)
    props.scene_prompt = ""
    with pytest.raises(zs.scene_io.SceneError, match="scene_prompt"):
        zs.scene_io.build_request(scene, bpy.context, props)


def test_models_are_sent_for_diffusers_only_and_blank_means_server_default(zs):
    scene, props, cams = make_scene(zs)
    scene.camera = cams[1]
    props.text2img_model, props.depth_model = "  my/sd-model ", "/srv/depth"
    req = zs.scene_io.build_request(scene, bpy.context, props)
    assert "models" not in req  # procedural engine: no model choice
    props.engine = "diffusers"
    req = zs.scene_io.build_request(scene, bpy.context, props)
    assert req["models"] == {"text2img": "my/sd-model", "depth": "/srv/depth"}
    props.text2img_model = props.depth_model = ""
    assert "models" not in zs.scene_io.build_request(scene, bpy.context, props)


def test_connect_offers_the_servers_models(zs):
    props = bpy.context.scene.zoomscape
    health_models = [  # ModelLocation.as_dict() and the diffusers engine's {"name", "role", "status"}; noise
        {"role": "text2img", "model_id": "stable-diffusion-v1-5/stable-diffusion-v1-5", "available": True},
        {"role": "inpaint", "model_id": "stable-diffusion-v1-5/stable-diffusion-inpainting", "available": False},
        {"name": "depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf", "role": "depth", "status": "loaded"},
        {"name": "procedural-world", "role": "inpaint+depth", "status": "builtin"}, "junk"]
    zs.properties.set_server_models(props, health_models)
    assert [(m.role, m.name, m.available) for m in props.server_models] == [
        ("text2img", "stable-diffusion-v1-5/stable-diffusion-v1-5", True),
        ("inpaint", "stable-diffusion-v1-5/stable-diffusion-inpainting", False),
        ("depth", "depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf", True)]
    assert zs.properties.server_default(props, "inpaint") == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    search = zs.properties._model_search("depth")
    assert [s for s, _ in search(props, bpy.context, "anything")] == [
        "depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf"]
    assert list(search(props, bpy.context, "stable")) == []  # only the role's own models


def test_start_from_my_scene_renders_the_zoom_camera_first(zs):
    scene, props, cams = make_scene(zs)
    scene.render.resolution_y = 64
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(0.5, 0.0, 1.0))  # in front of every camera
    for o in scene.objects:
        o.select_set(o.type == "CAMERA")
    props.zoom_camera = cams[0]  # Cam.002: last by name
    props.use_scene_rgbd = True
    bpy.context.view_layer.update()
    req = zs.scene_io.build_request(scene, bpy.context, props)
    assert [c["name"] for c in req["cameras"]] == ["Cam.002", "Cam.000", "Cam.001"]
    init = req["init_rgbd"]
    assert (init["camera"], init["width"], init["height"]) == ("Cam.002", 96, 64)
    depth = np.frombuffer(base64.b64decode(init["depth"]), "<f4").reshape(64, 96)
    assert np.isfinite(depth).mean() > 0.05 and np.isposinf(depth).any()  # cube and empty world
    # the cube's front face is 5 m − 1 m from Cam.002 (y = −5 → y = −1): nearest depth ≈ 4 m
    assert abs(np.nanmin(np.where(np.isfinite(depth), depth, np.nan)) - 4.0) < 0.05

    props.use_scene_rgbd = False
    req = zs.scene_io.build_request(scene, bpy.context, props)
    assert [c["name"] for c in req["cameras"]] == ["Cam.000", "Cam.001", "Cam.002"] and req["init_rgbd"] is None


def test_start_from_my_scene_error_names_init_rgbd(zs):
    scene, props, cams = make_scene(zs)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.camera = cams[1]
    props.use_scene_rgbd = True  # an empty world: nothing to start from
    with pytest.raises(zs.scene_io.SceneError, match="init_rgbd: camera 'Cam.000' sees almost nothing"):
        zs.scene_io.build_request(scene, bpy.context, props)


# ------------------------------------------------------------------ the token is not in the .blend

def test_token_lives_in_the_preferences_not_the_scene(zs, tmp_path):
    prefs = zs.preferences.get()
    assert prefs is not None and "token" not in bpy.context.scene.zoomscape.bl_rna.properties
    prefs.token = "pref-tok-1234567890"
    props = bpy.context.scene.zoomscape
    assert zs.runner.client_for(props).token == "pref-tok-1234567890"
    path = str(tmp_path / "shared.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path, compress=False)
    with open(path, "rb") as f:
        assert b"pref-tok-1234567890" not in f.read()


def test_a_legacy_scene_token_is_used_once_then_moved_out_of_the_file(zs, tmp_path):
    prefs = zs.preferences.get()
    prefs.token = ""
    props = bpy.context.scene.zoomscape
    props["token"] = "legacy-secret-42"  # what an older version saved in Scene.zoomscape
    old = str(tmp_path / "old.blend")
    bpy.ops.wm.save_as_mainfile(filepath=old, compress=False)
    with open(old, "rb") as f:
        assert b"legacy-secret-42" in f.read()  # the old way leaks it with the file

    # used once (no preferences token yet), moved to the preferences, gone from the scene
    assert zs.runner.client_for(props).token == "legacy-secret-42"
    assert props.get("token") is None and prefs.token == "legacy-secret-42"
    assert zs.runner.client_for(props).token == "legacy-secret-42"

    # opening the old file migrates it on load; saving it again no longer carries the token
    prefs.token = "newer-token"
    bpy.ops.wm.open_mainfile(filepath=old)
    props = bpy.context.scene.zoomscape
    assert props.get("token") is None
    assert zs.runner.client_for(props).token == "newer-token"  # the preferences win over a stale file
    resaved = str(tmp_path / "resaved.blend")
    bpy.ops.wm.save_as_mainfile(filepath=resaved, compress=False)
    with open(resaved, "rb") as f:
        assert b"legacy-secret-42" not in f.read()
