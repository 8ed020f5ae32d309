"""Drive headless Blender through the Zoomscape extension exactly as the panel would.

Run by scripts/demo with a bpy environment's Python:
  python scripts/demo_blender.py --out DIR --port PORT [--engine procedural] [--size 320]
The backend must already be serving on 127.0.0.1:PORT; it is found with zeroconf like in the panel.
Writes DIR/frames/zoom_####.png, DIR/zoomscape_demo.blend and prints where they are.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

import bpy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "addon"))
import blender_ext  # noqa: E402  (stages addon/ + wire/ + manifest as an extension repo and enables it)

# A camera rig that translates as well as turns, so parallax and disocclusion are real.
RIG = [  # name, location, (pitch from horizontal, yaw) in degrees
    ("Cam.000", (-2.0, -1.0, 1.7), (-12.0, 25.0)),
    ("Cam.001", (-0.7, -0.5, 1.8), (-14.0, 8.0)),
    ("Cam.002", (0.7, -0.5, 1.8), (-14.0, -8.0)),
    ("Cam.003", (2.0, -1.0, 1.7), (-12.0, -25.0)),
]
ZOOM_CAMERA = "Cam.001"
LEVEL_PROMPTS = ["a weathered stone wall", "moss in the cracks", "dew on a moss leaf"]


def build_scene(size: int) -> list[bpy.types.Object]:
    """The user's scene: four perspective cameras looking out over the world (+Y)."""
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = size, size * 3 // 4
    scene.render.resolution_percentage = 100
    cams = []
    for name, loc, (pitch, yaw) in RIG:
        data = bpy.data.cameras.new(name)
        data.lens, data.sensor_width = 30.0, 36.0
        obj = bpy.data.objects.new(name, data)
        obj.location = loc
        obj.rotation_euler = (math.radians(90.0 + pitch), 0.0, math.radians(yaw))
        scene.collection.objects.link(obj)
        obj.select_set(True)
        cams.append(obj)
    scene.camera = bpy.data.objects[ZOOM_CAMERA]
    return cams


def discover(props, port: int) -> None:
    """Discover backends with zeroconf and pick the demo's (the one on our port)."""
    for attempt in range(3):
        bpy.ops.zoomscape.discover(seconds=2.0 + attempt)
        match = [i for i, b in enumerate(props.backends) if b.port == port]
        if match:
            props.backends_index = match[0]
            print(f"demo: discovered '{props.backends[match[0]].name}' at "
                  f"{props.backends[match[0]].host}:{port} with zeroconf")
            return
    raise SystemExit(f"demo: zeroconf found no backend on port {port} (found: "
                     f"{[(b.name, b.port) for b in props.backends]})")


def render(out: str, zs) -> str:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    # the import turns Cycles' Russian roulette through splats off (importers.prepare_render_settings):
    # a dive frame at 4 samples is 54 dB between two seeds, where 16 samples with the roulette were 29 dB
    # (quads; Blender 5.3's native splats keep the samples and denoiser the import set: native_render)
    if not zs.splat_import.native_splats():
        scene.cycles.samples = 4
        scene.cycles.use_denoising = False
    scene.render.image_settings.file_format = "PNG"
    scene.render.filepath = os.path.join(out, "frames", "zoom_")
    frames_dir = os.path.dirname(scene.render.filepath)
    if os.path.isdir(frames_dir):  # an earlier run's frames, which a shorter dive would not overwrite
        for name in os.listdir(frames_dir):
            if name.startswith("zoom_") and name.endswith(".png"):
                os.remove(os.path.join(frames_dir, name))
    sky_world(scene, bpy.path.abspath(scene.zoomscape.last_output_dir), zs)
    times, stop_timing = frame_timer()
    t = time.perf_counter()
    with open(os.path.join(out, "render.log"), "w") as log:  # Cycles prints a line per tile/sample
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)
        try:
            bpy.ops.render.render(animation=True)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            stop_timing()
    n = scene.frame_end - scene.frame_start + 1
    print(f"demo: rendered {n} frames with Cycles in {time.perf_counter() - t:.1f} s")
    report_frame_times(times, os.path.join(out, "frame_times.csv"))
    return os.path.dirname(scene.render.filepath)


