"""Blender scene → job request (docs/API.md): cameras, pixel intrinsics, prompts and zoom.

The intrinsics are wire.cameras.blender_intrinsics (the formula the backend uses too; tests check
it against Blender's own ``world_to_camera_view``); the limits are wire.names'.
"""
from __future__ import annotations

from .rgbd import RgbdError, render_init_rgbd
from .wire.cameras import blender_intrinsics
from .wire.names import (MAX_CAMERAS, MAX_EXTRA_VIEWS, MAX_LEVELS, MAX_MODEL_CHARS, MAX_PROMPT_CHARS,
                         MAX_RESOLUTION, MIN_RESOLUTION, MODEL_ROLES)


class SceneError(ValueError):
    """The scene cannot be turned into a request; the message says what to change."""


def render_resolution(scene) -> tuple[int, int]:
    """Rendered pixel size (resolution × percentage, as Blender computes it)."""
    r = scene.render
    pct = r.resolution_percentage
    return r.resolution_x * pct // 100, r.resolution_y * pct // 100


def camera_to_wire(obj, scene) -> dict:
    """One request camera from a camera object: name, matrix_world (scale removed), intrinsics."""
    cam = obj.data
    if obj.type != "CAMERA":
        raise SceneError(f"camera '{obj.name}': is a {obj.type.lower()} object, not a camera")
    if cam.type != "PERSP":
        raise SceneError(f"camera '{obj.name}': type is {cam.type}; only perspective cameras "
                         "are supported (set Camera ▸ Lens ▸ Type to Perspective)")
    w, h = render_resolution(scene)
    for axis, value in (("width", w), ("height", h)):
        if not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
            raise SceneError(f"camera '{obj.name}': render {axis} {value} px is outside "
                             f"{MIN_RESOLUTION}..{MAX_RESOLUTION} (Output ▸ Resolution × %)")
    r = scene.render
    K = blender_intrinsics(cam.lens, cam.sensor_width, cam.sensor_height, cam.sensor_fit,
                           cam.shift_x, cam.shift_y, w, h, r.pixel_aspect_x, r.pixel_aspect_y)
    M = obj.matrix_world.normalized()
    return {"name": obj.name, "matrix_world": [list(map(float, row)) for row in M], **K.to_dict()}


def extra_view_count(props, cameras: int) -> int:
    """How many extra views to ask for with this many cameras: none when they are off; with Auto
    one per camera (at most MAX_EXTRA_VIEWS), else the Count."""
    if not props.use_extra_views:
        return 0
    if props.extra_views_auto:
        return max(1, min(int(cameras), MAX_EXTRA_VIEWS))
    return int(props.extra_views)


def gather_cameras(scene, context, props) -> list:
    """The camera objects to send, sorted by name, always including the zoom camera.

    props.camera_source 'SELECTED' → the selected cameras; 'COLLECTION' → the cameras in
    props.camera_collection (and its children).
    """
    if props.camera_source == "COLLECTION":
        coll = props.camera_collection
        if coll is None:
            raise SceneError("cameras: no collection chosen (pick one under Cameras ▸ Collection)")
        objs = [o for o in coll.all_objects if o.type == "CAMERA"]
    else:
        selected = getattr(context, "selected_objects", None)
        if selected is None:
            selected = [o for o in scene.objects if o.select_get()]
        objs = [o for o in selected if o.type == "CAMERA"]
    zoom = zoom_camera(scene, props)
    if zoom is not None and zoom not in objs:
        objs.append(zoom)
    if not objs:
        raise SceneError("cameras: none found; select camera objects (or choose a collection) "
                         "and set a zoom camera")
    if len(objs) > MAX_CAMERAS:
        raise SceneError(f"cameras: {len(objs)} given, at most {MAX_CAMERAS}")
    return sorted(objs, key=lambda o: o.name)


def zoom_camera(scene, props):
    """The zoom camera object: props.zoom_camera, else the scene camera (may be None)."""
    return props.zoom_camera or scene.camera


def model_choice(props) -> dict | None:
    """The request's "models" (diffusers engine only): the non-blank <role>_model settings, or None."""
    if props.engine != "diffusers":
        return None
    chosen = {}
    for role in MODEL_ROLES:
        value = getattr(props, f"{role}_model").strip()
        if len(value) > MAX_MODEL_CHARS:
            raise SceneError(f"models.{role}: {len(value)} characters, at most {MAX_MODEL_CHARS}")
        if value:
            chosen[role] = value
    return chosen or None


def build_request(scene, context, props) -> dict:
    """The whole job request dict (docs/API.md) from the scene and the panel's settings.

    With props.use_scene_rgbd the zoom camera goes first and its render becomes init_rgbd
    (rgbd.py; this renders the scene, so it runs last, after every cheaper check).
    """
    prompt = props.scene_prompt.strip()
    if not prompt:
        raise SceneError("scene_prompt: empty; describe the scene in Prompts ▸ Scene")
    if len(props.scene_prompt) > MAX_PROMPT_CHARS:
        raise SceneError(f"scene_prompt: {len(props.scene_prompt)} characters, at most {MAX_PROMPT_CHARS}")
    if not 1 <= len(props.levels) <= MAX_LEVELS:
        raise SceneError(f"zoom.levels: {len(props.levels)} levels, need 1..{MAX_LEVELS} "
                         "(use + under Zoom levels)")
    levels = []
    for i, level in enumerate(props.levels):
        if not level.prompt.strip():
            raise SceneError(f"zoom.levels[{i}].prompt: empty; describe what level {i + 1} shows")
        levels.append({"prompt": level.prompt})
    zoom = zoom_camera(scene, props)
    if zoom is None:
        raise SceneError("zoom.camera: none; pick a Zoom camera or set the scene camera")
    objs = gather_cameras(scene, context, props)
    if props.use_scene_rgbd:  # the rendered view must be the first view (init_rgbd.camera)
        objs = [zoom] + [o for o in objs if o != zoom]
    cameras = [camera_to_wire(o, scene) for o in objs]
    anchor = None
    if props.zoom_target is not None:
        anchor = [float(v) for v in props.zoom_target.matrix_world.translation]
    request = {
        "engine": props.engine,
        "seed": int(props.seed),
        "scene_prompt": props.scene_prompt,
        "cameras": cameras,
        "zoom": {"camera": zoom.name, "factor": float(props.zoom_factor), "levels": levels,
                 "anchor": anchor, "mode": props.zoom_mode.lower()},
        "init_rgbd": None,
        "extra_views": extra_view_count(props, len(cameras)),
    }
    models = model_choice(props)
    if models:
        request["models"] = models
    if props.use_scene_rgbd:
        try:
            request["init_rgbd"] = render_init_rgbd(scene, zoom, cameras[0])
        except RgbdError as e:
            raise SceneError(f"init_rgbd: {e}") from None
    return request
