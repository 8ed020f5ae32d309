"""Benchmark Blender 5.3's native Gaussian splats against the instanced quads, in one run on the
same scene (run with the bpy 5.3 Python; see scripts/bench_splats_native):

  import     N = 1,000,000 random Gaussians (Inria PLY) through splat_import.import_splats on each
             path (best of --repeats), and the first depsgraph evaluation of the object
  render     each zoom level of a results directory (default: the newest out/demo/results/*)
             alone, from its level camera (the zoom camera zoomed by p^i,
             wire.cameras.zoom_level_intrinsics) at the level image's size, in Cycles with
             --samples samples: seconds per frame
  fidelity   PSNR of each such render against the level image (level_NN.png, 8-bit sRGB)

It prints every figure for both paths and the ratios native / quads. Cycles samples the native
splats stochastically (the quads composite exactly), so it also renders the native path at the
settings the extension's import chooses on 5.3 (native_render.use_native_samples on the scene at
--samples: NATIVE_SAMPLES samples and the denoiser) and prints those figures against the quads at
--samples, with the target (within 0.5 dB of the quads at every level) MET or NOT MET;
--native-samples adds rows for the native path at more samples without the denoiser.
"""
from __future__ import annotations

import argparse
import glob
import importlib
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import bpy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "addon"))
import blender_ext  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blender_bench import best_of, clear_scene  # noqa: E402

PATHS = (("quads", False), ("native", True))
CHOSEN = "native@import"  # the native path at the settings the extension's import chooses
TARGET_DB = 0.5  # the import's settings: native within this of the quads at every level


def default_results() -> str | None:
    found = sorted(glob.glob(os.path.join(REPO, "out", "demo", "results", "*", "manifest.json")),
                   key=os.path.getmtime)
    return os.path.dirname(found[-1]) if found else None


def load_png(path: str) -> np.ndarray:
    """An 8-bit PNG → [H, W, 3] float in [0, 1], rows top to bottom."""
    img = bpy.data.images.load(path)
    w, h, c = img.size[0], img.size[1], img.channels
    px = np.empty(w * h * c, dtype=np.float32)
    img.pixels.foreach_get(px)
    bpy.data.images.remove(img)
    return px.reshape(h, w, c)[::-1, :, :3]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10.0 * np.log10(1.0 / max(mse, 1e-12))


