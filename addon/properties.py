"""The extension's settings and job state: ``Scene.zoomscape`` (saved in the .blend).

The backend token is not among them: it lives in the extension's preferences (preferences.py), so a
shared .blend never carries it; ``preferences.token_for(props)`` returns it (after moving a legacy
token saved by an older version out of the scene). (A Python @property on this PropertyGroup would
crash Blender 4.2 at exit.)
"""
from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty,
                       IntProperty, PointerProperty, StringProperty)

from .wire.names import (DEFAULT_PORT, MAX_EXTRA_VIEWS, MAX_MODEL_CHARS, MODEL_ROLES,
                         ZOOM_FACTOR_RANGE)
from .world import WORLD_DISPLAY


class ZOOMSCAPE_PG_backend(bpy.types.PropertyGroup):
    """A backend found by zeroconf (name is the service instance name)."""

    host: StringProperty(name="Host")
    port: IntProperty(name="Port", min=1, max=65535)
    engine: StringProperty(name="Engine")
    device: StringProperty(name="Device")
    version: StringProperty(name="Version")
    auth: BoolProperty(name="Token required")


class ZOOMSCAPE_PG_model(bpy.types.PropertyGroup):
    """A model the connected backend reports (name is its id or folder)."""

    role: StringProperty(name="Role")
    available: BoolProperty(name="Available", description="Its weights are on the server")


class ZOOMSCAPE_PG_level(bpy.types.PropertyGroup):
    """One zoom level: what the image shows after zooming in once more."""

    prompt: StringProperty(name="Prompt", description="What this zoom level shows")


def _backend_selected(self, context):
    """Selecting a discovered backend fills the manual host and port."""
    if 0 <= self.backends_index < len(self.backends):
        b = self.backends[self.backends_index]
        self.host, self.port = b.host, b.port


# Newer Blenders warn when a path property holds '//' unless it says it supports blend-relative
# paths; older ones do not know the option (detected through the RNA flag it comes with).
_BLEND_RELATIVE = ({"PATH_SUPPORTS_BLEND_RELATIVE"}
                   if "is_path_supports_blend_relative" in bpy.types.Property.bl_rna.properties else set())


def _world_display_changed(self, context):
    if self.job_id:
        from .world import show_world

        show_world(self.job_id, self.world_display)


def _is_camera(self, obj):
    return obj.type == "CAMERA"


def _model_search(role: str):
    """A StringProperty search callback offering the connected server's models of role."""
    def search(self, context, edit_text):
        text = edit_text.lower()
        return [(m.name, "on the server" if m.available else "not downloaded on the server")
                for m in self.server_models if m.role == role and text in m.name.lower()]
    return search


def _model_prop(role: str, label: str, what: str):
    return StringProperty(name=label, search=_model_search(role), search_options={"SUGGESTION"},
                          maxlen=MAX_MODEL_CHARS,
                          description=f"{what}: a Hugging Face model id or a folder on the server; "
                                      "empty = the server's default")


