"""Cover weights: how much the next, finer zoom level hides each Gaussian of a coarser one.

As level i+1 fades in, each Gaussian g of level i (or of the world, for level 0) keeps the opacity
fade · (1 − cover_g · fade_next) (splat_import), so the cover says where the finer level takes over.
Level i+1 was painted from its own camera c_{i+1} (wire.cameras.level_pose: in DOLLY p^(i+1) times
closer to the anchor, in LENS a p^(i+1) longer lens), so it shows exactly what c_{i+1} sees:

    cover_g = frustum_g · seen_g
    frustum_g = clamp(δ_g / (FEATHER · min(W, H)), 0, 1)      δ_g: pixels inside c_{i+1}'s border
    seen_g    = [ z_g ≤ (1 + DEPTH_TOL) · Z⁺(u_g) ]          0 behind the camera

with (u_g, z_g) g's centre projected into c_{i+1} and Z⁺ the next level's z-buffer there (the
nearest of its Gaussian centres per pixel) widened to the largest value over the 3 × 3 pixels
around, so that a slanted surface sampled a pixel apart at the two resolutions still agrees, and a
pixel no centre of the finer level lands on (Z = +∞) claims no occlusion (the frustum alone
decides, as where the finer level covers everything).

A Gaussian c_{i+1} cannot see (behind a nearer surface, seen_g = 0) stays: the camera between c_i
and c_{i+1} sees parts of the world that c_{i+1} does not (DOLLY's parallax uncovers the ground
behind an object it passes), and the coarser level, or the world, is what fills them. In LENS
every level camera sits at c_0, so occlusion changes little there.
"""
from __future__ import annotations

import numpy as np

from .wire.cameras import Intrinsics, level_pose, project_blender
from .wire.manifest import ZoomInfo

FEATHER = 0.1     # the cover ramps over this fraction of the finer level's image size at its border
DEPTH_TOL = 0.05  # relative: farther than this behind the finer level's surface = hidden from its camera


def level_camera(zoom: ZoomInfo, i: int) -> tuple[np.ndarray, Intrinsics]:
    """(matrix_world, intrinsics) of the camera level i was painted from (the manifest's mode)."""
    return level_pose(zoom.mode, zoom.matrix_world, zoom.intrinsics, zoom.anchor, zoom.factor, i)


def zbuffer(uv: np.ndarray, z: np.ndarray, width: int, height: int) -> np.ndarray:
    """The nearest depth per pixel of points at pixels uv [N, 2] with depth z [N]: [H, W] float64,
    +inf where no point in front of the camera lands."""
    zb = np.full(height * width, np.inf)
    with np.errstate(invalid="ignore"):
        col, row = np.floor(uv[:, 0]), np.floor(uv[:, 1])
        ok = (z > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    idx = row[ok].astype(np.int64) * width + col[ok].astype(np.int64)
    np.minimum.at(zb, idx, z[ok])
    return zb.reshape(height, width)


def widen(zb: np.ndarray) -> np.ndarray:
    """The largest value over each pixel's 3 × 3 neighbourhood (edges repeated): [H, W]."""
    p = np.pad(zb, 1, mode="edge")
    H, W = zb.shape
    out = zb.copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(out, p[dy:dy + H, dx:dx + W], out=out)
    return out


def cover_weights(points: np.ndarray, finer: np.ndarray, zoom: ZoomInfo, i: int) -> np.ndarray:
    """How much level i's camera view (level i of the zoom: the finer level) covers each point:
    [N] float32 in [0, 1].

    points: [N, 3] world coordinates of the coarser Gaussians (level i−1's, or the world's for
    i = 0); finer: [M, 3] world coordinates of level i's Gaussians (its z-buffer decides what its
    camera sees). float64 throughout (level points are o + u_i·R·x, 4^10 apart in scale).
    """
    M, k = level_camera(zoom, i)
    W, H = int(k.width), int(k.height)
    uv, z = project_blender(M, k, points)
    u, v = uv[:, 0], uv[:, 1]
    with np.errstate(invalid="ignore"):
        inside = np.minimum(np.minimum(u, W - u), np.minimum(v, H - v))
        frustum = np.clip(np.nan_to_num(inside / (FEATHER * min(W, H)), nan=0.0), 0.0, 1.0)
    front = z > 0
    zf = widen(zbuffer(*project_blender(M, k, finer), W, H))
    col = np.clip(np.nan_to_num(np.floor(u), nan=0.0), 0, W - 1).astype(np.int64)
    row = np.clip(np.nan_to_num(np.floor(v), nan=0.0), 0, H - 1).astype(np.int64)
    seen = z <= (1.0 + DEPTH_TOL) * zf[row, col]
    return np.where(front & seen, frustum, 0.0).astype(np.float32)
