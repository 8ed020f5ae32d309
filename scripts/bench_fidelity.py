"""End-to-end fidelity benchmark: what Blender renders after a job vs the procedural world's truth.

Run by scripts/bench_fidelity with .venv/backend's Python. For each rig (the demo's translating
cameras, an orbit of 8 cameras around a point, a forward walk of 5 cameras) it
1. runs a procedural job through a real backend process (`zoomscape serve` on loopback) and the
   extension in headless Blender exactly as the panel does (scripts/fidelity_blender.py: stage +
   enable, set the props, Generate, import, zoom path), polling the job's status for stage times;
2. renders with Cycles (CPU) every input camera, novel cameras (midpoints of neighbours; each
   camera moved forward and up by 0.3 of the rig's spacing) and every k-th dive frame in DOLLY and
   LENS, with a z-depth pass and alpha;
3. renders the truth: World(scene prompt, seed).render through the camera Blender rendered (its
   matrix_world and intrinsics, composed with the rig root's transform for dive frames, where
   the world is scaled about the anchor instead of the camera moving);
4. prints PSNR/SSIM (display images with the Standard view transform, and with the scene's view
   transform as saved when it differs), no-geometry pixels (alpha < 0.5), wrong-surface pixels
   (depth pass off the true depth by > 3%), the point cloud's surface accuracy/completeness at
   the input views (pointcloud.project z-buffer within 1% of the true depth), stage and render
   times, and every target as MET / NOT MET. Not a test. Writes out/bench_fidelity/fidelity.json
   and render | truth | |diff|×4 PNGs per rig.
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SCENE_PROMPT = "a quiet valley of mossy boulders under a pale sky"
LEVEL_PROMPTS = ["a weathered stone wall", "moss in the cracks", "dew on a moss leaf"]
BASELINE_JOB_S = 14.0   # the demo's job today (4 cameras, 320×240), issue 10
CATS = ("input", "novel", "dive_LENS", "dive_DOLLY")


# ---------------------------------------------------------------------------------------------
# Rigs

def demo_rig(repo: str) -> list[dict]:
    """RIG and ZOOM_CAMERA of REPO/scripts/demo_blender.py (read with ast, not imported: bpy)."""
    src = open(os.path.join(repo, "scripts", "demo_blender.py")).read()
    vals = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and \
                node.targets[0].id in ("RIG", "ZOOM_CAMERA"):
            vals[node.targets[0].id] = ast.literal_eval(node.value)
    cams = [{"name": n, "location": list(loc), "rotation_deg": [90.0 + p, 0.0, y]}
            for n, loc, (p, y) in vals["RIG"]]
    return cams, vals["ZOOM_CAMERA"]


def ground(world, x: float, y: float) -> float:
    return float(world.height(np.array([x]), np.array([y]), np.array([0.05]))[0][0])


def orbit_rig(world, n: int = 8, radius: float = 3.0, height: float = 1.6) -> list[dict]:
    """n cameras on a circle about the origin, each looking at the ground at the centre."""
    from zoomscape.cameras import look_at
    target = np.array([0.0, 0.0, ground(world, 0.0, 0.0)])
    cams = []
    for i in range(n):
        a = 2 * math.pi * i / n - math.pi / 2
        x, y = radius * math.cos(a), radius * math.sin(a)
        eye = np.array([x, y, ground(world, x, y) + height])
        cams.append({"name": f"Cam.{i:03d}", "matrix_world": look_at(eye, target).tolist()})
    return cams


def walk_rig(world, n: int = 5, step: float = 1.0, height: float = 1.6, pitch: float = -10.0) -> list[dict]:
    """n cameras walking forward along +Y, step apart, pitched down."""
    from zoomscape.cameras import look_at
    cams = []
    for i in range(n):
        y = -2.0 + step * i
        eye = np.array([0.0, y, ground(world, 0.0, y) + height])
        target = eye + np.array([0.0, 10.0, 10.0 * math.tan(math.radians(pitch))])
        cams.append({"name": f"Cam.{i:03d}", "matrix_world": look_at(eye, target).tolist()})
    return cams


def rig_specs(repo: str, names: list[str], size: tuple[int, int], seed: int, fpl: int) -> list[dict]:
    from zoomscape.engines.procedural import World
    world = World(SCENE_PROMPT, seed)
    base = {"size": list(size), "scene_prompt": SCENE_PROMPT, "level_prompts": LEVEL_PROMPTS,
            "zoom_factor": 4.0, "seed": seed, "frames_per_level": fpl,
            "novel_forward": 0.3, "novel_up": 0.3}
    out = []
    for name in names:
        if name == "demo":
            cams, zoom = demo_rig(repo)
            out.append(dict(base, name=name, cameras=cams, zoom_camera=zoom, closed=False))
        elif name == "orbit":
            out.append(dict(base, name=name, cameras=orbit_rig(world), zoom_camera="Cam.000", closed=True))
        elif name == "walk":
            out.append(dict(base, name=name, cameras=walk_rig(world), zoom_camera="Cam.000", closed=False))
        else:
            raise SystemExit(f"bench_fidelity: unknown rig '{name}' (demo, orbit, walk)")
    return out


# ---------------------------------------------------------------------------------------------
# The backend and its stage times

def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class StagePoller(threading.Thread):
    """Polls GET /v1/jobs every 0.1 s; records when each job was first seen in each stage."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/v1/jobs"
        self.seen: dict[str, list[tuple[str, float]]] = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                jobs = json.load(urllib.request.urlopen(self.url, timeout=2))["jobs"]
                now = time.perf_counter()
                for j in jobs:
                    hist = self.seen.setdefault(j["id"], [])
                    stage = j.get("stage") or j.get("state")
                    if j.get("state") in ("done", "failed", "cancelled"):
                        stage = j["state"]
                    if not hist or hist[-1][0] != stage:
                        hist.append((stage, now))
            except Exception:
                pass
            self.stop.wait(0.1)

    def stages(self, job_id: str) -> dict:
        hist = self.seen.get(job_id, [])
        out = {}
        for (stage, t0), (_, t1) in zip(hist, hist[1:]):
            out[stage] = out.get(stage, 0.0) + (t1 - t0)
        return out