class ZOOMSCAPE_PG_settings(bpy.types.PropertyGroup):
    """Scene.zoomscape: connection, prompts, zoom settings and the state of the last job."""

    # Connection
    host: StringProperty(name="Host", default="127.0.0.1")
    port: IntProperty(name="Port", default=DEFAULT_PORT, min=1, max=65535)
    backends: CollectionProperty(type=ZOOMSCAPE_PG_backend)
    backends_index: IntProperty(default=-1, update=_backend_selected)
    connected: BoolProperty(name="Connected")
    server_info: StringProperty(name="Server")
    server_refine: StringProperty(name="Refinement", description="How long the connected server "
                                  "refines each zoom level's and the world's Gaussians")
    server_models: CollectionProperty(type=ZOOMSCAPE_PG_model)

    # Prompts
    scene_prompt: StringProperty(name="Scene", description="What the whole scene shows")
    levels: CollectionProperty(type=ZOOMSCAPE_PG_level)
    levels_index: IntProperty(default=0)

    # Generation
    zoom_factor: FloatProperty(name="Zoom factor", default=4.0,
                               min=ZOOM_FACTOR_RANGE[0], max=ZOOM_FACTOR_RANGE[1],
                               description="How much each level zooms in")
    camera_source: EnumProperty(name="Cameras", items=[
        ("SELECTED", "Selected", "The selected camera objects"),
        ("COLLECTION", "Collection", "The cameras in a collection")], default="SELECTED")
    camera_collection: PointerProperty(name="Collection", type=bpy.types.Collection)
    zoom_camera: PointerProperty(name="Zoom camera", type=bpy.types.Object, poll=_is_camera,
                                 description="The camera the zoom starts from (default: scene camera)")
    zoom_target: PointerProperty(name="Zoom target", type=bpy.types.Object,
                                 description="Where to zoom (e.g. an Empty); empty = the surface "
                                             "at the zoom camera's image centre")
    seed: IntProperty(name="Seed", default=0, min=0)
    engine: EnumProperty(name="Engine", items=[
        ("procedural", "Procedural", "Offline analytic world, no GPU or weights"),
        ("diffusers", "Diffusers", "Stable Diffusion and a depth model (GPU)")], default="procedural")
    frames_per_level: IntProperty(name="Frames per level", default=24, min=1, max=10000)
    import_levels: BoolProperty(name="Import levels", default=True,
                                description="Import every zoom level's Gaussians under a level rig "
                                            "(off: only the point cloud; the level images still "
                                            "show as thumbnails)")
    fade_width: FloatProperty(name="Fade width", default=1.0, min=0.05, max=2.0,
                              description="How many levels of zoom each level takes to fade in "
                                          "before it is fully shown (small: a hard switch)")
    zoom_mode: EnumProperty(name="Zoom", items=[
        ("DOLLY", "Dolly", "Move the camera toward the target"),
        ("LENS", "Lens", "Keep the camera still and lengthen the lens")], default="DOLLY")
    output_dir: StringProperty(name="Output", subtype="DIR_PATH", options=_BLEND_RELATIVE,
                               description="Where results are saved (empty: next to the .blend, "
                                           "or a temporary folder when it is unsaved)")
    use_extra_views: BoolProperty(name="Extra views", default=True,
                                  description="Dream more views around and between your cameras "
                                              "(never inside or behind a surface), so the world is "
                                              "complete where you fly")
    extra_views_auto: BoolProperty(name="Auto", default=True,
                                   description="One extra view per camera you send (at most "
                                               f"{MAX_EXTRA_VIEWS}): a wider rig has more to fill. "
                                               "Off: the count set here")
    extra_views: IntProperty(name="Count", default=4, min=1, max=MAX_EXTRA_VIEWS,
                             description="How many extra views to dream at most (each costs about "
                                         "as much as one of your cameras)")
    world_display: EnumProperty(name="World", items=WORLD_DISPLAY, default="GAUSSIANS",
                                update=_world_display_changed,
                                description="How the world renders: its Gaussians, or the point "
                                            "cloud (the fallback)")
    use_scene_rgbd: BoolProperty(name="Start from my scene", default=False,
                                 description="Render the zoom camera's colour and depth and let the "
                                             "world grow around your own set (it becomes the first view)")

    # Models (diffusers engine); offered from the connected server's list
    text2img_model: _model_prop("text2img", "Text to image", "The first view and the zoom levels")
    inpaint_model: _model_prop("inpaint", "Inpainting", "Fills the holes of each next view")
    depth_model: _model_prop("depth", "Depth", "Monocular depth of each view")

    # Job state (saved so results can be re-imported after a restart)
    job_id: StringProperty(name="Job")
    job_state: StringProperty(name="State")
    progress: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    stage: StringProperty(name="Stage")
    error: StringProperty(name="Error")
    last_output_dir: StringProperty(name="Results", subtype="DIR_PATH", options=_BLEND_RELATIVE)


def set_server_models(props, models) -> None:
    """Fill props.server_models from a health answer's "models" (dicts with a role and an id).

    Only the diffusers roles are kept; the id is "model_id", else "id", else "name".
    """
    props.server_models.clear()
    for entry in models or []:
        if not isinstance(entry, dict) or entry.get("role") not in MODEL_ROLES:
            continue
        model_id = entry.get("model_id") or entry.get("id") or entry.get("name")
        if not model_id:
            continue
        item = props.server_models.add()
        item.name, item.role = str(model_id)[:MAX_MODEL_CHARS], entry["role"]
        item.available = bool(entry.get("available", entry.get("status") not in ("missing",)))


def refine_summary(info) -> str:
    """What a health answer's refinement budgets mean, for the panel: "" when the server does not
    say (an older backend); else e.g. "Refine: 20 s per level, 60 s world" or "Refine: off"."""
    try:
        level = float(info.get("level_refine_seconds"))
        world = float(info.get("world_refine_seconds"))
    except (AttributeError, TypeError, ValueError):
        return ""
    if level <= 0 and world <= 0:
        return "Refine: off"
    part = lambda s, what: f"{s:g} s {what}" if s > 0 else f"{what} off"  # noqa: E731
    return f"Refine: {part(level, 'per level')}, {part(world, 'world')}"


def server_default(props, role: str) -> str:
    """The connected server's model id for role ("" if unknown)."""
    return next((m.name for m in props.server_models if m.role == role), "")


classes = (ZOOMSCAPE_PG_backend, ZOOMSCAPE_PG_model, ZOOMSCAPE_PG_level, ZOOMSCAPE_PG_settings)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register():
    _register_classes()
    bpy.types.Scene.zoomscape = PointerProperty(type=ZOOMSCAPE_PG_settings)


def unregister():
    del bpy.types.Scene.zoomscape
    _unregister_classes()
