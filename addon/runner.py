"""Main-thread side of a job: start the job thread, pump its queue into Scene.zoomscape, and on
completion import the results and build the zoom path.

The pump runs from ``bpy.app.timers`` in the UI; in background mode (timers never fire) the
generate operator calls :func:`run_blocking`, which pumps in a loop until the job ends.
"""
from __future__ import annotations

import os
import queue
import tempfile
import time

import bpy

from . import (colour, importers, level_rig, native_render, preferences, splat_import, thumbnails, world,
               zoom_path)
from .client import Client, JobThread, base_url, download_results
from .wire.manifest import Manifest, read_manifest
from .wire.names import MANIFEST_FILE
from .wire.ply import read_point_ply

PUMP_SECONDS = 0.2
_jobs: dict[str, JobThread] = {}  # scene name → running job thread (Python objects can't live in props)
_timers: list = []  # timer functions this extension registered (unregistered on shutdown)
_closers: list = []  # cleanup callables of running timers (e.g. closing a zeroconf browser)
_colour_notes: dict[str, str] = {}  # scene name → what the last import did to its colours (reports)
_render_notes: dict[str, str] = {}  # scene name → what it did to its Cycles samples (native splats)


def add_timer(fn, first_interval: float, closer=None) -> None:
    """Register fn with bpy.app.timers and remember it (and its cleanup) for shutdown()."""
    _timers.append(fn)
    if closer is not None:
        _closers.append(closer)
    bpy.app.timers.register(fn, first_interval=first_interval)


def shutdown() -> None:
    """Unregister: cancel running jobs, stop our timers, run their cleanups."""
    for thread in _jobs.values():
        thread.cancel()
    _jobs.clear()
    for fn in _timers:
        if bpy.app.timers.is_registered(fn):
            bpy.app.timers.unregister(fn)
    _timers.clear()
    for closer in _closers:
        try:
            closer()
        except Exception:
            pass
    _closers.clear()
    _colour_notes.clear()
    _render_notes.clear()


def settings(scene):
    return scene.zoomscape


def client_for(props) -> Client:
    return Client(base_url(props.host, props.port), preferences.token_for(props))


def output_base(props) -> str:
    """Directory that holds one folder per job: output_dir, else next to the .blend, else temp."""
    if props.output_dir:
        return bpy.path.abspath(props.output_dir)
    if bpy.data.filepath:
        return os.path.join(os.path.dirname(bpy.data.filepath), "zoomscape")
    return os.path.join(tempfile.gettempdir(), "zoomscape")


def relative_if_saved(path: str) -> str:
    """path relative to the .blend ('//…') when it is saved, so the folder moves with it."""
    if not bpy.data.filepath:
        return path
    try:
        return bpy.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path


def is_running(scene) -> bool:
    t = _jobs.get(scene.name)
    return t is not None and t.is_alive()


def start(scene, request: dict | None = None, job_id: str | None = None) -> JobThread:
    """Start a job thread for scene (a new request, or following job_id)."""
    props = settings(scene)
    base = output_base(props)
    thread = JobThread(client_for(props), lambda jid: os.path.join(base, jid), request, job_id)
    props.error, props.stage, props.progress = "", "submitting", 0.0
    props.job_state = "submitting"
    _jobs[scene.name] = thread
    thread.start()
    return thread


def cancel(scene) -> bool:
    thread = _jobs.get(scene.name)
    if thread is None or not thread.is_alive():
        return False
    thread.cancel()
    settings(scene).stage = "cancelling"
    return True


def set_error(props, message: str) -> None:
    props.error = message
    props.job_state = props.job_state if props.job_state in ("failed", "cancelled") else "error"


def apply_status(props, st: dict) -> None:
    props.job_id = st.get("id", props.job_id)
    props.job_state = st.get("state", "")
    props.progress = min(max(float(st.get("progress") or 0.0), 0.0), 1.0)
    stage = st.get("stage") or ""
    step, total = st.get("step"), st.get("total")
    if total:
        stage = f"{stage} {step}/{total}"
    if st.get("queue_position"):
        stage = f"queued (position {st['queue_position']})"
    props.stage = stage


def pump(scene) -> bool:
    """Drain the job queue into scene.zoomscape → True while the job is still going."""
    thread = _jobs.get(scene.name)
    if thread is None:
        return False
    props = settings(scene)
    while True:
        try:
            kind, payload = thread.queue.get_nowait()
        except queue.Empty:
            break
        if kind == "status":
            apply_status(props, payload)
        elif kind == "error":
            set_error(props, payload)
            _jobs.pop(scene.name, None)
            return False
        elif kind == "downloaded":
            _jobs.pop(scene.name, None)
            props.last_output_dir = relative_if_saved(payload["dir"])
            try:
                finish(scene, payload["dir"])
            except Exception as e:  # import problems end up in the panel
                set_error(props, f"results downloaded to {payload['dir']} but could not be imported: {e}")
            return False
    if not thread.is_alive() and thread.queue.empty():
        _jobs.pop(scene.name, None)
        return False
    return True