# ---------------------------------------------------------------------------------------------
# Truth and figures

def equivalent_camera(rec: dict):
    """The world-space pinhole Blender rendered: P = K · flip · (matrix_world⁻¹ · T), T the rig
    root's transform since rest (identity outside the dive) → (Camera, λ, skew): Blender's
    z-depth = λ · the equivalent camera's z-depth; skew (px) should be ~0."""
    from scipy.linalg import rq
    from zoomscape.cameras import Camera, blender_intrinsics, intrinsics_matrix, rigid_inverse
    k = blender_intrinsics(rec["lens"], rec["sensor_width"], rec["sensor_height"], rec["sensor_fit"],
                           rec["shift_x"], rec["shift_y"], rec["res_x"], rec["res_y"],
                           rec["pixel_aspect_x"], rec["pixel_aspect_y"])
    K = intrinsics_matrix(k.fx, k.fy, k.cx, k.cy)
    A = np.linalg.inv(np.asarray(rec["matrix_world"])) @ np.asarray(rec["T"])
    A = np.diag([1.0, -1.0, -1.0, 1.0]) @ A
    P = K @ A[:3]
    Kp, R = rq(P[:, :3])
    S = np.diag(np.sign(np.diag(Kp)))
    Kp, R = Kp @ S, S @ R
    lam = Kp[2, 2]
    Kp = Kp / lam
    t = np.linalg.solve(Kp, P[:, 3]) / lam
    if np.linalg.det(R) < 0:
        raise ValueError(f"{rec['name']}: the rendered camera is mirrored")
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, t
    cam = Camera(rec["name"], intrinsics_matrix(Kp[0, 0], Kp[1, 1], Kp[0, 2], Kp[1, 2]), rigid_inverse(w2c),
                 k.width, k.height)
    return cam, float(lam), float(Kp[0, 1])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    import torch
    from zoomscape.gaussians import ssim as _ssim
    return float(_ssim(torch.from_numpy(a.astype(np.float32)), torch.from_numpy(b.astype(np.float32))))


def srgb_oetf(lin: np.ndarray) -> np.ndarray:
    lin = np.clip(lin, 0.0, 1.0)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


