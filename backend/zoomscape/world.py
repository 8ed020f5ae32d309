"""The world as Gaussians: the dream's cloud lifted to oriented 3D Gaussians, coloured over all
views jointly and refined on all of them (LucidDreamer's 3DGS stage), written as world.ply.

Every point k of the final cloud P belongs to one view v = source[k] (dream.DreamResult); the
consensus moves points only along their own rays, so in that view it still sits on its pixel:

    u_k = ⌊π_v(x_k)⌋,  z_k = its z-depth in v                               (own_pixels)
    t_u, t_v = surface_tangents(cam_v, D_v)[u_k] · z_k / D_v(u_k)          (own_tangents)
        D_v = result.observed[v], the full depth the view saw (finite almost everywhere), so the
        border of the view's own pixels makes no fake depth edge
    Σ_k = σ²(t_u t_uᵀ + t_v t_vᵀ) + (φ·σ·S_min)² n nᵀ,  μ_k = x_k       (gaussians.oriented_gaussians)
        the pixel footprint σ = SIGMA_PX in the own view, flat along the normal n (φ = FLATNESS)
    c* = argmin_{c ∈ [0,1]} Σ_v ‖W_v (A_v c − I_v)‖² + λ ‖c − c₀‖²          (world_colors)
        I_v = result.images[v] (the picture the view dreamed), A_v the compositing weights
        T_k α_k of view v (one reference-rasterizer pass each: occlusion comes with them),
        W_v = diag(w_v): 1 on the pixels view v painted, COVERED_WEIGHT on those where it showed
        old points (pixel_weights), c₀ the points' colours; gaussians.solve_colors
    refine: Adam on (1 − λ)·L1 + λ·(1 − SSIM) of the render of view v_s against I_{v_s}, one view
        per step (a seeded shuffle of the views, epoch after epoch), at most `steps` steps and
        `seconds` of wall time; on gsplat with CUDA tensors, on the reference rasterizer on the
        CPU (raster.rasterize); kept only when it does not lower the mean PSNR over the views
        (refine_world)

The Gaussians are in world coordinates (Blender's, metres): their frame is WORLD_FRAME (origin 0,
rotation I, unit 1). pointcloud.ply stays: it is the mission's point object and a fallback.

The budget is settings.Settings.world_refine_budget(device): 60 s with CUDA (gsplat; REFINE_STEPS
caps it), 0 on the CPU. There a step on the reference rasterizer at the demo's size (4 views at
320×240, ~200k Gaussians) costs 1.3–2 s on one core (a forward render ~0.4 s): 4 steps lower the
views' mean PSNR by 0.3 dB, 16 steps (26 s with the two PSNR passes, about the whole demo job's
time again) raise it by 0.4 dB. The demo's time buys nothing worth it: on the CPU the world is
the least-squares colours.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from .cameras import Camera, world_to_pixels
from .gaussians import (COLOUR_RIDGE, COLOUR_ROUNDS, FLATNESS, OPACITY0, SERIAL_PIXELS,
                        SIGMA_PX, colour_operator, oriented_gaussians, psnr, refine_views, render_level,
                        solve_colors, surface_tangents, torch_threads)
from .wire.manifest import LevelFrame
from .wire.splats import Gaussians

WORLD_FRAME = LevelFrame(np.zeros(3), np.eye(3), 1.0)  # world coordinates: x_world = x_local
REFINE_STEPS = 3000  # the refinement's step cap (LucidDreamer's 3DGS stage runs ~3000 iterations)
STEP_ESTIMATE = 3.0  # a refinement step ≈ this many forward renders (forward + backward + Adam)
# CG iterations of the world's colour solve (in COLOUR_ROUNDS active-set rounds). Its views overlap,
# so it converges faster than one level's: on the demo (8 views, 230k Gaussians) 15 give a mean
# 34.64 dB at the views in 1.8 s, 30 (COLOUR_STEPS) 34.69 dB in 3.3 s, 10 in one round 32.6 dB.
WORLD_COLOUR_STEPS = 15
# The colour solve's weight of a view's covered pixels (dream.DreamResult.masks): there the view's
# picture is Î_v, the earlier views' points re-rendered (interpolated between their pixels, so
# blurred, and placed by their depth): no new sight of the surface, and weighted like the pixels
# the view painted it pulls the colours toward that blur. Against the true world at the demo's
# inputs (reference rasterizer, 320×240): weight 1 min/mean 31.17/33.26 dB, 0.5 31.73/34.15,
# 0.25 32.01/34.97, 0 31.60/35.01; on the walk 0.5 keeps the min (27.16 → 27.18) where 0.25 and
# below lose up to 0.8 dB at its last view, and on the orbit 0.5 is within 0.1 dB everywhere.
COVERED_WEIGHT = 0.5


@dataclass
class WorldGaussians:
    """The world's Gaussians, one per point of the dream's cloud (in its order).

    gaussians: float32 numpy Gaussians in world coordinates (means [N, 3] metres, quats [N, 4]
    wxyz, scales [N, 3] metres, opacities [N], colors [N, 3]); frame: WORLD_FRAME; source: [N]
    the view each Gaussian came from; stats: {"points", "views", "psnr": [V] dB at the input
    views, "psnr_plain": [V] with the points' own colours, ...}.
    """

    gaussians: Gaussians
    source: np.ndarray
    frame: LevelFrame = WORLD_FRAME
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.gaussians)


def dreamed_cameras(result, cams: list[Camera]) -> list[Camera]:
    """The cameras of all of result's views: result.cameras (the user's, then any extra views
    the dream planned) when it holds them, else cams; ValueError unless there is one camera, one
    image and one observed depth per view."""
    every = list(getattr(result, "cameras", None) or cams)
    if not (len(every) == len(result.images) == len(result.observed)) or not every:
        raise ValueError(f"result: needs a camera, an image and an observed depth per view; has "
                         f"{len(every)} cameras, {len(result.images)} images, "
                         f"{len(result.observed)} depths")
    return every


def serial_threads(cams: list[Camera], device=None, backend: str = "auto") -> Optional[int]:
    """1 (one torch thread, gaussians.torch_threads) for CPU work on views of at most
    SERIAL_PIXELS pixels: thousands of small ops fork and join every core otherwise, which on a
    shared machine is several times slower; None (unchanged) elsewhere."""
    cpu = torch.device(device or "cpu").type == "cpu" and backend != "gsplat"
    return 1 if cpu and max(c.width * c.height for c in cams) <= SERIAL_PIXELS else None


def world_device(engine) -> torch.device:
    """Where the world's Gaussians are refined: the engine's device when it is a CUDA device
    (gsplat renders there), else the CPU (the reference rasterizer; e.g. for "mps")."""
    dev = torch.device(getattr(engine, "device", None) or "cpu")
    return dev if dev.type == "cuda" else torch.device("cpu")


def own_pixels(cam: Camera, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each point's own pixel in cam: xyz [N, 3] world → (pix [N] flat row-major index
    ⌊v⌋·W + ⌊u⌋, Xc [N, 3] camera-space position, z [N] z-depth). Points outside the image are
    clamped onto its border (a point of view v projects into v; the clamp only guards rounding)."""
    uv, z = world_to_pixels(cam, xyz)
    j = np.clip(np.floor(uv[:, 0]), 0, cam.width - 1).astype(np.int64)
    i = np.clip(np.floor(uv[:, 1]), 0, cam.height - 1).astype(np.int64)
    w2c = cam.w2c
    Xc = xyz @ w2c[:3, :3].T + w2c[:3, 3]
    return i * cam.width + j, Xc, z


