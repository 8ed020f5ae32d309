"""Zoom-level Gaussians: lift every zoom level to 3D Gaussians, then refine them.

Level i's camera is ``cameras.LevelCameras.level(i)``: in DOLLY the zoom camera moved p^i times
closer to the anchor (same orientation and lens), in LENS the zoom camera zoomed by p^i about its
image centre (``cameras.zoom_level_camera``: same pose, f_i = p^i·f). For each level, top to
bottom (``lift_levels``):

    D̂_i = D(I_i)                                   monocular depth, unknown scale and shift
    ref_i(u) = D_{i−1}(c + (u − c)/p)              LENS: level i−1's depth on the overlap (its
                                                   centre 1/p crop; same pose, so the same rays)
    ref_i = z-buffer of level i−1's lifted pixels   DOLLY: level i−1's surface seen from C_i
             splatted into C_i                     (dolly_reference: other rays, real parallax)
    d_i = argmin_{s,t} Σ ρ((s·D̂_i + t − ref_i)/ref_i)       robust fit (align.py); scale only
                                                   when ref_i spans too little depth to tell a
                                                   shift from a scale
    D_i = ref_i + clip(d_i(D̂_i) − ref_i, ±κ·ref_i/f_{i−1})  detail level i−1 could not resolve
                                                   is at most κ of its pixel footprints deep
    one Gaussian per pixel u:  μ = D_i(u)·K_i⁻¹[u, v, 1]  (camera space, then the level frame),
        Σ = σ²·(t_u t_uᵀ + t_v t_vᵀ) + (φ·σ_min)² n nᵀ,  t_u = ∂X/∂u, t_v = ∂X/∂v
        (tangents from the smoothed depth's gradients, so Σ is flat along the normal n and
        projects to σ² I₂ in the level camera: the pixel footprint z/(f·p^i), stretched where
        the surface is seen at a slant; in front of an occlusion edge [t_u, t_v]·(I − 0.7·g gᵀ),
        g toward the edge, so it does not spill over it: surface_tangents), colour = the pixel,
        opacity o₀ (high)
    deconvolve the colours (overlapping Gaussians blur the pixel colours): the render is linear in
        them, rgb = A c + T·background, so c = argmin_{c ∈ [0,1]} ‖A c + b − I_i‖² + λ‖c − c₀‖²
        with A from one rasterizer pass, solved by sparse conjugate gradients (fit_colors)
    refine with the coarser levels frozen: render level i over levels < i (their image is the
        background), minimise 0.8·L1 + 0.2·(1 − SSIM) against I_i with Adam, densify/prune with
        gsplat's DefaultStrategy (its ops are plain PyTorch, so the same code runs on CPU on the
        reference rasterizer, raster.py, at small sizes; with CUDA on gsplat's rasterizer);
        at most LEVEL_REFINE_STEPS steps and a time budget per level (refine_level; the pipeline
        takes it from settings.Settings.level_refine_budget: 20 s with CUDA, off on the CPU),
        kept only when the level's PSNR does not drop.

Level 0 has no coarser level: with a reference depth (the dream cloud's z-buffer in the zoom
camera, ref_0, footprints f_0) it is fitted and clamped like the others; without one its scale
is set so that the depth at the image centre is the anchor's.

Every level is stored in its own local frame (``cameras.level_frame``, a wire.manifest.LevelFrame:
origin = anchor, axes =
the zoom camera's Blender axes, unit = p^−i metres) so a level 4^10 deep keeps float32 precision:
x_world = origin + unit·R·x_local. All levels share origin and axes, so level k's coordinates
are level i's times p^(i−k).
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from .align import DepthFit, apply_depth_fit, box_blur, depth_edges, fit_depth_scale
from .cameras import (Camera, LevelCameras, level_frame, pixel_grid, pixel_rays, pixels_to_world,
                      world_to_pixels)
from .raster import composite_weights, project, rasterize, rotmat_to_quat
from .wire.manifest import LevelFrame
from .wire.splats import Gaussians
from .zoom import MAX_PAINTED_LEVELS

Progress = Callable[[str, int, int, str], None]

SIGMA_PX = 0.7          # σ of a per-pixel Gaussian, in pixels of its level
# The image formation of every render, colour fit and refinement here: the one Blender renders
# (addon/splat_import.py draws each exact 3-D Gaussian, which Cycles integrates over the pixel): no
# 2-D dilation (gsplat's ε = 0.3 px²) and no Mip-Splatting opacity compensation ("antialiased").
# Fit one way and rendered the other, the demo's world loses 0.4–2.5 dB at the input views (fit
# and rendered with ε = 0.3 antialiased 36.8/33.3/32.1/31.3 dB against the truth, those Gaussians
# rendered exactly 34.2/31.7/30.8/30.9, fit and rendered exactly 37.3/33.2/32.0/31.4).
EPS2D = 0.0
ANTIALIASED = False
DENSIFY_MIN_STEPS = 200  # shorter refinements only move, reshape and recolour
COLOUR_STEPS = 30       # conjugate-gradient iterations of the colour deconvolution (fit_colors)
COLOUR_ROUNDS = 3       # active-set rounds for its [0, 1] bounds
COLOUR_RIDGE = 0.01     # its ridge λ toward the pixel colours, relative to mean diag(AᵀA)
FLATNESS = 0.1          # normal-axis scale / smaller tangent scale
OPACITY0 = 0.98         # initial opacity ("high")
DETAIL_KAPPA = 4.0      # κ: level i's depth stays within κ level-(i−1) footprints of ref_i
MAX_SLANT = 4.0         # |∂z/∂u| ≤ MAX_SLANT·z/f: tangents no longer than a 76° slant
SHIFT_MIN_SPREAD = 0.2  # fit a shift only when ref's (p90 − p10)/median exceeds this
NORMAL_SMOOTH = 2       # box radius (pixels) of the depth smoothing for normals
EDGE_SHRINK = 0.3       # a pixel in front of a depth edge: its footprint × this toward the edge
EDGE_STEP = 0.05        # relative inverse-depth step between neighbours that makes a depth edge
EDGE_SLOPE = 2.0        # ... when also this many times the step the surface made coming to the pixel
NEAR_LOCAL = 1e-6       # near plane in local units (a level 4^10 deep sits ~10^6 units from its camera)
SERIAL_PIXELS = 512 * 512  # levels up to this size lift on one torch thread (see torch_threads)
LEVEL_REFINE_STEPS = 1000  # a level's refinement step cap (the time budget is settings.level_refine_seconds)
STEP_ESTIMATE = 3.0     # a refinement step ≈ this many forward renders (forward + backward + Adam)


from .errors import JobCancelled  # noqa: E402 - raised when should_cancel() turns True


@dataclass
class LevelGaussians:
    """The Gaussians of zoom level `index`, in its local frame.

    gaussians: float32 numpy Gaussians, means and scales in local units; frame: the level's
    LevelFrame (float64; cameras.level_frame); zoom_range: (p^i, p^(i+1)); depth: [H, W] float64
    aligned z-depth D_i (metres) that the next level aligns to; stats: fit and refinement figures.
    """

    index: int
    gaussians: Gaussians
    frame: LevelFrame
    zoom_range: tuple
    depth: np.ndarray
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.gaussians)

    def world_means(self) -> np.ndarray:
        """Means in world coordinates, float64: [N, 3]."""
        return self.frame.to_world(self.gaussians.means)


# ---------------------------------------------------------------------------------------------
# Frames

def local_viewmat(cam: Camera, frame: LevelFrame) -> np.ndarray:
    """World-to-camera [4, 4] float64 of cam acting on local coordinates, in local units.

    x_cam/unit = R_cvᵀ R · x_l + R_cvᵀ (origin − C)/unit  (a rigid map: projection is unchanged by
    the uniform scale 1/unit).
    """
    R_cv, C = cam.c2w[:3, :3], cam.c2w[:3, 3]
    V = np.eye(4)
    V[:3, :3] = R_cv.T @ frame.rotation
    V[:3, 3] = R_cv.T @ (frame.origin - C) / frame.unit
    return V


# ---------------------------------------------------------------------------------------------
# Depth: overlap reference, alignment, tangents

def bilinear(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample img: [H, W] at continuous pixel positions uv: [..., 2] (pixel centres at +½),
    bilinear, edges clamped → [...]. Non-finite samples propagate."""
    H, W = img.shape
    x = np.clip(uv[..., 0] - 0.5, 0, W - 1)
    y = np.clip(uv[..., 1] - 0.5, 0, H - 1)
    x0, y0 = np.minimum(np.floor(x).astype(np.int64), W - 2), np.minimum(np.floor(y).astype(np.int64), H - 2)
    x0, y0 = np.maximum(x0, 0), np.maximum(y0, 0)
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    return ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x1])
            + fy * ((1 - fx) * img[y1, x0] + fx * img[y1, x1]))