def view_figures(rec: dict, npz, world, cloud=None) -> tuple[dict, dict]:
    """Figures of one rendered view against the truth → (figures, images for the PNGs)."""
    from zoomscape.cameras import pixel_grid
    from zoomscape.engines.procedural import SKY
    cam, lam, skew = equivalent_camera(rec)
    t = time.perf_counter()
    hits = world.trace(cam, pixel_grid(cam.width, cam.height))
    truth = world.shade(hits).reshape(cam.height, cam.width, 3).astype(np.float64)
    tdepth = hits.t.reshape(cam.height, cam.width)
    truth_s = time.perf_counter() - t
    std = npz["display_standard"].astype(np.float64) / 255.0
    scn = npz["display_scene"].astype(np.float64) / 255.0
    alpha, depth = npz["rgba"][..., 3], npz["depth"].astype(np.float64) / lam
    geo = alpha >= 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.abs(depth - tdepth) / tdepth
    wrong = geo & ~(rel <= 0.03)
    wrong10 = geo & ~(rel <= 0.10)
    # the same after the view's own depth scale (median Blender/true depth over the geometry): a
    # world scaled as a whole about the camera looks the same from it, and a monocular first
    # view cannot know its scale; this separates wrong surfaces from a wrong global scale
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.median((depth / tdepth)[geo & np.isfinite(tdepth)]) if geo.any() else 1.0
        wrong_scaled = geo & ~(np.abs(depth / ratio - tdepth) / tdepth <= 0.03)
    f = {"name": rec["name"], "category": rec["category"], "frame": rec["frame"],
         "psnr": psnr(std, truth), "ssim": ssim(std, truth), "psnr_as_saved": psnr(scn, truth),
         "no_geometry": float(np.mean(~geo)), "wrong_surface": float(wrong.sum() / max(geo.sum(), 1)),
         "wrong_surface_10pct": float(wrong10.sum() / max(geo.sum(), 1)),
         "wrong_surface_scaled": float(wrong_scaled.sum() / max(geo.sum(), 1)),
         "depth_ratio": float(ratio),
         "render_s": rec["render_seconds"], "truth_s": truth_s, "depth_scale": lam, "skew_px": skew,
         "samples": rec["samples"]}
    if cloud is not None:  # the world's surface accuracy and completeness at an input view
        from zoomscape.pointcloud import project
        proj = project(cloud, cam)
        surf = (hits.kind != SKY).reshape(cam.height, cam.width)
        with np.errstate(invalid="ignore"):
            ok = proj.mask & (np.abs(proj.depth - tdepth) <= 0.01 * tdepth)
        f["surface_within_1pct"] = float(ok[surf].mean())       # the figure: within 1%, of all surface
        f["surface_covered"] = float(proj.mask[surf].mean())    # completeness
        f["surface_accurate"] = float(ok[surf].sum() / max((proj.mask & surf).sum(), 1))  # accuracy
        # Is the depth pass z-depth (not ray length)? Median Blender/true depth ratio at the
        # corners vs the centre among pixels showing the right surface.
        good = geo & (rel < 0.03)
        H, W = tdepth.shape
        yy, xx = np.mgrid[0:H, 0:W]
        r = np.hypot((xx + 0.5 - W / 2) / (W / 2), (yy + 0.5 - H / 2) / (H / 2))
        ratio = depth / tdepth
        cen, cor = good & (r < 0.3), good & (r > 1.1)
        if cen.sum() > 50 and cor.sum() > 50:
            f["depth_ratio_corner_over_centre"] = float(np.median(ratio[cor]) / np.median(ratio[cen]))
            f["ray_length_would_give"] = float(np.median(np.sqrt(
                1 + ((xx[cor] + 0.5 - cam.K[0, 2]) / cam.K[0, 0]) ** 2 + ((yy[cor] + 0.5 - cam.K[1, 2]) / cam.K[1, 1]) ** 2)))
        # Blender's Standard vs the sRGB OETF in numpy (a check of the display conversion).
        f["standard_vs_numpy_max"] = float(np.max(np.abs(
            srgb_oetf(npz["rgba"][..., :3].astype(np.float64)) - std)) * 255.0) if np.all(alpha > 0.999) else None
    return f, {"render": std, "truth": truth}


