"""Results on disk (synthetic PLY + manifest written with the extension's wire copy, no backend) →
point object + zoom path via the runner and the import/build operators; the job id survives save
and reload."""
import os

import numpy as np
import pytest

import bpy

from conftest import add_camera


def write_results(zs, out_dir, job_id, cam, n=300, anchor=(0.0, 0.0, 1.0), levels=2, factor=3.0):
    """A job's results without zoom levels: pointcloud.ply and a manifest whose zoom is cam's
    (written as the backend writes it: wire.manifest.write_manifest) → the points [N, 3]."""
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(5)
    xyz = np.column_stack([rng.uniform(-2, 2, n), rng.uniform(-1, 1, n), rng.uniform(0, 2, n)]).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    ply, wm = zs.wire.ply, zs.wire.manifest
    ply.write_point_ply(os.path.join(out_dir, "pointcloud.ply"),
                        ply.PointCloud(xyz, rgb, np.full(n, 0.02, np.float32)))
    wire_cam = zs.scene_io.camera_to_wire(cam, bpy.context.scene)
    zoom = wm.ZoomInfo(cam.name, np.array(wire_cam["matrix_world"]), zs.wire.cameras.Intrinsics.from_dict(wire_cam),
                       factor, [f"l{i}" for i in range(levels)], np.array(anchor, dtype=np.float64))
    wm.write_manifest(out_dir, wm.Manifest(job_id, "pointcloud.ply", n, engine="procedural", scene_prompt="x",
                                           zoom=zoom))
    return xyz


def test_finish_imports_and_keys_then_survives_reload(zs, tmp_path):
    scene = bpy.context.scene
    cam = add_camera("Cam.000", (0.0, -6.0, 1.0))
    scene.camera = cam
    props = scene.zoomscape
    props.frames_per_level = 5
    props.job_id = "job123"
    out_dir = str(tmp_path / "out" / "job123")
    xyz = write_results(zs, out_dir, "job123", cam)
    props.last_output_dir = out_dir
    zs.runner.finish(scene, out_dir)
    pts = [o for o in bpy.data.objects if o.get("zoomscape_kind") == "points"]
    assert len(pts) == 1 and len(pts[0].data.vertices) == len(xyz)
    zoom = scene.camera
    assert zoom.get("zoomscape_kind") == "zoom_camera" and scene.frame_end - scene.frame_start == 1 * 5  # 2 levels: to level 1
    assert props.job_state == "done" and props.error == ""

    blend = str(tmp_path / "scene.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert not hasattr(bpy.context.scene, "zoomscape")
    import blender_ext  # re-enable (factory settings disabled the extension), then reopen
    blender_ext.enable(os.path.dirname(os.path.dirname(zs.__file__)))
    bpy.ops.wm.open_mainfile(filepath=blend)
    props = bpy.context.scene.zoomscape
    assert props.job_id == "job123"
    # delete the imported objects, then re-import from the saved job id
    for o in [o for o in bpy.data.objects if o.get("zoomscape_kind")]:
        bpy.data.objects.remove(o)
    assert bpy.ops.zoomscape.import_results() == {"FINISHED"}
    pts = [o for o in bpy.data.objects if o.get("zoomscape_kind") == "points"]
    assert len(pts) == 1 and len(pts[0].data.vertices) == len(xyz)
    props.zoom_mode = "LENS"
    assert bpy.ops.zoomscape.build_zoom_path() == {"FINISHED"}
    zoom = bpy.context.scene.camera
    assert zoom.get("zoomscape_kind") == "zoom_camera"
    assert zoom.data.animation_data is not None


def test_level_list_operators(zs):
    props = bpy.context.scene.zoomscape
    for text in ("a", "b", "c"):
        bpy.ops.zoomscape.level_add()
        props.levels[props.levels_index].prompt = text
    props.levels_index = 2
    bpy.ops.zoomscape.level_move(direction="UP")
    assert [lv.prompt for lv in props.levels] == ["a", "c", "b"] and props.levels_index == 1
    bpy.ops.zoomscape.level_move(direction="UP")
    assert bpy.ops.zoomscape.level_move(direction="UP") == {"CANCELLED"}
    assert [lv.prompt for lv in props.levels] == ["c", "a", "b"]
    bpy.ops.zoomscape.level_move(direction="DOWN")
    assert [lv.prompt for lv in props.levels] == ["a", "c", "b"]
    bpy.ops.zoomscape.level_remove()
    assert [lv.prompt for lv in props.levels] == ["a", "b"] and props.levels_index == 1


def test_disable_unregisters_everything(zs):
    import addon_utils
    module = zs.__name__
    assert module.startswith("bl_ext.") and zs.__package__ == module
    assert hasattr(bpy.types.Scene, "zoomscape") and hasattr(bpy.types, "ZOOMSCAPE_PT_panel")
    assert hasattr(bpy.types, "ZOOMSCAPE_OT_generate")
    addon_utils.disable(module, default_set=True)
    assert not hasattr(bpy.types.Scene, "zoomscape") and not hasattr(bpy.types, "ZOOMSCAPE_PT_panel")
    assert not hasattr(bpy.types, "ZOOMSCAPE_OT_generate")
    with pytest.raises((AttributeError, RuntimeError)):
        bpy.ops.zoomscape.generate()
