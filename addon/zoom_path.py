"""The zoom camera path: a new camera keyframed from the zoom camera toward the anchor.

Constant perceived speed means the distance to the anchor shrinks exponentially with time
measured in levels: d(t) = d0 · p^(−t), p = zoom factor, t = frame offset / frames_per_level.
DOLLY moves the camera along the line from its start to the anchor, keeping its orientation, so
the anchor stays on the same pixel; LENS keeps the pose and lengthens the lens, f(t) = f0 · p^t.
Keyframes are written in bulk (keyframe_points.add + foreach_set), never one insert per frame.

With zoom levels (build_level_zoom) the camera stays put and the level rig's root is scaled about
the anchor instead, s(τ) = p^τ (see level_rig.py for why this keeps float32 exact 4^10 deep and
why it renders the same dolly or lens zoom); each level's fade is keyed from fade_weights, and
what cannot show is hidden from renders (a level before its fade starts and once the next level
covers all of it that is on screen; the point cloud once level 0 has taken over), which is where
a deep frame's render time went: rays crossing the fully transparent quads of covered levels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import bpy
from mathutils import Matrix

from . import importers, level_rig, splat_import, world
from .importers import JOB_KEY, ensure_collection

CLIP_MIN = 1e-6
WEIGHT_EPS = 1e-3  # a Gaussian whose opacity factor stays below this is never seen (< 1/1000)
INTERPOLATION_CONSTANT, INTERPOLATION_LINEAR = 0, 1  # indices in Keyframe.interpolation's enum


class ZoomPathError(ValueError):
    """The zoom path cannot be built; the message says what to change."""


def dive_levels(levels: int) -> int:
    """How many levels of zoom a dive through `levels` levels spans: to the deepest one.

    Level k fills the screen at its own resolution at τ = k, so a dive through N levels ends at
    τ = N − 1 on level N − 1's own pixels. Going on to τ = N would magnify the finest level p
    times with nothing finer to take over: every frame past τ = N − 1 only blurs (on the demo's
    3 levels at p = 4 the frame at τ = 3 was 24 dB against the truth, τ = 2 29 dB). A single
    level still zooms one level in: p times, on level 0 alone.
    """
    return max(int(levels) - 1, 1)


def dive_frames(levels: int, frames_per_level: float) -> int:
    """Frames of a dive through `levels` levels at F frames per level: dive_levels·F + 1, F may
    be fractional (a manifest's levels painted in substeps: wire.manifest.ZoomInfo.frames_per_level)
    as long as the dive is a whole number of frames (rounded)."""
    return int(round(dive_levels(levels) * float(frames_per_level))) + 1


def level_times(levels: int, frames_per_level: float) -> np.ndarray:
    """t: [dive_frames] time in levels for each frame offset 0..dive_levels(levels)·F."""
    return np.arange(dive_frames(levels, frames_per_level), dtype=np.float64) / frames_per_level


def dolly_positions(c0: np.ndarray, anchor: np.ndarray, p: float, t: np.ndarray) -> np.ndarray:
    """Camera centres [K, 3] on the line c0 → anchor with |c(t) − a| = |c0 − a| · p^(−t)."""
    return anchor[None, :] + (c0 - anchor)[None, :] * (p ** -t)[:, None]


def channel_fcurves(id_data, action_name: str):
    """The F-curve collection for id_data's animation (works in 4.2, 4.5 and 5.x).

    4.2: ``action.fcurves``. 4.4+/5.x (layered actions; Action.fcurves is gone in 5.0): the
    channelbag of the slot assigned to id_data (4.4–4.5 have no anim_utils helper for it: the
    first keyframe strip's, made when missing).
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
    ensure = getattr(anim_utils, "action_ensure_channelbag_for_slot", None)
    if ensure is not None:
        return ensure(action, slot).fcurves
    layer = action.layers[0] if action.layers else action.layers.new("Layer")
    strip = layer.strips[0] if layer.strips else layer.strips.new(type="KEYFRAME")
    return strip.channelbag(slot, ensure=True).fcurves


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
    if levels < 1 or not frames_per_level > 0:
        raise ZoomPathError(f"levels ({levels}) must be ≥ 1 and frames per level ({frames_per_level}) > 0")
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


def frame_changes(frames: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first frame and every frame where values changes: (frames' [K], values' [K])."""
    keep = np.ones(len(values), dtype=bool)
    keep[1:] = values[1:] != values[:-1]
    return frames[keep], values[keep]


def point_attribute(mesh, name: str, width: int, prop: str = "value") -> np.ndarray | None:
    """A point attribute of mesh (or point cloud) as float64 [N, width] (None when missing)."""
    attr = mesh.attributes.get(name)
    if attr is None:
        return None
    out = np.empty(len(attr.data) * width, dtype=np.float32)
    attr.data.foreach_get(prop, out)
    return out.reshape(-1, width).astype(np.float64)


@dataclass(frozen=True)
class ZoomView:
    """What the render sees at frame offset j: the static zoom camera and the root scaled by
    scales[j] about its rest pose. a = R_cᵀ(A − C): [3] the root's origin in camera axes,
    B = R_cᵀ R_root: [3, 3], proj: [4, 4] Blender's projection, width/height in pixels."""

    a: np.ndarray
    B: np.ndarray
    scales: np.ndarray  # [T, 3]
    proj: np.ndarray
    width: int
    height: int
    near: float


def zoom_view(scene, camera, root, scales: np.ndarray) -> ZoomView:
    """The ZoomView of camera (static) and root (rest pose = its location and rotation)."""
    Mc = np.array(camera.matrix_world.normalized(), dtype=np.float64)
    Rr = np.array(root.rotation_quaternion.to_matrix() if root.rotation_mode == "QUATERNION"
                  else root.rotation_euler.to_matrix(), dtype=np.float64)
    A = np.array(root.location, dtype=np.float64)
    r = scene.render
    w, h = r.resolution_x * r.resolution_percentage // 100, r.resolution_y * r.resolution_percentage // 100
    proj = np.array(camera.calc_matrix_camera(bpy.context.evaluated_depsgraph_get(), x=w, y=h,
                                              scale_x=r.pixel_aspect_x, scale_y=r.pixel_aspect_y),
                    dtype=np.float64)
    return ZoomView(Mc[:3, :3].T @ (A - Mc[:3, 3]), Mc[:3, :3].T @ Rr, np.asarray(scales, np.float64),
                    proj, w, h, float(camera.data.clip_start))


def on_screen(view: ZoomView, j: int, y: np.ndarray, radius: np.ndarray, margin_px: float = 2.0) -> bool:
    """Does any quad (a sphere around it: centre y: [N, 3] in root-local units, radius: [N] the
    same units) reach the view frustum at frame offset j, widened by margin_px on every side
    (Cycles' pixel filter reaches past the pixel)?

    Camera space: X_c = a + B·(s ⊙ y), radius r·max(s). With clip = P·[X_c, 1] (w = −z_c), a side
    of the frustum is the plane (1 + m)·w ± clip_x ≥ 0 (m = 2·margin/width, same for y); a sphere
    is off screen when it lies wholly outside one of them or behind the near plane.
    """
    s = view.scales[j]
    Xc = view.a + (y * s) @ view.B.T
    r = radius * float(s.max())
    P = view.proj
    mx, my = 2.0 * margin_px / view.width, 2.0 * margin_px / view.height
    inside = -Xc[:, 2] + r > view.near
    for row, m in ((P[0], mx), (P[0] * -1.0, mx), (P[1], my), (P[1] * -1.0, my)):
        plane = (1.0 + m) * P[3] + row  # ≥ 0 inside: (1 + m)·w ± clip
        dist = (Xc @ plane[:3] + plane[3]) / np.linalg.norm(plane[:3])
        inside &= dist > -r
    return bool(inside.any())


def covered_from(obj, view: ZoomView, first: int, eps: float = WEIGHT_EPS) -> int:
    """The first frame offset ≥ first from which nothing of level obj that the next level leaves
    visible reaches the screen (len(scales) when it stays on screen), once the next level is fully
    faded in (fade = fade_next = 1, so a Gaussian keeps opacity·(1 − cover)).

    The screen's preimage shrinks monotonically as the root grows about the anchor (the frustum
    scaled by p^−τ about a point inside it lies inside it), so a bisection over frames finds it.
    """
    mesh = obj.data
    opacity = splat_import.opacities(mesh)
    cover = point_attribute(mesh, splat_import.COVER_ATTR, 1)
    weight = opacity * (1.0 - (cover[:, 0] if cover is not None else 0.0))
    keep = weight > eps
    T = len(view.scales)
    if not keep.any():
        return first
    L = np.array(obj.matrix_basis, dtype=np.float64)
    pos = point_attribute(mesh, "position", 3, "vector")[keep]
    scale = point_attribute(mesh, splat_import.SCALE_ATTR, 3, "vector")[keep]  # both paths hold it
    y = pos @ L[:3, :3].T + L[:3, 3]
    # K·σ_max: the quad's half-size (the two in-plane axes are the largest), the native splat's reach
    radius = splat_import.K_SIGMA * scale.max(axis=1) * np.abs(L[:3, :3]).sum(axis=0).max()
    lo, hi = first, T  # invariant: on screen before lo is possible, off screen from hi on
    while lo < hi:
        mid = (lo + hi) // 2
        if on_screen(view, mid, y, radius):
            lo = mid + 1
        else:
            hi = mid
    return lo


def key_fades(level_objs, frame_start: float, frames_per_level: int, fade_width: float = 1.0,
              view: ZoomView | None = None, points=()) -> None:
    """Key each level's material fade to level_rig.fade_weights (linear between the two frames
    where it bends, constant outside) and its fade_next to the next level's, so that a level costs
    nothing in renders while it cannot show: hide_render is keyed until its fade starts (fade > 0),
    renders drop the Gaussians the next level has covered (set_cover_frames) and, given the
    zoom's view, all of it from the frame on which what the next level leaves of it (cover < 1)
    has left the screen for good (set_hidden_from; the viewport keeps showing everything).
    points: the world objects in the rig (point clouds, the world's Gaussians); level 0 fades in
    over them and they then fade out over level_rig.world_fade (key_points_fade,
    key_world_splats_fade: the world's Gaussians only where level 0 covers them), so at
    frame_start only the world shows.
    """
    si = level_rig.splat_import
    last = max(int(obj["zoomscape_level"]) for obj in level_objs)
    T = len(view.scales) if view is not None else int(round(last * frames_per_level)) + 1

    from_world = bool(points)

    def keys(k):
        if k == 0:
            tau = np.array([0.0, fade_width / 8.0]) if from_world else np.array([0.0])
        else:
            tau = np.array([k - fade_width, float(k)])
        return frame_start + frames_per_level * tau, level_rig.fade_weights(tau, k, fade_width, from_world), tau

    offsets = np.arange(T)
    tau_all = offsets / frames_per_level
    for obj in level_objs:
        k = int(obj["zoomscape_level"])
        frames, w, tau = keys(k)
        owner, path, path_next = si.fade_channel(obj)  # the quads' material or the native modifier
        curves = channel_fcurves(owner, f"{obj.name} Fade")
        set_keyframes(curves, path, 0, frames, w)
        if k < last:  # the part of this level that level k+1 covers fades out as k+1 fades in
            set_keyframes(curves, path_next, 0, *keys(k + 1)[:2])
        set_cover_frames(obj, frame_start + frames_per_level * (k + 1 - fade_width) if k < last
                         else si.NEVER, frames_per_level * fade_width)
        shown = level_rig.fade_weights(tau_all, k, fade_width, from_world) > 0
        gone = si.NEVER
        if view is not None and k < last:  # fully faded over from the frame where τ ≥ k + 1
            first = int(np.ceil((k + 1) * frames_per_level - 1e-9))
            if first < T and (j := covered_from(obj, view, first)) < T:
                gone = float(frame_start + j)
        set_hidden_from(obj, gone)
        obj_curves = channel_fcurves(obj, f"{obj.name} Visibility")
        if shown.all():
            remove_fcurve(obj_curves, "hide_render")
            obj.hide_render = False
        else:
            set_keyframes(obj_curves, "hide_render", 0, *frame_changes(frame_start + offsets, (~shown).astype(float)),
                          INTERPOLATION_CONSTANT)
    for obj in points:
        if obj.get("zoomscape_kind") == world.KIND:
            key_world_splats_fade(obj, frame_start, frames_per_level, fade_width, view)
        else:
            key_points_fade(obj, frame_start, frames_per_level, fade_width)


def set_cover_frames(obj, start: float, frames: float) -> None:
    """Tell obj's splat node group the frames of the next level's fade-in (from start, lasting
    frames), so renders drop the Gaussians that level covers once they are gone (no-op for a
    node group made before it had these inputs)."""
    si = splat_import
    mod = next((m for m in obj.modifiers if m.type == "NODES" and m.node_group is not None
                and si.COVER_START in m.node_group.interface.items_tree), None)
    if mod is None:
        return
    items = mod.node_group.interface.items_tree
    si.set_modifier_input(mod, items[si.COVER_START].identifier, float(start))
    si.set_modifier_input(mod, items[si.COVER_FRAMES].identifier, float(max(frames, 1e-6)))


def set_hidden_from(obj, frame: float) -> None:
    """Renders drop every Gaussian of obj from frame on (no-op for an older node group)."""
    si = splat_import
    mod = next((m for m in obj.modifiers if m.type == "NODES" and m.node_group is not None
                and si.HIDDEN_FROM in m.node_group.interface.items_tree), None)
    if mod is not None:
        si.set_modifier_input(mod, mod.node_group.interface.items_tree[si.HIDDEN_FROM].identifier, float(frame))


def key_points_fade(obj, frame_start: float, frames_per_level: int, fade_width: float = 1.0) -> None:
    """Fade a point cloud of the rig out over level_rig.world_fade (τ ∈ [fade_width/8,
    5·fade_width/8]: the fade-out value of its own copy of the points material, linear like the
    levels' fades) and hide it from renders once it is gone: by then level 0 carries the same
    surface inside the zoom view, at the resolution the zoom needs."""
    mat = obj.data.materials[0]
    if mat.name == importers.MATERIAL_NAME:  # the shared material: fade a copy of our own
        mat = mat.copy()
        mat.name = f"{obj.name} Points"
        mat[JOB_KEY] = obj.get(JOB_KEY, "")
        importers.set_points_material(obj, mat)
    path = f'nodes["{importers.FADE_OUT_NODE}"].outputs[0].default_value'
    t0, t1 = level_rig.world_fade(fade_width)
    begin, end = frame_start + frames_per_level * t0, frame_start + frames_per_level * t1
    set_keyframes(channel_fcurves(mat.node_tree, f"{mat.name} Fade"), path, 0,
                  np.array([begin, end]), np.array([0.0, 1.0]))
    mod = obj.modifiers["Zoomscape Points"]
    items = mod.node_group.interface.items_tree
    if importers.HIDDEN_FROM in items:
        importers.set_modifier_input(mod, items[importers.HIDDEN_FROM].identifier, float(np.ceil(end)))


def key_world_splats_fade(obj, frame_start: float, frames_per_level: int, fade_width: float = 1.0,
                          view: ZoomView | None = None) -> None:
    """Fade the world's splat object out over level_rig.world_fade (linear), as key_points_fade
    does for the points.

    With a cover attribute (level_rig.world_cover: what level 0's camera sees of each Gaussian)
    only the covered part goes: fade stays 1 and fade_next rises 0 → 1, so a Gaussian keeps
    1 − cover of its opacity (splat_import); what level 0 cannot see (behind a nearer surface,
    uncovered as a dolly passes it) stays, and renders drop the world once none of that is on
    screen (covered_from, given the zoom's view). Without one the whole object fades (fade
    1 → 0) and is dropped from renders once gone.
    """
    t0, t1 = level_rig.world_fade(fade_width)
    begin, end = frame_start + frames_per_level * t0, frame_start + frames_per_level * t1
    owner, path, path_next = splat_import.fade_channel(obj)
    curves = channel_fcurves(owner, f"{obj.name} Fade")
    frames = np.array([begin, end])
    if point_attribute(obj.data, splat_import.COVER_ATTR, 1) is None:
        set_keyframes(curves, path, 0, frames, np.array([1.0, 0.0]))
        remove_fcurve(curves, path_next)
        set_hidden_from(obj, float(np.ceil(end)))
        return
    set_keyframes(curves, path, 0, frames[:1], np.array([1.0]))
    set_keyframes(curves, path_next, 0, frames, np.array([0.0, 1.0]))
    set_cover_frames(obj, begin, end - begin)
    gone = splat_import.NEVER
    if view is not None:
        first = int(np.ceil(frames_per_level * t1 - 1e-9))
        if first < len(view.scales) and (j := covered_from(obj, view, first)) < len(view.scales):
            gone = float(frame_start + j)
    set_hidden_from(obj, gone)


def key_dolly_clip_end(cam_obj, anchor: np.ndarray, frames: np.ndarray, scale: np.ndarray) -> None:
    """Keep a dollying rig's far clip where the user's camera had it, in the world's metres.

    The rig scales the world by s = p^τ about the anchor while the camera stays, so a point at
    depth D (level-0 metres, along the view axis) is at d₀ + (D − d₀)·s in the render (d₀ the
    anchor's depth): the sky and the far ground would cross a constant clip_end within a level or
    two. clip_end(τ) = d₀ + (clip_end − d₀)·s keeps the far clip at clip_end level-0 metres (the near
    clip stays constant in the render, clip_start·p^−τ in level-0 metres: it follows the dive in)."""
    M = np.array(cam_obj.matrix_world, dtype=np.float64)
    d0 = float((anchor - M[:3, 3]) @ -M[:3, 2])
    clip_end = float(cam_obj.data.clip_end)
    if not clip_end > d0:
        return
    curves = channel_fcurves(cam_obj.data, f"{cam_obj.data.name} Clip")
    set_keyframes(curves, "clip_end", 0, frames, d0 + (clip_end - d0) * np.asarray(scale, dtype=np.float64))


def build_level_zoom(scene, source, root, level_objs, factor: float, frames_per_level: int,
                     mode: str = "DOLLY", job_id: str = "", name: str = "Zoomscape Zoom",
                     fade_width: float = 1.0, levels: int | None = None, matrix=None):
    """Key the zoom through the level rig → the (static) zoom camera.

    The zoom dives through N = levels (default: the number of level objects) levels in
    dive_levels(N)·F + 1 frames from frame_start, ending on the deepest level's own pixels: the
    root's scale is keyed every frame to p^τ (τ = frame offset / F), the levels' fades from
    fade_weights. The camera is a static copy of source made the scene camera; its near
    clip is constant, which in the scaled rig is clip_start·p^−τ in level-0 metres (it follows the
    zoom), and in DOLLY its far clip is keyed to stay at clip_end level-0 metres (key_dolly_clip_end;
    LENS does not scale depth).
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
    if mode == "DOLLY":
        key_dolly_clip_end(obj, anchor, frames, scales[:, 0])
    points = [o for o in root.children if o.get("zoomscape_kind") in ("points", world.KIND)]
    key_fades(level_objs, scene.frame_start, frames_per_level, fade_width,
              zoom_view(scene, obj, root, scales), points)
    root["zoomscape_zoom_mode"] = mode
    scene.frame_end = int(frames[-1])
    scene.camera = obj
    return obj


def build_zoom_path(scene, source, anchor, factor: float, levels: int, frames_per_level: int,
                    mode: str = "DOLLY", job_id: str = "", name: str = "Zoomscape Zoom"):
    """Key a new zoom camera from source's pose toward anchor → the camera object.

    anchor: [3] world point; factor p: zoom per level; levels N; frames_per_level F. Sets the scene
    frame range to dive_levels(N)·F + 1 frames from frame_start (the zoom of the N levels' dive,
    p^(N−1), or p for one level) and makes the new camera the scene camera.
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
