"""Blender side of scripts/bench_fidelity: one job of one rig through the extension, then the renders.

Run by scripts/bench_fidelity.py with a bpy environment's Python (one process per job):
  python scripts/fidelity_blender.py --spec JOB.json --out DIR --port PORT --repo REPO
The spec (one spec = one job): the rig (size, cameras, zoom_camera, closed), scene_prompt,
level_prompts (levels: how many zoom levels, the prompts cycled; default one per prompt),
zoom_factor, seed, frames_per_level, zoom_mode ("DOLLY" or "LENS": the panel's Zoom, sent with
the job; default DOLLY), dive_prefix and category_suffix (the dive's category is
f"{dive_prefix}_{mode}{category_suffix}", default "dive_<mode>"; input and novel views get the
suffix too), novel_forward, novel_up.
The backend must already be serving on 127.0.0.1:PORT. Exactly as the panel: the extension of REPO
is staged and enabled (REPO/tests/addon/blender_ext.py), the rig's cameras are selected, the
props set, Generate run (it blocks in background mode), which imports the results and keys the
zoom; the .blend is saved as the user gets it. Then Cycles (CPU) renders, from the saved scene:
  input   every rig camera                                at frame_start (as saved)
  novel   midpoints of neighbours (position lerp, rotation slerp) and each camera moved
          forward by 0.3·spacing and up by 0.3·spacing    at frame_start
  dive    every k-th frame of the dive as imported: the level rig dives the way the job's levels
          were painted (its manifest's zoom.mode, i.e. the spec's zoom_mode), once
Each render: a transparent film (alpha = coverage), the Z pass (z-depth), linear RGBA and depth
written by a compositor File Output node as EXR and read back here; the RGB is composited over
the scene's world colour (a plain Background node, or black without one) and turned into
display images with Blender's own colour management (Image.save_render): once with the scene's
view transform as saved, once with Standard. Per view DIR/views/NAME.npz holds rgba (linear,
[H, W, 4]), depth [H, W], display_scene and display_standard ([H, W, 3] uint8), top row first;
DIR/views.json lists every view: its camera's matrix_world and pixel intrinsics, the rig root's
transform since rest (T: the dive scales the world about the anchor instead of moving the
camera), the render seconds.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import math
import os
import shutil
import sys
import time

import numpy as np

import bpy
from mathutils import Matrix, Quaternion, Vector


def log(msg: str) -> None:
    print(f"fidelity[blender]: {msg}", flush=True)


QUIET_LOCK = None  # --quiet-lock: a file other benchmark processes share


@contextlib.contextmanager
def quiet(exclusive: bool):
    """Hold QUIET_LOCK: exclusive around a job (so its time is not shared with another process's
    renders, and jobs never queue behind each other), shared around a render (renders of parallel
    processes run together). No lock file: nothing."""
    if QUIET_LOCK is None:
        yield
        return
    with open(QUIET_LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_rig(spec: dict) -> list:
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = spec["size"]
    scene.render.resolution_percentage = 100
    cams = []
    for c in spec["cameras"]:
        data = bpy.data.cameras.new(c["name"])
        data.lens, data.sensor_width = c.get("lens", 30.0), c.get("sensor_width", 36.0)
        obj = bpy.data.objects.new(c["name"], data)
        if "matrix_world" in c:
            obj.matrix_world = Matrix(c["matrix_world"])
        else:
            obj.location = c["location"]
            obj.rotation_euler = [math.radians(a) for a in c["rotation_deg"]]
        scene.collection.objects.link(obj)
        obj.select_set(True)
        cams.append(obj)
    scene.camera = bpy.data.objects[spec["zoom_camera"]]
    bpy.context.view_layer.update()
    return cams


def novel_cameras(cams: list, closed: bool, move: float, up: float) -> list:
    """Midpoints of neighbouring cameras and every camera moved forward by move·spacing and up
    by up·spacing (spacing: the mean distance between neighbours) → [(object, kind)]."""
    scene = bpy.context.scene
    pairs = list(zip(range(len(cams) - 1), range(1, len(cams))))
    if closed and len(cams) > 2:
        pairs.append((len(cams) - 1, 0))
    M = [c.matrix_world.normalized() for c in cams]
    spacing = float(np.mean([(M[i].translation - M[j].translation).length for i, j in pairs]))
    out = []

    def new(name, matrix, like):
        data = like.data.copy()
        data.name = name
        obj = bpy.data.objects.new(name, data)
        obj.matrix_world = matrix
        scene.collection.objects.link(obj)
        return obj

    for i, j in pairs:
        loc = M[i].translation.lerp(M[j].translation, 0.5)
        q = M[i].to_quaternion().slerp(M[j].to_quaternion(), 0.5)
        out.append((new(f"Mid.{i:03d}-{j:03d}", Matrix.Translation(loc) @ q.to_matrix().to_4x4(), cams[i]), "novel"))
    for i, c in enumerate(cams):
        fwd = -(M[i].to_3x3() @ Vector((0.0, 0.0, 1.0)))
        loc = M[i].translation + fwd * (move * spacing) + Vector((0.0, 0.0, up * spacing))
        out.append((new(f"Fwd.{i:03d}", Matrix.Translation(loc) @ M[i].to_quaternion().to_matrix().to_4x4(),
                        c), "novel"))
    bpy.context.view_layer.update()
    return out, spacing


def world_colour(scene) -> tuple[list, str]:
    """The world's background radiance (linear RGB) when it is a constant; else black + why."""
    w = scene.world
    if w is None:
        return [0.0, 0.0, 0.0], "no world (black)"
    if not w.use_nodes or w.node_tree is None:
        return [float(v) for v in w.color], "world colour"
    bg = next((n for n in w.node_tree.nodes if n.type == "BACKGROUND"), None)
    out = next((n for n in w.node_tree.nodes if n.type == "OUTPUT_WORLD"), None)
    if bg is None or out is None or not out.inputs["Surface"].is_linked:
        return [0.0, 0.0, 0.0], "world without a Background output (black)"
    if bg.inputs["Color"].is_linked or bg.inputs["Strength"].is_linked:
        return [0.0, 0.0, 0.0], "world Background is textured: composited over black (approximate)"
    s = float(bg.inputs["Strength"].default_value)
    return [float(v) * s for v in bg.inputs["Color"].default_value[:3]], "world Background node"