def timer(scene_name: str):
    """bpy.app.timers callback: pump and redraw → seconds until the next call, None when done."""
    scene = bpy.data.scenes.get(scene_name)
    if scene is None:
        return None
    going = pump(scene)
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()
    return PUMP_SECONDS if going else None


def run_blocking(scene, timeout: float) -> bool:
    """Background mode: pump until the job ends → False on timeout (the job is then cancelled)."""
    deadline = time.monotonic() + timeout
    while pump(scene):
        if time.monotonic() > deadline:
            cancel(scene)
            _jobs.pop(scene.name, None)
            set_error(settings(scene), f"job {settings(scene).job_id} did not finish within "
                                       f"{timeout:g} s; it was cancelled (raise the timeout)")
            return False
        time.sleep(0.05)
    return True


def fetch_files(scene, manifest: Manifest, out_dir: str, names: list[str]) -> None:
    """Download the result files names (e.g. level_NN.ply, world.ply) that out_dir lacks."""
    props = settings(scene)
    job_id = manifest.job_id or props.job_id
    missing = [name for name in names if not os.path.isfile(os.path.join(out_dir, name))]
    if missing and job_id and props.host:
        client = client_for(props)
        for name in missing:
            client.download(job_id, name, os.path.join(out_dir, name))


def import_results(scene, out_dir: str):
    """Import the point cloud of the results in out_dir → the point object; when the manifest
    has levels and props.import_levels is on, also every level's Gaussians under a level rig (the
    point cloud joins the rig). The level images (if any) are loaded as the panel's thumbnails.
    The scene's view transform becomes Standard unless the preferences keep it (colour.py); what
    was done is :func:`colour_note`."""
    props = settings(scene)
    manifest = read_manifest(out_dir)
    job_id = manifest.job_id or props.job_id
    cloud = read_point_ply(os.path.join(out_dir, manifest.pointcloud_file))
    points = importers.import_points(scene, cloud, f"Zoomscape {job_id[:8]}", job_id)
    extra = sum(1 for v in manifest.views if v.extra)
    points["zoomscape_views"] = [len(manifest.views) - extra, extra]
    fetch_files(scene, manifest, out_dir, [manifest.world_file] if manifest.world_file else [])
    with_levels = bool(manifest.levels) and props.import_levels
    if with_levels:
        fetch_files(scene, manifest, out_dir, [lv.gaussians for lv in manifest.levels])
        levels = level_rig.read_levels(manifest, out_dir)
    world_gaussians = world.read_world(manifest, out_dir)
    cover = None  # the world fades out only where level 0 takes over (level_rig.world_cover)
    if with_levels and world_gaussians is not None and manifest.zoom is not None:
        cover = level_rig.world_cover(world_gaussians.means, levels[0], manifest)
    splats = world.import_world(scene, manifest, out_dir, job_id, world_gaussians, cover)
    world.show_world(job_id, props.world_display)
    if with_levels:
        root, level_objs = level_rig.import_levels(scene, manifest, out_dir, job_id, levels)
        frame_0 = manifest.levels[0].frame
        for obj in (points, splats):
            if obj is not None:
                level_rig.attach_world_object(obj, root, frame_0.origin, frame_0.rotation)
        if splat_import.native_splats() and level_objs and manifest.zoom is not None:
            lift_points_over_level_0(points, cloud, level_objs[0], manifest)
    else:  # levels off (or none): no level objects, not even an earlier import's
        importers.remove_job_objects(job_id, kinds=(level_rig.ROOT_KIND, level_rig.LEVEL_KIND))
    thumbnails.load_job_images(manifest, out_dir, job_id)
    _colour_notes[scene.name] = colour.use_generated_colours(scene, colour.keep_view_transform())
    _render_notes[scene.name] = native_render.use_native_samples(scene, native_render.keep_render_samples())
    return points


def lift_points_over_level_0(points, cloud, level_0, manifest: Manifest) -> None:
    """Native splats (5.3+): lift the point cloud toward the camera just past the reach of level
    0's Gaussians, so that while it fades out over level 0 no transparent hit of it lies inside a
    splat (importers module docstring: Cycles renders such a splat differently, and level 0 popped
    when the cloud left). From the camera the cloud covers the same pixels."""
    zoom = manifest.zoom
    f_px = float(zoom.intrinsics.fx)
    sigma_px = splat_import.pixel_sigmas(level_0, manifest.levels[0].frame, zoom.matrix_world, f_px)
    if not len(sigma_px):
        return
    radius = cloud.radius if cloud.radius is not None else importers.default_radius(cloud.xyz)
    importers.set_lift(points, importers.lift_distances(cloud.xyz, radius, zoom.matrix_world, f_px,
                                                        float(sigma_px.max())))