def level_camera(scene, zoom, k):
    """A camera at the zoom camera's pose with intrinsics k (centred principal point)."""
    if abs(k.cx - k.width / 2) > 1e-3 or abs(k.cy - k.height / 2) > 1e-3:
        raise SystemExit(f"level camera: principal point ({k.cx}, {k.cy}) is not the image centre")
    from mathutils import Matrix
    data = bpy.data.cameras.new("level camera")
    data.sensor_fit, data.sensor_width = "HORIZONTAL", 36.0
    data.lens = k.fx * data.sensor_width / k.width
    data.clip_start, data.clip_end = 1e-4, 1e4
    cam = bpy.data.objects.new("level camera", data)
    cam.matrix_world = Matrix(np.asarray(zoom.matrix_world, np.float64).tolist())
    scene.collection.objects.link(cam)
    scene.camera = cam
    scene.render.resolution_x, scene.render.resolution_y = k.width, k.height
    scene.render.resolution_percentage = 100
    return cam


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gaussians", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--results", default=None, help="a results directory (default: the newest out/demo/results/*)")
    ap.add_argument("--samples", type=int, default=4, help="Cycles samples per pixel (the demo's: 4)")
    ap.add_argument("--native-samples", default="16,64", help="more sample counts for the native path alone, "
                    "without the denoiser, comma-separated (default 16,64; empty for none)")
    args = ap.parse_args(argv)
    extra = [int(v) for v in args.native_samples.split(",") if v.strip()]
    if bpy.app.version < (5, 3, 0):
        raise SystemExit(f"bench_splats_native: needs Blender 5.3+ (native splats), this is {bpy.app.version_string}")
    results = args.results or default_results()
    if results is None or not os.path.isfile(os.path.join(results, "manifest.json")):
        raise SystemExit("bench_splats_native: --results: no results directory with a manifest.json "
                         "(run scripts/demo first, or pass --results DIR)")

    tmp = tempfile.mkdtemp(prefix="zoomscape-bench-native-")
    rows = {}
    try:
        blender_ext.stage(tmp)
        name = blender_ext.enable(tmp)
        sp = importlib.import_module(name + ".wire.splats")
        wm = importlib.import_module(name + ".wire.manifest")
        wc = importlib.import_module(name + ".wire.cameras")
        si = importlib.import_module(name + ".splat_import")
        scene = bpy.context.scene

        # import: 1M random Gaussians
        rng = np.random.default_rng(0)
        n = args.gaussians
        f_dc = rng.normal(size=(n, 3)).astype(np.float32)
        g = sp.Gaussians(means=rng.normal(size=(n, 3)).astype(np.float32),
                         quats=sp.normalized_quats(rng.normal(size=(n, 4)).astype(np.float32)),
                         scales=np.exp(rng.uniform(-7, -3, (n, 3))).astype(np.float32),
                         opacities=sp.sigmoid(rng.normal(size=n)), colors=sp.sh0_to_rgb(f_dc))
        path = os.path.join(tmp, "bench_3dgs.ply")
        sp.write_splat_ply(path, g)
        for label, native in PATHS:
            def run(native=native):
                obj = si.import_splats(scene, sp.read_splat_ply(path), "bench", "bench", native=native)
                assert si.splat_count(obj) == n
            t_import = best_of(args.repeats, run)
            clear_scene()
            obj = si.import_splats(scene, sp.read_splat_ply(path), "bench", "bench", native=native)
            t0 = time.perf_counter()
            obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
            rows[label] = {"import": t_import, "evaluate": time.perf_counter() - t0}
            clear_scene()

        # render + fidelity: each level alone from its level camera
        manifest = wm.read_manifest(results)
        zoom = manifest.zoom
        runs = [(label, native, args.samples) for label, native in PATHS]
        runs += [(CHOSEN, True, args.samples)]  # the import's settings, raised from --samples
        runs += [(f"native@{spp}", True, spp) for spp in extra]
        chosen = None
        for label, native, samples in runs:
            secs, dbs = [], []
            for lv in manifest.levels:
                bpy.ops.wm.read_factory_settings(use_empty=True)
                name = blender_ext.enable(tmp)
                si = importlib.import_module(name + ".splat_import")
                scene = bpy.context.scene
                scene.render.engine = "CYCLES"
                scene.cycles.device, scene.cycles.samples = "CPU", samples
                scene.cycles.use_denoising = False
                scene.view_settings.view_transform, scene.view_settings.look = "Standard", "None"
                scene.render.image_settings.file_format = "PNG"
                scene.render.image_settings.color_depth = "8"
                gl = sp.read_splat_ply(os.path.join(results, lv.gaussians))
                obj = si.import_splats(scene, gl, f"level {lv.index}", "bench", native=native)
                if label == CHOSEN:  # what runner.import_results does on 5.3 (no preference set)
                    nr = importlib.import_module(name + ".native_render")
                    nr.use_native_samples(scene, keep=False)
                    chosen = (scene.cycles.samples, scene.cycles.use_denoising)
                L = np.eye(4)
                L[:3, :3] = lv.frame.rotation * lv.frame.unit
                L[:3, 3] = lv.frame.origin
                from mathutils import Matrix
                obj.matrix_world = Matrix(L.tolist())
                level_camera(scene, zoom, wc.zoom_level_intrinsics(zoom.intrinsics, zoom.factor, lv.index))
                out = os.path.join(tmp, f"{label.replace('@', '_')}_{lv.index:02d}.png")
                scene.render.filepath = out
                t0 = time.perf_counter()
                bpy.ops.render.render(write_still=True)
                secs.append(time.perf_counter() - t0)
                dbs.append(psnr(load_png(out), load_png(os.path.join(results, lv.image))))
            rows.setdefault(label, {}).update(render=secs, psnr=dbs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    q, nat = rows["quads"], rows["native"]
    print(f"Blender {bpy.app.version_string}; {n:,} Gaussians for the import (best of {args.repeats}); "
          f"levels of {results} at {args.samples} Cycles samples")
    print(f"{'':22s}{'quads':>12s}{'native':>12s}{'native/quads':>14s}")
    for key, what in (("import", "import 1M (s)"), ("evaluate", "first evaluation (s)")):
        print(f"{what:22s}{q[key]:12.3f}{nat[key]:12.3f}{nat[key] / q[key]:13.2f}×")
    for i, lv in enumerate(manifest.levels):
        print(f"{f'level {lv.index} render (s)':22s}{q['render'][i]:12.2f}{nat['render'][i]:12.2f}"
              f"{nat['render'][i] / q['render'][i]:13.2f}×")
        print(f"{f'level {lv.index} PSNR (dB)':22s}{q['psnr'][i]:12.2f}{nat['psnr'][i]:12.2f}"
              f"{nat['psnr'][i] - q['psnr'][i]:+13.2f} dB")
    tq, tn = sum(q["render"]), sum(nat["render"])
    print(f"{'render, all levels (s)':22s}{tq:12.2f}{tn:12.2f}{tn / tq:13.2f}×")
    print(f"{'mean PSNR (dB)':22s}{np.mean(q['psnr']):12.2f}{np.mean(nat['psnr']):12.2f}"
          f"{np.mean(nat['psnr']) - np.mean(q['psnr']):+13.2f} dB")
    r = rows[CHOSEN]
    d = [a - b for a, b in zip(r["psnr"], q["psnr"])]
    met = all(v >= -TARGET_DB for v in d)
    print(f"native at the import's settings ({chosen[0]} samples, denoiser {'on' if chosen[1] else 'off'}) "
          f"vs quads at {args.samples}:")
    for i, lv in enumerate(manifest.levels):
        print(f"{f'  level {lv.index}':22s}render {r['render'][i]:6.2f} s vs {q['render'][i]:6.2f} s "
              f"({r['render'][i] / q['render'][i]:.2f}×), PSNR {r['psnr'][i]:6.2f} vs {q['psnr'][i]:6.2f} dB "
              f"({d[i]:+.2f} dB)")
    print(f"{'  all levels':22s}render {sum(r['render']):6.2f} s vs {tq:6.2f} s ({sum(r['render']) / tq:.2f}×), "
          f"mean PSNR {np.mean(r['psnr']):.2f} vs {np.mean(q['psnr']):.2f} dB "
          f"({np.mean(r['psnr']) - np.mean(q['psnr']):+.2f} dB); target within {TARGET_DB} dB at every level: "
          f"{'MET' if met else 'NOT MET'}")
    for spp in extra:
        r = rows[f"native@{spp}"]
        print(f"native at {spp} samples vs quads at {args.samples}: render "
              + " ".join(f"{t:.2f}" for t in r["render"]) + f" s ({sum(r['render']) / tq:.2f}× the quads'), PSNR "
              + " ".join(f"{d:.2f}" for d in r["psnr"]) + f" dB ({np.mean(r['psnr']) - np.mean(q['psnr']):+.2f} dB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]))
