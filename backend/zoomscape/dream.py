"""LucidDreamer's Algorithm 1: grow one aligned point cloud P over a list of cameras.

Symbols follow the paper (S = inpaint, D = monocular depth, φ2→3 / φ3→2 in pointcloud.py; in
the code Î_i, D̂_i, D̃_i, P̂_i are spelled I_hat_i, D_hat_i, D_tilde_i, P_hat_i):

    I_0 = S(blank, all hole, prompt),  D_0 = D(I_0),  P_0 = φ2→3([I_0, D_0], K_0, c2w_0)
    for i = 1 … N−1:
        Î_i, M_i, D̃_i = φ3→2(P_{i−1}, K_i, c2w_i)          image (the front surface's points
                                                             interpolated), covered mask, z-buffer depth
        R_i = M_i ∧ r_k·f_i / D̃_i > COARSE·√½               covered by points too coarse for view i
        I_i = Sharpen(S(Î_i, ¬M_i, prompt), R_i)            paint the holes, sharpen R_i
        D̂_i = D(I_i)                                        depth up to an unknown scale/shift
        d_i = argmin_{s,t} Σ_{M_i} ρ((s·D̂_i + t − D̃_i) / D̃_i)   robust global fit (align.py)
        c_i = screened Poisson fill of log(D̃_i / d_i(D̂_i)) from M_i into ¬M_i   seam (align.py)
        D_i = d_i(D̂_i) · exp(c_i)                           new points meet the old surface
        F_i = M_i ∧ D_i < (1 − τ_i)·D̃_i ∧ D_i ≤ (1 + τ_i)·min₃ₓ₃ D_i,  τ_i = max(τ, k·σ)
                                                             a nearer surface: the second pass
        I_i ← S(I_i, F_i, prompt),  M_i ← M_i ∧ ¬F_i        paint it, it is hole now (D_i kept)
        P̂_i = φ2→3([I_i, D_i | (¬M_i ∨ R_i) ∧ kept], K_i, c2w_i)   new points from hole pixels only
        P_i = P_{i−1} ∪ P̂_i,  less the coarse points P̂_i wholly covers (they leave after the consensus)
    then (refine=True) all views' corrections are solved again together (consensus.py), so the
    views' depth bends average out instead of view 0's winning, and each view's pinholes that the
    move opened are filled again (refine_views)

Resolution (coarse_cover, replaced_points). A point keeps the footprint of the pixel that lifted
it, r_k = z·√½/f in its own view. Walking toward a surface, a later view sees the points of an
earlier, farther one magnified: each spans several of its pixels and carries a blur of what it
resolves. LucidDreamer counts them as coverage and never paints there again, so the world stays as
sharp as the farthest view that saw it (on a forward walk the input views fell from 32 to 22 dB).
Here a covered pixel whose point spans more than COARSE of the view's pixel footprints is R_i:
the engine sharpens it (engines.base.Sharpener: the detail the view resolves, keeping what the
blur shows; the diffusers engine runs img2img there, the procedural engine renders the world; an
engine without sharpen inpaints it), and it is lifted like a hole, at the view's resolution, its
depth aligned to the old surface by the same fit and seam (the overlap samples keep the old
points there). The old points whose whole
splat the view lifted again, unhidden, are then replaced: no longer shown to later views, they
still hold the consensus's links and leave the cloud after it.

The second pass (nearer_surface). M_i marks every pixel some old point covers, but an old point
can be one the new camera cannot see: a box that no earlier camera saw (outside their frames, or
hidden) stands in front of ground or sky they did see. Where the new view's aligned depth is
clearly in front of the z-buffer's, by τ_i relative to it (a few %, and several times the
relative spread σ of D_i against D̃_i on the overlap and the fit's own residual, so neither the
depth model's noise nor its warp trips it), the pixel shows a new surface. The depth D̂_i was
estimated on I_i, which showed Î_i there, and it still put a surface in front: that depth is
kept, and only the colours are painted again, S(I_i, F_i), with the painted hole around as
context (the diffusers engine repaints those pixels; the procedural engine renders them). A
pixel on the far side of a depth edge of D_i (a depth model's flying pixel between a near and a
far surface) is no surface: the min₃ₓ₃ term drops it; and a view that disagrees with the old
surface as a whole (its alignment failed) has no second pass. The new points then pass the same
crack and free-space tests as every hole point, so an estimate that puts a surface where an
earlier camera saw through is dropped and the old point shows again. The old points behind stay
(they are other views' surface); the new view's z-buffer shows the new one.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .align import (MAD_TO_SIGMA, DepthFit, Seam, apply_depth_fit, apply_seam, bilinear,
                    depth_edges, fit_depth_pairs, seam_fill, usable_pixels)
from .cameras import Camera, pixel_grid, pixels_to_world, world_to_pixels
from .consensus import Consensus, Link, apply_consensus, consensus, coupling, view_parts
from .engines.base import check_image
from .errors import JobCancelled  # the one JobCancelled (zoomscape.dream.JobCancelled is it)
from .extra_views import DivePath, ExtraViewPlanner, PlannedView
from .pointcloud import (FOOTPRINT_PX, PointCloud, blend_front, footprint_pixels, footprint_ratio, merge,
                         project, unproject)
from .wire.manifest import ViewSummary

Progress = Callable[[str, int, int, str], None]
# An old point whose splat in a new view spans more than COARSE of that view's pixel footprints is
# no coverage there (coarse_cover): the view paints and lifts its pixels at its own resolution.
COARSE = 1.3


@dataclass
class ViewReport:
    """What the dream did with one camera.

    new_points: points it added (after every drop, with nearer and refilled); scale, shift: its
    depth fit d_i; overlap: fraction of its pixels the earlier views covered (M_i before the
    second pass); fallback: the fit fell back to the previous view's; seam_used: overlap pixels
    that measured the seam residual; seam_max: largest |c_i| over the new points (a log-depth
    factor); dropped_crack, dropped_free_space: new points dropped as cracks of the reprojected
    cloud, or for lying in an earlier view's free space; nearer: new points on covered pixels
    where the view saw a nearer surface (F_i, the second pass); refilled: pinholes the consensus
    opened in this view's z-buffer, filled again (refine_views); extra: an extra view the dream
    planned (extra_views.py), not one of the user's cameras; sharpened: new points on covered
    pixels whose old point was coarse there (R_i, coarse_cover); replaced: old points of earlier
    views that those finer points replaced and the dream dropped (replaced_points; they are
    counted off their own view's new_points).
    """

    camera: str
    new_points: int
    scale: float
    shift: float
    overlap: float
    fallback: bool
    seam_used: int
    seam_max: float
    dropped_crack: int = 0
    dropped_free_space: int = 0
    nearer: int = 0
    refilled: int = 0
    extra: bool = False
    sharpened: int = 0
    replaced: int = 0

    def summary(self) -> ViewSummary:
        """The manifest's entry for this view."""
        return ViewSummary(self.camera, int(self.new_points), float(self.scale), float(self.overlap),
                           extra=bool(self.extra))


@dataclass
class DreamResult:
    """What dream() grew.

    cloud: P_{N−1}; views: one ViewReport per camera; source: [len(cloud)] index of the view each
    point came from; masks: per view M_i [H, W] bool, the pixels where the view shows old points
    (covered before painting, less the nearer surface F_i and the pinholes refilled after the
    consensus, which are the view's own new points; view 0: all False, or init's known depth);
    observed: per view the depth the camera saw [H, W] (D̃_i where covered, D_i where a new point
    was kept, +inf elsewhere); images: per view I_i [H, W, 3] float32, the picture the view
    dreamed (its render of the old points with the holes and the nearer surface painted);
    consensus: what the multi-view consensus did (None when it did not run).
    Views are the user's cameras in order, then the extra views the dream planned (extra_views=M:
    at most M, views[i].extra): cameras holds every view's Camera (user, then extra), planned one
    PlannedView per extra view; every per-view list (views, masks, observed, images, source's
    view indices) counts the extra views after the user's, and the cloud keeps their points.
    """

    cloud: PointCloud
    views: list[ViewReport]
    source: np.ndarray
    masks: list[np.ndarray] = field(default_factory=list)
    observed: list[np.ndarray] = field(default_factory=list)
    consensus: Optional[Consensus] = None
    images: list[np.ndarray] = field(default_factory=list)
    cameras: list[Camera] = field(default_factory=list)
    planned: list[PlannedView] = field(default_factory=list)

    @property
    def extra(self) -> np.ndarray:
        """[V] bool: which views are extra (planned by the dream, not the user's)."""
        return np.array([v.extra for v in self.views], bool)


def min_filter3(a: np.ndarray) -> np.ndarray:
    """3×3 minimum of a [H, W] array (edges use the pixels that exist)."""
    p = np.pad(a, 1, mode="edge")
    rows = np.minimum(np.minimum(p[:-2], p[1:-1]), p[2:])           # separable: rows, then columns
    return np.minimum(np.minimum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


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


def nearer_surface(D: np.ndarray, D_tilde: np.ndarray, M: np.ndarray, residual: float = 0.0, *,
                   margin: float = 0.05, k: float = 4.0, min_pixels: int = 50) -> np.ndarray:
    """Covered pixels where the new view sees a surface clearly in front of the old one: F_i.

    D: [H, W] the new view's aligned depth D_i; D_tilde: [H, W] the z-buffer depth D̃_i of the
    old cloud; M: [H, W] covered (M_i); residual: the relative rms σ(d_i) its depth fit reports
    (0: unknown). With r = D_i / D̃_i − 1 on the covered pixels, σ_r its robust spread (1.4826 ·
    median |r − median r|) and

        τ = max(margin, k·σ(d_i), k·σ_r),
        F_i = M_i ∧ D_i < (1 − τ)·D̃_i ∧ D_i ≤ (1 + τ)·min₃ₓ₃ D_i

    so neither the depth model's noise nor its warp, nor a loose fit, trips it. The last term
    keeps the near side of a depth edge of D_i only: a pixel whose depth lies between a near and
    a far neighbour (a depth model's flying pixel) is no surface. A nearer surface is the
    exception on the overlap: where the view as a whole disagrees with the old surface
    (|median r| > τ: its alignment failed), or fewer than min_pixels covered pixels have a
    depth, F_i is empty. → [H, W] bool.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(np.isfinite(D) & (D > 0), D, np.inf)
        both = M & np.isfinite(d) & np.isfinite(D_tilde) & (D_tilde > 0)
        if both.sum() < min_pixels:
            return np.zeros(M.shape, bool)
        r = d[both] / D_tilde[both] - 1.0
        med = float(np.median(r))
        spread = MAD_TO_SIGMA * float(np.median(np.abs(r - med)))
        res = float(residual) if np.isfinite(residual) else 0.0
        tau = max(float(margin), float(k) * res, float(k) * spread)
        if abs(med) > tau:
            return np.zeros(M.shape, bool)
        return both & (d < (1.0 - tau) * D_tilde) & (d <= (1.0 + tau) * min_filter3(d))


def coarse_cover(P: PointCloud, proj, cam: Camera, ratio: float,
                 fixed: Optional[np.ndarray] = None) -> np.ndarray:
    """Covered pixels of cam whose old point is too coarse there to count as coverage: R_i.

    proj: the Projection of P into cam. A point carries the footprint of the view that lifted it
    (pointcloud.footprint_radius: r = z·√½/f at its own depth z and focal length f). Seen from cam
    at z-depth z_i its splat spans r·f_i/z_i pixels; where that is more than ratio × √½ (the
    footprint of cam's own pixel), the view that lifted it saw the surface at under 1/ratio of
    cam's resolution (from farther away, or through a wider lens), and its colour is a blur of
    what cam can resolve. fixed: [len(P)] bool, the user's own points (init): never coarse.
    ratio ≤ 0 or inf: none. → [H, W] bool, a subset of proj.mask.
    """
    out = np.zeros(proj.mask.shape, bool)
    if not (np.isfinite(ratio) and ratio > 0) or not proj.mask.any():
        return out
    k = proj.index[proj.mask]
    coarse = footprint_ratio(cam, P.radius[k], proj.depth[proj.mask]) > ratio
    if fixed is not None:
        coarse &= ~np.asarray(fixed, bool)[k]
    out[proj.mask] = coarse
    return out


def coarse_points(P: PointCloud, cam: Camera, sharp: np.ndarray, D_old: np.ndarray, ratio: float,
                  tol: float, fixed: Optional[np.ndarray] = None) -> np.ndarray:
    """The old points that finer ones may replace in cam: indices [n] into P.

    Every point on cam's visible surface (z ≤ (1 + tol)·D_old at its home pixel, D_old: [H, W]
    the old cloud's z-buffer; not only the z-buffer's winners: overlapping splats of one surface
    hide each other) whose home pixel is sharp ([H, W] bool: lifted again at cam's resolution)
    and whose splat is coarse there (coarse_cover's rule with ratio); never the user's fixed
    points ([len(P)] bool).
    """
    idx, home, uv, z = _home_pixels(cam, P.xyz)
    zi = z[idx]
    with np.errstate(invalid="ignore"):
        ok = sharp.reshape(-1)[home] & (zi <= (1.0 + tol) * D_old.reshape(-1)[home]) & \
            (footprint_ratio(cam, P.radius[idx], zi) > ratio)
    if fixed is not None:
        ok &= ~np.asarray(fixed, bool)[idx]
    return idx[ok]


def replaced_points(P: PointCloud, cam: Camera, candidates: np.ndarray, sharp: np.ndarray,
                    fine: np.ndarray, D_new: np.ndarray, D_old: np.ndarray, tol: float) -> np.ndarray:
    """Which old points finer ones replace: [n] bool over candidates [n] (indices into P).

    sharp: [H, W] the covered pixels where the view lifted a new point because the old one was
    coarse (R_i, kept); fine: [H, W] the covered pixels whose old point is fine enough for the
    view (M_i ∧ ¬R_i, no nearer surface); D_new: [H, W] the view's aligned depth D_i; D_old:
    [H, W] the old cloud's z-buffer D̃_i. A point k at z-depth z_k in cam is replaced when its
    whole splat (as project() draws it, half-extent r pixels) lies inside the image and on every
    pixel of it the surface in front is k's own,

        D_old ≥ (1 − tol − g·(r + 1))·z_k,   g = |∇D_new| / D_new at k's pixel (per pixel),

    (its surface's depth changes across the splat by about g·r: a ground seen at a slant), and is
    fine, or sharp with the new point there (D_new above the same bound): no part of it is hidden
    or left out, so finer points cover all the surface it stood for, from any camera.
    """
    candidates = np.asarray(candidates, np.int64)
    if candidates.size == 0:
        return np.zeros(0, bool)
    sub = P.select(candidates)
    pix, owner, whole = footprint_pixels(sub, cam)
    uv, z = world_to_pixels(cam, sub.xyz)
    H, W = D_new.shape
    row = np.clip(np.floor(uv[:, 1]).astype(np.int64), 1, H - 2)
    col = np.clip(np.floor(uv[:, 0]).astype(np.int64), 1, W - 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.maximum(np.abs(D_new[row, col + 1] - D_new[row, col - 1]),
                       np.abs(D_new[row + 1, col] - D_new[row - 1, col])) / (2.0 * D_new[row, col])
        g = np.where(np.isfinite(g), g, np.inf)
    r = footprint_ratio(cam, sub.radius, z) * FOOTPRINT_PX          # the splat's half-extent, pixels
    lim = ((1.0 - tol - g * (r + 1.0)) * z)[owner]
    with np.errstate(invalid="ignore"):
        new_ok = sharp.reshape(-1)[pix] & (D_new.reshape(-1)[pix] >= lim)
        good = (new_ok | fine.reshape(-1)[pix]) & (D_old.reshape(-1)[pix] >= lim)
    bad = np.bincount(owner[~good], minlength=len(candidates)) > 0
    return whole & ~bad


def in_free_space(xyz: np.ndarray, cam: Camera, observed: np.ndarray, tol: float, *,
                  filtered: bool = False, at_points: bool = False) -> np.ndarray:
    """Points an earlier camera saw through: [N] bool.

    xyz: [N, 3] world; observed: [H, W] depth that cam saw (+inf = no claim). A point is in cam's
    free space when it projects into the image in front of the camera with
    z < (1 − tol)·min₃ₓ₃(observed) at its pixel. filtered: observed is min₃ₓ₃ already;
    at_points: min₃ₓ₃ read at the points' pixels only, not filtered over the whole image (the
    same values; cheaper for a few points).
    """
    uv, z = world_to_pixels(cam, xyz)
    H, W = observed.shape
    with np.errstate(invalid="ignore"):
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    out = np.zeros(len(xyz), bool)
    idx = np.flatnonzero(inside)
    if idx.size:
        col = np.floor(uv[idx, 0]).astype(np.int64)
        row = np.floor(uv[idx, 1]).astype(np.int64)
        if at_points:
            O = _min3_at(observed, row, col)
        else:
            O = (observed if filtered else min_filter3(observed))[row, col]
        out[idx] = z[idx] < (1.0 - tol) * O
    return out


def _home_pixels(cam: Camera, xyz: np.ndarray):
    """The points of xyz [N, 3] in front of cam and inside its image, and their home pixels (the
    one each (u, v) falls in). → (idx [n] into xyz, pix [n] flat row · W + col, uv [N, 2], z [N])."""
    H, W = cam.height, cam.width
    uv, z = world_to_pixels(cam, xyz)
    with np.errstate(invalid="ignore"):
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    idx = np.flatnonzero(inside)
    pix = np.floor(uv[idx, 1]).astype(np.int64) * W + np.floor(uv[idx, 0]).astype(np.int64)
    return idx, pix, uv, z


def _pixel_of_points(cam: Camera, mask: np.ndarray) -> np.ndarray:
    """Flat pixel indices, in row-major order, of the pixels where mask: [H, W] is True."""
    return np.flatnonzero(mask.reshape(-1))


@dataclass(frozen=True)
class Samples:
    """Pairs of the old surface and the new depth estimate on the overlap of one view.

    pred: [n] D̂ at the sample; ref: [n] the old surface's z-depth there; pix: [n] flat index
    (row · W + col) of the sample's pixel; density: samples per covered pixel (< 1 for a subset);
    point: [n] index of the sample's old point in the cloud (None when unknown).
    """

    pred: np.ndarray
    ref: np.ndarray
    pix: np.ndarray
    density: float = 1.0
    point: Optional[np.ndarray] = None


def overlap_samples(P: PointCloud, proj, cam: Camera, D_hat: np.ndarray, *, tol: float = 0.1,
                    edge_threshold: float = 0.1, max_points: int = 200_000) -> Samples:
    """The old points on cam's visible surface, each paired with D̂ bilinear at its own (u, v).

    proj: the Projection of P into cam. A point is a sample when its home pixel (the one its
    (u, v) falls in) is covered, not next to a depth edge of the z-buffer, and the point is on
    the visible surface there: z ≤ (1 + tol) · z-buffer. Taking every such point, not the one
    that won the z-buffer, keeps the samples unbiased: among noisy splats of one surface the
    nearest wins, so the winners lie in front of it on average. Strided to at most max_points
    points of P (evenly spread; density says how many samples a covered pixel gets).
    """
    step = max(1, -(-len(P) // max_points))
    idx, pix, uv, z = _home_pixels(cam, P.xyz[::step])
    zbuf = proj.depth.reshape(-1).astype(np.float64)
    # a depth edge of the old surface or of the new estimate (which sees disocclusions whole);
    # the cracks of a reprojected cloud are no edge: on a surface seen closer than before they
    # are everywhere, and treating them as edges would leave it almost unsampled
    edge = (depth_edges(proj.depth, edge_threshold, 1, gaps=False) |
            depth_edges(D_hat, edge_threshold, 1)).reshape(-1)
    with np.errstate(invalid="ignore"):
        keep = proj.mask.reshape(-1)[pix] & ~edge[pix] & (z[idx] <= (1.0 + tol) * zbuf[pix])
    idx, pix = idx[keep], pix[keep]
    pred = bilinear(np.asarray(D_hat, dtype=np.float64), uv[idx])
    with np.errstate(invalid="ignore"):
        good = np.isfinite(pred) & (pred > 0)
    return Samples(pred=pred[good], ref=z[idx][good], pix=pix[good], density=1.0 / step,
                   point=idx[good] * step)


def _samples_where(samples: Samples, keep: np.ndarray) -> Samples:
    """The samples where keep: [n] bool is True (same density)."""
    return Samples(pred=samples.pred[keep], ref=samples.ref[keep], pix=samples.pix[keep],
                   density=samples.density,
                   point=None if samples.point is None else samples.point[keep])


def pixel_samples(D_hat: np.ndarray, D_ref: np.ndarray, M: np.ndarray) -> Samples:
    """Samples at the pixels of two depth maps (e.g. the user's D_0 on M_0): usable_pixels."""
    use = usable_pixels(D_hat, D_ref, M)
    return Samples(pred=np.asarray(D_hat, np.float64)[use], ref=np.asarray(D_ref, np.float64)[use],
                   pix=np.flatnonzero(use))


def align_view(D_hat: np.ndarray, D_ref: np.ndarray, M: np.ndarray, samples: Samples,
               d_prev: DepthFit, space: str = "depth"):
    """D_i = d_i(D̂_i) · exp(c_i): the robust global fit, then the seam. → (D_i, d_i, seam_i,
    fallback, note). D_hat: [H, W]; samples: the overlap pairs (D_ref, M: the z-buffer depth and
    covered mask they came from). Too few samples: d_i = d_prev, no seam, fallback = True."""
    try:
        d = fit_depth_pairs(samples.pred, samples.ref, space=space)
    except ValueError as exc:
        return (apply_depth_fit(D_hat, d_prev), d_prev, None, True,
                f"; too little overlap to fit depth ({exc}), reusing the previous scale")
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.log(samples.ref / apply_depth_fit(samples.pred, d))
    seam = seam_fill(rho, samples.pix, D_hat.shape, density=samples.density)
    return apply_seam(apply_depth_fit(D_hat, d), seam), d, seam, False, ""


def check_init(init, cam: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """init = (I_0 [H, W, 3] image, D_0 [H, W] metric z-depth (+inf/NaN where none), M_0 [H, W]
    bool known pixels) for cam → (image float32, depth float64, known bool), or ValueError
    naming the field and the expected shape."""
    if not (isinstance(init, (tuple, list)) and len(init) == 3):
        raise ValueError("init: must be a tuple (image [H, W, 3], depth [H, W], known [H, W] bool)")
    image = check_image(init[0], cam, "init image")
    depth = np.asarray(init[1], dtype=np.float64)
    known = np.asarray(init[2])
    for field, a in (("init depth", depth), ("init known", known)):
        if a.shape != (cam.height, cam.width):
            raise ValueError(f"{field}: shape {a.shape} does not match camera '{cam.name}', "
                             f"expected {(cam.height, cam.width)}")
    if known.dtype != bool:
        raise ValueError(f"init known: must be a boolean mask (True = known pixel), got {known.dtype}")
    return image, depth, known


def dream(cams: list[Camera], prompt: str, engine, seed: int,
          progress: Optional[Progress] = None, should_cancel: Optional[Callable[[], bool]] = None,
          *, crack_tol: float = 0.03, free_space_tol: float = 0.03, near_margin: float = 0.05,
          near_min: int = 4, init=None, refine: bool = True, extra_views: int = 0,
          coarse: float = COARSE, dive: Optional[DivePath] = None) -> DreamResult:
    """Algorithm 1 over cams in order. engine: an engines.base.Engine. → DreamResult.

    init: None, or (I_0, D_0, M_0) for cams[0] (check_init): the user's image [H, W, 3], metric
    z-depth [H, W] (+inf/NaN where none) and known pixels [H, W] bool. View 0 then paints only
    ¬M_0 and keeps D_0 wherever M_0 has a finite depth.
    refine: after the last view, bend all views jointly so they agree (consensus.py); the
    user's depth never moves. observed then holds the depths after that step, and the pinholes
    the step opened in each view are filled again (refine_views).
    near_margin: τ of the second pass (nearer_surface); near_min: fewer nearer pixels than this
    in a view are not painted (an engine's paint costs as much for a few pixels as for many).
    coarse: an old point whose splat in the new view spans more than this many of its pixel
    footprints is no coverage there (coarse_cover): the view paints and lifts those pixels at its
    own resolution, and the old points its finer ones wholly cover are dropped (replaced_points).
    0 or inf: every old point is coverage (LucidDreamer's rule).
    extra_views: M ≥ 0. After the user's N cameras, dream up to M more views, each planned from
    the cloud and the observed depths so far (extra_views.ExtraViewPlanner: between, ahead of
    and around the user's cameras, never inside or behind a surface; greedily the one whose holes
    would fill the most) and dreamed like any view, so the consensus and the pinhole fill take them
    too. The user's views come out as with M = 0 except for what the consensus changes. The
    planning stops early when no candidate leaves more than a small fraction empty.
    dive: a DOLLY zoom's DivePath: its cameras (placed once the user's views are dreamed) are
    dreamed first of the extra views (extra_views.py: kind "dive"), on top of the M (M = 0: none
    of them either). A dive view paints and lifts its holes only (no coarse cover, so it replaces
    nothing): the surface the zoom dives to keeps the points the other views put there.
    progress("dream", step, total, message) after each view (step = views done, total = N + dive
    views + M, N + the views dreamed once the planning stops) and
    after each denoising step of an engine that denoises: with T steps per view, step v·T + s of
    total N·T during view v's step s, and views done · T after each view. should_cancel() is
    polled before each view and handed to engine.inpaint (with on_step) as call arguments, so the
    shared engine holds no hooks; it raises errors.JobCancelled when True.
    """
    if not cams:
        raise ValueError("cameras: need at least one camera to dream")
    if isinstance(extra_views, bool) or not isinstance(extra_views, (int, np.integer)) or \
            extra_views < 0:
        raise ValueError(f"extra_views: must be an integer ≥ 0, got {extra_views!r}")
    cams = list(cams)    # the user's N cameras, then the extra views as they are planned
    N, extra_views = len(cams), int(extra_views)
    n_dive = len(dive.taus) if dive is not None and extra_views > 0 else 0
    total = [N + n_dive + extra_views]  # the views this dream may take (progress)
    report = progress or (lambda *a: None)
    space = getattr(engine, "depth_space", "depth")
    if init is not None:
        init = check_init(init, cams[0])

    def check_cancel():
        if should_cancel is not None and should_cancel():
            raise JobCancelled("cancelled during dream")

    steps = [1]  # denoising steps per view T: known after the engine's first on_step (1: none)

    def view_done(views: int, message: str) -> None:
        report("dream", views * steps[0], total[0] * steps[0], message)

    def on_step_of(v: int):
        """The on_step of view v's inpaint: stage "dream", step v·T + s of (N + M)·T."""
        def on_step(s: int, T: int) -> None:
            steps[0] = T
            report("dream", v * T + s, total[0] * T,
                   f"view {v + 1}/{total[0]}: denoising step {s}/{T}")
        return on_step

    def view_report(cam, n_new, d, seam, fallback, overlap, kept, crack=0, free=0, nearer=0,
                    extra=False, sharpened=0):
        c = seam.correction[kept] if seam is not None and kept.any() else np.zeros(1)
        return ViewReport(cam.name, int(n_new), float(d.scale), float(d.shift), float(overlap),
                          bool(fallback), int(seam.used) if seam is not None else 0,
                          float(np.abs(c).max()), int(crack), int(free), int(nearer), extra=extra,
                          sharpened=int(sharpened))

    # View 0: text-to-image, its depth sets the world's scale (d_0 = identity); or the user's
    # RGB-D: paint the unknown pixels, fit their depth to D_0 on the known ones, keep D_0 there.
    check_cancel()
    cam = cams[0]
    H, W = cam.height, cam.width
    d_prev = DepthFit(scale=1.0, shift=0.0, inliers=0, residual=0.0, space=space)
    seam, fallback, note = None, False, ""
    if init is None:
        M_0 = np.zeros((H, W), bool)
        I_0 = engine.inpaint(np.zeros((H, W, 3), np.float32), np.ones((H, W), bool), prompt, cam,
                             seed, on_step=on_step_of(0), should_cancel=should_cancel)
        D_0 = np.asarray(engine.estimate_depth(I_0, cam, seed=seed, role="first"), dtype=np.float64)
    else:
        I_user, D_user, known = init
        with np.errstate(invalid="ignore"):
            M_0 = known & np.isfinite(D_user) & (D_user > 0)
        I_0 = (engine.inpaint(I_user, ~known, prompt, cam, seed, on_step=on_step_of(0),
                              should_cancel=should_cancel) if not known.all() else I_user)
        D_0 = np.where(M_0, D_user, np.inf)
        if not M_0.all():
            D_hat_0 = np.asarray(engine.estimate_depth(I_0, cam, seed=seed, role="first"),
                                 dtype=np.float64)
            samples_0 = pixel_samples(D_hat_0, D_0, M_0)
            D_fit, d_prev, seam, fallback, note = align_view(D_hat_0, D_0, M_0, samples_0, d_prev,
                                                             space)
            D_0 = np.where(M_0, D_user, D_fit)
    P = unproject(cam, I_0, D_0)
    with np.errstate(invalid="ignore"):
        kept0 = np.isfinite(D_0) & (D_0 > 0)
    # what the consensus needs: each point's pixel, the seam already in it, whether it is the
    # user's; each view's overlap samples (links) and the points its z-buffer showed (winners)
    point_pix = [np.flatnonzero(kept0)]
    fixed = [M_0.reshape(-1)[point_pix[0]]]
    point_c = [np.zeros(len(P))]
    links, winners = [], [np.full((H, W), -1, np.int64)]
    if seam is not None:
        point_c[0] = np.where(fixed[0], 0.0, seam.correction.reshape(-1)[point_pix[0]])
        links.append(_link(P, cams, np.zeros(len(P), np.int32), 0, samples_0,
                           np.searchsorted(point_pix[0], samples_0.pix), D_hat_0, d_prev, seam))
    source = [np.zeros(len(P), np.int32)]
    gone = np.zeros(len(P), bool)   # points finer ones of a later view replaced (replaced_points)
    masks = [M_0]
    images = [np.asarray(I_0, np.float32)]
    observed = [np.where(kept0, D_0, np.inf)]
    views = [view_report(cam, len(P), d_prev, seam, fallback, float(M_0.mean()), kept0 & ~M_0)]
    view_done(1, f"view 1/{total[0]} '{cam.name}': {len(P)} points{note}")

    planner, planned = None, []   # the extra views: planned one at a time after the user's
    for i in itertools.count(1):
        if i == len(cams):
            # the user's cameras are done: plan the next extra view from the cloud and the depths
            # seen so far (extra_views.py), or stop
            if extra_views == 0 or sum(v.kind != "dive" for v in planned) == extra_views:
                break
            check_cancel()
            if planner is None:
                planner = ExtraViewPlanner(cams[:N], observed[:N], tol=free_space_tol,
                                           dive=dive.cameras(P) if n_dive else (),
                                           dive_source=dive.camera.name if n_dive else "")
            # the whole cloud, the replaced points too: the planner takes in what was added since
            # its last call (the cloud only grows), and finer points cover the replaced ones
            nxt = planner.next(P, cams, observed)
            if nxt is None:
                total[0] = len(cams)
                view_done(len(cams), f"{len(planned)} extra views: no other leaves more than "
                                     f"{planner.min_empty:.1%} of its pixels empty")
                break
            cams.append(nxt.camera)
            planned.append(nxt)
        check_cancel()
        cam = cams[i]
        H, W = cam.height, cam.width
        # the old points that finer ones replaced (gone) are no longer shown; they leave the
        # cloud after the consensus, whose links still hold them
        alive = np.flatnonzero(~gone)
        P_alive = P if alive.size == len(P) else P.select(alive)
        proj = project(P_alive, cam)
        # Î_i: the covered pixels interpolate the front surface's points (blend_front), not the
        # z-buffer's nearest one, so a surface seen from another camera keeps its texture
        I_hat_i, M_i, D_tilde_i = blend_front(P_alive, cam, proj), proj.mask, proj.depth.astype(np.float64)
        overlap = float(M_i.mean())
        index_i = np.where(M_i, alive[np.maximum(proj.index, 0)], -1)   # proj.index into P
        # R_i: covered by old points too coarse for this view: sharpened (the engine paints the
        # detail the view resolves, keeping what they show) and lifted like the hole
        fixed_all = np.concatenate(fixed)
        # a dive view only fills what no view saw: the surface the zoom dives to stays as the
        # zoom camera and the views beside it put it (its anchor and level 0's depth; a part in a
        # thousand of the anchor's distance is p^τ times that at zoom τ)
        dive_view = i >= N and planned[i - N].kind == "dive"
        R_i = coarse_cover(P_alive, proj, cam, np.inf if dive_view else coarse, fixed_all[alive])
        if int(R_i.sum()) < near_min:
            R_i[:] = False
        sharpen = getattr(engine, "sharpen", None)

        I_i = engine.inpaint(I_hat_i, ~M_i if sharpen else ~M_i | R_i, prompt, cam, seed,
                             on_step=on_step_of(i), should_cancel=should_cancel)
        if sharpen and R_i.any():
            I_i = sharpen(I_i, R_i, prompt, cam, seed, should_cancel=should_cancel)
        D_hat_i = np.asarray(engine.estimate_depth(I_i, cam, seed=seed, role="view"), dtype=np.float64)

        # d_i: robust global fit on the overlap, then c_i: the seam; D_i = d_i(D̂_i) · exp(c_i)
        samples_i = overlap_samples(P_alive, proj, cam, D_hat_i)
        samples_i = dataclasses.replace(samples_i, point=alive[samples_i.point])
        D_i, d_i, seam_i, fallback, note = align_view(D_hat_i, D_tilde_i, M_i, samples_i, d_prev,
                                                      space)

        # the second pass: where D_i is clearly in front of D̃_i the view sees a nearer surface
        # (F_i); paint it (the depth that found it is kept) and lift it like the hole
        F_i = np.zeros_like(M_i)
        if not fallback:
            F_i = nearer_surface(D_i, D_tilde_i, M_i, d_i.residual, margin=near_margin) & ~R_i
            if int(F_i.sum()) >= near_min:
                I_i = engine.inpaint(I_i, F_i, prompt, cam, seed, should_cancel=should_cancel)
            else:
                F_i[:] = False
        covered = M_i & ~F_i & ~R_i
        with np.errstate(invalid="ignore"):
            hole = ~covered & np.isfinite(D_i) & (D_i > 0)
        crack = hole & crack_behind(D_i, D_tilde_i, covered, crack_tol)
        hole &= ~crack
        P_hat_i = unproject(cam, I_i, D_i, hole)
        free = np.zeros(len(P_hat_i), bool)
        for j in range(i):
            free |= in_free_space(P_hat_i.xyz, cams[j], observed[j], free_space_tol)
        P_hat_i = P_hat_i.select(~free)
        kept = np.zeros(H * W, bool)
        kept[_pixel_of_points(cam, hole)[~free]] = True
        kept = kept.reshape(H, W)
        nearer = F_i & kept           # where a new point was dropped, the old one shows again
        sharp = R_i & kept
        M_i = M_i & ~nearer & ~sharp
        # the old points the finer ones wholly cover go (after the merge: indices stay until then)
        candidates = coarse_points(P, cam, sharp, D_tilde_i, coarse, crack_tol, fixed_all | gone)
        replaced = candidates[replaced_points(P, cam, candidates, sharp, covered, D_i, D_tilde_i,
                                              crack_tol)]

        if seam_i is not None:
            if nearer.any():          # the old points there are hidden: no longer the overlap
                samples_i = _samples_where(samples_i, ~nearer.reshape(-1)[samples_i.pix])
            links.append(_link(P, cams, np.concatenate(source), i, samples_i, samples_i.point,
                               D_hat_i, d_i, seam_i))
        pix_i = _pixel_of_points(cam, hole)[~free]
        point_pix.append(pix_i)
        fixed.append(np.zeros(len(pix_i), bool))
        point_c.append(seam_i.correction.reshape(-1)[pix_i] if seam_i is not None
                       else np.zeros(len(pix_i)))
        winners.append(np.where(M_i, index_i, -1))

        P = merge(P, P_hat_i)
        source.append(np.full(len(P_hat_i), i, np.int32))
        masks.append(M_i)
        images.append(np.asarray(I_i, np.float32))
        observed.append(np.where(M_i, D_tilde_i, np.where(kept, D_i, np.inf)))
        views.append(view_report(cam, len(P_hat_i), d_i, seam_i, fallback, overlap, kept,
                                 crack.sum(), free.sum(), nearer.sum(), extra=i >= N,
                                 sharpened=sharp.sum()))
        gone = np.concatenate([gone, np.zeros(len(P_hat_i), bool)])
        if replaced.size:
            gone[replaced] = True
            for v, n in enumerate(np.bincount(np.concatenate(source)[replaced], minlength=i)):
                views[v].new_points -= int(n)
            views[i].replaced = int(replaced.size)
        d_prev = d_i
        what = "" if i < N else f" (extra, {planned[i - N].kind}, {planned[i - N].empty:.0%} empty)"
        finer = f", {int(sharp.sum())} sharper than before" if sharp.any() else ""
        view_done(i + 1, f"view {i + 1}/{total[0]} '{cam.name}'{what}: overlap {overlap:.0%}, "
                         f"scale {d_i.scale:.3f}, {len(P_hat_i)} new points{finer}{note}")

    source = np.concatenate(source)
    agreed = None
    if refine and links:
        P, source, observed, agreed, dropped, filled = refine_views(
            P, cams, source, np.concatenate(point_pix), np.concatenate(point_c),
            np.concatenate(fixed), links, observed, winners, free_space_tol, crack_tol,
            superseded=gone)
        for v, n, f in zip(views, dropped, filled.count):
            v.new_points += int(f) - int(n)
            v.dropped_free_space += int(n)
            v.refilled = int(f)
        masks = [m & ~f for m, f in zip(masks, filled.pixels)]
    elif gone.any():
        P, source = P.select(~gone), source[~gone]
    return DreamResult(cloud=P, views=views, source=source, masks=masks, observed=observed,
                       consensus=agreed, images=images, cameras=cams, planned=planned)


@dataclass(frozen=True)
class Refill:
    """What fill_pinholes added: cloud: the cloud with the new points, sorted by view again;
    source: [len(cloud)] the view of each point; observed: per view [H, W] the depth it saw, at
    its refilled pixels the new points' (pixels: per view [H, W] bool; they are now its own
    points); count: per view how many."""

    cloud: PointCloud
    source: np.ndarray
    observed: list[np.ndarray]
    pixels: list[np.ndarray]
    count: list[int]


def fill_pinholes(P: PointCloud, cams: list[Camera], source: np.ndarray,
                  observed: list[np.ndarray], winners: list[np.ndarray], alive: np.ndarray, *,
                  tol: float, free_space_tol: float) -> Refill:
    """Fill again the pixels of each view that the consensus opened. → Refill.

    P: the cloud after the move (and its drops); source: [len(P)] its views; observed: per view
    the depth it saw after the move ([H, W]); winners: per view [H, W] the index of the old point
    its z-buffer showed on M_v (-1 elsewhere) in the cloud before the drops, of which alive: [N₀]
    bool says which are still in P (P is that cloud .select(alive)). The move slides every point
    along its own camera's ray, so in another view v the old points shown on M_v drift sideways
    and open pinholes (a view's own points never leave their pixels). A pixel p of M_v whose old
    point k is still there is a pinhole when the current cloud's z-buffer of v is empty at p, or
    shows a surface behind k's new depth z_k = observed_v(p) through a crack of the moved one
    (z-buffer(p) > (1 + tol)·z_k while its neighbours on both sides, along a row or a column, are
    still on it: not past a silhouette). It gets a point of view v again (M_v loses p):

        X = φ2→3(p, t),  t: where v's ray through p meets the moved surface (depth_on_surface)

    on the depth map of k's own view (its own pixels), else, for an empty pixel, of any other
    view, else the mean of p's neighbours on the surface; a see-through pixel no own view meets
    stays. It takes k's colour and v's pixel footprint at t. It is dropped when X lies in another
    view's free space (z_j < (1 − free_space_tol)·min₃ₓ₃ O_j), or when v's new claim O_v(p) = t
    would put a later view's point into v's free space. Views in order, each seeing the points
    added before.
    """
    alive = np.asarray(alive, bool)
    observed = list(observed)
    remap = np.cumsum(alive) - 1                         # old index → index in P
    own_depth = [np.where(w < 0, o, np.inf) for o, w in zip(observed, winners)]
    cur, added, added_src = P, [], []
    pixels, count = [], []
    for v, cam in enumerate(cams):
        H, W = cam.height, cam.width
        w = winners[v].reshape(-1)
        z = observed[v].reshape(-1)
        has = w >= 0
        has[has] = alive[w[has]]
        with np.errstate(invalid="ignore"):
            has &= np.isfinite(z) & (z > 0)
        filled = np.zeros(H * W, bool)
        if has.any():
            # the z-buffer is read on has and the 8 neighbours of its pixels only
            proj = project(cur, cam, pixels=min_filter3(~has.reshape(H, W)) == 0)
            shown = proj.depth.astype(np.float64)
            with np.errstate(invalid="ignore"):
                behind = (shown > (1.0 + tol) * z.reshape(H, W)) & proj.mask
            # a surface behind shows through a crack of the moved one (its neighbours on both
            # sides, along a row or a column, are still on it), not past its silhouette
            empty = ~proj.mask.reshape(-1)
            hole = has & empty
            far = np.flatnonzero(has & behind.reshape(-1))
            hole[far] = _crack_at(shown, ~behind & proj.mask, far, tol)
            pix = np.flatnonzero(hole)
            if pix.size:
                k = remap[w[pix]]
                rgb = np.zeros((H * W, 3), np.float32)
                rgb[pix] = P.rgb[k]
                # where v's ray meets the moved surface: as the view k came from saw it, else
                # as another view saw it (depth_on_surface)
                t, found = z[pix].copy(), np.zeros(len(pix), bool)
                for own_view in (True, False):
                    for u in range(len(cams)):
                        want = (source[k] == u) | (not own_view and empty[pix])
                        sel = np.flatnonzero(~found & want)
                        if u == v or not sel.size:
                            continue
                        tu, ok = depth_on_surface(cam, pix[sel], z[pix[sel]], cams[u], own_depth[u])
                        t[sel[ok]], found[sel[ok]] = tu[ok], True
                lost = np.flatnonzero(~found & empty[pix])
                if lost.size:       # an empty pixel no view has: its neighbours on the surface
                    t[lost] = _neighbour_depth(shown, pix[lost], z[pix[lost]], 0.1)
                use = found | empty[pix]
                hole.reshape(-1)[pix[~use]] = False
                pix, k, t = pix[use], k[use], t[use]
                depth = np.full(H * W, np.inf)
                depth[pix] = t
                Q = unproject(cam, rgb.reshape(H, W, 3), depth.reshape(H, W), hole.reshape(H, W))
                free = np.zeros(len(Q), bool)
                for j, other in enumerate(cams):
                    if j != v:
                        free |= in_free_space(Q.xyz, other, observed[j], free_space_tol, at_points=True)
                Q, pix = Q.select(~free), pix[~free]
                # nor may v's new claims put a later view's point into v's free space
                later = cur.xyz[np.concatenate([source] + added_src) > v]
                keep = _claims_clear(later, cam, observed[v], pix, depth, free_space_tol)
                Q, pix = Q.select(keep), pix[keep]
                filled[pix] = True
                observed[v] = observed[v].copy()
                observed[v].reshape(-1)[pix] = depth[pix]
                cur = merge(cur, Q)
                added.append(Q)
                added_src.append(np.full(len(Q), v, np.int32))
        pixels.append(filled.reshape(H, W))
        count.append(int(filled.sum()))
    if not added:
        return Refill(P, source, observed, pixels, count)
    src = np.concatenate([source] + added_src)
    order = np.argsort(src, kind="stable")              # each view's points together again
    return Refill(cur.select(order), src[order], observed, pixels, count)


def _min3_at(a: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """min_filter3(a)[row, col], read at those pixels only: [n] (a: [H, W]; row, col: [n])."""
    H, W = a.shape
    out = None
    for dr in (-1, 0, 1):
        r = np.clip(row + dr, 0, H - 1)
        for dc in (-1, 0, 1):
            x = a[r, np.clip(col + dc, 0, W - 1)]
            out = x if out is None else np.minimum(out, x)
    return out


def _crack_at(D: np.ndarray, M: np.ndarray, pix: np.ndarray, tol: float) -> np.ndarray:
    """crack_behind(D, D, M, tol) at the flat pixels pix: [n] → [n] bool, from the pixels' four
    neighbours only (D: [H, W] depth, M: [H, W] bool)."""
    H, W = D.shape
    d, m = D.reshape(-1), M.reshape(-1)
    row, col = pix // W, pix % W
    out = np.zeros(len(pix), bool)
    for step, inner in ((W, (row >= 1) & (row <= H - 2)), (1, (col >= 1) & (col <= W - 2))):
        i = np.flatnonzero(inner)
        a, b = pix[i] - step, pix[i] + step
        ra, rb = np.where(m[a], d[a], np.nan), np.where(m[b], d[b], np.nan)
        with np.errstate(invalid="ignore"):
            out[i] |= np.isfinite(ra) & np.isfinite(rb) & (d[pix[i]] > (1.0 + tol) * np.fmax(ra, rb))
    return out & ~m[pix]


def _claims_clear(later: np.ndarray, cam: Camera, observed: np.ndarray, pix: np.ndarray,
                  depth: np.ndarray, tol: float) -> np.ndarray:
    """Which of cam's new claims O(p) = depth[p] at the flat pixels pix: [n] stay: [n] bool.

    While a point of later: [m, 3] lies in cam's free space (in_free_space of observed: [H, W]
    with the claims that stay), the claims at its pixel and its 8 neighbours go. Only the points
    within a pixel of a claim that went are looked at again (the others' min₃ₓ₃ did not move).
    A point in the free space of the old observed depth alone drops no claim (and cannot loop).
    """
    H, W = observed.shape
    keep = np.ones(len(pix), bool)
    if not pix.size:
        return keep
    uv, z = world_to_pixels(cam, later)
    with np.errstate(invalid="ignore"):
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    idx = np.flatnonzero(inside)
    row = np.floor(uv[idx, 1]).astype(np.int64)
    col = np.floor(uv[idx, 0]).astype(np.int64)
    z = z[idx]
    o = observed.copy()
    o.reshape(-1)[pix] = depth[pix]
    bad = z < (1.0 - tol) * min_filter3(o)[row, col]
    while bad.any():
        q, _ = world_to_pixels(cam, later[idx[bad]])
        near = np.zeros((H, W), bool)
        near[np.clip(np.floor(q[:, 1]).astype(np.int64), 0, H - 1),
             np.clip(np.floor(q[:, 0]).astype(np.int64), 0, W - 1)] = True
        near = min_filter3(~near) == 0                  # and its 8 neighbours
        gone = pix[keep & near.reshape(-1)[pix]]
        keep &= ~near.reshape(-1)[pix]
        if not keep.any() or not gone.size:   # none left, or what is still bad no claim caused
            break
        o.reshape(-1)[gone] = observed.reshape(-1)[gone]
        moved = np.zeros((H, W), bool)
        moved.reshape(-1)[gone] = True
        again = np.flatnonzero((min_filter3(~moved) == 0)[row, col])
        bad[again] = z[again] < (1.0 - tol) * _min3_at(o, row[again], col[again])
    return keep


def _neighbour_depth(depth: np.ndarray, pix: np.ndarray, z0: np.ndarray, window: float
                     ) -> np.ndarray:
    """The mean of the 8-neighbours of flat pixels pix: [n] in depth: [H, W] that lie within
    window (relative) of z0: [n]; z0 where none does. → [n]."""
    H, W = depth.shape
    p = np.pad(depth, 1, constant_values=np.inf)
    r, c = pix // W + 1, pix % W + 1
    total, n = np.zeros(len(pix)), np.zeros(len(pix))
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr or dc:
                d = p[r + dr, c + dc]
                with np.errstate(invalid="ignore"):
                    ok = np.isfinite(d) & (np.abs(d / z0 - 1.0) <= window)
                total += np.where(ok, d, 0.0)
                n += ok
    return np.where(n > 0, total / np.maximum(n, 1), z0)


def depth_on_surface(cam: Camera, pix: np.ndarray, z0: np.ndarray, other: Camera,
                     depth: np.ndarray, *, steps: int = 5, window: float = 0.1
                     ) -> tuple[np.ndarray, np.ndarray]:
    """z-depths t along cam's rays through flat pixels pix: [n] where they meet other's depth
    map depth: [H_o, W_o] (bilinear between its pixel centres), near z0: [n]. → (t [n], ok [n]).

    X(t) = c + t·R K⁻¹[u, v, 1] (φ2→3 of the pixel centre at z-depth t) meets the surface when
        g(t) = z_o(X(t)) − depth(π_o(X(t))) = 0,
    solved by secant steps from t = z0 and 1.01·z0. ok is False (and t = z0) where that does
    not converge (no finite depth there, a depth edge) or lands farther than window (relative)
    from z0.
    """
    z0 = np.asarray(z0, np.float64)
    if z0.size == 0:
        return z0.copy(), np.zeros(0, bool)
    uv = pixel_grid(cam.width, cam.height)[pix]
    ray = pixels_to_world(cam, uv, np.ones(len(pix))) - cam.center
    fwd, c_o = other.c2w[:3, 2], other.center
    D = np.asarray(depth, np.float64)

    def g(t):
        X = cam.center + t[:, None] * ray
        q, z = world_to_pixels(other, X)
        with np.errstate(invalid="ignore"):
            return (X - c_o) @ fwd - bilinear(D, q)

    t0, t1 = z0.copy(), 1.01 * z0
    g0, g1 = g(t0), g(t1)
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(steps):
            slope = (g1 - g0) / (t1 - t0)
            t2 = np.where(np.isfinite(slope) & (slope != 0), t1 - g1 / slope, t1)
            t0, g0, t1 = t1, g1, t2
            g1 = g(t1)
        ok = np.isfinite(t1) & np.isfinite(g1) & (np.abs(g1) <= 1e-3 * t1) & \
            (np.abs(t1 / z0 - 1.0) <= window)
    return np.where(ok, t1, z0), ok


def refine_views(P: PointCloud, cams: list[Camera], source: np.ndarray, point_pix: np.ndarray,
                 point_c: np.ndarray, fixed: np.ndarray, links: list[Link],
                 observed: list[np.ndarray], winners: list[np.ndarray], free_space_tol: float,
                 pinhole_tol: float = 0.03, superseded: Optional[np.ndarray] = None):
    """The consensus step (consensus.py) and what it changes: points moved along their rays, the
    observed depths re-read, any point the move put into an earlier view's free space dropped
    again (the dream's rule holds for the final cloud), and the pinholes the move opened in each
    view filled again (fill_pinholes). superseded: [len(P)] bool, points finer ones of a later
    view replaced (dream's replaced_points): they take part in the consensus (its links hold
    them) and leave the cloud after it, before the pinholes are filled; they are not counted in
    the points dropped. → (cloud, source, observed, Consensus, points dropped per view, Refill)."""
    agreed = consensus(P, cams, source, point_pix, point_c, fixed, links)
    P = apply_consensus(P, cams, source, agreed.factor)
    parts = view_parts(source, len(cams))
    observed = _observed_after(P, cams, parts, point_pix, agreed.factor, observed, winners)
    drop = np.zeros(len(P), bool)
    seen = [min_filter3(observed[0])]  # each view's claim once its own drops are applied
    for i in range(1, len(cams)):
        own = np.zeros(len(point_pix[parts[i]]), bool)
        xyz = P.xyz[parts[i]]
        for j in range(i):
            own |= in_free_space(xyz, cams[j], seen[j], free_space_tol, filtered=True)
        drop[parts[i]] = own
        observed[i].reshape(-1)[point_pix[parts[i]][own]] = np.inf
        if i < len(cams) - 1:
            seen.append(min_filter3(observed[i]))
    superseded = np.zeros(len(P), bool) if superseded is None else np.asarray(superseded, bool)
    dropped = np.bincount(source[drop & ~superseded], minlength=len(cams))
    drop |= superseded
    if drop.any():
        P, source = P.select(~drop), source[~drop]
    filled = fill_pinholes(P, cams, source, observed, winners, ~drop, tol=pinhole_tol,
                           free_space_tol=free_space_tol)
    return filled.cloud, filled.source, filled.observed, agreed, dropped.tolist(), filled


def _link(P: PointCloud, cams: list[Camera], source: np.ndarray, view: int, samples: Samples,
          point: np.ndarray, D_hat: np.ndarray, d: DepthFit, seam: Seam,
          max_samples: int = 40_000) -> Link:
    """The overlap samples of one view, at most max_samples (evenly strided), as the consensus
    takes them. P: the cloud they came from, source: [len(P)] the view of each of its points."""
    step = max(1, -(-len(point) // max_samples))
    samples = Samples(pred=samples.pred[::step], ref=samples.ref[::step], pix=samples.pix[::step],
                      density=samples.density / step)
    point = point[::step]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pred = np.log(apply_depth_fit(samples.pred, d))
        log_depth = np.log(apply_depth_fit(D_hat, d))
    ok = np.isfinite(log_pred)
    point = point[ok]
    origins = np.stack([c.center for c in cams])[source[point]]
    return Link(view=view, point=point, pix=samples.pix[ok], log_pred=log_pred[ok],
                seam=seam.correction.reshape(-1)[samples.pix[ok]],
                coupling=coupling(P.xyz[point].astype(np.float64), origins, cams[view], log_depth),
                density=samples.density)


def _observed_after(P: PointCloud, cams: list[Camera], parts: list, point_pix: np.ndarray,
                    factor: np.ndarray, observed: list[np.ndarray], winners: list[np.ndarray]
                    ) -> list[np.ndarray]:
    """Each view's observed depth after the points moved by exp(factor) along their own rays:
    its own points' depths scale by that (parts: where each view's points are, view_parts), and
    on its overlap the points its z-buffer showed are measured again."""
    out = []
    for v, cam in enumerate(cams):
        o = observed[v].copy().reshape(-1)
        o[point_pix[parts[v]]] *= np.exp(factor[parts[v]])
        win = winners[v].reshape(-1)
        shown = np.flatnonzero(win >= 0)
        if shown.size:
            # z-depth in cam; float32 like the z-buffer it replaces
            o[shown] = (P.xyz[win[shown]] - cam.center.astype(np.float32)) @ \
                cam.c2w[:3, 2].astype(np.float32)
        out.append(o.reshape(cam.height, cam.width))
    return out
