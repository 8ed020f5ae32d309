"""Scene → request: intrinsics agree with Blender's world_to_camera_view through the backend's
cameras.py; cameras are gathered and validated with clear errors."""
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
    camera = backend_cameras.from_wire(wire)

    rng = np.random.default_rng(hash(case) % 2**32)
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
    uv, z = backend_cameras.world_to_pixels(camera, world)
    assert np.all(z > 0)
    np.testing.assert_allclose(z, depth, rtol=1e-6)
    assert np.abs(uv - expected).max() < 1e-4, np.abs(uv - expected).max()
    np.testing.assert_allclose(uv, ndc * [W, H] * [1, -1] + [0, H], atol=1e-4)


def test_intrinsics_formula_equals_backend(zs, backend_cameras):
    rng = np.random.default_rng(3)
    for fit in ("AUTO", "HORIZONTAL", "VERTICAL"):
        for _ in range(20):
            args = (rng.uniform(10, 100), rng.uniform(5, 40), rng.uniform(5, 40), fit,
                    rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), int(rng.integers(64, 2048)),
                    int(rng.integers(64, 2048)), rng.uniform(0.5, 3), rng.uniform(0.5, 3))
            assert zs.scene_io.intrinsics(*args) == pytest.approx(backend_cameras.blender_intrinsics(*args))


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
                           "anchor": None}
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
