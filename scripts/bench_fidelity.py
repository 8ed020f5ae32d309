"""End-to-end fidelity benchmark: what Blender renders after a job vs the procedural world's truth.

Run by scripts/bench_fidelity with .venv/backend's Python. One job = one Blender process = the rows
it renders. For each rig (the demo's translating cameras, an orbit of 8 cameras around a point, a
forward walk of 5 cameras):
  main   a DOLLY job (the panel's default Zoom): input, novel and dive_DOLLY rows
  lens   the same rig's job sent in LENS (the levels painted as a 2D centre-crop stack; the
         imported rig dives the way its levels were painted): its dive only → dive_LENS
and on the demo rig:
  truth  the DOLLY job against a second backend started with `zoomscape serve --depth-truth` (the
         procedural engine's depth estimate is the true depth) → input_truth, novel_truth and
         dive_DOLLY_truth: what the monocular depth's lies cost vs what the algorithm costs (with
         the true depth, a wrong surface is the algorithm's own: occlusion, floaters, seams)
  deep   a --deep-levels (10) level job (the level prompts cycled) at each --deep-factor, DOLLY and
         LENS, every --deep-every-th dive frame → deep_DOLLY / deep_LENS (factor 2) and
         deep_<mode>_x<F> (another factor F); the DOLLY/LENS job-time ratio is printed
Each job
1. runs through a real backend process (`zoomscape serve` on loopback) and the extension in
   headless Blender exactly as the panel does (scripts/fidelity_blender.py: stage + enable, set
   the props, Generate, import, zoom path), polling the job's status for stage times; --workers
   Blender processes run at once (default 2, Cycles threads split between them; a job holds a
   lock alone, so its time is not shared with renders and it never queues, while renders share it);
2. renders with Cycles (CPU) every input camera, novel cameras (midpoints of neighbours; each
   camera moved forward and up by 0.3 of the rig's spacing) and every k-th dive frame (as
   imported: the job's own zoom mode), with a z-depth pass and alpha;
3. renders the truth: World(scene prompt, seed).render through the camera Blender rendered (its
   matrix_world and intrinsics, composed with the rig root's transform for dive frames, where
   the world is scaled about the anchor instead of the camera moving); for DOLLY dive frames also
   the same dive toward the true surface (dive_map: the job's scale about the zoom camera, which
   no view can tell, factored out; its figure is "PSNR of the same dive");
4. prints PSNR/SSIM (display images with the Standard view transform, and with the scene's view
   transform as saved when it differs), no-geometry pixels (alpha < 0.5), wrong-surface pixels
   (depth pass off the true depth by > 3%), the point cloud's surface accuracy/completeness at
   the input views (pointcloud.project z-buffer within 1% of the true depth), stage and render
   times, and every target as MET / NOT MET. Not a test. Writes out/bench_fidelity/fidelity.json,
   render | truth | |diff|×4 PNGs per rig and strip_<category>.png (the demo's dive frames left to
   right, the render above the truth).
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures
import contextlib
import fcntl
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
CATS = ("input", "novel", "input_truth", "novel_truth", "dive_DOLLY", "dive_LENS", "dive_DOLLY_truth", "deep_DOLLY", "deep_LENS")
DIVE_TARGET_DB = 28.0   # issue 11: every dive frame (every mode, every depth) ≥ 28 dB against the truth
ROW_GROUPS = ("main", "lens", "truth", "deep")


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


def dive_map(results: str, world):
    """(C_0, s) of a DOLLY job: the zoom camera's centre and how much farther the job's anchor is
    than the true surface on the same ray (s = |a − C_0| / |a* − C_0|), or None (LENS, no levels).

    The job's geometry is a few % off in scale (its first depth estimate's), and scaling about
    C_0 cannot be seen from C_0; the dive flies to the job's anchor, so its camera at C sees what
    the truth looks like from C_0 + (C − C_0)/s: the same dive toward the surface the zoom camera
    looks at (engines/procedural_zoom.true_dolly_rig paints the levels from there)."""
    from zoomscape.cameras import LevelCameras, from_wire
    from zoomscape.engines.procedural_zoom import true_dolly_rig
    from zoomscape.wire.manifest import read_manifest
    m = read_manifest(results)
    if m.zoom is None or m.zoom.mode != "dolly":
        return None
    c0 = from_wire(dict(name="zoom", matrix_world=np.asarray(m.zoom.matrix_world).tolist(), **m.zoom.intrinsics.to_dict()))
    rig = LevelCameras(c0, np.asarray(m.zoom.anchor, np.float64), m.zoom.factor, "dolly")
    true = true_dolly_rig(world, rig)
    if true is rig:  # the ray meets only the sky
        return None
    return c0.center, float(np.linalg.norm(rig.anchor - c0.center) / np.linalg.norm(true.anchor - c0.center))


def in_pixel_depth(world, cam, depth: np.ndarray, tdepth: np.ndarray, tol: float) -> np.ndarray:
    """[H, W] bool: the rendered depth is within tol (relative) of a true depth seen in the pixel's
    own square: at its centre (tdepth) or at one of its four corners (one more trace, of the
    (H+1) × (W+1) corner grid). A pixel that fails shows a surface the truth shows nowhere in it:
    a wrong surface, not a sub-pixel offset. The strict figure (the centre's ray only) counts
    every pixel where a depth edge or grazing ground is a fraction of a pixel off (near the
    horizon a few rows span tens of metres of ground, so its depth changes by > 3 % within a
    pixel); PSNR already measures that offset."""
    H, W = tdepth.shape
    u, v = np.meshgrid(np.arange(W + 1, dtype=np.float64), np.arange(H + 1, dtype=np.float64))
    corner = world.trace(cam, np.stack([u.ravel(), v.ravel()], axis=1)).t.reshape(H + 1, W + 1)
    ok = np.abs(depth - tdepth) <= tol * tdepth
    for t in (corner[:-1, :-1], corner[:-1, 1:], corner[1:, :-1], corner[1:, 1:]):
        with np.errstate(invalid="ignore"):
            ok |= np.abs(depth - t) <= tol * t
    return ok


def view_figures(rec: dict, npz, world, cloud=None, dive=None) -> tuple[dict, dict]:
    """Figures of one rendered view against the truth → (figures, images for the PNGs).
    dive: dive_map's (C_0, s) for a DOLLY dive frame: also "psnr_dive", against the truth from
    C_0 + (C − C_0)/s."""
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
    wrong_in_pixel = None
    if rec["category"].startswith(("input", "novel")):
        wrong_in_pixel = float((geo & ~in_pixel_depth(world, cam, depth, tdepth, 0.03)).sum() / max(geo.sum(), 1))
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
         "wrong_surface_in_pixel": wrong_in_pixel,
         "depth_ratio": float(ratio),
         "render_s": rec["render_seconds"], "truth_s": truth_s, "depth_scale": lam, "skew_px": skew,
         "samples": rec["samples"]}
    if dive is not None:
        import dataclasses
        c0, scale = dive
        c2w = cam.c2w.copy()
        c2w[:3, 3] = c0 + (cam.center - c0) / scale
        dcam = dataclasses.replace(cam, c2w=c2w)
        dtruth = world.shade(world.trace(dcam, pixel_grid(cam.width, cam.height)))
        f["psnr_dive"] = psnr(std, dtruth.reshape(cam.height, cam.width, 3).astype(np.float64))
        f["dive_scale"] = scale
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

def categories(figs: list[dict]) -> list[str]:
    """The categories of figs: CATS' order first, then any other in the order met."""
    found = list(dict.fromkeys(f["category"] for f in figs))
    return [c for c in CATS if c in found] + [c for c in found if c not in CATS]


def is_dive(cat: str) -> bool:
    return cat.startswith("dive_") or cat.startswith("deep_")


def summarise(figs: list[dict]) -> dict:
    out = {}
    for cat in categories(figs):
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
                    **({"wrong_in_pixel_max": col("wrong_surface_in_pixel").max(),
                        "wrong_in_pixel_mean": col("wrong_surface_in_pixel").mean()}
                       if all(f["wrong_surface_in_pixel"] is not None for f in fs) else {}),
                    "depth_ratio_min": col("depth_ratio").min(), "depth_ratio_max": col("depth_ratio").max(),
                    "render_s_mean": col("render_s").mean()}
        if all("psnr_dive" in f for f in fs):
            out[cat]["psnr_dive_min"], out[cat]["psnr_dive_mean"] = col("psnr_dive").min(), col("psnr_dive").mean()
            out[cat]["dive_scale"] = fs[0]["dive_scale"]
        if "surface_within_1pct" in fs[0]:
            for k in ("surface_within_1pct", "surface_covered", "surface_accurate"):
                out[cat][k + "_min"] = col(k).min()
                out[cat][k + "_mean"] = col(k).mean()
    return out