def overlap_reference(prev_depth: np.ndarray, factor: float) -> np.ndarray:
    """ref_i: level i−1's z-depth [H, W] seen through level i's pixels → [H, W].

    Level i pixel u looks along the same ray as level i−1 pixel c + (u − c)/p, c = (W/2, H/2).
    """
    H, W = prev_depth.shape
    c = np.array([W / 2.0, H / 2.0])
    uv = c + (pixel_grid(W, H) - c) / float(factor)
    return bilinear(np.asarray(prev_depth, np.float64), uv).reshape(H, W)


DOLLY_ITERATIONS = 24  # fixed-point steps of dolly_reference's ray march
DOLLY_AGREE = 0.01     # … and how closely (relative) its answer must reproduce level i−1's depth


def dolly_reference(prev_depth: np.ndarray, prev_cam: Camera, cam: Camera, delta: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """ref_i for a DOLLY level: level i−1's surface seen from level i's camera → (ref [H, W]
    z-depth, +inf where level i−1 saw nothing; f_ref [H, W], the focal length at which level
    i−1's pixel footprint is ref/f_ref at that depth).

    The cameras differ by δ along the centre ray, so (cameras.LevelCameras) level i's pixel u at
    depth z is level i−1's pixel  u_{i−1}(z) = e + (u − e)·z/(z + δ)  at depth z + δ: ref(u) is the
    z with  D_{i−1}(u_{i−1}(z)) = z + δ,  found per pixel by the damped fixed point
    z ← ½(z + D_{i−1}(u_{i−1}(z)) − δ) (bilinear D_{i−1}), started from level i−1's lifted pixels
    splatted into cam with a z-buffer (pointcloud.project: the nearest surface, which the march
    then places exactly; the splats alone, magnified p-fold, put a slanted surface too near).
    Pixels where it does not settle within DOLLY_AGREE, or whose u_{i−1} leaves level i−1's image,
    have no reference. A surface at ref from cam is ref + δ from level i−1's camera, where its
    footprint is (ref + δ)/f, so f_ref = f·ref/(ref + δ).
    """
    from .pointcloud import footprint_radius, project
    from .wire.ply import PointCloud

    D = np.asarray(prev_depth, np.float64)
    H, W = D.shape
    ok = (np.isfinite(D) & (D > 0)).reshape(-1)
    z = D.reshape(-1)[ok]
    xyz = pixels_to_world(prev_cam, pixel_grid(W, H)[ok], z)
    cloud = PointCloud(xyz, np.zeros((len(z), 3), np.float32), footprint_radius(prev_cam, z))
    start = project(cloud, cam).depth.astype(np.float64).reshape(-1)
    e = np.array([cam.width / 2.0, cam.height / 2.0])
    r = pixel_grid(cam.width, cam.height) - e
    d = float(delta)
    filled = np.where(np.isfinite(D), D, np.inf)
    z = np.where(np.isfinite(start), start, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(DOLLY_ITERATIONS):
            uv = e + r * (z / (z + d))[:, None]
            z = 0.5 * (z + bilinear(filled, uv) - d)
        uv = e + r * (z / (z + d))[:, None]
        seen = bilinear(filled, uv)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= W) & (uv[:, 1] >= 0) & (uv[:, 1] <= H)
        good = inside & (z > 0) & (np.abs(seen - d - z) <= DOLLY_AGREE * z)
    ref = np.where(good, z, np.inf).reshape(cam.height, cam.width)
    f = float(np.sqrt(cam.K[0, 0] * cam.K[1, 1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        f_ref = f * ref / (ref + d)
    return ref, f_ref


def align_depth(pred: np.ndarray, ref: np.ndarray, f_ref: Optional[float] = None, *,
                kappa: float = DETAIL_KAPPA) -> tuple[np.ndarray, DepthFit]:
    """Fit pred: [H, W] to ref: [H, W] (+inf/nan = no reference) → (D [H, W] float64, fit).

    ref ≈ s·pred + t robustly over the finite ref; t = 0 when ref's relative spread
    (p90 − p10)/median is below SHIFT_MIN_SPREAD (a narrow depth range cannot tell a shift
    from a scale). With f_ref (the focal length in pixels of the level ref came from: a number,
    or [H, W] per pixel), the result is clamped to ref ± κ·ref/f_ref away from ref's depth edges.
    """
    pred = np.asarray(pred, np.float64)
    ref = np.asarray(ref, np.float64)
    ok = np.isfinite(ref) & (ref > 0)
    if ok.sum() < 50:
        raise ValueError(f"align_depth: only {int(ok.sum())} reference pixels, need at least 50")
    q10, q50, q90 = np.percentile(ref[ok], [10, 50, 90])
    shift = (q90 - q10) / q50 > SHIFT_MIN_SPREAD
    try:
        fit = fit_depth_scale(pred, ref, ok, shift=shift)
    except ValueError:
        if not shift:
            raise
        fit = fit_depth_scale(pred, ref, ok, shift=False)
    D = apply_depth_fit(pred, fit).astype(np.float64)
    if f_ref is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            tol = kappa * ref / np.asarray(f_ref, np.float64)
        ok = ok & np.isfinite(tol)
        clampable = ok & ~depth_edges(ref, 0.05, 1)
        D = np.where(clampable, np.clip(D, ref - tol, ref + tol), D)
    return D, fit


def surface_tangents(cam: Camera, depth: np.ndarray, *, smooth: int = NORMAL_SMOOTH,
                     max_slant: float = MAX_SLANT, edge_shrink: Optional[float] = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Camera-space tangents t_u = ∂X/∂u, t_v = ∂X/∂v of the surface X(u, v) = z·K⁻¹[u, v, 1]:
    (t_u [H·W, 3], t_v [H·W, 3]), row-major.

    ∂X/∂u = z_u·r + z·(1/fx, 0, 0): z is the pixel's depth, z_u the gradient of the depth
    box-smoothed over (2·smooth+1)² pixels (a monocular estimate is noisy per pixel), clamped to
    max_slant·z/fx, and zero next to depth edges (there the pixel faces the camera).

    A pixel in front of an occlusion edge (edge_toward) has its footprint shrunk by edge_shrink along
    the image direction g toward the farther side: [t_u, t_v] ← [t_u, t_v]·(I − (1 − s)·g gᵀ),
    so its Gaussian projects to σ²·(I − (1 − s²)·g gᵀ) instead of σ² I₂. A Gaussian σ = 0.7 px
    wide in every direction puts 35 % of its opacity on the centre of the pixel behind the edge
    (the sky above the horizon, the ground beside a sphere), in front of what is there. The own
    view's colour solve hides that, but any other camera sees the foreground spill about a
    pixel over the edge (p^τ pixels, magnified, in a dive): the horizon rises and objects
    swell. At s = 0.3 the spill is below 0.1 %. edge_shrink None: EDGE_SHRINK.
    """
    H, W = depth.shape
    z = np.asarray(depth, np.float64)
    zs = box_blur(z, smooth)
    z_v, z_u = np.gradient(zs)
    lim = max_slant * z
    z_u = np.clip(z_u, -lim / cam.K[0, 0], lim / cam.K[0, 0])
    z_v = np.clip(z_v, -lim / cam.K[1, 1], lim / cam.K[1, 1])
    edge = depth_edges(z, 0.05, smooth)
    z_u, z_v = np.where(edge, 0.0, z_u).reshape(-1), np.where(edge, 0.0, z_v).reshape(-1)
    r = pixel_rays(cam, pixel_grid(W, H))
    zf = z.reshape(-1)
    t_u = z_u[:, None] * r
    t_u[:, 0] += zf / cam.K[0, 0]
    t_v = z_v[:, None] * r
    t_v[:, 1] += zf / cam.K[1, 1]
    s = EDGE_SHRINK if edge_shrink is None else float(edge_shrink)
    if s == 1.0:
        return t_u, t_v
    g = edge_toward(z).reshape(-1, 2)
    k = (1.0 - s) * (np.abs(g).sum(1) > 0)                  # 0 off the edges
    a_uu, a_vv, a_uv = 1.0 - k * g[:, 0] ** 2, 1.0 - k * g[:, 1] ** 2, -k * g[:, 0] * g[:, 1]
    return (t_u * a_uu[:, None] + t_v * a_uv[:, None],
            t_u * a_uv[:, None] + t_v * a_vv[:, None])


def edge_toward(depth: np.ndarray, step: float = EDGE_STEP, slope: float = EDGE_SLOPE) -> np.ndarray:
    """The image direction (u, v) from each pixel toward the 8-neighbours it occludes: [H, W, 2],
    unit length, 0 where there is none (the pixel is not in front of an occlusion edge).

    In inverse depth w = 1/z a plane is linear in the image: a surface seen at a slant steps by
    the same amount from pixel to pixel. The pixel p occludes its neighbour q = p + d (p's
    surface ends between them, and q shows another surface behind it) when the step to q is a
    jump, larger than `step` of w_p and `slope` times the steps on either side of it:

        w_p − w_q > step·w_p   and   w_p − w_q > slope·min(|w_o − w_p|, |w_q − w_r|)

    with o = p − d and r = q + d (a step with a side that has no depth counts 0). Ground toward
    the horizon, whose depth grows by more than `step` a row, steps on evenly and stays off the
    edges; a crest before far ground, or the last row of ground before the sky, does not. Each
    occluded q adds d/|d|² (nearer neighbours weigh more). Non-finite depths are no neighbours.
    """
    z = np.asarray(depth, np.float64)
    H, W = z.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(np.isfinite(z) & (z > 0), 1.0 / z, np.nan)
    wp = np.pad(w, 2, mode="constant", constant_values=np.nan)

    def at(du: int, dv: int) -> np.ndarray:
        return wp[2 + dv:2 + dv + H, 2 + du:2 + du + W]

    g = np.zeros((H, W, 2))
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            if du or dv:
                wq = at(du, dv)
                jump = w - wq
                run = np.minimum(np.nan_to_num(np.abs(at(-du, -dv) - w), nan=0.0),
                                 np.nan_to_num(np.abs(wq - at(2 * du, 2 * dv)), nan=0.0))
                with np.errstate(invalid="ignore"):
                    far = (jump > step * w) & (jump > slope * run)
                d2 = float(du * du + dv * dv)
                g[..., 0] += far * (du / d2)
                g[..., 1] += far * (dv / d2)
    n = np.linalg.norm(g, axis=-1, keepdims=True)
    return np.divide(g, n, out=np.zeros_like(g), where=n > 0)


# ---------------------------------------------------------------------------------------------
# Per-pixel Gaussians

def pixel_gaussians(cam: Camera, image: np.ndarray, depth: np.ndarray, frame: LevelFrame, *,
                    sigma_px: float = SIGMA_PX, flatness: float = FLATNESS,
                    opacity: float = OPACITY0) -> Gaussians:
    """One Gaussian per pixel with finite depth > 0 (row-major), in frame's local coordinates.

    image: [H, W, 3]; depth: [H, W] z-depth (metres). → float32 numpy Gaussians: means [N, 3],
    quats [N, 4], scales [N, 3], opacities [N], colors [N, 3] (the pixels' colours).
    Σ_cam = M Mᵀ, M = σ·[t_u, t_v] = U S Vᵀ (thin SVD): axes U, n = U₀ × U₁; scales σ·S and
    φ·σ·S_min along n. In the level camera it projects to σ² I₂ (J t_u = e_u).
    """
    H, W = depth.shape
    z = np.asarray(depth, np.float64)
    keep = (np.isfinite(z) & (z > 0)).reshape(-1)
    t_u, t_v = surface_tangents(cam, np.where(np.isfinite(z) & (z > 0), z, np.nanmedian(z[z > 0])))
    uv = pixel_grid(W, H)[keep]
    Xc = pixel_rays(cam, uv) * z.reshape(-1)[keep, None]                       # camera, metres
    return oriented_gaussians(cam, Xc, t_u[keep], t_v[keep],
                              np.asarray(image, np.float32).reshape(-1, 3)[keep].copy(), frame,
                              sigma_px=sigma_px, flatness=flatness, opacity=opacity)


def oriented_gaussians(cam: Camera, Xc: np.ndarray, t_u: np.ndarray, t_v: np.ndarray,
                       colors: np.ndarray, frame: LevelFrame, *, sigma_px: float = SIGMA_PX,
                       flatness: float = FLATNESS, opacity: float = OPACITY0) -> Gaussians:
    """The core of pixel_gaussians: N flat Gaussians seen by cam, in frame's local coordinates.

    Xc: [N, 3] centres in cam's camera space (metres); t_u, t_v: [N, 3] camera-space surface
    tangents per pixel step (surface_tangents); colors: [N, 3]. → float32 numpy Gaussians.
    Σ_cam = M Mᵀ, M = σ·[t_u, t_v] = U S Vᵀ (thin SVD): axes U, n = U₀ × U₁; scales σ·S and
    φ·σ·S_min along n; means x_l = Rᵀ(C − origin)/unit + A·X_cam/unit, A = Rᵀ R_cam.
    """
    Mt = torch.from_numpy(np.stack([t_u, t_v], -1))                           # [N, 3, 2] metres/px
    U, S, _ = torch.linalg.svd(Mt, full_matrices=False)                        # [N, 3, 2], [N, 2]
    n = torch.linalg.cross(U[..., 0], U[..., 1], dim=-1)
    A = torch.from_numpy(frame.rotation.T @ cam.c2w[:3, :3])
    Rl = A @ torch.cat([U, n[..., None]], -1)                                  # local axes [N, 3, 3]
    unit = float(frame.unit)
    scales = torch.cat([sigma_px * S, flatness * sigma_px * S[:, 1:]], -1) / unit
    # x_l = Rᵀ(C − origin)/unit + A·X_cam/unit, float64 until the end
    c_l = frame.rotation.T @ (cam.c2w[:3, 3] - frame.origin) / unit
    means = c_l + (Xc @ A.numpy().T) / unit
    return Gaussians(means=means.astype(np.float32),
                     quats=rotmat_to_quat(Rl).numpy().astype(np.float32),
                     scales=scales.numpy().astype(np.float32),
                     opacities=np.full(len(means), opacity, np.float32),
                     colors=np.asarray(colors, np.float32))


# ---------------------------------------------------------------------------------------------
# Rendering and refinement

def on_device(g: Gaussians, device=None) -> Gaussians:
    """g with every field a float32 tensor on device (None: where the tensors are, else the CPU)."""
    return g.map(lambda a: torch.as_tensor(a, dtype=torch.float32, device=device))


def render_level(g: Gaussians, cam: Camera, frame: LevelFrame, *, background: Optional[torch.Tensor] = None,
                 info: Optional[dict] = None, backend: str = "auto", device=None):
    """Render Gaussians g (activated, tensors or arrays in frame's local coordinates) into cam.

    The render runs on device (None: the device of g's tensors; arrays go to the CPU), so CUDA
    tensors reach gsplat (raster.rasterize). background: [H, W, 3] or None.
    → (rgb [H, W, 3], alpha [H, W, 1]) tensors on that device.
    """
    if device is None and isinstance(g.means, torch.Tensor):
        device = g.means.device
    t = on_device(g, device)
    dev = t.means.device
    V = torch.as_tensor(local_viewmat(cam, frame), dtype=torch.float32, device=dev)[None]
    K = torch.as_tensor(cam.K, dtype=torch.float32, device=dev)[None]
    rgb, alpha = rasterize(t.means, t.quats, t.scales, t.opacities, t.colors, V, K,
                           cam.width, cam.height, near_plane=NEAR_LOCAL, eps2d=EPS2D,
                           antialiased=ANTIALIASED, info=info, backend=backend)
    rgb, alpha = rgb[0], alpha[0]
    if background is not None:
        rgb = rgb + (1 - alpha) * torch.as_tensor(background, device=dev)
    return rgb, alpha


def coarse_background(levels: list[LevelGaussians], cam: Camera, frame: LevelFrame,
                      backend: str = "auto", device=None) -> Optional[torch.Tensor]:
    """The frozen coarser levels rendered into cam (level frame `frame`): [H, W, 3] or None.

    Level k's local coordinates become level i's by ×unit_k/unit_i (shared origin and axes);
    only Gaussians whose centres project within a margin of the image are kept (in float64,
    before anything is cast to float32).
    """
    if not levels:
        return None
    parts = []
    for lv in levels:
        m = lv.frame.unit / frame.unit
        lg = lv.gaussians
        means = lg.means.astype(np.float64) * m
        uv, z = world_to_pixels(cam, frame.to_world(means))
        r = 3.0 * lg.scales.max(1).astype(np.float64) * m * frame.unit * cam.K[0, 0] / np.maximum(z, 1e-300)
        with np.errstate(invalid="ignore"):
            sel = ((z > 0) & (uv[:, 0] + r > 0) & (uv[:, 0] - r < cam.width)
                   & (uv[:, 1] + r > 0) & (uv[:, 1] - r < cam.height))
        parts.append(lg.select(sel).replace(means=means[sel], scales=lg.scales[sel].astype(np.float64) * m))
    g = Gaussians.concat(parts)
    if len(g) == 0:
        return None
    with torch.no_grad():
        rgb, alpha = render_level(g, cam, frame, backend=backend, device=device)
    return rgb


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) of images in [0, 1]."""
    cpu = lambda x: torch.as_tensor(x, dtype=torch.float32, device="cpu").detach()  # noqa: E731 (any device)
    mse = float(torch.mean((cpu(a) - cpu(b)) ** 2))
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM (Wang et al. 2004, Gaussian window, C1 = 0.01², C2 = 0.03²) of a, b: [H, W, 3]."""
    x = torch.arange(window, dtype=a.dtype, device=a.device) - (window - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).expand(3, 1, window, window)
    blur = lambda t: torch.nn.functional.conv2d(t, k, groups=3)  # noqa: E731
    A, B = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
    mu_a, mu_b = blur(A), blur(B)
    s_aa = blur(A * A) - mu_a ** 2
    s_bb = blur(B * B) - mu_b ** 2
    s_ab = blur(A * B) - mu_a * mu_b
    C1, C2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu_a * mu_b + C1) * (2 * s_ab + C2)) / ((mu_a ** 2 + mu_b ** 2 + C1) * (s_aa + s_bb + C2))
    return m.mean()


def colour_operator(g: Gaussians, cam: Camera, frame: LevelFrame, device=None,
                    row_weight: Optional[np.ndarray] = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The level render as a linear map of the colours, rgb = A c (+ T·background).

    g: Gaussians as for render_level (their colours unused). One pass of the reference
    rasterizer (raster.composite_weights) on device → (A [H·W, N] and Aᵀ [N, H·W] sparse CSR
    float32, A[u, k] = T_k(u)·α_k(u); T [H·W] the transmittance left for the background).
    row_weight: [H, W] (or [H·W]) w(u) ≥ 0: A's row u is scaled by w(u) (scale the target's pixel
    the same way and its squared residual counts w(u)²; T stays unweighted).
    """
    t = on_device(g, device)
    dev = t.means.device
    V = torch.as_tensor(local_viewmat(cam, frame), dtype=torch.float32, device=dev)[None]
    K = torch.as_tensor(cam.K, dtype=torch.float32, device=dev)[None]
    with torch.no_grad():
        p = project(t.means, t.quats, t.scales, t.opacities, V, K, cam.width, cam.height,
                    near_plane=NEAR_LOCAL, eps2d=EPS2D, antialiased=ANTIALIASED)
        rows, cols, w, T = composite_weights(p, cam.width, cam.height)
    n_pix, n = cam.width * cam.height, len(t.means)
    if row_weight is not None:
        rw = torch.as_tensor(np.asarray(row_weight, np.float32).reshape(-1), device=dev)
        if rw.numel() != n_pix:
            raise ValueError(f"row_weight: need {cam.height}×{cam.width} pixel weights for "
                             f"'{cam.name}', got {rw.numel()}")
        w = w * rw[rows]
    return _csr(rows, cols, w, n_pix, n), _csr(cols, rows, w, n, n_pix), T.reshape(-1)


def _csr(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_rows: int, n_cols: int) -> torch.Tensor:
    """Sparse CSR [n_rows, n_cols] from distinct (rows [M], cols [M], vals [M]) entries.

    Sorted by row only (a stable sort of int32 keys, half the cost of sorting (row, column)
    pairs): the columns within a row keep their input order, which matrix products do not need."""
    order = torch.sort(rows.int() if n_rows < 2 ** 31 else rows, stable=True)[1]
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    with warnings.catch_warnings():   # "sparse CSR support is in beta": matmul is all we use
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, cols[order], vals[order], (n_rows, n_cols),
                                       device=rows.device, check_invariants=False)


def fit_colors(g: Gaussians, image: np.ndarray, cam: Camera, frame: LevelFrame, *, steps: int = COLOUR_STEPS,
               rounds: int = COLOUR_ROUNDS, ridge: float = COLOUR_RIDGE,
               background: Optional[torch.Tensor] = None, backend: str = "auto",
               device=None) -> np.ndarray:
    """Deconvolve the per-pixel colours: bounded, ridge-regularised linear least squares

        c* = argmin_{c ∈ [0,1]} ‖A c + b − I‖² + λ ‖c − c₀‖²,   → colors [N, 3]

    The render is linear in the colours: A [H·W, N] holds the compositing weights T_k α_k of the
    fixed geometry (one rasterizer pass, colour_operator), b = T·background the frozen coarser
    levels through the remaining transmittance, c₀ the pixel colours. Neighbouring Gaussians
    overlap every pixel, so c₀ itself renders blurred. λ = ridge · mean(diag AᵀA) keeps
    Gaussians the camera hardly sees at their pixel colour.
    Solver: Jacobi-preconditioned conjugate gradients on the normal equations
    (AᵀA + λI) c = Aᵀ(I − b) + λ c₀, all three channels at once; the bounds by an active set:
    `rounds` rounds, each freezing the colours that sit on a bound with the gradient pushing
    outward, running steps/rounds CG iterations on the rest and clipping to [0, 1].
    backend is accepted for symmetry with render_level; the weights come from the reference
    rasterizer (gsplat renders the same image), on device. → colours as a float32 numpy array.
    """
    if steps <= 0:
        return np.asarray(g.colors, np.float32).copy()
    if rounds < 1:
        raise ValueError(f"rounds: must be at least 1, got {rounds}")
    A, At, T = colour_operator(g, cam, frame, device)
    dev = T.device
    I = torch.as_tensor(np.asarray(image, np.float32), device=dev).reshape(-1, 3)
    b = T[:, None] * torch.as_tensor(background, dtype=torch.float32, device=dev).reshape(-1, 3) \
        if background is not None else torch.zeros_like(I)
    c0 = torch.as_tensor(np.asarray(g.colors, np.float32), device=dev)
    return solve_colors(c0, [(A, At, I - b)], steps=steps, rounds=rounds, ridge=ridge)


def solve_colors(c0: torch.Tensor, systems: list, *, steps: int = COLOUR_STEPS,
                 rounds: int = COLOUR_ROUNDS, ridge: float = COLOUR_RIDGE) -> np.ndarray:
    """The bounded ridge least squares of fit_colors over one or more views, jointly:

        c* = argmin_{c ∈ [0,1]} Σ_v ‖A_v c − y_v‖² + λ ‖c − c₀‖²,
        λ = ridge · mean(diag Σ_v A_vᵀA_v)

    c0: [N, 3] tensor (start and ridge target); systems: list of (A_v [P_v, N], A_vᵀ [N, P_v]
    sparse CSR, y_v [P_v, 3]) with y_v = I_v − b_v (colour_operator per view). Normal equations
    (Σ_v A_vᵀA_v + λI) c = Σ_v A_vᵀ y_v + λ c₀, Jacobi-preconditioned CG, the [0, 1] bounds by
    `rounds` active-set rounds (fit_colors). → colours [N, 3] float32 numpy.
    """
    if rounds < 1:
        raise ValueError(f"rounds: must be at least 1, got {rounds}")
    dev = c0.device
    diag = torch.zeros(len(c0), device=dev)
    for A, _, _ in systems:
        diag.index_add_(0, A.col_indices(), A.values() ** 2)                       # diag AᵀA [N]
    lam = ridge * float(diag.mean()) if len(c0) else 0.0
    M = (diag + lam).clamp_min(1e-12)[:, None]                                      # Jacobi [N, 1]
    rhs = lam * c0
    for _, At, y in systems:
        rhs = At @ y + rhs                                                           # [N, 3]

    def H(x: torch.Tensor) -> torch.Tensor:      # (Σ AᵀA + λI) x
        out = lam * x
        for A, At, _ in systems:
            out = At @ (A @ x) + out
        return out

    c = c0.clone()
    per_round = max(1, math.ceil(steps / rounds))
    for _ in range(rounds):
        r = rhs - H(c)                                       # = −gradient / 2
        free = (~(((c <= 0) & (r < 0)) | ((c >= 1) & (r > 0)))).float()
        c = cg(H, r * free, c, M, per_round, mask=free)
        c = c.clamp_(0, 1)
    return c.cpu().numpy().copy()


def cg(H: Callable[[torch.Tensor], torch.Tensor], r: torch.Tensor, x: torch.Tensor, M: torch.Tensor,
       iters: int, *, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Preconditioned conjugate gradients for H x = y, column by column, from x with residual
    r = y − H x (both [N, D]); M [N, 1 or D] the diagonal preconditioner; only the entries where
    mask [N, D] is 1 move (the operator restricted to them). → x after `iters` iterations."""
    mask = torch.ones_like(x) if mask is None else mask
    z = r / M
    d = z.clone()
    rz = (r * z).sum(0)
    for _ in range(iters):
        Hd = H(d) * mask
        a = rz / (d * Hd).sum(0).clamp_min(1e-30)
        x = x + a * d
        r = r - a * Hd
        z = r / M
        rz_new = (r * z).sum(0)
        d = z + (rz_new / rz.clamp_min(1e-30)) * d
        rz = rz_new
    return x


def refine(g: Gaussians, image: np.ndarray, cam: Camera, frame: LevelFrame, *, steps: int,
           background: Optional[torch.Tensor] = None, backend: str = "auto",
           lr: Optional[dict] = None, densify: bool = True, ssim_weight: float = 0.2,
           grow_grad2d: float = 1e-3, should_cancel: Optional[Callable[[], bool]] = None,
           device=None) -> tuple[Gaussians, dict]:
    """Fit Gaussians g (local frame) to the level image with the coarser levels frozen.

    Loss (3DGS): (1 − λ)·L1 + λ·(1 − SSIM), λ = ssim_weight, of rgb_i + (1 − α_i)·background
    against image [H, W, 3]. Parameters as in 3DGS: means, log scales, quats, logit opacities,
    colours; Adam; densify/prune with gsplat's DefaultStrategy (runs of ≥ DENSIFY_MIN_STEPS
    steps; grow/prune from steps/4 to 3·steps/4, no opacity reset). The parameters live on
    device (CUDA: gsplat's rasterizer). → (refined float32 numpy Gaussians, {"loss": [...], "count": N}).
    refine_views with one view.
    """
    out, stats = refine_views(g, [image], [cam], frame, steps=steps, backgrounds=[background],
                              backend=backend, lr=lr, densify=densify, ssim_weight=ssim_weight,
                              grow_grad2d=grow_grad2d, should_cancel=should_cancel, device=device)
    return out, {"loss": stats["loss"], "count": stats["count"]}


def refine_level(g: Gaussians, image: np.ndarray, cam: Camera, frame: LevelFrame, *, steps: int,
                 seconds: Optional[float] = None, background: Optional[torch.Tensor] = None,
                 clock: Callable[[], float] = time.monotonic, backend: str = "auto",
                 should_cancel: Optional[Callable[[], bool]] = None,
                 device=None) -> tuple[Gaussians, dict]:
    """refine within a budget: at most `steps` Adam steps and `seconds` of wall time on `clock`
    (None: no time limit), the level's PSNR (over background) measured before and after.

    The first PSNR pass times a forward render; STEP_ESTIMATE of it is the budget's guess for the
    first step, and the second pass is kept out of the steps' share, so the whole call keeps to
    `seconds` (refine_views: a step starts only when the slowest step so far still fits). The
    refined Gaussians are kept only when their PSNR is not lower. → (Gaussians, stats: psnr_init,
    psnr (of the returned Gaussians), refined (kept), refine_steps, refine_seconds (the whole
    call's time on clock), loss_first, loss_last).
    """
    if seconds is not None and not (np.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds: must be a finite number ≥ 0 or None, got {seconds!r}")

    def level_psnr(gs: Gaussians) -> float:
        with torch.no_grad():
            return psnr(render_level(gs, cam, frame, background=background, backend=backend,
                                     device=device)[0], image)

    t0 = clock()
    before = level_psnr(g)
    t1 = clock()
    share = None if seconds is None else max(0.0, seconds - 2 * (t1 - t0))
    out, rs = refine_views(g, [image], [cam], frame, steps=steps, backgrounds=[background],
                           seconds=share, clock=clock, step_estimate=STEP_ESTIMATE * (t1 - t0),
                           backend=backend, densify=True, should_cancel=should_cancel, device=device)
    after = level_psnr(out) if rs["steps"] else before
    keep = rs["steps"] > 0 and after >= before
    return (out if keep else g), {
        "psnr_init": before, "psnr": after if keep else before, "psnr_refined": after,
        "refined": bool(keep), "refine_steps": rs["steps"], "refine_seconds": clock() - t0,
        "loss_first": rs["loss"][0] if rs["loss"] else None,
        "loss_last": rs["loss"][-1] if rs["loss"] else None}


def refine_views(g: Gaussians, images: list, cams: list[Camera], frame: LevelFrame, *, steps: int,
                 backgrounds: Optional[list] = None, order: Optional[list[int]] = None,
                 seconds: Optional[float] = None, clock: Callable[[], float] = time.monotonic,
                 step_estimate: float = 0.0, backend: str = "auto", lr: Optional[dict] = None,
                 densify: bool = True, ssim_weight: float = 0.2, grow_grad2d: float = 1e-3,
                 should_cancel: Optional[Callable[[], bool]] = None,
                 device=None) -> tuple[Gaussians, dict]:
    """refine's Adam loop over several views: step k renders view order[k] (default k mod V)
    and minimises (1 − λ)·L1 + λ·(1 − SSIM) against images[order[k]] [H_v, W_v, 3]
    (+ backgrounds[v] [H_v, W_v, 3] or None through the remaining transmittance).

    At most `steps` steps; with `seconds`, also within that time budget on `clock` (injectable):
    a step starts only when the time spent plus the slowest step so far (step_estimate before
    the first) fits in it, so the budget holds unless a step takes longer than any before it.
    → (refined float32 numpy Gaussians, {"loss": [...] per step, "views": [...] per step,
    "count": N, "steps": steps run, "seconds": time spent}).
    """
    from gsplat.strategy import DefaultStrategy

    V = len(cams)
    if len(images) != V or V == 0:
        raise ValueError(f"images: need one image per camera ({V} cameras), got {len(images)}")
    backgrounds = list(backgrounds) if backgrounds is not None else [None] * V
    t = on_device(g, device)
    dev = t.means.device
    targets = [torch.as_tensor(np.asarray(im, np.float32), device=dev) for im in images]
    scale0 = float(t.scales[:, 0].median())
    extent = float(torch.linalg.norm(t.means.amax(0) - t.means.amin(0))) if len(t) else 0.0
    extent = extent or 1.0
    params = torch.nn.ParameterDict({
        "means": torch.nn.Parameter(t.means.clone()),
        "scales": torch.nn.Parameter(torch.log(t.scales)),
        "quats": torch.nn.Parameter(t.quats.clone()),
        "opacities": torch.nn.Parameter(torch.logit(t.opacities.clamp(1e-4, 1 - 1e-4))),
        "colors": torch.nn.Parameter(t.colors.clone()),
    })
    # colours at 3DGS's DC rate: Adam steps ≈ lr whatever the gradient, and the colours start
    # from the least-squares fit (fit_colors), so a larger step first undoes it
    rates = {"means": 0.05 * scale0, "scales": 5e-3, "quats": 1e-3, "opacities": 2.5e-2,
             "colors": 2.5e-3}
    rates.update(lr or {})
    optimizers = {k: torch.optim.Adam([params[k]], lr=rates[k], eps=1e-15) for k in params}
    # Per-pixel Gaussians already tile the image: densifying early (splits shrink and scatter
    # them) costs more than it gains in short runs, so growth starts at steps/4 and only in runs
    # of at least DENSIFY_MIN_STEPS.
    densify = densify and steps >= DENSIFY_MIN_STEPS
    strategy = DefaultStrategy(refine_start_iter=steps // 4, refine_every=max(50, steps // 8),
                               refine_stop_iter=3 * steps // 4 if densify else 0,
                               reset_every=10 ** 9, grow_grad2d=grow_grad2d)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=extent)
    losses, views = [], []
    start = last = clock()
    pace = float(step_estimate)
    for step in range(steps):
        if seconds is not None and (last - start) + pace > seconds:
            break
        if should_cancel is not None and should_cancel():
            raise JobCancelled("cancelled during refinement")
        v = int(order[step % len(order)]) if order is not None else step % V
        info: dict = {}
        rgb, _ = render_level(Gaussians(means=params["means"], quats=params["quats"],
                                        scales=torch.exp(params["scales"]),
                                        opacities=torch.sigmoid(params["opacities"]),
                                        colors=params["colors"].clamp(0, 1)),
                              cams[v], frame, background=backgrounds[v], info=info, backend=backend)
        strategy.step_pre_backward(params, optimizers, state, step, info)
        loss = ((1 - ssim_weight) * (rgb - targets[v]).abs().mean()
                + ssim_weight * (1 - ssim(rgb, targets[v])))
        loss.backward()
        for opt in optimizers.values():
            opt.step()
        if densify:
            strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        views.append(v)
        now = clock()
        pace = now - last if len(losses) == 1 else max(pace, now - last)
        last = now
    with torch.no_grad():
        out = Gaussians(means=params["means"], quats=torch.nn.functional.normalize(params["quats"], dim=-1),
                        scales=torch.exp(params["scales"]), opacities=torch.sigmoid(params["opacities"]),
                        colors=params["colors"].clamp(0, 1)).map(lambda a: a.detach().cpu().numpy().copy())
    return out, {"loss": losses, "views": views, "count": len(out), "steps": len(losses),
                 "seconds": last - start}


# ---------------------------------------------------------------------------------------------
# The loop over levels

@contextmanager
def torch_threads(n: Optional[int]):
    """Run the block with torch's intra-op thread count set to n (None: unchanged), then restore.

    Lifting a small level is thousands of small tensor ops; with OpenMP each one forks and joins
    every thread, which on a busy machine (cores shared with other processes) waits a scheduler
    slice per op and makes the lift 10× slower than on one thread.
    """
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _check_inputs(level_images, zoom_cam: Camera, anchor, factor: float) -> list[np.ndarray]:
    if not isinstance(zoom_cam, Camera):
        raise ValueError(f"zoom_cam: must be a cameras.Camera, got {type(zoom_cam).__name__}")
    # the step between painted levels (zoom.painted_levels): the request's 1.5..8, or a part of it
    if not (np.isfinite(factor) and 1.0 < float(factor) <= 8):
        raise ValueError(f"factor: must be in (1, 8] (the step between zoom levels), got {factor}")
    a = np.asarray(anchor, np.float64)
    if a.shape != (3,) or not np.isfinite(a).all():
        raise ValueError(f"anchor: must be 3 finite numbers, got {anchor!r}")
    if not 1 <= len(level_images) <= MAX_PAINTED_LEVELS:
        raise ValueError(f"level_images: need 1..{MAX_PAINTED_LEVELS} levels (zoom.levels as painted), "
                         f"got {len(level_images)}")
    out = []
    for i, im in enumerate(level_images):
        im = np.asarray(im, np.float32)
        if im.shape != (zoom_cam.height, zoom_cam.width, 3):
            raise ValueError(f"level_images[{i}]: shape {im.shape} does not match the zoom camera, "
                             f"expected {(zoom_cam.height, zoom_cam.width, 3)}")
        if not np.isfinite(im).all():
            raise ValueError(f"level_images[{i}]: has non-finite values; colours must be in [0, 1]")
        out.append(im)
    return out


def _fit_level0(D_hat: np.ndarray, cam: Camera, anchor: np.ndarray, depth0) -> tuple[np.ndarray, DepthFit]:
    """Level 0's depth: fitted to depth0 [H, W] when given and clamped to it within κ of its
    footprints (the world's points are about one pixel of this camera wide: its relief is what
    the views agreed on, while a monocular estimate bends by a few % over the image and a
    moving camera shows that as a misplaced surface), else scaled so that the median depth of
    the centre window is the anchor's z-depth."""
    if depth0 is not None:
        return align_depth(D_hat, np.asarray(depth0, np.float64), f_ref=float(np.sqrt(cam.K[0, 0] * cam.K[1, 1])))
    _, z_a = world_to_pixels(cam, anchor[None])
    H, W = D_hat.shape
    r = max(2, min(W, H) // 32)
    win = D_hat[H // 2 - r:H // 2 + r, W // 2 - r:W // 2 + r]
    s = float(z_a[0]) / float(np.median(win))
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"anchor: lies behind the zoom camera (z = {float(z_a[0]):g})")
    return D_hat * s, DepthFit(scale=s, shift=0.0, inliers=win.size, residual=0.0, usable=win.size)


def lift_levels(level_images, zoom_cam: Camera, anchor, factor: float, engine, *,
                refine_steps: int = 0, refine_seconds: Optional[float] = None,
                colour_steps: int = COLOUR_STEPS, progress: Optional[Progress] = None,
                should_cancel: Optional[Callable[[], bool]] = None, depth0=None,
                refine_max_pixels: Optional[int] = None, backend: str = "auto",
                sigma_px: float = SIGMA_PX, opacity: float = OPACITY0, device=None,
                clock: Callable[[], float] = time.monotonic, mode: str = "lens",
                painted_from: Optional[list[Camera]] = None) -> list[LevelGaussians]:
    """Lift the zoom stack to Gaussians, level by level (the module docstring's loop).

    level_images: list of [H, W, 3] float32 in [0, 1] (level i seen by LevelCameras(zoom_cam,
    anchor, factor, mode).level(i)); zoom_cam: cameras.Camera; anchor: [3] world (the zoom's
    centre); factor: p; mode: "lens" (zoom_level_camera(i)) or "dolly" (the camera p^i times
    closer to the anchor: ref_i is level i−1's surface seen from it, dolly_reference);
    engine: has estimate_depth(image, cam) (engines.base.DepthEstimator); depth0: optional
    [H, W] reference z-depth of level 0 (e.g. the dream cloud's z-buffer in the zoom camera).
    colour_steps: steps of the colour deconvolution (fit_colors) of the per-pixel Gaussians;
    refine_steps: Adam steps per level (0 = none); refine_seconds: each level's time budget on
    clock (refine_level; None: no time limit, 0: no refinement). Off CUDA, levels with more than
    refine_max_pixels pixels (default 128², None on CUDA) are not refined (stats["refined"]).
    device: where the Gaussians are rendered, fitted and refined (default: engine.device when it
    is a CUDA device, so a CUDA engine renders with gsplat; else the CPU, where the reference
    rasterizer and its sparse colour solve run — e.g. for an "mps" engine).
    painted_from: the camera each level was painted from where the engine says so (ZoomStack.cameras):
    its depth is estimated there, and lifted from the level camera as always.
    progress("lift", level, n_levels, message) after each level; should_cancel() is polled.
    """
    images = _check_inputs(level_images, zoom_cam, anchor, factor)
    anchor = np.asarray(anchor, np.float64)
    p = float(factor)
    rig = LevelCameras(zoom_cam, anchor, p, mode)
    if device is None:
        device = getattr(engine, "device", None) or "cpu"
        device = device if torch.device(device).type == "cuda" else "cpu"
    device = torch.device(device)
    if refine_max_pixels is None:
        refine_max_pixels = 1 << 62 if device.type == "cuda" else 128 * 128
    report = progress or (lambda *a: None)
    levels: list[LevelGaussians] = []
    for i, I_i in enumerate(images):
        if should_cancel is not None and should_cancel():
            raise JobCancelled(f"cancelled before lifting level {i}")
        cam = rig.level(i)
        frame = level_frame(zoom_cam, anchor, p, i)
        D_hat = np.asarray(engine.estimate_depth(I_i, painted_from[i] if painted_from else cam), np.float64)
        if i == 0:
            D, fit = _fit_level0(D_hat, cam, anchor, depth0)
        elif mode == "dolly":
            ref, f_ref = dolly_reference(levels[-1].depth, rig.level(i - 1), cam, rig.delta(i - 1, i))
            D, fit = align_depth(D_hat, ref, f_ref=f_ref)
        else:
            ref = overlap_reference(levels[-1].depth, p)
            D, fit = align_depth(D_hat, ref, f_ref=float(np.sqrt(cam.K[0, 0] * cam.K[1, 1])) / p)
        serial = (1 if cam.width * cam.height <= SERIAL_PIXELS and backend != "gsplat"
                  and device.type == "cpu" else None)
        with torch_threads(serial):
            g = pixel_gaussians(cam, I_i, D, frame, sigma_px=sigma_px, opacity=opacity)
            stats = {"scale": fit.scale, "shift": fit.shift, "fit_residual": fit.residual,
                     "pixels": len(g), "refined": False, "refine_steps": 0}
            bg = (coarse_background(levels, cam, frame, backend=backend, device=device)
                  if (colour_steps or refine_steps) else None)
            if colour_steps > 0:
                g = g.replace(colors=fit_colors(g, I_i, cam, frame, steps=colour_steps, background=bg,
                                                backend=backend, device=device))
            if (refine_steps > 0 and refine_seconds != 0
                    and cam.width * cam.height <= refine_max_pixels):
                g, rs = refine_level(g, I_i, cam, frame, steps=refine_steps, seconds=refine_seconds,
                                     background=bg, clock=clock, backend=backend,
                                     should_cancel=should_cancel, device=device)
                stats.update(rs)
        lv = LevelGaussians(index=i, gaussians=g, frame=frame, zoom_range=(p ** i, p ** (i + 1)),
                            depth=D, stats=stats)
        levels.append(lv)
        report("lift", i + 1, len(images), f"level {i + 1}/{len(images)}: {len(lv)} Gaussians, "
                                           f"depth scale {fit.scale:.3g}")
    return levels