def own_tangents(cam: Camera, observed: np.ndarray, pix: np.ndarray,
                 z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera-space tangents (t_u [N, 3], t_v [N, 3]) of the points at pixels pix [N] with
    z-depths z [N], from the view's full depth observed [H, W] (+inf where it saw nothing:
    filled with the median there).

    t = surface_tangents(cam, D)[pix] · z / D[pix]: a point the consensus moved along its ray by
    z / D carries its surface patch scaled about the camera by the same factor. The footprint
    stays whole in front of depth edges too (edge_shrink 1, unlike a zoom level's): a novel view
    looks behind a world's silhouettes, where a level has the coarser levels and the world
    behind it, and a shrunk edge leaves the gap its parallax opens empty (measured on the demo
    job: novel views' no-geometry 0.18 % → 0.51 %, their PSNR min / mean −0.3 dB).
    """
    D = np.asarray(observed, np.float64)
    ok = np.isfinite(D) & (D > 0)
    D = np.where(ok, D, np.median(D[ok]) if ok.any() else 1.0)
    t_u, t_v = surface_tangents(cam, D, edge_shrink=1.0)
    k = (z / D.reshape(-1)[pix])[:, None]
    return t_u[pix] * k, t_v[pix] * k


def lift_points(result, cams: list[Camera], *, sigma_px: float = SIGMA_PX, flatness: float = FLATNESS,
                opacity: float = OPACITY0) -> Gaussians:
    """One flat, footprint-sized Gaussian per point of result.cloud (its order), coloured with the
    points' colours; in world coordinates. result: dream.DreamResult; cams: its cameras."""
    cloud = result.cloud
    N = len(cloud)
    parts, index = [], []
    for v, cam in enumerate(cams):
        sel = np.flatnonzero(result.source == v)
        if len(sel) == 0:
            continue
        pix, Xc, z = own_pixels(cam, cloud.xyz[sel])
        t_u, t_v = own_tangents(cam, result.observed[v], pix, z)
        g = oriented_gaussians(cam, Xc, t_u, t_v, cloud.rgb[sel], WORLD_FRAME,
                               sigma_px=sigma_px, flatness=flatness, opacity=opacity)
        parts.append(g.replace(means=cloud.xyz[sel].astype(np.float32)))   # exactly the points
        index.append(sel)
    if sum(len(i) for i in index) != N:
        raise ValueError(f"result.source: {N - sum(len(i) for i in index)} points belong to no "
                         f"view 0..{len(cams) - 1}")
    if not parts:
        return Gaussians(np.zeros((0, 3), np.float32), np.zeros((0, 4), np.float32),
                         np.zeros((0, 3), np.float32), np.zeros(0, np.float32), np.zeros((0, 3), np.float32))
    g = Gaussians.concat(parts)
    order = np.empty(N, np.int64)
    order[np.concatenate(index)] = np.arange(N)
    return g.select(order)


def world_colors(g: Gaussians, images: list, cams: list[Camera], *, steps: int = WORLD_COLOUR_STEPS,
                 rounds: int = COLOUR_ROUNDS, ridge: float = COLOUR_RIDGE, device=None,
                 weights: Optional[list] = None) -> np.ndarray:
    """Deconvolve g's colours over all views jointly (the module docstring's c*):
    images: V × [H_v, W_v, 3]; cams: V cameras → colours [N, 3] float32. steps ≤ 0: g's colours.
    weights: None, or V × [H_v, W_v] pixel weights w_v(u) ≥ 0 (pixel_weights): view v's pixel u
    counts w_v(u)² in the sum of squares (its row of A_v and of I_v scaled by w_v(u))."""
    if steps <= 0 or len(g) == 0:
        return np.asarray(g.colors, np.float32).copy()
    if weights is not None and len(weights) != len(cams):
        raise ValueError(f"weights: need one pixel weight map per view ({len(cams)}), got {len(weights)}")
    systems = []
    for v, (im, cam) in enumerate(zip(images, cams)):
        w = None if weights is None else np.asarray(weights[v], np.float32)
        A, At, _ = colour_operator(g, cam, WORLD_FRAME, device, row_weight=w)
        y = torch.as_tensor(np.asarray(im, np.float32), device=A.device).reshape(-1, 3)
        if w is not None:
            y = y * torch.as_tensor(w.reshape(-1, 1), device=A.device)
        systems.append((A, At, y))
    c0 = torch.as_tensor(np.asarray(g.colors, np.float32), device=systems[0][0].device)
    return solve_colors(c0, systems, steps=steps, rounds=rounds, ridge=ridge)


def view_psnrs(g: Gaussians, images: list, cams: list[Camera], *, backend: str = "auto",
               device=None) -> list[float]:
    """PSNR (dB) of g rendered (black background) into each cam against images: [V]."""
    out = []
    with torch.no_grad():
        for im, cam in zip(images, cams):
            rgb, _ = render_level(g, cam, WORLD_FRAME, backend=backend, device=device)
            out.append(psnr(rgb, im))
    return out


def pixel_weights(result, covered_weight: float = COVERED_WEIGHT) -> Optional[list]:
    """The colour solve's pixel weights of each view: covered_weight where the view showed old
    points (result.masks[v], a re-render of other views' points), 1 where it painted (its own
    points' pixels). → V × [H_v, W_v] float32; None when covered_weight is 1 or the result holds
    no masks (every pixel counts alike)."""
    if not (0.0 <= covered_weight <= 1.0):
        raise ValueError(f"covered_weight: must be in [0, 1], got {covered_weight}")
    masks = getattr(result, "masks", None)
    if covered_weight == 1.0 or not masks:
        return None
    return [np.where(np.asarray(m, bool), np.float32(covered_weight), np.float32(1.0)) for m in masks]


def world_gaussians(result, cams: list[Camera], *, colour_steps: int = WORLD_COLOUR_STEPS,
                    sigma_px: float = SIGMA_PX, flatness: float = FLATNESS, opacity: float = OPACITY0,
                    device=None, measure: bool = True,
                    covered_weight: float = COVERED_WEIGHT) -> WorldGaussians:
    """The dream's cloud as Gaussians (lift_points), colours deconvolved over all views
    (world_colors, each view's covered pixels weighted by covered_weight: pixel_weights).
    result: dream.DreamResult with images and observed per view; cams: the cameras it dreamed, in
    its order (result.cameras instead when it holds them: dreamed_cameras). device: where the
    colour operators are built (None: the CPU). measure: also render every view before and after
    the colour fit (stats psnr_plain, psnr).
    """
    cams = dreamed_cameras(result, cams)
    with torch_threads(serial_threads(cams, device)):
        t0 = time.perf_counter()
        g = lift_points(result, cams, sigma_px=sigma_px, flatness=flatness, opacity=opacity)
        stats = {"points": len(g), "views": len(cams), "seconds_lift": time.perf_counter() - t0}
        if measure:
            stats["psnr_plain"] = view_psnrs(g, result.images, cams, device=device)
        t1 = time.perf_counter()
        g = g.replace(colors=world_colors(g, result.images, cams, steps=colour_steps, device=device,
                                          weights=pixel_weights(result, covered_weight)))
        stats["seconds_colours"] = time.perf_counter() - t1
        if measure:
            stats["psnr"] = view_psnrs(g, result.images, cams, device=device)
    return WorldGaussians(gaussians=g, source=np.asarray(result.source).copy(), stats=stats)


def refine_world(world: WorldGaussians, images: list, cams: list[Camera], *, seconds: float,
                 steps: int = REFINE_STEPS, seed: int = 0, clock: Callable[[], float] = time.monotonic,
                 should_cancel: Optional[Callable[[], bool]] = None, backend: str = "auto",
                 device=None) -> WorldGaussians:
    """LucidDreamer's 3DGS stage on the world's Gaussians: Adam over all views (the module
    docstring), at most `steps` steps and `seconds` on `clock`; no densification (the Gaussians
    already tile every view at its pixel size). device: where the parameters live (CUDA: gsplat).

    The views' PSNRs are measured before and after: the first pass times a forward render (×
    STEP_ESTIMATE: the budget's guess for the first step) and the second is kept out of the
    steps' share, so the whole call keeps to `seconds`. The refined Gaussians are kept only when
    their mean PSNR is not lower. seconds = 0 or steps = 0: nothing runs. → a WorldGaussians with
    stats refine_steps, refine_seconds (the whole call's time on clock), psnr_before,
    psnr_after, refined (kept).
    """
    if not (np.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds: must be a finite number ≥ 0, got {seconds!r}")
    stats = dict(world.stats, refine_steps=0, refine_seconds=0.0, refined=False)
    if steps <= 0 or seconds <= 0 or len(world) == 0:
        return WorldGaussians(world.gaussians, world.source, world.frame, stats)
    with torch_threads(serial_threads(cams, device, backend)):
        return _refine_world(world, images, cams, stats, seconds=seconds, steps=steps, seed=seed,
                             clock=clock, should_cancel=should_cancel, backend=backend, device=device)


def _refine_world(world, images, cams, stats, *, seconds, steps, seed, clock, should_cancel,
                  backend, device) -> WorldGaussians:
    t0 = clock()
    before = view_psnrs(world.gaussians, images, cams, backend=backend, device=device)
    t1 = clock()
    render_s = (t1 - t0) / len(cams)                     # one forward render
    rng = np.random.default_rng(seed)
    epochs = -(-steps // len(cams))
    order = np.concatenate([rng.permutation(len(cams)) for _ in range(epochs)])[:steps].tolist()
    # the steps get what the two PSNR passes leave of the budget
    g, rs = refine_views(world.gaussians, images, cams, WORLD_FRAME, steps=steps, order=order,
                         seconds=max(0.0, seconds - 2 * (t1 - t0)), clock=clock,
                         step_estimate=STEP_ESTIMATE * render_s, backend=backend, densify=False,
                         should_cancel=should_cancel, device=device)
    after = view_psnrs(g, images, cams, backend=backend, device=device) if rs["steps"] else before
    keep = rs["steps"] > 0 and np.mean(after) >= np.mean(before)
    stats.update(refine_steps=rs["steps"], refine_seconds=clock() - t0, refined=bool(keep),
                 psnr_before=before, psnr_after=after, loss_first=rs["loss"][0] if rs["loss"] else None,
                 loss_last=rs["loss"][-1] if rs["loss"] else None)
    if keep:
        stats["psnr"] = after
    return WorldGaussians(g if keep else world.gaussians, world.source, world.frame, stats)
