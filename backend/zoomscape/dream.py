"""LucidDreamer's Algorithm 1: grow one aligned point cloud P over a list of cameras.

Symbols follow the paper (S = inpaint, D = monocular depth, φ2→3 / φ3→2 in pointcloud.py; in
the code Î_i, D̂_i, D̃_i, P̂_i are spelled I_hat_i, D_hat_i, D_tilde_i, P_hat_i):

    I_0 = S(blank, all hole, prompt),  D_0 = D(I_0),  P_0 = φ2→3([I_0, D_0], K_0, c2w_0)
    for i = 1 … N−1:
        Î_i, M_i, D̃_i = φ3→2(P_{i−1}, K_i, c2w_i)          image, covered mask, z-buffer depth
        I_i = S(Î_i, ¬M_i, prompt)                          paint the holes only
        D̂_i = D(I_i)                                        depth up to an unknown scale/shift
        d_i = argmin_{s,t} Σ_{M_i} ρ((s·D̂_i + t − D̃_i) / D̃_i)   robust fit (align.py)
        D_i = d_i(D̂_i) = s_i·D̂_i + t_i
        P̂_i = φ2→3([I_i, D_i | ¬M_i ∧ kept], K_i, c2w_i)    new points from hole pixels only
        P_i = P_{i−1} ∪ P̂_i

(The paper fits d_i by gradient descent on the L1 distance of the lifted overlap to P_{i−1};
here the same objective is minimised robustly in closed form.) View 0 sets the world's scale.
A hole pixel is kept when its new point
- lies in front of its camera (D_i > 0),
- is not seen through a crack: where the pixels on both sides of it are covered, it must not lie
  behind the farther of them (a gap between splats, not a view past the surface),
- is not in the free space of an earlier view j: an earlier camera saw its observed surface O_j
  there, so nothing can stand in front of it (z_j < (1 − tol)·min₃ₓ₃ O_j drops the point).
If a view has too little overlap to fit (align raises ValueError), d_i falls back to d_{i−1}
and the view reports fallback=True.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .align import DepthFit, apply_depth_fit, fit_depth_scale
from .cameras import Camera, pixel_grid, world_to_pixels
from .pointcloud import PointCloud, merge, project, unproject

Progress = Callable[[str, int, int, str], None]


class JobCancelled(Exception):
    """The job was cancelled (should_cancel() returned True); no results are written."""


@dataclass
class DreamResult:
    """What dream() grew.

    cloud: P_{N−1}; views: one dict per camera {camera, new_points, scale, shift, overlap,
    fallback, dropped_crack, dropped_free_space}; source: [len(cloud)] index of the view each
    point came from; masks: per view M_i [H, W] bool (covered before painting; view 0 all False);
    observed: per view the depth the camera saw [H, W] (D̃_i where covered, D_i where a new point
    was kept, +inf elsewhere).
    """

    cloud: PointCloud
    views: list[dict]
    source: np.ndarray
    masks: list[np.ndarray] = field(default_factory=list)
    observed: list[np.ndarray] = field(default_factory=list)


def min_filter3(a: np.ndarray) -> np.ndarray:
    """3×3 minimum of a [H, W] array (edges use the pixels that exist)."""
    p = np.pad(a, 1, mode="edge")
    H, W = a.shape
    return np.min([p[i:i + H, j:j + W] for i in range(3) for j in range(3)], axis=0)


def crack_behind(D: np.ndarray, D_ref: np.ndarray, M: np.ndarray, tol: float) -> np.ndarray:
    """Hole pixels seen through a crack behind the existing surface: [H, W] bool.

    D: [H, W] new depth; D_ref: [H, W] z-buffer depth of the cloud; M: [H, W] covered. A hole
    pixel whose two neighbours along a row or a column are both covered is a crack; it is behind
    when D > (1 + tol)·max(neighbours' D_ref).
    """
    out = np.zeros(D.shape, bool)
    ref = np.where(M, D_ref, np.nan)
    for axis in (0, 1):
        r = np.moveaxis(ref, axis, 0)
        far = np.full(r.shape, np.nan)
        far[1:-1] = np.fmax(r[:-2], r[2:])
        both = np.zeros(r.shape, bool)
        both[1:-1] = np.isfinite(r[:-2]) & np.isfinite(r[2:])
        d = np.moveaxis(D, axis, 0)
        with np.errstate(invalid="ignore"):
            behind = both & (d > (1.0 + tol) * far)
        out |= np.moveaxis(behind, 0, axis)
    return out & ~M


def in_free_space(xyz: np.ndarray, cam: Camera, observed: np.ndarray, tol: float) -> np.ndarray:
    """Points an earlier camera saw through: [N] bool.

    xyz: [N, 3] world; observed: [H, W] depth that cam saw (+inf = no claim). A point is in cam's
    free space when it projects into the image in front of the camera with
    z < (1 − tol)·min₃ₓ₃(observed) at its pixel.
    """
    uv, z = world_to_pixels(cam, xyz)
    H, W = observed.shape
    with np.errstate(invalid="ignore"):
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    out = np.zeros(len(xyz), bool)
    idx = np.flatnonzero(inside)
    if idx.size:
        O = min_filter3(observed)
        col = np.floor(uv[idx, 0]).astype(np.int64)
        row = np.floor(uv[idx, 1]).astype(np.int64)
        out[idx] = z[idx] < (1.0 - tol) * O[row, col]
    return out


def _pixel_of_points(cam: Camera, mask: np.ndarray) -> np.ndarray:
    """Flat pixel indices, in row-major order, of the pixels where mask: [H, W] is True."""
    return np.flatnonzero(mask.reshape(-1))


def dream(cams: list[Camera], prompt: str, engine, seed: int,
          progress: Optional[Progress] = None, should_cancel: Optional[Callable[[], bool]] = None,
          *, crack_tol: float = 0.03, free_space_tol: float = 0.03) -> DreamResult:
    """Algorithm 1 over cams in order. engine: an engines.base.Engine. → DreamResult.

    progress("dream", step, total, message) after each view (step = views done, total = N);
    should_cancel() is polled before each view and raises JobCancelled when True.
    """
    if not cams:
        raise ValueError("cameras: need at least one camera to dream")
    N = len(cams)
    report = progress or (lambda *a: None)

    def check_cancel():
        if should_cancel is not None and should_cancel():
            raise JobCancelled("cancelled during dream")

    # View 0: text-to-image, its depth sets the world's scale (d_0 = identity).
    check_cancel()
    cam = cams[0]
    H, W = cam.height, cam.width
    I_0 = engine.inpaint(np.zeros((H, W, 3), np.float32), np.ones((H, W), bool), prompt, cam, seed)
    D_0 = np.asarray(engine.estimate_depth(I_0, cam), dtype=np.float64)
    P = unproject(cam, I_0, D_0)
    kept0 = np.isfinite(D_0) & (D_0 > 0)
    source = [np.zeros(len(P), np.int32)]
    masks = [np.zeros((H, W), bool)]
    observed = [np.where(kept0, D_0, np.inf)]
    views = [{"camera": cam.name, "new_points": len(P), "scale": 1.0, "shift": 0.0,
              "overlap": 0.0, "fallback": False, "dropped_crack": 0, "dropped_free_space": 0}]
    d_prev = DepthFit(scale=1.0, shift=0.0, inliers=0, residual=0.0)
    report("dream", 1, N, f"view 1/{N} '{cam.name}': {len(P)} points")

    for i in range(1, N):
        check_cancel()
        cam = cams[i]
        H, W = cam.height, cam.width
        proj = project(P, cam)
        I_hat_i, M_i, D_tilde_i = proj.image, proj.mask, proj.depth.astype(np.float64)
        overlap = float(M_i.mean())

        I_i = engine.inpaint(I_hat_i, ~M_i, prompt, cam, seed)
        D_hat_i = np.asarray(engine.estimate_depth(I_i, cam), dtype=np.float64)

        fallback, note = False, ""
        try:
            d_i = fit_depth_scale(D_hat_i, D_tilde_i, M_i)
        except ValueError as exc:
            d_i, fallback = d_prev, True
            note = f"; too little overlap to fit depth ({exc}), reusing the previous scale"
        D_i = apply_depth_fit(D_hat_i, d_i)

        with np.errstate(invalid="ignore"):
            hole = ~M_i & np.isfinite(D_i) & (D_i > 0)
        crack = hole & crack_behind(D_i, D_tilde_i, M_i, crack_tol)
        hole &= ~crack
        P_hat_i = unproject(cam, I_i, D_i, hole)
        free = np.zeros(len(P_hat_i), bool)
        for j in range(i):
            free |= in_free_space(P_hat_i.xyz, cams[j], observed[j], free_space_tol)
        P_hat_i = P_hat_i.select(~free)
        kept = np.zeros(H * W, bool)
        kept[_pixel_of_points(cam, hole)[~free]] = True
        kept = kept.reshape(H, W)

        P = merge(P, P_hat_i)
        source.append(np.full(len(P_hat_i), i, np.int32))
        masks.append(M_i)
        observed.append(np.where(M_i, D_tilde_i, np.where(kept, D_i, np.inf)))
        views.append({"camera": cam.name, "new_points": len(P_hat_i), "scale": float(d_i.scale),
                      "shift": float(d_i.shift), "overlap": overlap, "fallback": fallback,
                      "dropped_crack": int(crack.sum()), "dropped_free_space": int(free.sum())})
        d_prev = d_i
        report("dream", i + 1, N, f"view {i + 1}/{N} '{cam.name}': overlap {overlap:.0%}, "
                                  f"scale {d_i.scale:.3f}, {len(P_hat_i)} new points{note}")

    return DreamResult(cloud=P, views=views, source=np.concatenate(source), masks=masks,
                       observed=observed)
