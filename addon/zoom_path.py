"""The zoom camera path: a new camera keyframed from the zoom camera toward the anchor.

Constant perceived speed means the distance to the anchor shrinks exponentially with time
measured in levels: d(t) = d0 · p^(−t), p = zoom factor, t = frame offset / frames_per_level.
DOLLY moves the camera along the line from its start to the anchor, keeping its orientation, so
the anchor stays on the same pixel; LENS keeps the pose and lengthens the lens, f(t) = f0 · p^t.
Keyframes are written in bulk (keyframe_points.add + foreach_set), never one insert per frame.

With zoom levels (build_level_zoom) the camera stays put and the level rig's root is scaled about
the anchor instead, s(τ) = p^τ (see level_rig.py for why this keeps float32 exact 4^10 deep and
why it renders the same dolly or lens zoom); each level's fade is keyed from fade_weights.
"""
from __future__ import annotations

import numpy as np

import bpy
from mathutils import Matrix

from . import level_rig
from .importers import JOB_KEY, ensure_collection

CLIP_MIN = 1e-6
INTERPOLATION_CONSTANT, INTERPOLATION_LINEAR = 0, 1  # indices in Keyframe.interpolation's enum


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


def set_keyframes(fcurves, data_path: str, index: int, frames: np.ndarray, values: np.ndarray,
                  interpolation: int = INTERPOLATION_LINEAR):
    """Replace the F-curve (data_path, index) with keys at (frames[k], values[k]) (linear by default)."""
    fc = fcurves.find(data_path, index=index)
    if fc is not None:
        fcurves.remove(fc)
    fc = fcurves.new(data_path, index=index)
    n = len(frames)
    fc.keyframe_points.add(n)
    co = np.empty((n, 2), dtype=np.float32)
    co[:, 0], co[:, 1] = frames, values
    fc.keyframe_points.foreach_set("co", co.ravel())
    fc.keyframe_points.foreach_set("interpolation", np.full(n, interpolation, dtype=np.int32))
    fc.update()
    return fc


def copy_camera_data(src, name: str):
    """A new camera datablock with src's lens, sensor, shift and clipping."""
    cam = bpy.data.cameras.new(name)
    for attr in ("type", "lens_unit", "lens", "sensor_fit", "sensor_width", "sensor_height",
                 "shift_x", "shift_y", "clip_start", "clip_end"):
        setattr(cam, attr, getattr(src, attr))
    return cam


def check_zoom(source, anchor, factor: float, levels: int, frames_per_level: int) -> float:
    """Validate the zoom settings → the anchor's depth in front of source (metres)."""
    if source is None or source.type != "CAMERA":
        raise ZoomPathError("zoom camera: none; pick a Zoom camera or set the scene camera")
    if not 1.0 < factor:
        raise ZoomPathError(f"zoom factor: {factor} must be > 1")
    if levels < 1 or frames_per_level < 1:
        raise ZoomPathError(f"levels ({levels}) and frames per level ({frames_per_level}) must be ≥ 1")
    M = np.array(source.matrix_world.normalized(), dtype=np.float64)
    a = np.asarray(anchor, dtype=np.float64).reshape(3)
    depth = float((a - M[:3, 3]) @ -M[:3, 2])  # along the view axis (camera looks down −Z)
    if not np.isfinite(depth) or depth <= 0.0:
        raise ZoomPathError(f"zoom target {a.round(3).tolist()} is behind camera '{source.name}'; "
                            "move the Zoom target in front of it")
    return depth


def new_zoom_camera(scene, source, anchor: np.ndarray, job_id: str, name: str, matrix=None):
    """A copy of source (pose, lens, sensor, clipping) tagged as this job's zoom camera; replaces
    the job's earlier zoom camera → the object. matrix: a 4×4 pose to use instead of source's
    (the job's zoom camera as the backend aimed it at the anchor)."""
    obj = bpy.data.objects.new(name, copy_camera_data(source.data, name))
    # Set before source may be removed below.
    obj.matrix_world = source.matrix_world.normalized() if matrix is None else Matrix(matrix)
    for old in [o for o in bpy.data.objects if o.get(JOB_KEY, None) == job_id
                and o.get("zoomscape_kind") == "zoom_camera"]:
        data = old.data
        bpy.data.objects.remove(old, do_unlink=True)
        if data.users == 0:
            bpy.data.cameras.remove(data)
    obj.name, obj.data.name = name, name  # take the name back from the removed camera
    obj[JOB_KEY], obj["zoomscape_kind"] = job_id, "zoom_camera"
    obj["zoomscape_anchor"] = [float(v) for v in anchor]
    ensure_collection(scene).objects.link(obj)
    return obj


