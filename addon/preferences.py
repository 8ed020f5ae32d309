"""The extension's preferences: the backend token lives here, never in a .blend, whether an
import keeps the scene's view transform (colour.py) and, on Blender 5.3+, its Cycles samples and
denoiser (native_render.py).

A token in Scene.zoomscape would be saved with the file and shared with it. Preferences are per
user (userpref.blend). Files saved by older versions may still hold a scene token (an ID property
"token" of Scene.zoomscape): :func:`take_scene_token` moves it into the preferences and deletes it
from the scene, on file load (a load_post handler) and whenever a connection is made, so it is used
once and the next save of the .blend no longer contains it.
"""
from __future__ import annotations

import bpy
from bpy.app.handlers import persistent
from bpy.props import BoolProperty, StringProperty

LEGACY_KEY = "token"  # the ID property older versions saved in Scene.zoomscape


class ZOOMSCAPE_AP_preferences(bpy.types.AddonPreferences):
    """Edit ▸ Preferences ▸ Add-ons ▸ Zoomscape."""

    bl_idname = __package__

    token: StringProperty(name="Token", subtype="PASSWORD",
                          description="Printed by 'zoomscape serve --lan'; empty for a backend on this "
                                      "machine. Kept in your preferences, never saved in a .blend")
    keep_view_transform: BoolProperty(
        name="Keep my view transform", default=False,
        description="Importing results leaves the scene's view transform and look as they are. Off: "
                    "the import sets the Standard view transform (look None), the only one that renders "
                    "the generated colours as generated; AgX and Filmic tone-map them")

    keep_render_samples: BoolProperty(
        name="Keep my render samples", default=False,
        description="Blender 5.3+ (native splats): importing results leaves the scene's Cycles samples and "
                    "denoiser as they are. Off: the import raises the samples to at least 40 and switches the "
                    "denoiser on, which native splats need to render as faithfully as the instanced quads")

    def draw(self, context):
        self.layout.prop(self, "token")
        self.layout.prop(self, "keep_view_transform")
        if bpy.app.version >= (5, 3, 0):  # splat_import.NATIVE_SINCE: only the native path uses it
            self.layout.prop(self, "keep_render_samples")


def get(context=None):
    """This extension's AddonPreferences, or None when it is not enabled as an add-on."""
    prefs = (context or bpy.context).preferences
    addon = prefs.addons.get(__package__) if prefs is not None else None
    return addon.preferences if addon is not None else None


def take_scene_token(props) -> str:
    """Remove a legacy token from a Scene.zoomscape → that token ("" if none).

    The preferences adopt it when they hold none yet. Must not run while drawing (writes ID data).
    """
    legacy = props.get(LEGACY_KEY)
    if legacy is None:
        return ""
    del props[LEGACY_KEY]
    legacy = str(legacy) if isinstance(legacy, str) else ""
    prefs = get()
    if legacy and prefs is not None and not prefs.token:
        prefs.token = legacy
    return legacy


def token_for(props) -> str:
    """The token to send for this scene's connection: a legacy scene token once, else the preferences'."""
    legacy = take_scene_token(props)
    if legacy:
        return legacy
    prefs = get()
    return prefs.token if prefs is not None else ""


@persistent
def migrate_on_load(*_args) -> None:
    """load_post: move every scene's legacy token into the preferences and out of the file."""
    for scene in bpy.data.scenes:
        props = getattr(scene, "zoomscape", None)
        if props is not None:
            take_scene_token(props)


classes = (ZOOMSCAPE_AP_preferences,)


_register_classes, _unregister_classes = bpy.utils.register_classes_factory(classes)


def register():
    _register_classes()
    if migrate_on_load not in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.append(migrate_on_load)


def unregister():
    if migrate_on_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(migrate_on_load)
    _unregister_classes()