def noise_figure(rec_n: dict, rec_2n: dict, views_dir: str, world) -> dict:
    """Sampling noise cost at N samples from renders at N and 2N: σ²_N = MSE(N, 2N)/1.5 (the two
    noises independent, σ²_2N = σ²_N/2); cost = 10·log10(MSE_N / (MSE_N − σ²_N)) dB."""
    a = np.load(os.path.join(views_dir, rec_n["name"] + ".npz"))["display_standard"] / 255.0
    b = np.load(os.path.join(views_dir, rec_2n["name"] + ".npz"))["display_standard"] / 255.0
    cam, _, _ = equivalent_camera(rec_n)
    truth = world.render(cam)[0].astype(np.float64)
    mse_n, mse_2n = np.mean((a - truth) ** 2), np.mean((b - truth) ** 2)
    var_n = np.mean((a - b) ** 2) / 1.5
    cost = 10 * math.log10(mse_n / max(mse_n - var_n, 1e-12))
    return {"samples": rec_n["samples"], "psnr_n": psnr(a, truth), "psnr_2n": psnr(b, truth),
            "psnr_n_vs_2n": psnr(a, b), "noise_cost_db": cost}


def write_png(path: str, render: np.ndarray, truth: np.ndarray) -> None:
    from PIL import Image
    diff = np.clip(np.abs(render - truth) * 4.0, 0, 1)
    strip = np.concatenate([render, truth, diff], axis=1)
    Image.fromarray(np.round(np.clip(strip, 0, 1) * 255).astype(np.uint8)).save(path)


# ---------------------------------------------------------------------------------------------
# Report

def summarise(figs: list[dict]) -> dict:
    out = {}
    for cat in CATS:
        fs = [f for f in figs if f["category"] == cat]
        if not fs:
            continue
        col = lambda k: np.array([f[k] for f in fs], dtype=np.float64)  # noqa: E731
        out[cat] = {"n": len(fs), "psnr_min": col("psnr").min(), "psnr_mean": col("psnr").mean(),
                    "ssim_min": col("ssim").min(), "ssim_mean": col("ssim").mean(),
                    "psnr_as_saved_min": col("psnr_as_saved").min(),
                    "psnr_as_saved_mean": col("psnr_as_saved").mean(),
                    "no_geometry_max": col("no_geometry").max(), "no_geometry_mean": col("no_geometry").mean(),
                    "wrong_surface_max": col("wrong_surface").max(),
                    "wrong_surface_mean": col("wrong_surface").mean(),
                    "wrong10_max": col("wrong_surface_10pct").max(),
                    "wrong_scaled_max": col("wrong_surface_scaled").max(),
                    "wrong_scaled_mean": col("wrong_surface_scaled").mean(),
                    "depth_ratio_min": col("depth_ratio").min(), "depth_ratio_max": col("depth_ratio").max(),
                    "render_s_mean": col("render_s").mean()}
        if "surface_within_1pct" in fs[0]:
            for k in ("surface_within_1pct", "surface_covered", "surface_accurate"):
                out[cat][k + "_min"] = col(k).min()
                out[cat][k + "_mean"] = col(k).mean()
    return out


