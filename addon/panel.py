"""View3D ▸ Sidebar ▸ Zoomscape: connection, prompts, zoom settings, Generate and job progress."""
from __future__ import annotations

import bpy

from . import colour, level_rig, native_render, preferences, runner, splat_import, thumbnails, world
from .properties import server_default
from .wire.names import MODEL_ROLES


class ZOOMSCAPE_UL_backends(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        layout.label(text=item.name, icon="LOCKED" if item.auth else "WORLD")
        layout.label(text=f"{item.host}:{item.port} · {item.engine} · {item.device}")


class ZOOMSCAPE_UL_levels(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        row = layout.row(align=True)
        row.label(text=f"{index + 1}")
        row.prop(item, "prompt", text="", emboss=False)


class ZOOMSCAPE_PT_panel(bpy.types.Panel):
    bl_idname = "ZOOMSCAPE_PT_panel"
    bl_label = "Zoomscape"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Zoomscape"

    def draw(self, context):
        layout = self.layout
        props = context.scene.zoomscape

        box = layout.box()
        box.label(text="Backend", icon="NETWORK_DRIVE")
        box.template_list("ZOOMSCAPE_UL_backends", "", props, "backends", props, "backends_index", rows=2)
        row = box.row(align=True)
        row.operator("zoomscape.discover", icon="VIEWZOOM")
        row.operator("zoomscape.connect", icon="LINKED")
        row = box.row(align=True)
        row.prop(props, "host")
        row.prop(props, "port", text="")
        prefs = preferences.get(context)
        if prefs is not None:  # kept in the preferences, never in the .blend
            box.prop(prefs, "token")
        box.label(text=props.server_info if props.connected else "Not connected",
                  icon="CHECKMARK" if props.connected else "UNLINKED")
        if props.connected and props.server_refine:   # the server's refinement budgets (health)
            box.label(text=props.server_refine, icon="TIME")

        box = layout.box()
        box.label(text="Prompts", icon="TEXT")
        box.prop(props, "scene_prompt")
        row = box.row()
        row.template_list("ZOOMSCAPE_UL_levels", "", props, "levels", props, "levels_index", rows=3)
        col = row.column(align=True)
        col.operator("zoomscape.level_add", icon="ADD", text="")
        col.operator("zoomscape.level_remove", icon="REMOVE", text="")
        col.separator()
        col.operator("zoomscape.level_move", icon="TRIA_UP", text="").direction = "UP"
        col.operator("zoomscape.level_move", icon="TRIA_DOWN", text="").direction = "DOWN"

        box = layout.box()
        box.label(text="Zoom", icon="CAMERA_DATA")
        box.prop(props, "camera_source")
        if props.camera_source == "COLLECTION":
            box.prop(props, "camera_collection")
        box.prop(props, "zoom_camera")
        box.prop(props, "zoom_target")
        box.prop(props, "zoom_factor")
        row = box.row(align=True)
        row.prop(props, "zoom_mode", expand=True)
        draw_painted_mode(box, props)
        box.prop(props, "frames_per_level")
        row = box.row(align=True)
        row.prop(props, "import_levels")
        sub = row.row(align=True)
        sub.enabled = props.import_levels  # fades only exist on imported levels
        sub.prop(props, "fade_width")
        row = box.row(align=True)
        row.prop(props, "seed")
        row.prop(props, "engine", text="")
        box.prop(props, "use_scene_rgbd")
        row = box.row(align=True)
        row.prop(props, "use_extra_views")
        sub = row.row(align=True)
        sub.enabled = props.use_extra_views
        sub.prop(props, "extra_views_auto", toggle=True)
        if props.extra_views_auto:
            sub.label(text="one per camera")
        else:
            sub.prop(props, "extra_views")
        if props.use_extra_views and props.zoom_mode == "DOLLY":
            box.label(text="+1 on the dive's path (Dolly)", icon="CAMERA_DATA")
        box.prop(props, "output_dir")

        if props.engine == "diffusers":
            box = layout.box()
            box.label(text="Models", icon="NODE_MATERIAL")
            col = box.column(align=True)
            for role in MODEL_ROLES:
                col.prop(props, f"{role}_model")
                default = server_default(props, role)
                if not getattr(props, f"{role}_model").strip() and default:
                    col.label(text=f"server default: {default}", icon="BLANK1")

        running = runner.is_running(context.scene)
        row = layout.row(align=True)
        row.scale_y = 1.4
        sub = row.row(align=True)
        sub.enabled = not running
        sub.operator("zoomscape.generate", icon="PLAY")
        if running:
            row.operator("zoomscape.cancel", icon="CANCEL")
        if running or props.job_state:
            layout.progress(factor=props.progress, type="BAR",
                            text=f"{props.job_state}: {props.stage}" if props.stage else props.job_state)
        if props.error:
            col = layout.column(align=True)
            col.alert = True
            for i, line in enumerate(wrap(props.error, 48)):
                col.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
        if props.job_id:
            layout.label(text=f"Job {props.job_id}")
            draw_world(layout, props)
            draw_colour(layout, context, prefs)
            draw_native_samples(layout, context, prefs)
        row = layout.row(align=True)
        row.enabled = bool(props.job_id) and not running
        row.operator("zoomscape.import_results", icon="IMPORT")
        row.operator("zoomscape.build_zoom_path", icon="ANIM")
        if not running:
            draw_thumbnails(layout, props.job_id)


def draw_painted_mode(layout, props) -> None:
    """Say so when the imported levels were painted in the other zoom mode: their dive follows
    how they were painted (runner.build_path), the Zoom setting applies to the next Generate."""
    painted = level_rig.painted_mode(props.job_id) if props.job_id else None
    if painted and painted != props.zoom_mode:
        for i, line in enumerate(wrap(f"The imported levels were painted for {painted.title()} and "
                                      f"dive that way; Generate again for {props.zoom_mode.title()}", 48)):
            layout.label(text=line, icon="INFO" if i == 0 else "BLANK1")


def draw_world(layout, props) -> None:
    """The job's views (the user's and the extra ones dreamed), how the world renders, and whether
    the Gaussians render as Blender's native splats (5.3+) or as instanced quads."""
    objs = world.world_objects(props.job_id)   # one scan of bpy.data.objects per redraw
    views = runner.view_counts(props.job_id, objs)
    if views is not None:
        own, extra = views
        layout.label(text=f"World: {own} of your views + {extra} extra views dreamed",
                     icon="WORLD")
    if runner.has_world_gaussians(props.job_id, objs):
        layout.row(align=True).prop(props, "world_display", expand=True)
    else:
        layout.label(text="World renders as points (the job has no world Gaussians)", icon="INFO")
    # which path this Blender renders the Gaussians with (splat_import.native_splats)
    layout.label(text=f"Splats: {splat_import.splat_path_label()}", icon="OUTLINER_OB_POINTCLOUD")


def draw_colour(layout, context, prefs) -> None:
    """How the scene renders the generated colours (Standard: as generated), and the preference
    that keeps the user's own view transform on import."""
    text, icon = colour.panel_note(context.scene, colour.keep_view_transform(context))
    col = layout.column(align=True)
    for i, line in enumerate(wrap(text, 48)):
        col.label(text=line, icon=icon if i == 0 else "BLANK1")
    if prefs is not None:  # a per-user preference, never in the .blend
        col.prop(prefs, "keep_view_transform")


def draw_native_samples(layout, context, prefs) -> None:
    """Blender 5.3+: whether the scene's Cycles samples and denoiser are enough for native splats,
    and the preference that keeps the user's own on import (nothing before 5.3)."""
    note = native_render.panel_note(context.scene, native_render.keep_render_samples(context))
    if note is None:
        return
    text, icon = note
    col = layout.column(align=True)
    for i, line in enumerate(wrap(text, 48)):
        col.label(text=line, icon=icon if i == 0 else "BLANK1")
    if prefs is not None:  # a per-user preference, never in the .blend
        col.prop(prefs, "keep_render_samples")


THUMB_SCALE, STACK_SCALE = 5.0, 8.0  # template_icon sizes in UI units (about 20 px each)


def draw_thumbnails(layout, job_id: str) -> None:
    """The job's level images as a grid of previews, each with its prompt and an open button, then
    the blended zoom stack; nothing when the job has no images (e.g. older jobs)."""
    levels, stack = thumbnails.job_images(job_id)
    if not levels and stack is None:
        return
    box = layout.box()
    box.label(text="Zoom levels", icon="IMAGE_DATA")
    grid = box.grid_flow(row_major=True, columns=0, even_columns=True, even_rows=True, align=True)
    for image in levels:
        draw_thumbnail(grid.column(align=True), image, THUMB_SCALE)
    if stack is not None:
        draw_thumbnail(box.column(align=True), stack, STACK_SCALE)


def draw_thumbnail(col, image, scale: float) -> None:
    col.template_icon(icon_value=thumbnails.icon_id(image), scale=scale)
    row = col.row(align=True)
    row.label(text=thumbnails.level_label(image))
    row.operator("zoomscape.open_image", text="", icon="WINDOW").image = image.name


def wrap(text: str, width: int) -> list[str]:
    """Split text into lines of at most about width characters (on spaces)."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])


classes = (ZOOMSCAPE_UL_backends, ZOOMSCAPE_UL_levels, ZOOMSCAPE_PT_panel)


register, unregister = bpy.utils.register_classes_factory(classes)