def setup_render(scene, samples: int, tmp: str) -> None:
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.use_denoising = False
    scene.render.film_transparent = True
    scene.render.use_persistent_data = True  # keep the BVH between renders (same image, less sync)
    bpy.context.view_layer.use_pass_z = True
    scene.use_nodes = True
    nt = scene.node_tree
    for n in [n for n in nt.nodes if n.name.startswith("Fidelity")]:
        nt.nodes.remove(n)
    rl = nt.nodes.new("CompositorNodeRLayers")
    rl.name = "Fidelity layers"
    fo = nt.nodes.new("CompositorNodeOutputFile")
    fo.name = "Fidelity output"
    fo.base_path = tmp
    fo.format.file_format = "OPEN_EXR"
    fo.format.color_depth = "32"
    fo.format.color_mode = "RGBA"
    fo.format.exr_codec = "NONE"
    fo.file_slots.clear()
    fo.file_slots.new("rgba_")
    fo.file_slots.new("depth_")
    nt.links.new(rl.outputs["Image"], fo.inputs[0])
    nt.links.new(rl.outputs["Depth"], fo.inputs[1])
    if not any(n.type == "COMPOSITE" for n in nt.nodes):
        comp = nt.nodes.new("CompositorNodeComposite")
        nt.links.new(rl.outputs["Image"], comp.inputs[0])


