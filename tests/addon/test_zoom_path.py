"""Zoom camera keyframes: exponential distance to the anchor, anchor fixed on screen (DOLLY),
exponential lens (LENS), bulk keys with linear interpolation."""
import numpy as np
import pytest

import bpy
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from conftest import add_camera


def fcurves_of(id_data):
    anim = id_data.animation_data
    if hasattr(anim.action, "slots"):
        from bpy_extras import anim_utils
        return anim_utils.action_get_channelbag_for_slot(anim.action, anim.action_slot).fcurves
    return anim.action.fcurves


@pytest.mark.parametrize("factor,levels,fpl", [(4.0, 3, 6), (1.5, 2, 5), (8.0, 2, 4), (2.0, 1, 3)])
def test_dolly_is_exponential_and_anchor_stays_on_its_pixel(zs, factor, levels, fpl):
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 160, 96
    scene.frame_start = 5
    src = add_camera("Start", (1.0, -8.0, 2.5), (1.3, 0.05, 0.2), lens=30.0)
    src.data.shift_x = 0.1
    bpy.context.view_layer.update()
    anchor = np.array([1.6, 0.4, 0.9])
    start_view = world_to_camera_view(scene, src, Vector(anchor))
    cam = zs.zoom_path.build_zoom_path(scene, src, anchor, factor, levels, fpl, "DOLLY", "j1")
    span = max(levels - 1, 1)  # the dive ends on the deepest level (level N−1 at τ = N−1); one level: p
    n = span * fpl + 1
    assert (scene.frame_start, scene.frame_end, scene.camera) == (5, 5 + n - 1, cam)
    loc_curves = [fc for fc in fcurves_of(cam) if fc.data_path == "location"]
    assert len(loc_curves) == 3 and all(len(fc.keyframe_points) == n for fc in loc_curves)
    assert all(k.interpolation == "LINEAR" for fc in loc_curves for k in fc.keyframe_points)
    d0 = np.linalg.norm(np.array(src.matrix_world.translation) - anchor)
    dist, views, clips = [], [], []
    for f in range(scene.frame_start, scene.frame_end + 1):
        scene.frame_set(f)
        c = np.array(cam.matrix_world.translation, dtype=np.float64)
        dist.append(np.linalg.norm(c - anchor))
        views.append(world_to_camera_view(scene, cam, Vector(anchor))[:3])
        clips.append(cam.data.clip_start)
    dist = np.array(dist)
    per_level = dist[:-fpl] / dist[fpl:]
    np.testing.assert_allclose(per_level, factor, rtol=1e-6)
    np.testing.assert_allclose(dist[0], d0, rtol=1e-6)
    np.testing.assert_allclose(dist[-1], d0 * factor ** -span, rtol=1e-5)
    views = np.array(views)
    np.testing.assert_allclose(views[:, :2] * [160, 96], np.tile(np.array(start_view[:2]) * [160, 96], (n, 1)),
                               atol=1e-3)
    np.testing.assert_allclose(views[:, 2] / views[0, 2], dist / dist[0], rtol=1e-5)  # depth shrinks
    np.testing.assert_allclose(np.array(clips) / clips[0], dist / dist[0], rtol=1e-5)
    np.testing.assert_allclose(np.array(cam.matrix_world.to_3x3()), np.array(src.matrix_world.to_3x3()), atol=1e-6)


def test_lens_mode_and_rebuild_replaces(zs):
    scene = bpy.context.scene
    src = add_camera("Start", (0.0, -5.0, 1.0), lens=25.0)
    bpy.context.view_layer.update()
    cam = zs.zoom_path.build_zoom_path(scene, src, (0, 0, 1.0), 2.0, 2, 4, "LENS", "j2")
    lenses = []
    for f in range(scene.frame_start, scene.frame_end + 1):
        scene.frame_set(f)
        lenses.append(cam.data.lens)
        np.testing.assert_allclose(cam.matrix_world.translation, src.matrix_world.translation, atol=1e-6)
    lenses = np.array(lenses)
    np.testing.assert_allclose(lenses / 25.0, 2.0 ** (np.arange(5) / 4), rtol=1e-6)  # 2 levels: to level 1
    again = zs.zoom_path.build_zoom_path(scene, src, (0, 0, 1.0), 2.0, 1, 4, "DOLLY", "j2")
    zoom_cams = [o for o in bpy.data.objects if o.get("zoomscape_kind") == "zoom_camera"]
    assert zoom_cams == [again]


def test_anchor_behind_camera_is_an_error(zs):
    scene = bpy.context.scene
    src = add_camera("Start", (0.0, -5.0, 1.0))  # looks along +Y
    bpy.context.view_layer.update()
    with pytest.raises(zs.zoom_path.ZoomPathError, match="behind camera 'Start'"):
        zs.zoom_path.build_zoom_path(scene, src, (0, -9.0, 1.0), 4.0, 1, 4)