def view_counts(job_id: str, objs: dict | None = None) -> tuple[int, int] | None:
    """(the user's views, the extra views) the imported job dreamed, or None before an import.
    objs: world.world_objects(job_id) when the caller has it (one scan of bpy.data.objects)."""
    obj = (objs or world.world_objects(job_id))["POINTS"]
    counts = obj.get("zoomscape_views") if obj is not None else None
    return (int(counts[0]), int(counts[1])) if counts is not None and len(counts) == 2 else None


def has_world_gaussians(job_id: str, objs: dict | None = None) -> bool:
    """Whether the imported job has its world as Gaussians (world.ply); objs as for view_counts."""
    return (objs or world.world_objects(job_id))["GAUSSIANS"] is not None


def colour_note(scene) -> str:
    """The last import's sentence about the scene's colours ("" before any import)."""
    return _colour_notes.get(scene.name, "")


def render_note(scene) -> str:
    """The last import's sentence about the scene's Cycles samples for native splats ("" before
    any import, and before Blender 5.3)."""
    return _render_notes.get(scene.name, "")


def import_notes(scene) -> str:
    """The last import's sentences for the operator's report (colours, then native samples)."""
    return ". ".join(n for n in (colour_note(scene), render_note(scene)) if n)


def build_path(scene, out_dir: str | None):
    """Key the zoom camera from the panel settings and the manifest's zoom → the camera object."""
    props = settings(scene)
    manifest = read_manifest(out_dir) if out_dir else None
    zoom = manifest.zoom if manifest else None
    job_id = (manifest.job_id if manifest else None) or props.job_id
    factor = zoom.factor if zoom is not None else float(props.zoom_factor)
    root, level_objs = level_rig.rig_of(job_id)
    if root is not None and manifest and manifest.levels:
        # The levels were painted from the job's zoom camera about its anchor, in the job's mode
        # (the dive's own cameras or a longer lens): zoom from there, the way they were painted.
        (bpy.context.view_layer or scene.view_layers[0]).update()
        source = bpy.data.objects.get(zoom.camera) or props.zoom_camera or scene.camera
        # F frames per step of the user's factor: F / substeps per painted level
        return zoom_path.build_level_zoom(scene, source, root, level_objs, factor,
                                          zoom.frames_per_level(props.frames_per_level),
                                          zoom.mode.upper(), job_id,
                                          fade_width=props.fade_width,
                                          matrix=zoom.matrix_world.tolist())
    if props.zoom_target is not None:
        anchor = list(props.zoom_target.matrix_world.translation)
    elif zoom is not None:
        anchor = zoom.anchor
    else:
        raise zoom_path.ZoomPathError("zoom target: none; place an Empty as Zoom target "
                                      "or import a job's results first")
    (bpy.context.view_layer or scene.view_layers[0]).update()  # fresh matrix_world after moves
    source = props.zoom_camera or scene.camera
    if source is None or source.get("zoomscape_kind") == "zoom_camera":
        source = bpy.data.objects.get(zoom.camera) if zoom else None  # the camera the job zoomed from
    levels = (len(zoom.prompts) if zoom is not None else 0) or len(props.levels) or 1
    frames = zoom.frames_per_level(props.frames_per_level) if zoom is not None else props.frames_per_level
    return zoom_path.build_zoom_path(scene, source, anchor, factor, levels, frames,
                                     props.zoom_mode, job_id)


def finish(scene, out_dir: str) -> None:
    """On done: import the point cloud and build the zoom path."""
    props = settings(scene)
    import_results(scene, out_dir)
    build_path(scene, out_dir)
    props.job_state, props.stage, props.progress, props.error = "done", "imported", 1.0, ""


def fetch_results(scene) -> str:
    """Results of props.job_id on disk → their directory (downloaded again when missing)."""
    props = settings(scene)
    if not props.job_id:
        raise ValueError("job: none yet; press Generate first")
    for d in (bpy.path.abspath(props.last_output_dir) if props.last_output_dir else "",
              os.path.join(output_base(props), props.job_id)):
        if d and os.path.isfile(os.path.join(d, MANIFEST_FILE)):
            try:
                if read_manifest(d).job_id in (props.job_id, None):
                    return d
            except (OSError, ValueError):
                pass
    out_dir = os.path.join(output_base(props), props.job_id)
    download_results(client_for(props), props.job_id, out_dir)
    props.last_output_dir = relative_if_saved(out_dir)
    return out_dir