def load_pixels(path: str) -> np.ndarray:
    """The RGBA pixels of an image file, as stored (Non-Color): [H, W, 4] float32, bottom row first."""
    img = bpy.data.images.load(path)
    img.colorspace_settings.name = "Non-Color"
    w, h = img.size
    px = np.empty(w * h * 4, dtype=np.float32)
    img.pixels.foreach_get(px)
    bpy.data.images.remove(img)
    return px.reshape(h, w, 4)



def display(scene, rgb_lin_bottom_up: np.ndarray, path: str, view_transform: str | None) -> np.ndarray:
    """Linear RGB [H, W, 3] (bottom row first) → display image uint8 [H, W, 3] (top row first)
    through Blender's colour management with the scene's view settings (view_transform: override)."""
    h, w, _ = rgb_lin_bottom_up.shape
    img = bpy.data.images.new("fidelity display", w, h, alpha=False, float_buffer=True)
    px = np.concatenate([rgb_lin_bottom_up, np.ones((h, w, 1), np.float32)], axis=2)
    img.pixels.foreach_set(np.ascontiguousarray(px, dtype=np.float32).ravel())
    vs, r = scene.view_settings, scene.render
    saved = (vs.view_transform, vs.look, r.dither_intensity, r.image_settings.file_format,
             r.image_settings.color_mode, r.image_settings.color_depth)
    try:
        if view_transform is not None:
            vs.view_transform, vs.look = view_transform, "None"
        r.dither_intensity = 0.0
        r.image_settings.file_format, r.image_settings.color_mode = "PNG", "RGB"
        r.image_settings.color_depth = "8"
        img.save_render(path, scene=scene)
    finally:
        (vs.view_transform, vs.look, r.dither_intensity, r.image_settings.file_format,
         r.image_settings.color_mode, r.image_settings.color_depth) = saved
        bpy.data.images.remove(img)
    q = load_pixels(path)
    os.remove(path)
    return np.round(q[::-1, :, :3] * 255.0).astype(np.uint8)


def camera_record(scene, cam) -> dict:
    d, r = cam.data, scene.render
    M = np.array(cam.matrix_world.normalized(), dtype=np.float64)
    return {"camera": cam.name, "matrix_world": M.tolist(), "lens": d.lens,
            "sensor_width": d.sensor_width, "sensor_height": d.sensor_height,
            "sensor_fit": d.sensor_fit, "shift_x": d.shift_x, "shift_y": d.shift_y,
            "res_x": r.resolution_x * r.resolution_percentage // 100,
            "res_y": r.resolution_y * r.resolution_percentage // 100,
            "pixel_aspect_x": r.pixel_aspect_x, "pixel_aspect_y": r.pixel_aspect_y,
            "clip_start": d.clip_start, "clip_end": d.clip_end}


