"""Operators of the Zoomscape panel: discover, connect, generate, cancel, import results, build the
zoom path, open a level image, and the zoom level list's add/remove/move."""
from __future__ import annotations

import functools
import time

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty

from . import runner, thumbnails
from .client import ClientError
from .discovery import Browser, DiscoveryError
from .properties import refine_summary, set_server_models
from .scene_io import SceneError, build_request
from .wire.names import MAX_LEVELS


def fail(op, props, message: str):
    """Show message in the panel (props.error) and as an operator error → {'CANCELLED'}."""
    props.error = message
    op.report({"ERROR"}, message)
    return {"CANCELLED"}


def add_backend(props, found: dict) -> None:
    """Add or update a discovered backend in props.backends (keyed by service name)."""
    item = next((b for b in props.backends if b.name == found["name"]), None)
    if item is None:
        item = props.backends.add()
        item.name = found["name"]
    for key in ("host", "port", "engine", "device", "version", "auth"):
        setattr(item, key, found[key])


class ZOOMSCAPE_OT_discover(bpy.types.Operator):
    """Look for Zoomscape backends on this machine and the local network"""

    bl_idname = "zoomscape.discover"
    bl_label = "Discover"

    seconds: FloatProperty(name="Seconds", default=3.0, min=0.1, max=30.0,
                           description="How long to listen for backends")

    def execute(self, context):
        props = context.scene.zoomscape
        try:
            browser = Browser()
        except DiscoveryError as e:
            return fail(self, props, str(e))
        props.error = ""
        if bpy.app.background:
            return self._blocking(props, browser)
        scene_name, deadline = context.scene.name, time.monotonic() + self.seconds

        def tick():
            scene = bpy.data.scenes.get(scene_name)
            done = scene is None or time.monotonic() > deadline
            if scene is not None:
                drain_backends(scene.zoomscape, browser)
            if done:
                browser.close()
                return None
            return 0.25

        runner.add_timer(tick, 0.25, closer=browser.close)
        self.report({"INFO"}, f"Looking for backends for {self.seconds:g} s")
        return {"FINISHED"}

    def _blocking(self, props, browser):
        deadline = time.monotonic() + self.seconds
        try:
            while time.monotonic() < deadline:
                drain_backends(props, browser)
                time.sleep(0.05)
            drain_backends(props, browser)
        finally:
            browser.close()
        if len(props.backends) == 0:
            return fail(self, props, "no Zoomscape backend found; start one with 'zoomscape serve' "
                                     "or type its host and port")
        self.report({"INFO"}, f"Found {len(props.backends)} backend(s)")
        return {"FINISHED"}


def drain_backends(props, browser) -> None:
    """Move what the browser found into props.backends; select the first one found."""
    for found in browser.drain():
        if "error" in found:
            continue
        add_backend(props, found)
        if props.backends_index < 0 or props.backends_index >= len(props.backends):
            props.backends_index = 0  # fills host/port via the update callback


class ZOOMSCAPE_OT_connect(bpy.types.Operator):
    """Check the backend at host:port and show what it runs"""

    bl_idname = "zoomscape.connect"
    bl_label = "Connect"

    def execute(self, context):
        props = context.scene.zoomscape
        props.connected = False
        try:
            info = runner.client_for(props).health()
        except ClientError as e:
            props.server_info = props.server_refine = ""
            return fail(self, props, str(e))
        props.connected, props.error = True, ""
        set_server_models(props, info.get("models"))
        props.server_refine = refine_summary(info)
        props.server_info = (f"zoomscape {info.get('version', '?')} · {info.get('engine', '?')} · "
                             f"{info.get('device', '?')}" + (" · token" if info.get("auth_required") else ""))
        self.report({"INFO"}, f"Connected: {props.server_info}")
        return {"FINISHED"}


class ZOOMSCAPE_OT_generate(bpy.types.Operator):
    """Send the cameras and prompts to the backend, then import the point cloud and key the zoom"""

    bl_idname = "zoomscape.generate"
    bl_label = "Generate"

    timeout: FloatProperty(name="Timeout", default=600.0, min=1.0,
                           description="Background mode: give up (and cancel) after this many seconds")

    def execute(self, context):
        scene = context.scene
        props = scene.zoomscape
        if runner.is_running(scene):
            return fail(self, props, "a job is already running; wait or press Cancel")
        try:
            request = build_request(scene, context, props)
        except SceneError as e:
            return fail(self, props, str(e))
        if props.zoom_camera is None:  # remember where the zoom starts (scene.camera changes later)
            props.zoom_camera = bpy.data.objects[request["zoom"]["camera"]]
        props.job_id = ""
        runner.start(scene, request)
        if not bpy.app.background:
            runner.add_timer(functools.partial(runner.timer, scene.name), runner.PUMP_SECONDS)
            self.report({"INFO"}, "Job submitted")
            return {"FINISHED"}
        runner.run_blocking(scene, self.timeout)
        if props.error:
            return fail(self, props, props.error)
        self.report({"INFO"}, f"Job {props.job_id} done; results in {props.last_output_dir}. "
                              f"{runner.import_notes(scene)}")
        return {"FINISHED"}


