"""The whole flow against a real backend process: discover (zeroconf), connect, generate in
background mode, import, key the zoom, render with Cycles; and the error paths."""
import os
import shutil
import sys
import time

import numpy as np
import pytest

import bpy

from blender_ext import REPO_ROOT
from conftest import add_camera, render_rgb

sys.path.insert(0, REPO_ROOT)
from tests.helpers.backend_process import backend_server, free_port  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with backend_server(tmp_path_factory.mktemp("backend_data")) as srv:
        yield srv


def three_camera_scene(size=96):
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    cams = [add_camera(f"Cam.{i:03d}", (0.4 * i - 0.4, -6.0, 1.5), (1.45, 0.0, 0.0)) for i in range(3)]
    for c in cams:
        c.select_set(True)
    scene.camera = cams[1]
    props = scene.zoomscape
    props.scene_prompt = "a misty harbour town"
    for text in ("a lit window", "a cat on the sill"):
        props.levels.add().prompt = text
    props.frames_per_level = 4
    props.seed = 3
    bpy.context.view_layer.update()
    return scene, props, cams


def test_discover_generate_import_render_reload(zs, server, tmp_path):
    scene, props, cams = three_camera_scene()

    assert bpy.ops.zoomscape.discover(seconds=4.0) == {"FINISHED"}
    ports = [b.port for b in props.backends]
    assert server.port in ports, ports
    props.backends_index = ports.index(server.port)
    assert (props.host, props.port) == ("127.0.0.1", server.port)
    assert bpy.ops.zoomscape.connect() == {"FINISHED"}
    assert props.connected and "procedural" in props.server_info
    assert props.server_refine == "Refine: off"      # the CPU server refines nothing (its health says 0 s)

    props.output_dir = str(tmp_path / "results")
    assert bpy.ops.zoomscape.generate(timeout=300) == {"FINISHED"}
    assert (props.job_state, props.progress, props.error) == ("done", 1.0, "")
    out_dir = props.last_output_dir
    assert out_dir == os.path.join(str(tmp_path / "results"), props.job_id)
    manifest = zs.wire.manifest.read_manifest(out_dir)
    assert manifest.job_id == props.job_id
    own = [v.camera for v in manifest.views if not v.extra]
    extra = [v.camera for v in manifest.views if v.extra]
    assert own == [c.name for c in cams] == [v.camera for v in manifest.views[:len(cams)]]
    # on by default, one per camera (Auto), and in DOLLY (the default) the dive's view first
    dive = [n for n in extra if n.startswith("Dive.")]
    assert props.zoom_mode == "DOLLY" and dive == ["Dive.000", "Dive.001"] == extra[:2]
    assert props.use_extra_views and props.extra_views_auto and 1 <= len(extra) - len(dive) <= len(cams)
    assert zs.runner.view_counts(props.job_id) == (len(cams), len(extra))

    pts = [o for o in bpy.data.objects if o.get("zoomscape_kind") == "points"]
    assert len(pts) == 1 and len(pts[0].data.vertices) == manifest.points > 1000
    zoom = scene.camera
    assert zoom.get("zoomscape_kind") == "zoom_camera" and props.zoom_camera == cams[1]
    assert scene.frame_end - scene.frame_start == 1 * 4  # 2 levels: the dive ends on level 1
    # The levels came back as splat objects under a rig whose root (at the anchor) scales by the zoom
    # factor per level: seen from the root, the static camera closes in on the anchor exponentially.
    levels = sorted((o for o in bpy.data.objects if o.get("zoomscape_kind") == "level"), key=lambda o: o.name)
    # the 2 levels at p = 4 were painted as 3 at q = 2 (the step between them in two)
    assert len(levels) == len(manifest.levels) == 3 and manifest.zoom.substeps == 2
    assert manifest.zoom.factor == pytest.approx(props.zoom_factor ** 0.5)
    assert [zs.splat_import.splat_count(o) for o in levels] == [lv.count for lv in manifest.levels]
    root, _ = zs.level_rig.rig_of(props.job_id)
    anchor = manifest.zoom.anchor
    np.testing.assert_allclose(np.array(root.matrix_world.translation), anchor, atol=1e-4)
    dists = []
    for f in (scene.frame_start, scene.frame_start + 2, scene.frame_start + 4):
        scene.frame_set(f)
        cam_in_root = root.matrix_world.inverted() @ zoom.matrix_world.translation
        dists.append(np.linalg.norm(np.array(cam_in_root)))
    np.testing.assert_allclose([dists[0] / dists[1], dists[1] / dists[2]], props.zoom_factor ** 0.5, rtol=1e-5)
    assert len(zs.thumbnails.job_images(props.job_id)[0]) == 3  # one thumbnail per level

    # the world came back as Gaussians too (world.ply), shown in renders instead of the points
    world = zs.world.world_objects(props.job_id)
    assert zs.splat_import.splat_count(world["GAUSSIANS"]) == manifest.world_gaussians > 1000
    assert not world["GAUSSIANS"].hide_render and world["POINTS"].hide_render

    # render frame 1 with Cycles: the world shows (vs. the same render without it)
    scene.frame_set(scene.frame_start)
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples = "CPU", 4
    scene.render.resolution_x = scene.render.resolution_y = 64
    scene.render.image_settings.file_format = "PNG"
    with_points = render_rgb(scene, str(tmp_path / "with.png"))
    ours = [o for o in bpy.data.objects if o.get("zoomscape_kind") in ("points", "world", "level")]
    shown = [o.hide_render for o in ours]
    for o in ours:
        o.hide_render = True
    without = render_rgb(scene, str(tmp_path / "without.png"))
    for o, h in zip(ours, shown):
        o.hide_render = h
    centre = with_points[16:48, 16:48]
    assert np.abs(without).max() < 0.05  # empty world: black
    assert (centre.max(axis=2) > 0.05).mean() > 0.9  # the world covers the centre
    assert (np.abs(with_points - without).max(axis=2) > 0.05).mean() > 0.9  # nearly every pixel
    assert centre.reshape(-1, 3).std(axis=0).max() > 0.02  # coloured, not flat

    # save, reopen: the job id is there and import_results re-imports (downloading again)
    blend = str(tmp_path / "zoom.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    job_id = props.job_id
    bpy.ops.wm.open_mainfile(filepath=blend)
    props = bpy.context.scene.zoomscape
    assert props.job_id == job_id
    shutil.rmtree(out_dir)
    for o in [o for o in bpy.data.objects if o.get("zoomscape_kind") == "points"]:
        bpy.data.objects.remove(o)
    assert bpy.ops.zoomscape.import_results() == {"FINISHED"}
    assert os.path.isfile(os.path.join(out_dir, "pointcloud.ply"))
    assert props.last_output_dir.startswith("//")  # the .blend is saved: stored relative to it
    assert bpy.path.abspath(props.last_output_dir) == out_dir
    pts = [o for o in bpy.data.objects if o.get("zoomscape_kind") == "points"]
    assert len(pts) == 1 and len(pts[0].data.vertices) == manifest.points


def test_backend_down_is_a_clear_error(zs):
    scene, props, cams = three_camera_scene()
    props.port = free_port()
    with pytest.raises(RuntimeError):
        bpy.ops.zoomscape.generate(timeout=30)
    assert f"cannot reach the Zoomscape backend at http://127.0.0.1:{props.port}" in props.error
    assert "zoomscape serve" in props.error
    with pytest.raises(RuntimeError):
        bpy.ops.zoomscape.connect()
    assert not props.connected and "cannot reach" in props.error


def test_bad_resolution_names_the_camera(zs, server):
    scene, props, cams = three_camera_scene(size=48)
    props.port = server.port
    with pytest.raises(RuntimeError, match="Cam.000"):
        bpy.ops.zoomscape.generate(timeout=30)
    assert "camera 'Cam.000': render width 48 px is outside 64..2048" in props.error
    assert props.job_id == ""


def test_backend_rejection_reaches_the_panel(zs, server):
    scene, props, cams = three_camera_scene()
    props.port = server.port
    props.scene_prompt = "x" * 2500  # the extension checks this too; bypass it to hit the API's 422
    request = {"engine": "procedural", "seed": 0, "scene_prompt": "x" * 2500,
               "cameras": [zs.scene_io.camera_to_wire(cams[0], scene)],
               "zoom": {"camera": "Cam.000", "factor": 4.0, "levels": [{"prompt": "a"}], "anchor": None},
               "init_rgbd": None}
    zs.runner.start(scene, request)
    assert zs.runner.run_blocking(scene, 30)
    assert "backend rejected the request" in props.error and "scene_prompt" in props.error


def test_timer_pump_follows_and_cancels_a_job(zs, server):
    """The UI path: bpy.app.timers would call runner.timer; here we call it the same way."""
    scene, props, cams = three_camera_scene()
    props.port = server.port
    request = zs.scene_io.build_request(scene, bpy.context, props)
    zs.runner.start(scene, request)
    assert zs.runner.is_running(scene)
    assert zs.runner.cancel(scene)
    deadline = time.monotonic() + 60
    while zs.runner.timer(scene.name) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert props.job_id and props.job_state == "cancelled"
    assert f"job {props.job_id} was cancelled" == props.error
    assert not zs.runner.is_running(scene)