def root_scales(factor: float, t: np.ndarray, mode: str) -> np.ndarray:
    """Scale of the level root [T, 3] at times t: p^τ on all axes (DOLLY) or on the camera's x, y
    only (LENS: the image of a lens of focal length f0·p^τ)."""
    m = factor ** np.asarray(t, dtype=np.float64)
    if mode == "DOLLY":
        return np.stack([m, m, m], axis=1)
    if mode == "LENS":
        return np.stack([m, m, np.ones_like(m)], axis=1)
    raise ZoomPathError(f"zoom mode: '{mode}' is not DOLLY or LENS")


def remove_fcurve(fcurves, data_path: str, index: int = 0) -> None:
    fc = fcurves.find(data_path, index=index)
    if fc is not None:
        fcurves.remove(fc)


def key_fades(level_objs, frame_start: float, frames_per_level: int, fade_width: float = 1.0) -> None:
    """Key each level's material fade to level_rig.fade_weights (linear between the two frames
    where it bends, constant outside) and its fade_next to the next level's, and hide a level from renders until its fade starts so it
    costs nothing before it appears (the viewport keeps showing it, transparent)."""
    si = level_rig.splat_import
    path, path_next = (f'nodes["{node}"].outputs[0].default_value' for node in (si.FADE_NODE, si.FADE_NEXT_NODE))
    last = max(int(obj["zoomscape_level"]) for obj in level_objs)

    def keys(k):
        tau = np.array([0.0]) if k == 0 else np.array([k - fade_width, float(k)])
        return frame_start + frames_per_level * tau, level_rig.fade_weights(tau, k, fade_width), tau

    for obj in level_objs:
        k = int(obj["zoomscape_level"])
        frames, w, tau = keys(k)
        curves = channel_fcurves(obj.data.materials[0].node_tree, f"{obj.name} Fade")
        set_keyframes(curves, path, 0, frames, w)
        if k < last:  # the part of this level that level k+1 covers fades out as k+1 fades in
            set_keyframes(curves, path_next, 0, *keys(k + 1)[:2])
        obj_curves = channel_fcurves(obj, f"{obj.name} Visibility")
        if tau[0] > 0:
            set_keyframes(obj_curves, "hide_render", 0, np.array([frame_start, frames[0]]),
                          np.array([1.0, 0.0]), INTERPOLATION_CONSTANT)
        else:
            remove_fcurve(obj_curves, "hide_render")
            obj.hide_render = False


def build_level_zoom(scene, source, root, level_objs, factor: float, frames_per_level: int,
                     mode: str = "DOLLY", job_id: str = "", name: str = "Zoomscape Zoom",
                     fade_width: float = 1.0, levels: int | None = None, matrix=None):
    """Key the zoom through the level rig → the (static) zoom camera.

    The zoom runs N = levels (default: the number of level objects) levels in N·F + 1 frames from
    frame_start: the root's scale is keyed every frame to p^τ (τ = frame offset / F), the levels'
    fades from fade_weights. The camera is a static copy of source made the scene camera; its clip
    planes are constant, which in the scaled rig is clip·p^−τ in level-0 metres (they follow the zoom).
    matrix: the pose the levels were painted from (manifest zoom.matrix_world), default source's.
    """
    anchor = np.array(root.matrix_world.translation, dtype=np.float64)
    levels = levels or len(level_objs)
    check_zoom(source, anchor, factor, levels, frames_per_level)
    obj = new_zoom_camera(scene, source, anchor, job_id, name, matrix)
    t = level_times(levels, frames_per_level)
    frames = scene.frame_start + np.arange(len(t), dtype=np.float64)
    scales = root_scales(factor, t, mode)
    root_curves = channel_fcurves(root, f"{root.name} Zoom")
    for i in range(3):
        set_keyframes(root_curves, "scale", i, frames, scales[:, i])
    key_fades(level_objs, scene.frame_start, frames_per_level, fade_width)
    root["zoomscape_zoom_mode"] = mode
    scene.frame_end = int(frames[-1])
    scene.camera = obj
    return obj


def build_zoom_path(scene, source, anchor, factor: float, levels: int, frames_per_level: int,
                    mode: str = "DOLLY", job_id: str = "", name: str = "Zoomscape Zoom"):
    """Key a new zoom camera from source's pose toward anchor → the camera object.

    anchor: [3] world point; factor p: zoom per level; levels N; frames_per_level F. Sets the scene
    frame range to N·F + 1 frames from frame_start and makes the new camera the scene camera.
    """
    check_zoom(source, anchor, factor, levels, frames_per_level)
    M = np.array(source.matrix_world.normalized(), dtype=np.float64)
    c0, a = M[:3, 3], np.asarray(anchor, dtype=np.float64).reshape(3)
    obj = new_zoom_camera(scene, source, a, job_id, name)
    cam = obj.data

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
