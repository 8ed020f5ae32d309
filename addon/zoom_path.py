"""The zoom camera path: a new camera keyframed from the zoom camera toward the anchor.

Constant perceived speed means the distance to the anchor shrinks exponentially with time
measured in levels: d(t) = d0 · p^(−t), p = zoom factor, t = frame offset / frames_per_level.
DOLLY moves the camera along the line from its start to the anchor, keeping its orientation, so
the anchor stays on the same pixel; LENS keeps the pose and lengthens the lens, f(t) = f0 · p^t.
Keyframes are written in bulk (keyframe_points.add + foreach_set), never one insert per frame.
"""
from __future__ import annotations

import numpy as np

import bpy

from .importers import JOB_KEY, ensure_collection

CLIP_MIN = 1e-6
INTERPOLATION_LINEAR = 1  # index of 'LINEAR' in Keyframe.interpolation's enum


class ZoomPathError(ValueError):
    """The zoom path cannot be built; the message says what to change."""


def level_times(levels: int, frames_per_level: int) -> np.ndarray:
    """t: [levels·frames_per_level + 1] time in levels for each frame offset 0..levels·F."""
    return np.arange(levels * frames_per_level + 1, dtype=np.float64) / frames_per_level


def dolly_positions(c0: np.ndarray, anchor: np.ndarray, p: float, t: np.ndarray) -> np.ndarray:
    """Camera centres [K, 3] on the line c0 → anchor with |c(t) − a| = |c0 − a| · p^(−t)."""
    return anchor[None, :] + (c0 - anchor)[None, :] * (p ** -t)[:, None]


def channel_fcurves(id_data, action_name: str):
    """The F-curve collection for id_data's animation (works in 4.2 and 5.x).

    4.2: ``action.fcurves``. 4.4+/5.x (layered actions; Action.fcurves is gone in 5.0): the
    channelbag of the slot assigned to id_data.
    """
    anim = id_data.animation_data or id_data.animation_data_create()
    action = anim.action
    if action is None:
        action = bpy.data.actions.new(action_name)
        anim.action = action
    if not hasattr(action, "slots"):
        return action.fcurves
    from bpy_extras import anim_utils
    slot = anim.action_slot
    if slot is None:
        slot = action.slots.new(id_type=id_data.id_type, name=id_data.name)
        anim.action_slot = slot
    return anim_utils.action_ensure_channelbag_for_slot(action, slot).fcurves


def set_keyframes(fcurves, data_path: str, index: int, frames: np.ndarray, values: np.ndarray):
    """Replace the F-curve (data_path, index) with linear keys at (frames[k], values[k])."""
    fc = fcurves.find(data_path, index=index)
    if fc is not None:
        fcurves.remove(fc)
    fc = fcurves.new(data_path, index=index)
    n = len(frames)
    fc.keyframe_points.add(n)
    co = np.empty((n, 2), dtype=np.float32)
    co[:, 0], co[:, 1] = frames, values
    fc.keyframe_points.foreach_set("co", co.ravel())
    fc.keyframe_points.foreach_set("interpolation", np.full(n, INTERPOLATION_LINEAR, dtype=np.int32))
    fc.update()
    return fc


def copy_camera_data(src, name: str):
    """A new camera datablock with src's lens, sensor, shift and clipping."""
    cam = bpy.data.cameras.new(name)
    for attr in ("type", "lens_unit", "lens", "sensor_fit", "sensor_width", "sensor_height",
                 "shift_x", "shift_y", "clip_start", "clip_end"):
        setattr(cam, attr, getattr(src, attr))
    return cam


def build_zoom_path(scene, source, anchor, factor: float, levels: int, frames_per_level: int,
                    mode: str = "DOLLY", job_id: str = "", name: str = "Zoomscape Zoom"):
    """Key a new zoom camera from source's pose toward anchor → the camera object.

    anchor: [3] world point; factor p: zoom per level; levels N; frames_per_level F. Sets the scene
    frame range to N·F + 1 frames from frame_start and makes the new camera the scene camera.
    """
    if source is None or source.type != "CAMERA":
        raise ZoomPathError("zoom camera: none; pick a Zoom camera or set the scene camera")
    if not 1.0 < factor:
        raise ZoomPathError(f"zoom factor: {factor} must be > 1")
    if levels < 1 or frames_per_level < 1:
        raise ZoomPathError(f"levels ({levels}) and frames per level ({frames_per_level}) must be ≥ 1")
    M = np.array(source.matrix_world.normalized(), dtype=np.float64)
    c0, a = M[:3, 3], np.asarray(anchor, dtype=np.float64).reshape(3)
    depth = float((a - c0) @ -M[:3, 2])  # along the view axis (camera looks down −Z)
    if not np.isfinite(depth) or depth <= 0.0:
        raise ZoomPathError(f"zoom target {a.round(3).tolist()} is behind camera '{source.name}'; "
                            "move the Zoom target in front of it")
    for obj in [o for o in bpy.data.objects if o.get(JOB_KEY, None) == job_id
                and o.get("zoomscape_kind") == "zoom_camera"]:
        data = obj.data
        bpy.data.objects.remove(obj, do_unlink=True)
        if data.users == 0:
            bpy.data.cameras.remove(data)

    cam = copy_camera_data(source.data, name)
    obj = bpy.data.objects.new(name, cam)
    obj[JOB_KEY], obj["zoomscape_kind"] = job_id, "zoom_camera"
    obj["zoomscape_anchor"] = [float(v) for v in a]
    ensure_collection(scene).objects.link(obj)
    obj.matrix_world = source.matrix_world.normalized()

    t = level_times(levels, frames_per_level)
    frames = scene.frame_start + np.arange(len(t), dtype=np.float64)
    shrink = factor ** -t
    obj_curves = channel_fcurves(obj, f"{name} Action")
    cam_curves = channel_fcurves(cam, f"{name} Lens Action")
    if mode == "DOLLY":
        pos = dolly_positions(c0, a, factor, t)
        for i in range(3):
            set_keyframes(obj_curves, "location", i, frames, pos[:, i])
        set_keyframes(cam_curves, "clip_start", 0, frames, np.maximum(cam.clip_start * shrink, CLIP_MIN))
        set_keyframes(cam_curves, "clip_end", 0, frames, np.maximum(cam.clip_end * shrink, 10 * CLIP_MIN))
    elif mode == "LENS":
        set_keyframes(cam_curves, "lens", 0, frames, cam.lens / shrink)
    else:
        raise ZoomPathError(f"zoom mode: '{mode}' is not DOLLY or LENS")
    scene.frame_end = int(frames[-1])
    scene.camera = obj
    return obj