class ZOOMSCAPE_OT_cancel(bpy.types.Operator):
    """Ask the backend to stop the running job"""

    bl_idname = "zoomscape.cancel"
    bl_label = "Cancel"

    def execute(self, context):
        if not runner.cancel(context.scene):
            self.report({"WARNING"}, "No job is running")
            return {"CANCELLED"}
        return {"FINISHED"}


class ZOOMSCAPE_OT_import_results(bpy.types.Operator):
    """Import the results of the scene's job (downloading them again if they are missing)"""

    bl_idname = "zoomscape.import_results"
    bl_label = "Import results"

    def execute(self, context):
        scene = context.scene
        props = scene.zoomscape
        try:
            out_dir = runner.fetch_results(scene)
            obj = runner.import_results(scene, out_dir)
        except (ClientError, OSError, ValueError, KeyError) as e:
            return fail(self, props, f"cannot import job '{props.job_id}': {e}")
        props.error = ""
        levels, stack = thumbnails.job_images(props.job_id)
        images = f", {len(levels)} level images" if levels else ""
        self.report({"INFO"}, f"Imported {obj.name} ({len(obj.data.vertices)} points{images}). "
                              f"{runner.import_notes(scene)}")
        return {"FINISHED"}


class ZOOMSCAPE_OT_build_zoom_path(bpy.types.Operator):
    """Key a zoom camera from the zoom camera toward the zoom target"""

    bl_idname = "zoomscape.build_zoom_path"
    bl_label = "Build zoom path"

    def execute(self, context):
        scene = context.scene
        props = scene.zoomscape
        out_dir = bpy.path.abspath(props.last_output_dir) if props.last_output_dir else None
        try:
            if out_dir is None and props.job_id:
                out_dir = runner.fetch_results(scene)
            cam = runner.build_path(scene, out_dir)
        except (ClientError, OSError, ValueError, KeyError) as e:
            return fail(self, props, f"cannot build the zoom path: {e}")
        props.error = ""
        self.report({"INFO"}, f"Keyed {cam.name}: frames {scene.frame_start}..{scene.frame_end}")
        return {"FINISHED"}


class ZOOMSCAPE_OT_open_image(bpy.types.Operator):
    """Show this zoom level's image in an Image Editor"""

    bl_idname = "zoomscape.open_image"
    bl_label = "Open image"

    image: StringProperty(name="Image", description="Name of the image (bpy.data.images)")

    def execute(self, context):
        image = bpy.data.images.get(self.image)
        if image is None:
            self.report({"ERROR"}, f"image: '{self.image}' is not in this file; import the results again")
            return {"CANCELLED"}
        wm = context.window_manager
        if bpy.app.background or not wm.windows:
            self.report({"INFO"}, f"no window to show it in (background mode); the image is "
                                  f"bpy.data.images['{image.name}']")
            return {"CANCELLED"}
        if not thumbnails.show_in_image_editor(wm.windows, image):
            # No Image Editor open: the render view opens one (a new window by default).
            bpy.ops.render.view_show("INVOKE_DEFAULT")
            if not thumbnails.show_in_image_editor(wm.windows, image):
                self.report({"WARNING"}, f"open an Image Editor and pick '{image.name}' there")
                return {"CANCELLED"}
        return {"FINISHED"}


class ZOOMSCAPE_OT_level_add(bpy.types.Operator):
    """Add a zoom level"""

    bl_idname = "zoomscape.level_add"
    bl_label = "Add level"

    def execute(self, context):
        props = context.scene.zoomscape
        if len(props.levels) >= MAX_LEVELS:
            return fail(self, props, f"zoom.levels: at most {MAX_LEVELS} levels")
        props.levels.add()
        props.levels_index = len(props.levels) - 1
        return {"FINISHED"}


class ZOOMSCAPE_OT_level_remove(bpy.types.Operator):
    """Remove the selected zoom level"""

    bl_idname = "zoomscape.level_remove"
    bl_label = "Remove level"

    def execute(self, context):
        props = context.scene.zoomscape
        if not 0 <= props.levels_index < len(props.levels):
            return {"CANCELLED"}
        props.levels.remove(props.levels_index)
        props.levels_index = min(props.levels_index, len(props.levels) - 1)
        return {"FINISHED"}


class ZOOMSCAPE_OT_level_move(bpy.types.Operator):
    """Move the selected zoom level up or down"""

    bl_idname = "zoomscape.level_move"
    bl_label = "Move level"

    direction: EnumProperty(items=[("UP", "Up", ""), ("DOWN", "Down", "")])

    def execute(self, context):
        props = context.scene.zoomscape
        i = props.levels_index
        j = i - 1 if self.direction == "UP" else i + 1
        if not (0 <= i < len(props.levels) and 0 <= j < len(props.levels)):
            return {"CANCELLED"}
        props.levels.move(i, j)
        props.levels_index = j
        return {"FINISHED"}


classes = (ZOOMSCAPE_OT_discover, ZOOMSCAPE_OT_connect, ZOOMSCAPE_OT_generate, ZOOMSCAPE_OT_cancel,
           ZOOMSCAPE_OT_import_results, ZOOMSCAPE_OT_build_zoom_path, ZOOMSCAPE_OT_open_image,
           ZOOMSCAPE_OT_level_add,
           ZOOMSCAPE_OT_level_remove, ZOOMSCAPE_OT_level_move)


register, unregister = bpy.utils.register_classes_factory(classes)