def print_table(rigs: list[dict], as_saved_differs: bool) -> None:
    hdr = (f"{'rig':7} {'views':10} {'n':>2} | {'PSNR min':>8} {'mean':>6} | {'SSIM min':>8} {'mean':>6} | "
           + (f"{'saved min':>9} {'mean':>6} | " if as_saved_differs else "")
           + f"{'no-geo max':>10} {'mean':>7} | {'wrong max':>9} {'mean':>7} | {'>10% max':>8} | "
           f"{'scaled max':>10} {'mean':>7} | {'z ratio':>11} | {'render s':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in rigs:
        for cat, s in r["summary"].items():
            print(f"{r['rig']:7} {cat:10} {s['n']:2d} | {s['psnr_min']:8.2f} {s['psnr_mean']:6.2f} | "
                  f"{s['ssim_min']:8.3f} {s['ssim_mean']:6.3f} | "
                  + (f"{s['psnr_as_saved_min']:9.2f} {s['psnr_as_saved_mean']:6.2f} | " if as_saved_differs else "")
                  + f"{100 * s['no_geometry_max']:9.2f}% {100 * s['no_geometry_mean']:6.2f}% | "
                  f"{100 * s['wrong_surface_max']:8.2f}% {100 * s['wrong_surface_mean']:6.2f}% | "
                  f"{100 * s['wrong10_max']:7.2f}% | "
                  f"{100 * s['wrong_scaled_max']:9.2f}% {100 * s['wrong_scaled_mean']:6.2f}% | "
                  f"{s['depth_ratio_min']:5.3f}–{s['depth_ratio_max']:5.3f} | {s['render_s_mean']:8.1f}")


def targets(rigs: list[dict]) -> list[tuple[str, bool, str]]:
    out = []

    def add(name, values, ok, fmt):
        out.append((name, bool(ok), fmt))

    per = {r["rig"]: r["summary"] for r in rigs}
    def cat_vals(cat, key):
        return {rig: s[cat][key] for rig, s in per.items() if cat in s}

    v = cat_vals("input", "psnr_min")
    if v:
        add("input views ≥ 32 dB (min)", v, min(v.values()) >= 32, ", ".join(f"{k} {x:.2f}" for k, x in v.items()))
    v, w = cat_vals("novel", "psnr_mean"), cat_vals("novel", "psnr_min")
    if v:
        add("novel views ≥ 27 dB mean", v, min(v.values()) >= 27, ", ".join(f"{k} {x:.2f}" for k, x in v.items()))
        add("novel views ≥ 25 dB min", w, min(w.values()) >= 25, ", ".join(f"{k} {x:.2f}" for k, x in w.items()))
    v = cat_vals("input", "no_geometry_max")
    if v:
        add("no-geometry < 0.5% at input views", v, max(v.values()) < 0.005,
            ", ".join(f"{k} {100 * x:.2f}%" for k, x in v.items()))
    v = cat_vals("novel", "no_geometry_max")
    if v:
        add("no-geometry < 2% at novel views", v, max(v.values()) < 0.02,
            ", ".join(f"{k} {100 * x:.2f}%" for k, x in v.items()))
    for cat in ("input", "novel"):
        v = cat_vals(cat, "wrong_surface_max")
        if v:
            add(f"wrong-surface < 0.3% at {cat} views", v, max(v.values()) < 0.003,
                ", ".join(f"{k} {100 * x:.2f}%" for k, x in v.items()))
    v = cat_vals("dive_LENS", "psnr_min")
    if v:
        add("LENS dive ≥ 28 dB every frame", v, min(v.values()) >= 28, ", ".join(f"{k} {x:.2f}" for k, x in v.items()))
    demo = next((r for r in rigs if r["rig"] == "demo"), None)
    if demo is not None:
        note = "" if demo["extra_view_props"] else " (no extra-views option in this tree: job time as is)"
        add(f"demo job ≤ 1.5 × {BASELINE_JOB_S:g} s with extra views", None,
            demo["job_seconds"] <= 1.5 * BASELINE_JOB_S, f"{demo['job_seconds']:.1f} s{note}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=os.path.dirname(HERE),
                    help="the tree whose backend and extension are measured (default: this one)")
    ap.add_argument("--out", default=None, help="default REPO_OF_THIS_SCRIPT/out/bench_fidelity")
    ap.add_argument("--rigs", default="demo,orbit,walk")
    ap.add_argument("--size", type=int, default=320, help="render width (height = 3/4)")
    ap.add_argument("--samples", type=int, default=4,
                    help="Cycles samples per pixel (the import turns off the roulette through splats, "
                         "so the noise is anti-aliasing only: the noise check prints its cost; "
                         "at 4 the whole run took 20.7 minutes on 2 cores, at 8 36 minutes)")
    ap.add_argument("--frames-per-level", type=int, default=12)
    ap.add_argument("--dive-every", type=int, default=6)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-novel", action="store_true")
    ap.add_argument("--no-dive", action="store_true")
    ap.add_argument("--no-noise-check", action="store_true")
    ap.add_argument("--blender", default="bpy42", help="the .venv/<name> with bpy (4.2 line)")
    ap.add_argument("--quick", action="store_true",
                    help="demo and walk rigs, every 12th dive frame (about half the time)")
    args = ap.parse_args()
    if args.quick:
        args.rigs = "demo,walk" if args.rigs == "demo,orbit,walk" else args.rigs
        args.dive_every = max(args.dive_every, 12)
    repo = os.path.abspath(args.repo)
    here_root = os.path.dirname(HERE)
    out = os.path.abspath(args.out or os.path.join(here_root, "out", "bench_fidelity"))
    os.makedirs(out, exist_ok=True)
    sys.path.insert(0, os.path.join(repo, "backend"))
    import zoomscape
    from zoomscape.engines.procedural import World
    from zoomscape.pointcloud import read_ply
    print(f"bench_fidelity: backend {os.path.dirname(zoomscape.__file__)}; extension {repo}/addon; out {out}")
    t_all = time.perf_counter()
    size = (args.size, args.size * 3 // 4)
    specs = rig_specs(repo, args.rigs.split(","), size, args.seed, args.frames_per_level)
    world = World(SCENE_PROMPT, args.seed)

    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.path.join(repo, "backend"), HF_HUB_OFFLINE="1")
    server_log = open(os.path.join(out, "backend.log"), "w")
    server = subprocess.Popen([sys.executable, "-m", "zoomscape.cli", "serve", "--port", str(port),
                               "--no-zeroconf", "--engine", "procedural",
                               "--data-dir", os.path.join(out, "backend")],
                              env=env, stdout=server_log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1)
                break
            except Exception:
                time.sleep(0.2)
        else:
            raise SystemExit(f"bench_fidelity: the backend did not start; see {out}/backend.log")
        poller = StagePoller(port)
        poller.start()
        bpy_python = os.path.join(here_root, ".venv", args.blender, "bin", "python")
        rigs = []
        for i, spec in enumerate(specs):
            rig_out = os.path.join(out, spec["name"])
            os.makedirs(rig_out, exist_ok=True)
            spec_path = os.path.join(rig_out, "spec.json")
            json.dump(spec, open(spec_path, "w"), indent=1)
            cmd = [bpy_python, os.path.join(HERE, "fidelity_blender.py"), "--spec", spec_path, "--out", rig_out,
                   "--port", str(port), "--repo", repo, "--samples", str(args.samples),
                   "--dive-every", str(args.dive_every)]
            cmd += ["--noise-check"] if i == 0 and not args.no_noise_check else []
            cmd += ["--no-novel"] if args.no_novel else []
            cmd += ["--no-dive"] if args.no_dive else []
            t = time.perf_counter()
            print(f"bench_fidelity: rig '{spec['name']}' ({len(spec['cameras'])} cameras) in Blender …", flush=True)
            with open(os.path.join(rig_out, "blender.log"), "w") as blog:
                rc = subprocess.call(cmd, stdout=blog, stderr=subprocess.STDOUT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
            if rc != 0:
                raise SystemExit(f"bench_fidelity: Blender failed on rig '{spec['name']}'; see {rig_out}/blender.log")
            blender_s = time.perf_counter() - t
            info = json.load(open(os.path.join(rig_out, "views.json")))
            cloud = read_ply(os.path.join(info["results"], "pointcloud.ply"))
            t = time.perf_counter()
            figs, shown = [], {}
            for rec in info["views"]:
                npz = np.load(os.path.join(rig_out, "views", rec["name"] + ".npz"))
                f, imgs = view_figures(rec, npz, world, cloud if rec["category"] == "input" else None)
                figs.append(f)
                shown.setdefault(rec["category"], []).append((rec["name"], imgs))
            noise = noise_figure(next(r for r in info["views"] if r["category"] == "input"), info["noise"],
                                 os.path.join(rig_out, "views"), world) if info.get("noise") else None
            for cat, items in shown.items():  # first, middle and last of each category
                for name, imgs in {items[0][0]: items[0][1], items[len(items) // 2][0]: items[len(items) // 2][1],
                                   items[-1][0]: items[-1][1]}.items():
                    write_png(os.path.join(out, f"{spec['name']}_{name}.png"), imgs["render"], imgs["truth"])
            stages = poller.stages(info["job_id"])
            rig = {"rig": spec["name"], "cameras": len(spec["cameras"]), "job_id": info["job_id"],
                   "job_seconds": info["job_seconds"], "stages": stages, "blender_seconds": blender_s,
                   "figures_seconds": time.perf_counter() - t, "spacing": info["spacing"],
                   "as_saved": info["as_saved"], "background": info["background"],
                   "background_note": info["background_note"], "extra_view_props": info["extra_view_props"],
                   "levels_shown_at_start": info["levels_shown_at_start"], "noise": noise,
                   "summary": summarise(figs), "views": figs}
            rigs.append(rig)
            st = ", ".join(f"{k} {v:.1f} s" for k, v in stages.items() if k not in ("done", "failed"))
            print(f"bench_fidelity: rig '{spec['name']}': job {info['job_seconds']:.1f} s ({st}); "
                  f"{len(figs)} renders, {np.mean([f['render_s'] for f in figs]):.1f} s each; "
                  f"Blender total {blender_s:.0f} s, figures {rig['figures_seconds']:.0f} s", flush=True)
        poller.stop.set()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()

    # ---- report
    print()
    saved = rigs[0]["as_saved"]
    differs = saved["view_transform"] != "Standard" or saved["look"] not in ("None", "")
    print(f"Blender {json.load(open(os.path.join(out, rigs[0]['rig'], 'views.json')))['blender']}, Cycles CPU, "
          f"{args.samples} samples, {size[0]}×{size[1]}, pixel filter {saved['filter_width']} px; "
          f"background: {rigs[0]['background_note']}")
    print(f"view transform after import: {saved['view_transform']} (look {saved['look']}). PSNR/SSIM are of "
          f"the Standard view transform" + (f"; 'saved' = rendered as saved ({saved['view_transform']})"
                                             if differs else "") + ".")
    if rigs[0]["levels_shown_at_start"]:
        print(f"note: at frame_start (where input and novel views render, as saved) these level objects are "
              f"shown too: {', '.join(rigs[0]['levels_shown_at_start'])}")
    for r in rigs:
        if r["noise"]:
            n = r["noise"]
            print(f"noise ({r['rig']}, first input camera): {n['samples']} samples {n['psnr_n']:.2f} dB, "
                  f"{2 * n['samples']} samples {n['psnr_2n']:.2f} dB, {n['samples']} vs {2 * n['samples']}: "
                  f"{n['psnr_n_vs_2n']:.1f} dB → noise costs {n['noise_cost_db']:.2f} dB at {n['samples']} "
                  f"samples ({'under' if n['noise_cost_db'] < 0.5 else 'NOT under'} 0.5 dB)")
    chk = [f for r in rigs for f in r["views"] if f.get("depth_ratio_corner_over_centre")]
    if chk:
        print(f"depth pass: corner/centre ratio of Blender to true depth {np.median([f['depth_ratio_corner_over_centre'] for f in chk]):.4f} "
              f"(ray length would give {np.median([f['ray_length_would_give'] for f in chk]):.4f}): z-depth")
    std = [f["standard_vs_numpy_max"] for r in rigs for f in r["views"] if f.get("standard_vs_numpy_max") is not None]
    if std:
        print(f"Standard via Blender vs the sRGB OETF in numpy: max {max(std):.2f}/255")
    print()
    print("wrong = depth pass off the true depth by > 3% (> 10% column); scaled = the same after "
          "dividing the depth by the view's median Blender/true ratio (z ratio: its range), i.e. "
          "a wrong surface, not a wrong global scale")
    print_table(rigs, differs)
    print()
    print(f"{'rig':7} | surface within 1% of true depth (input views: min / mean) | covered | accurate (of covered)")
    for r in rigs:
        s = r["summary"].get("input")
        if s:
            print(f"{r['rig']:7} | {100 * s['surface_within_1pct_min']:6.2f}% / {100 * s['surface_within_1pct_mean']:6.2f}%"
                  f"{'':33}| {100 * s['surface_covered_mean']:6.2f}% | {100 * s['surface_accurate_mean']:6.2f}%")
    print()
    for r in rigs:
        st = ", ".join(f"{k} {v:.1f} s" for k, v in r["stages"].items() if k not in ("done", "failed", "cancelled"))
        print(f"{r['rig']:7} | job {r['job_seconds']:5.1f} s over {r['cameras']} cameras ({st})")
    print()
    results = targets(rigs)
    for name, ok, detail in results:
        print(f"{'MET    ' if ok else 'NOT MET'}  {name}: {detail}")
    dolly = {r["rig"]: r["summary"]["dive_DOLLY"]["psnr_min"] for r in rigs if "dive_DOLLY" in r["summary"]}
    if dolly:
        print(f"(info)   DOLLY dive min PSNR (its target belongs to issue 8): "
              + ", ".join(f"{k} {x:.2f}" for k, x in dolly.items()))
    total = time.perf_counter() - t_all
    json.dump({"repo": repo, "samples": args.samples, "size": size, "seconds": total, "rigs": rigs,
               "targets": [{"target": n, "met": ok, "detail": d} for n, ok, d in results]},
              open(os.path.join(out, "fidelity.json"), "w"), indent=1, default=float)
    print(f"\nbench_fidelity: {total:.0f} s in all; figures in {out}/fidelity.json, PNGs (render | truth | |diff|×4) in {out}")


if __name__ == "__main__":
    main()