def image_rgb(path: str, rows: slice) -> np.ndarray:
    """Mean linear RGB [3] of rows (counted from the top) of an 8-bit sRGB image file."""
    img = bpy.data.images.load(path)
    w, h = img.size
    px = np.empty(w * h * img.channels, dtype=np.float32)
    img.pixels.foreach_get(px)
    bpy.data.images.remove(img)
    srgb = px.reshape(h, w, -1)[::-1][rows, :, :3].reshape(-1, 3)  # Blender stores rows bottom-up
    lin = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    return np.median(lin, axis=0)


def sky_world(scene, results: str, zs) -> None:
    """A world that continues the generated one where no level covers (a parallax hole, the
    border of a zoom level): the level-0 sky colour above the horizon, the finest level's mean
    colour below it (what the deep frames look into), blended over a few degrees. The level
    images are the ones the results' manifest names (read with the extension's wire copy)."""
    manifest = zs.wire.manifest.read_manifest(results)
    levels = [name for index, _, name in manifest.image_files()
              if index >= 0 and os.path.isfile(os.path.join(results, name))]
    sky, ground = (0.5, 0.6, 0.75), (0.2, 0.2, 0.2)
    if levels:
        first = bpy.data.images.load(os.path.join(results, levels[0]))
        top = max(1, first.size[1] // 12)
        bpy.data.images.remove(first)
        sky = image_rgb(os.path.join(results, levels[0]), slice(0, top))
        ground = image_rgb(os.path.join(results, levels[-1]), slice(None))
    world = scene.world or bpy.data.worlds.new("Demo sky")
    scene.world = world
    if world.node_tree is None:  # 4.x: a new world has no nodes; 5.x always has them
        world.use_nodes = True
    if hasattr(getattr(world, "cycles", None), "sampling_method"):
        world.cycles.sampling_method = "NONE"  # lights nothing (the scene only emits): no importance map
    nt = world.node_tree
    nt.nodes.clear()
    coord = nt.nodes.new("ShaderNodeTexCoord")  # Generated = the ray direction for a world
    sep = nt.nodes.new("ShaderNodeSeparateXYZ")
    ramp = nt.nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].position, ramp.color_ramp.elements[1].position = 0.47, 0.53
    ramp.color_ramp.elements[0].color = (*ground, 1.0)
    ramp.color_ramp.elements[1].color = (*sky, 1.0)
    to_unit = nt.nodes.new("ShaderNodeMapRange")  # z ∈ [−1, 1] → [0, 1]
    to_unit.inputs["From Min"].default_value = -1.0
    bg = nt.nodes.new("ShaderNodeBackground")
    out = nt.nodes.new("ShaderNodeOutputWorld")
    nt.links.new(coord.outputs["Generated"], sep.inputs[0])
    nt.links.new(sep.outputs["Z"], to_unit.inputs["Value"])
    nt.links.new(to_unit.outputs["Result"], ramp.inputs["Fac"])
    nt.links.new(ramp.outputs["Color"], bg.inputs["Color"])
    nt.links.new(bg.outputs[0], out.inputs["Surface"])
    for i, node in enumerate((coord, sep, to_unit, ramp, bg, out)):
        node.location = (-1000 + 200 * i, 0)
    print(f"demo: world sky {np.round(sky, 3).tolist()}, ground {np.round(ground, 3).tolist()} (linear)")


def frame_timer() -> tuple[dict, callable]:
    """Time every frame of the next render → ({frame: seconds} filled by render handlers, a
    function that removes the handlers again)."""
    times, start = {}, {}

    def pre(scene, *_):
        start[scene.frame_current] = time.perf_counter()

    def post(scene, *_):
        f = scene.frame_current
        times[f] = time.perf_counter() - start.pop(f, time.perf_counter())

    bpy.app.handlers.render_pre.append(pre)
    bpy.app.handlers.render_post.append(post)

    def remove():
        bpy.app.handlers.render_pre.remove(pre)
        bpy.app.handlers.render_post.remove(post)

    return times, remove