def print_table(rigs: list[dict], as_saved_differs: bool) -> None:
    hdr = (f"{'rig':7} {'views':16} {'n':>2} | {'PSNR min':>8} {'mean':>6} | {'SSIM min':>8} {'mean':>6} | "
           + (f"{'saved min':>9} {'mean':>6} | " if as_saved_differs else "")
           + f"{'no-geo max':>10} {'mean':>7} | {'wrong max':>9} {'mean':>7} | {'>10% max':>8} | "
           f"{'scaled max':>10} {'mean':>7} | {'in-pixel max':>12} {'mean':>7} | {'z ratio':>11} | {'render s':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in rigs:
        for cat, s in r["summary"].items():
            print(f"{r['rig']:7} {cat:16} {s['n']:2d} | {s['psnr_min']:8.2f} {s['psnr_mean']:6.2f} | "
                  f"{s['ssim_min']:8.3f} {s['ssim_mean']:6.3f} | "
                  + (f"{s['psnr_as_saved_min']:9.2f} {s['psnr_as_saved_mean']:6.2f} | " if as_saved_differs else "")
                  + f"{100 * s['no_geometry_max']:9.2f}% {100 * s['no_geometry_mean']:6.2f}% | "
                  f"{100 * s['wrong_surface_max']:8.2f}% {100 * s['wrong_surface_mean']:6.2f}% | "
                  f"{100 * s['wrong10_max']:7.2f}% | "
                  f"{100 * s['wrong_scaled_max']:9.2f}% {100 * s['wrong_scaled_mean']:6.2f}% | "
                  + (f"{100 * s['wrong_in_pixel_max']:11.2f}% {100 * s['wrong_in_pixel_mean']:6.2f}% | "
                     if "wrong_in_pixel_max" in s else f"{'–':>12} {'–':>7} | ")
                  + f"{s['depth_ratio_min']:5.3f}–{s['depth_ratio_max']:5.3f} | {s['render_s_mean']:8.1f}")


def targets(rigs: list[dict]) -> list[tuple[str, bool, str]]:
    out = []

    def add(name, values, ok, fmt):
        out.append((name, bool(ok), fmt))

    per = {r["rig"]: r["summary"] for r in rigs}
    def cat_vals(cat, key):
        return {rig: s[cat][key] for rig, s in per.items() if cat in s and key in s[cat]}

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
    dives = [c for c in categories([{"category": c} for s in per.values() for c in s]) if is_dive(c)
             and c != "dive_LENS"]
    for cat in dives:  # issue 11: every dive row, every frame
        v = cat_vals(cat, "psnr_min")
        add(f"{cat} ≥ {DIVE_TARGET_DB:g} dB every frame (issue 11)", v, min(v.values()) >= DIVE_TARGET_DB,
            ", ".join(f"{k} {x:.2f}" for k, x in v.items()))
        v = cat_vals(cat, "psnr_dive_min")
        if v:  # the same dive toward the true surface (dive_map): the job's scale about C_0 factored out
            sc = cat_vals(cat, "dive_scale")
            add(f"{cat} ≥ {DIVE_TARGET_DB:g} dB every frame, the same dive (issue 11)", v,
                min(v.values()) >= DIVE_TARGET_DB, ", ".join(f"{k} {x:.2f} (s {sc[k]:.4f})" for k, x in v.items()))
    demo = next((r for r in rigs if r["rig"] == "demo" and r.get("job_seconds") is not None), None)
    if demo is not None:
        note = "" if demo["extra_view_props"] else " (no extra-views option in this tree: job time as is)"
        add(f"demo job ≤ 1.5 × {BASELINE_JOB_S:g} s with extra views", None,
            demo["job_seconds"] <= 1.5 * BASELINE_JOB_S, f"{demo['job_seconds']:.1f} s ({demo['zoom_mode']}){note}")
    return out


def write_strip(path: str, items: list[tuple[dict, dict]], max_frames: int = 16) -> int:
    """The frames of one dive left to right, each render above its truth → PNG; → frames shown."""
    from PIL import Image
    if len(items) > max_frames:
        pick = np.unique(np.round(np.linspace(0, len(items) - 1, max_frames)).astype(int))
        items = [items[i] for i in pick]
    cols = [np.concatenate([imgs["render"], imgs["truth"]], axis=0) for _, imgs in items]
    gap = np.ones((cols[0].shape[0], 2, 3))
    strip = np.concatenate([c for col in cols for c in (col, gap)][:-1], axis=1)
    Image.fromarray(np.round(np.clip(strip, 0, 1) * 255).astype(np.uint8)).save(path)
    return len(items)


def job_plan(specs: list[dict], groups: set, deep_levels: int, deep_factors: list[float]) -> list[dict]:
    """The jobs to run: each {key, rig, spec, backend, flags, noise}, the longest first (for the
    worker pool): main jobs, deep jobs, LENS dive-only jobs, the depth-truth job."""
    mains, deeps, lenses, truths = [], [], [], []
    for i, spec in enumerate(specs):
        rig = spec["name"]
        if "main" in groups:
            mains.append({"key": rig, "rig": rig, "backend": "default", "noise": not mains,
                          "spec": dict(spec, zoom_mode="DOLLY"), "flags": []})
        if "lens" in groups:
            lenses.append({"key": f"{rig}_lens", "rig": rig, "backend": "default", "noise": False,
                           "spec": dict(spec, zoom_mode="LENS"), "flags": ["--no-input", "--no-novel"]})
        if rig != "demo":
            continue
        if "truth" in groups:
            truths.append({"key": "demo_truth", "rig": rig, "backend": "truth", "noise": False,
                           "spec": dict(spec, zoom_mode="DOLLY", category_suffix="_truth"), "flags": []})
        if "deep" in groups:
            for j, factor in enumerate(deep_factors):
                suffix = "" if factor == 2 else f"_x{factor:g}"
                for mode in ("DOLLY", "LENS"):
                    deeps.append({"key": f"demo_deep{suffix}_{mode}", "rig": rig, "backend": "default",
                                  "noise": False, "deep": True,
                                  "spec": dict(spec, zoom_mode=mode, levels=deep_levels, zoom_factor=float(factor),
                                               dive_prefix="deep", category_suffix=suffix),
                                  "flags": ["--no-input", "--no-novel"]})
    return mains + deeps + lenses + truths


class Backend:
    """One `zoomscape serve` process on loopback (extra: its flags) with a StagePoller."""

    def __init__(self, repo: str, out: str, name: str, extra=()):
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=os.path.join(repo, "backend"), HF_HUB_OFFLINE="1")
        self.log_path = os.path.join(out, f"backend_{name}.log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "zoomscape.cli", "serve", "--port", str(self.port),
                                      "--no-zeroconf", "--engine", "procedural",
                                      "--data-dir", os.path.join(out, f"backend_{name}"), *extra],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.poller = None

    def wait(self) -> "Backend":
        for _ in range(150):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/health", timeout=1)
                break
            except Exception:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        else:
            raise SystemExit(f"bench_fidelity: the backend did not start; see {self.log_path}")
        if self.proc.poll() is not None:
            raise SystemExit(f"bench_fidelity: the backend exited ({self.proc.returncode}); see {self.log_path}")
        self.poller = StagePoller(self.port)
        self.poller.start()
        return self

    def stop(self) -> None:
        if self.poller is not None:
            self.poller.stop.set()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=os.path.dirname(HERE),
                    help="the tree whose backend and extension are measured (default: this one)")
    ap.add_argument("--out", default=None, help="default REPO_OF_THIS_SCRIPT/out/bench_fidelity")
    ap.add_argument("--rigs", default="demo,orbit,walk")
    ap.add_argument("--rows", default=",".join(ROW_GROUPS),
                    help="which jobs: main (DOLLY: input, novel, dive_DOLLY), lens (dive_LENS), "
                         "truth (demo: dive_DOLLY_truth on a --depth-truth backend), deep (demo: "
                         "deep_DOLLY, deep_LENS)")
    ap.add_argument("--size", type=int, default=320, help="render width (height = 3/4)")
    ap.add_argument("--samples", type=int, default=4,
                    help="Cycles samples per pixel (the import turns off the roulette through splats, "
                         "so the noise is anti-aliasing only: the noise check prints its cost)")
    ap.add_argument("--frames-per-level", type=int, default=12)
    ap.add_argument("--dive-every", type=int, default=6)
    ap.add_argument("--deep-levels", type=int, default=10)
    ap.add_argument("--deep-factor", default="2,4", help="comma-separated zoom factors of the deep jobs")
    ap.add_argument("--deep-every", type=int, default=None,
                    help="render every k-th frame of a deep dive (default: 1.5 × frames per level, so "
                         "the frames fall at half-level phases; and the deepest frame)")
    ap.add_argument("--workers", type=int, default=2, help="Blender processes at once (Cycles threads split)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-novel", action="store_true")
    ap.add_argument("--no-dive", action="store_true")
    ap.add_argument("--no-noise-check", action="store_true")
    ap.add_argument("--blender", default="bpy42", help="the .venv/<name> with bpy (4.2 line)")
    ap.add_argument("--quick", action="store_true",
                    help="demo and walk rigs, every 12th dive frame, deep factor 2 only and every "
                         "3rd level's frame of its dives (the full run took 43.6 min on 2 cores)")
    args = ap.parse_args()
    if args.quick:
        args.rigs = "demo,walk" if args.rigs == "demo,orbit,walk" else args.rigs
        args.dive_every = max(args.dive_every, 12)
        args.deep_factor = args.deep_factor.split(",")[0]
        args.deep_every = args.deep_every or 3 * args.frames_per_level
    groups = set(args.rows.split(","))
    if groups - set(ROW_GROUPS):
        raise SystemExit(f"bench_fidelity: unknown rows {sorted(groups - set(ROW_GROUPS))} ({', '.join(ROW_GROUPS)})")
    deep_factors = [float(x) for x in args.deep_factor.split(",") if x]
    deep_every = args.deep_every or max(1, round(1.5 * args.frames_per_level))
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
    plan = job_plan(specs, groups, args.deep_levels, deep_factors)
    world = World(SCENE_PROMPT, args.seed)
    threads = max(1, (os.cpu_count() or 2) // max(1, args.workers))
    print(f"bench_fidelity: {len(plan)} jobs ({', '.join(j['key'] for j in plan)}), {args.workers} Blender "
          f"processes at once × {threads} Cycles threads; dive every {args.dive_every}th frame, deep dive every "
          f"{deep_every}th", flush=True)

    backends = {"default": Backend(repo, out, "default")}
    if any(j["backend"] == "truth" for j in plan):
        backends["truth"] = Backend(repo, out, "truth", ["--depth-truth"])
    bpy_python = os.path.join(here_root, ".venv", args.blender, "bin", "python")
    # jobs hold it alone (their times are not shared with renders; they never queue), renders and
    # the figures share it
    lock_path = os.path.join(out, "quiet.lock")

    @contextlib.contextmanager
    def shared_quiet():
        with open(lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def run_blender(job: dict) -> dict:
        job_out = os.path.join(out, job["key"])
        os.makedirs(job_out, exist_ok=True)
        spec_path = os.path.join(job_out, "spec.json")
        json.dump(job["spec"], open(spec_path, "w"), indent=1)
        cmd = [bpy_python, os.path.join(HERE, "fidelity_blender.py"), "--spec", spec_path, "--out", job_out,
               "--port", str(backends[job["backend"]].port), "--repo", repo, "--samples", str(args.samples),
               "--dive-every", str(deep_every if job.get("deep") else args.dive_every),
               "--threads", str(threads), "--quiet-lock", lock_path, *job["flags"]]
        cmd += ["--noise-check"] if job["noise"] and not args.no_noise_check else []
        cmd += ["--no-novel"] if args.no_novel and "--no-novel" not in cmd else []
        cmd += ["--no-dive"] if args.no_dive else []
        t = time.perf_counter()
        print(f"bench_fidelity: job '{job['key']}' ({len(job['spec']['cameras'])} cameras, "
              f"{job['spec']['zoom_mode']}) in Blender …", flush=True)
        with open(os.path.join(job_out, "blender.log"), "w") as blog:
            rc = subprocess.call(cmd, stdout=blog, stderr=subprocess.STDOUT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
        if rc != 0:
            raise RuntimeError(f"Blender failed on job '{job['key']}'; see {job_out}/blender.log")
        return {"job_out": job_out, "blender_seconds": time.perf_counter() - t}

    runs = []
    try:
        for b in backends.values():
            b.wait()
        with concurrent.futures.ThreadPoolExecutor(max(1, args.workers)) as pool:
            futures = {pool.submit(run_blender, job): job for job in plan}
            for fut in concurrent.futures.as_completed(futures):
                job = futures[fut]
                try:
                    done = fut.result()
                except RuntimeError as exc:
                    for f in futures:
                        f.cancel()
                    raise SystemExit(f"bench_fidelity: {exc}")
                job_out = done["job_out"]
                info = json.load(open(os.path.join(job_out, "views.json")))
                has_input = any(r["category"].startswith("input") for r in info["views"])
                cloud = read_ply(os.path.join(info["results"], "pointcloud.ply")) if has_input else None
                dmap = dive_map(info["results"], world)
                t = time.perf_counter()
                figs, shown = [], {}
                for rec in info["views"]:
                    npz = np.load(os.path.join(job_out, "views", rec["name"] + ".npz"))
                    with shared_quiet():
                        f, imgs = view_figures(rec, npz, world, cloud if rec["category"].startswith("input") else None,
                                               dmap if is_dive(rec["category"]) else None)
                    figs.append(f)
                    shown.setdefault(rec["category"], []).append((rec["name"], imgs))
                noise = noise_figure(next(r for r in info["views"] if r["category"] == "input"), info["noise"],
                                     os.path.join(job_out, "views"), world) if info.get("noise") else None
                for cat, items in shown.items():  # first, middle and last of each category
                    for name, imgs in {items[0][0]: items[0][1], items[len(items) // 2][0]: items[len(items) // 2][1],
                                       items[-1][0]: items[-1][1]}.items():
                        write_png(os.path.join(out, f"{job['rig']}_{name}.png"), imgs["render"], imgs["truth"])
                strips = {}
                if job["rig"] == "demo":
                    for cat, items in shown.items():
                        if is_dive(cat):
                            path = os.path.join(out, f"strip_{cat}.png")
                            strips[cat] = {"path": path, "frames": write_strip(path, items)}
                stages = backends[job["backend"]].poller.stages(info["job_id"])
                run = {"key": job["key"], "rig": job["rig"], "backend": job["backend"],
                       "zoom_mode": info.get("zoom_mode"), "manifest_zoom_mode": info.get("manifest_zoom_mode"),
                       "rig_zoom_mode": info.get("rig_zoom_mode"), "levels": info.get("levels"),
                       "zoom_factor": info.get("zoom_factor"), "dive_every": info.get("dive_every"),
                       "frames": [info.get("frame_start"), info.get("frame_end")],
                       "cameras": len(job["spec"]["cameras"]), "job_id": info["job_id"],
                       "job_seconds": info["job_seconds"], "stages": stages, "blender_seconds": done["blender_seconds"],
                       "figures_seconds": time.perf_counter() - t, "spacing": info["spacing"],
                       "as_saved": info["as_saved"], "background": info["background"],
                       "background_note": info["background_note"], "extra_view_props": info["extra_view_props"],
                       "levels_shown_at_start": info["levels_shown_at_start"], "blender": info["blender"],
                       "noise": noise, "strips": strips, "views": figs}
                runs.append(run)
                st = ", ".join(f"{k} {v:.1f} s" for k, v in stages.items() if k not in ("done", "failed"))
                print(f"bench_fidelity: job '{job['key']}': {info['job_seconds']:.1f} s ({st}); "
                      f"{len(figs)} renders, {np.mean([f['render_s'] for f in figs]) if figs else 0:.1f} s each; "
                      f"Blender total {done['blender_seconds']:.0f} s, figures {run['figures_seconds']:.0f} s", flush=True)
    finally:
        for b in backends.values():
            b.stop()

    # ---- merge the jobs of each rig (its main job's settings and times)
    order = {j["key"]: i for i, j in enumerate(plan)}
    runs.sort(key=lambda r: order[r["key"]])
    rigs = []
    for spec in specs:
        mine = [r for r in runs if r["rig"] == spec["name"]]
        if not mine:
            continue
        main_run = next((r for r in mine if r["key"] == spec["name"]), mine[0])
        figs = [f for r in mine for f in r["views"]]
        rigs.append(dict({k: v for k, v in main_run.items() if k not in ("views", "key", "strips")},
                         job_seconds=main_run["job_seconds"] if main_run["key"] == spec["name"] else None,
                         noise=next((r["noise"] for r in mine if r["noise"]), None),
                         summary=summarise(figs), views=figs))

    # ---- report
    print()
    saved = rigs[0]["as_saved"]
    differs = saved["view_transform"] != "Standard" or saved["look"] not in ("None", "")
    print(f"Blender {rigs[0]['blender']}, Cycles CPU, "
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
    for r in runs:
        if r["rig_zoom_mode"] is not None and str(r["rig_zoom_mode"]).upper() != r["zoom_mode"]:
            print(f"WARNING: job '{r['key']}' was sent {r['zoom_mode']} but its level rig dives {r['rig_zoom_mode']}")
        if r["manifest_zoom_mode"] is not None and str(r["manifest_zoom_mode"]).upper() != r["zoom_mode"]:
            print(f"WARNING: job '{r['key']}' was sent {r['zoom_mode']} but its manifest says {r['manifest_zoom_mode']}")
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
          "a wrong surface, not a wrong global scale; in-pixel = the depth matches no true depth "
          "seen inside the pixel's square (its centre or corners), i.e. not a sub-pixel offset (input and "
          "novel views). The targets take the strict column. *_truth rows: the same job with the "
          "true depth estimate (--depth-truth), the algorithm's own errors without the depth lie")
    print_table(rigs, differs)
    print()
    print("dive frames (frame: PSNR dB / no-geometry % [/ PSNR of the same dive, DOLLY]):")
    for r in rigs:
        for cat in r["summary"]:
            if is_dive(cat):
                fs = [f for f in r["views"] if f["category"] == cat]
                print(f"{r['rig']:7} {cat:16} " + "  ".join(
                    f"{f['frame']}: {f['psnr']:.1f}/{100 * f['no_geometry']:.1f}%"
                    + (f"/{f['psnr_dive']:.1f}" if "psnr_dive" in f else "") for f in fs))
    print()
    print(f"{'rig':7} | surface within 1% of true depth (input views: min / mean) | covered | accurate (of covered)")
    for r, cat in [(r, c) for r in rigs for c in ("input", "input_truth")]:
        s = r["summary"].get(cat)
        if s:
            print(f"{r['rig'] + ('' if cat == 'input' else ' (true depth)'):7} | {100 * s['surface_within_1pct_min']:6.2f}% / {100 * s['surface_within_1pct_mean']:6.2f}%"
                  f"{'':33}| {100 * s['surface_covered_mean']:6.2f}% | {100 * s['surface_accurate_mean']:6.2f}%")
    print()
    for r in runs:
        st = ", ".join(f"{k} {v:.1f} s" for k, v in r["stages"].items() if k not in ("done", "failed", "cancelled"))
        print(f"{r['key']:20} | job {r['job_seconds']:6.1f} s, {r['zoom_mode']:5} {r['levels']:2d} levels × "
              f"{r['zoom_factor']:g}, {r['cameras']} cameras, backend {r['backend']} ({st}); Blender "
              f"{r['blender_seconds']:.0f} s")
    for factor in deep_factors:
        suffix = "" if factor == 2 else f"_x{factor:g}"
        d = next((r for r in runs if r["key"] == f"demo_deep{suffix}_DOLLY"), None)
        lz = next((r for r in runs if r["key"] == f"demo_deep{suffix}_LENS"), None)
        if d and lz:
            print(f"deep (factor {factor:g}): {d['levels']}-level dolly job {d['job_seconds']:.1f} s vs lens "
                  f"{lz['job_seconds']:.1f} s, ratio {d['job_seconds'] / lz['job_seconds']:.2f}; every "
                  f"{d['dive_every']}th of frames {d['frames'][0]}–{d['frames'][1]} rendered (and the last)")
    print()
    results = targets(rigs)
    for name, ok, detail in results:
        print(f"{'MET    ' if ok else 'NOT MET'}  {name}: {detail}")
    strips = [(cat, s) for r in runs for cat, s in r["strips"].items()]
    if strips:
        print()
        for cat, s in strips:
            print(f"strip {cat}: {s['path']} ({s['frames']} frames, render above truth)")
    total = time.perf_counter() - t_all
    json.dump({"repo": repo, "samples": args.samples, "size": size, "seconds": total, "rigs": rigs,
               "runs": [{k: v for k, v in r.items() if k != "views"} for r in runs],
               "targets": [{"target": n, "met": ok, "detail": d} for n, ok, d in results]},
              open(os.path.join(out, "fidelity.json"), "w"), indent=1, default=float)
    print(f"\nbench_fidelity: {total:.0f} s ({total / 60:.1f} min) in all; figures in {out}/fidelity.json, "
          f"PNGs (render | truth | |diff|×4) in {out}")


if __name__ == "__main__":
    main()