def render_view(scene, zs, cam, frame: int, name: str, tmp: str, out_views: str, bg: list,
                root=None, rest=None) -> dict:
    scene.camera = cam
    scene.frame_set(frame)
    bpy.context.view_layer.update()
    for f in os.listdir(tmp):
        os.remove(os.path.join(tmp, f))
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        with quiet(False):  # the render's time, not the wait for another process's job
            t = time.perf_counter()
            bpy.ops.render.render(write_still=False)
            seconds = time.perf_counter() - t
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
    rgba = load_pixels(os.path.join(tmp, f"rgba_{frame:04d}.exr"))
    depth = load_pixels(os.path.join(tmp, f"depth_{frame:04d}.exr"))[..., 0]
    comp = rgba[..., :3] + (1.0 - rgba[..., 3:4]) * np.asarray(bg, np.float32)
    disp_scene = display(scene, comp, os.path.join(tmp, "disp.png"), None)
    disp_std = (disp_scene if scene.view_settings.view_transform == "Standard"
                and scene.view_settings.look in ("None", "") and scene.view_settings.exposure == 0
                and scene.view_settings.gamma == 1 else
                display(scene, comp, os.path.join(tmp, "disp.png"), "Standard"))
    np.savez(os.path.join(out_views, f"{name}.npz"), rgba=rgba[::-1], depth=depth[::-1],
             display_scene=disp_scene, display_standard=disp_std)
    rec = camera_record(scene, cam)
    T = np.eye(4)
    if root is not None:
        T = np.array(root.matrix_world, dtype=np.float64) @ np.linalg.inv(rest)
    rec.update(name=name, frame=frame, T=T.tolist(), render_seconds=seconds,
               samples=scene.cycles.samples)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--noise-check", action="store_true", help="also render the first input at 2× samples")
    ap.add_argument("--dive-every", type=int, default=6)
    ap.add_argument("--no-input", action="store_true", help="no input-camera renders (a dive-only job)")
    ap.add_argument("--no-novel", action="store_true")
    ap.add_argument("--no-dive", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="Cycles threads (0: all cores)")
    ap.add_argument("--quiet-lock", default=None,
                    help="a lock file shared with parallel runs: the job holds it alone, renders share it")
    args = ap.parse_args()
    global QUIET_LOCK
    QUIET_LOCK = args.quiet_lock
    spec = json.load(open(args.spec))
    out = os.path.abspath(args.out)
    views_dir, tmp = os.path.join(out, "views"), os.path.join(out, "tmp")
    for d in (views_dir, tmp):
        os.makedirs(d, exist_ok=True)

    sys.path.insert(0, os.path.join(args.repo, "tests", "addon"))
    import blender_ext  # noqa: E402  (stages addon/ + wire/ of REPO as an extension and enables it)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    ext_repo = os.path.join(out, "extension_repo")
    blender_ext.stage(ext_repo)
    zs = sys.modules[blender_ext.enable(ext_repo)]
    log(f"Blender {bpy.app.version_string}, extension from {blender_ext.REPO_ROOT}")

    cams = build_rig(spec)
    scene = bpy.context.scene
    props = scene.zoomscape
    props.host, props.port = "127.0.0.1", args.port
    bpy.ops.zoomscape.connect()
    props.scene_prompt = spec["scene_prompt"]
    prompts = spec["level_prompts"]
    n_levels = int(spec.get("levels", len(prompts)))
    for i in range(n_levels):
        bpy.ops.zoomscape.level_add()
        props.levels[-1].prompt = prompts[i % len(prompts)]
    mode = spec.get("zoom_mode", "DOLLY").upper()
    props.zoom_mode = mode  # what the panel sends with the job (scene_io: zoom.mode = its lower case)
    suffix = spec.get("category_suffix", "")
    category = f"{spec.get('dive_prefix', 'dive')}_{mode}{suffix}"
    props.zoom_factor = spec["zoom_factor"]
    props.camera_source = "SELECTED"
    props.zoom_camera = bpy.data.objects[spec["zoom_camera"]]
    props.seed = spec["seed"]
    props.engine = "procedural"
    props.frames_per_level = spec["frames_per_level"]
    props.output_dir = os.path.join(out, "results")
    extra = sorted(p.identifier for p in props.bl_rna.properties if "extra" in p.identifier.lower())

    with quiet(True):
        t = time.perf_counter()
        result = bpy.ops.zoomscape.generate()
        job_seconds = time.perf_counter() - t
    if result != {"FINISHED"} or props.job_state != "done":
        raise SystemExit(f"fidelity: the job did not finish: {props.job_state}: {props.error}")
    results = bpy.path.abspath(props.last_output_dir)
    log(f"job {props.job_id} ({mode}, {n_levels} levels × {props.zoom_factor:g}) done in {job_seconds:.1f} s "
        f"over {len(cams)} cameras; results in {results}")
    try:
        manifest_mode = json.load(open(os.path.join(results, "manifest.json")))["zoom"].get("mode")
    except (OSError, KeyError, ValueError, TypeError) as exc:
        manifest_mode = f"unread ({type(exc).__name__})"
    vs = scene.view_settings
    as_saved = {"view_transform": vs.view_transform, "look": vs.look, "exposure": vs.exposure,
                "gamma": vs.gamma, "display_device": scene.display_settings.display_device,
                "filter_width": scene.cycles.filter_width if hasattr(scene, "cycles") else None}
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(out, "as_saved.blend"))

    bg, bg_note = world_colour(scene)
    setup_render(scene, args.samples, tmp)
    novel, spacing = novel_cameras(cams, spec.get("closed", False), spec.get("novel_forward", 0.3),
                                   spec.get("novel_up", 0.3))
    frame0 = scene.frame_start
    level_objs = [o for o in bpy.data.objects if o.get("zoomscape_kind") == "level"]
    scene.frame_set(frame0)
    shown_at_start = [o.name for o in level_objs if not o.hide_render]
    views = []
    if args.threads > 0:
        scene.render.threads_mode, scene.render.threads = "FIXED", args.threads
    for c in ([] if args.no_input else cams):
        views.append(dict(render_view(scene, zs, c, frame0, f"input_{c.name}", tmp, views_dir, bg),
                          category="input" + suffix))
        log(f"rendered {views[-1]['name']} in {views[-1]['render_seconds']:.1f} s")
    noise = None
    if args.noise_check and not args.no_input:
        scene.cycles.samples = 2 * args.samples
        noise = render_view(scene, zs, cams[0], frame0, f"noise2x_{cams[0].name}", tmp, views_dir, bg)
        noise["category"] = "noise"
        scene.cycles.samples = args.samples
        log(f"rendered {noise['name']} ({2 * args.samples} samples) in {noise['render_seconds']:.1f} s")
    if not args.no_novel:
        for c, kind in novel:
            views.append(dict(render_view(scene, zs, c, frame0, f"novel_{c.name}", tmp, views_dir, bg),
                              category=kind + suffix))
            log(f"rendered {views[-1]['name']} in {views[-1]['render_seconds']:.1f} s")
    root = next((o for o in bpy.data.objects if o.get("zoomscape_kind") == "level_root"), None)
    rig_mode = root.get("zoomscape_zoom_mode") if root is not None else None
    if rig_mode is not None and str(rig_mode).upper() != mode:
        log(f"WARNING: the job was sent as {mode} but the level rig dives {rig_mode}")
    if not args.no_dive:
        rest = None
        if root is not None:
            scene.frame_set(frame0)
            rest = np.array(root.matrix_world, dtype=np.float64)
        zcam = next(o for o in bpy.data.objects if o.get("zoomscape_kind") == "zoom_camera")
        frames = list(range(scene.frame_start, scene.frame_end + 1, args.dive_every))
        if frames[-1] != scene.frame_end:
            frames.append(scene.frame_end)  # the deepest frame, always
        for f in frames:
            views.append(dict(render_view(scene, zs, zcam, f, f"{category}_{f:04d}", tmp, views_dir, bg,
                                          root, rest), category=category))
            log(f"rendered {views[-1]['name']} in {views[-1]['render_seconds']:.1f} s")
    shutil.rmtree(tmp, ignore_errors=True)
    json.dump({"rig": spec["name"], "job_id": props.job_id, "job_seconds": job_seconds, "zoom_mode": mode,
               "manifest_zoom_mode": manifest_mode, "rig_zoom_mode": None if rig_mode is None else str(rig_mode),
               "levels": n_levels, "zoom_factor": props.zoom_factor, "dive_category": category,
               "frame_start": scene.frame_start, "frame_end": scene.frame_end, "dive_every": args.dive_every,
               "results": results, "cameras": len(cams), "spacing": spacing, "as_saved": as_saved,
               "background": bg, "background_note": bg_note, "extra_view_props": extra,
               "levels_shown_at_start": shown_at_start, "blender": bpy.app.version_string,
               "views": views, "noise": noise}, open(os.path.join(out, "views.json"), "w"), indent=1)
    log(f"wrote {len(views)} views to {out}")


if __name__ == "__main__":
    main()