def report_frame_times(times: dict, path: str) -> None:
    """Write frame,seconds to path and print the slowest frames and the mean."""
    with open(path, "w") as f:
        f.write("frame,seconds\n")
        f.writelines(f"{k},{v:.3f}\n" for k, v in sorted(times.items()))
    if times:
        worst = max(times, key=times.get)
        print(f"demo: per frame {sum(times.values()) / len(times):.2f} s mean, "
              f"{times[worst]:.2f} s max (frame {worst}); all in {path}")


def encode_video(frames_dir: str, path: str, fps: int = 24) -> str:
    """The rendered PNG frames as an H.264 MP4, assembled in a scratch scene's sequencer."""
    names = sorted(n for n in os.listdir(frames_dir) if n.endswith(".png"))
    src = bpy.context.scene
    scene = bpy.data.scenes.new("Zoomscape video")
    scene.render.resolution_x, scene.render.resolution_y = src.render.resolution_x, src.render.resolution_y
    scene.render.resolution_percentage = 100
    scene.render.fps = fps
    # The frames are display sRGB already: Standard passes them through (a new scene's default,
    # Filmic in 4.x and AgX in 5.x, would tone-map them a second time).
    scene.view_settings.view_transform, scene.view_settings.look = "Standard", "None"
    editor = scene.sequence_editor_create()
    strips = editor.strips if hasattr(editor, "strips") else editor.sequences  # 5.x renamed them
    strip = strips.new_image("frames", os.path.join(frames_dir, names[0]), 1, 1)
    for name in names[1:]:
        strip.elements.append(name)
    scene.frame_start, scene.frame_end = 1, len(names)
    settings = scene.render.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "VIDEO"
    settings.file_format = "FFMPEG"
    scene.render.ffmpeg.format, scene.render.ffmpeg.codec = "MPEG4", "H264"
    scene.render.filepath = path
    window_scene = bpy.context.window.scene if bpy.context.window else None
    with bpy.context.temp_override(scene=scene):
        bpy.ops.render.render(animation=True, scene=scene.name)
    bpy.data.scenes.remove(scene)
    if window_scene is not None:
        bpy.context.window.scene = window_scene
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--engine", default="procedural")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--frames-per-level", type=int, default=12)
    ap.add_argument("--no-render", action="store_true", help="stop after saving the .blend")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    ext_repo = os.path.join(out, "extension_repo")
    blender_ext.stage(ext_repo)
    zs = sys.modules[blender_ext.enable(ext_repo)]
    print(f"demo: Blender {bpy.app.version_string}, Zoomscape extension enabled from {ext_repo}")

    cams = build_scene(args.size)
    props = bpy.context.scene.zoomscape
    discover(props, args.port)
    bpy.ops.zoomscape.connect()
    print(f"demo: connected: {props.server_info}")

    props.scene_prompt = "a quiet valley of mossy boulders under a pale sky"
    for prompt in LEVEL_PROMPTS:
        bpy.ops.zoomscape.level_add()
        props.levels[-1].prompt = prompt
    props.zoom_factor = 4.0
    props.camera_source = "SELECTED"
    props.zoom_camera = bpy.data.objects[ZOOM_CAMERA]
    props.seed = 7
    props.engine = args.engine
    props.frames_per_level = args.frames_per_level
    props.output_dir = os.path.join(out, "results")

    t = time.perf_counter()
    result = bpy.ops.zoomscape.generate()
    if result != {"FINISHED"} or props.job_state != "done":
        raise SystemExit(f"demo: the job did not finish: {props.job_state}: {props.error}")
    points = [o for o in bpy.data.objects if o.type == "MESH" and len(o.data.vertices)]
    print(f"demo: job {props.job_id} done in {time.perf_counter() - t:.1f} s over {len(cams)} cameras; "
          f"imported {sum(len(o.data.vertices) for o in points):,} points; results in {props.last_output_dir}")
    scene = bpy.context.scene
    print(f"demo: zoom camera '{scene.camera.name}' keyed over frames {scene.frame_start}..{scene.frame_end}")

    blend = os.path.join(out, "zoomscape_demo.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    if args.no_render:
        print(f"demo: blend   {blend}")
        return
    frames = render(out, zs)
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    video = encode_video(frames, os.path.join(out, "zoomscape_dive.mp4"))
    print(f"demo: frames  {frames}")
    print(f"demo: video   {video}")
    print(f"demo: blend   {blend}")


if __name__ == "__main__":
    main()
