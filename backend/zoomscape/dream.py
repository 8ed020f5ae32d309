"""LucidDreamer's Algorithm 1: grow one aligned point cloud P over a list of cameras.

Symbols follow the paper (S = inpaint, D = monocular depth, φ2→3 / φ3→2 in pointcloud.py; in
the code Î_i, D̂_i, D̃_i, P̂_i are spelled I_hat_i, D_hat_i, D_tilde_i, P_hat_i):

    I_0 = S(blank, all hole, prompt),  D_0 = D(I_0),  P_0 = φ2→3([I_0, D_0], K_0, c2w_0)
    for i = 1 … N−1:
        Î_i, M_i, D̃_i = φ3→2(P_{i−1}, K_i, c2w_i)          image, covered mask, z-buffer depth
        I_i = S(Î_i, ¬M_i, prompt)                          paint the holes only
        D̂_i = D(I_i)                                        depth up to an unknown scale/shift
        d_i = argmin_{s,t} Σ_{M_i} ρ((s·D̂_i + t − D̃_i) / D̃_i)   robust global fit (align.py)
        c_i = screened Poisson fill of log(D̃_i / d_i(D̂_i)) from M_i into ¬M_i   seam (align.py)
        D_i = d_i(D̂_i) · exp(c_i)                           new points meet the old surface
        P̂_i = φ2→3([I_i, D_i | ¬M_i ∧ kept], K_i, c2w_i)    new points from hole pixels only
        P_i = P_{i−1} ∪ P̂_i
    then (refine=True) all views' corrections are solved again together (consensus.py), so the
    views' depth bends average out instead of view 0's winning

(The paper fits d_i by gradient descent on the L1 distance of the lifted overlap to P_{i−1} and
bends the seam with a linear interpolation pinned to zero at the image corners; here the fit is
robust and closed-form, and the seam correction decays away from the seam.) Both are measured on
samples of the overlap (overlap_samples): every old point on the visible surface, paired with
D̂_i read at its own projection, so the pairs compare the same surface point even on steep,
grazing surfaces and are not biased towards the camera by the z-buffer's choice of the nearest. View 0 sets the world's scale,
or, given the user's own RGB-D render (init = I_0, D_0, M_0), view 0 paints only ¬M_0 and its
estimated depth is fitted and seamed to D_0 like any later view, so the world stays in the
user's coordinates and scale. A hole pixel is kept when its new point
- lies in front of its camera (D_i > 0),
- is not seen through a crack: where the pixels on both sides of it are covered, it must not lie
  behind the farther of them (a gap between splats, not a view past the surface),
- is not in the free space of an earlier view j: an earlier camera saw its observed surface O_j
  there, so nothing can stand in front of it (z_j < (1 − tol)·min₃ₓ₃ O_j drops the point).
If a view has too little overlap to fit (align raises ValueError), d_i falls back to d_{i−1}
and the view reports fallback=True. The engine's depth_space attribute ("depth" for metric
models, the default; "disparity" for relative inverse-depth models) picks the fit's space.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .align import (DepthFit, Seam, apply_depth_fit, apply_seam, bilinear, depth_edges,
                    fit_depth_pairs, seam_fill, usable_pixels)
from .cameras import Camera, world_to_pixels
from .consensus import Consensus, Link, apply_consensus, consensus, coupling, view_parts
from .engines.base import check_image
from .errors import JobCancelled  # the one JobCancelled (zoomscape.dream.JobCancelled is it)
from .pointcloud import PointCloud, merge, project, unproject
from .wire.manifest import ViewSummary

Progress = Callable[[str, int, int, str], None]


@dataclass
class ViewReport:
    """What the dream did with one camera.

    new_points: points it added (after every drop); scale, shift: its depth fit d_i; overlap:
    fraction of its pixels the earlier views covered (M_i); fallback: the fit fell back to the
    previous view's; seam_used: overlap pixels that measured the seam residual; seam_max: largest
    |c_i| over the new points (a log-depth factor); dropped_crack, dropped_free_space: new points
    dropped as cracks of the reprojected cloud, or for lying in an earlier view's free space.
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

    def summary(self) -> ViewSummary:
        """The manifest's entry for this view."""
        return ViewSummary(self.camera, int(self.new_points), float(self.scale), float(self.overlap))


@dataclass
class DreamResult:
    """What dream() grew.

    cloud: P_{N−1}; views: one ViewReport per camera; source: [len(cloud)] index of the view each point came from; masks: per view M_i
    [H, W] bool (covered before painting; view 0: all False, or init's known depth); observed:
    per view the depth the camera saw [H, W] (D̃_i where covered, D_i where a new point was
    kept, +inf elsewhere); consensus: what the multi-view consensus did (None when it did not run).
    """

    cloud: PointCloud
    views: list[ViewReport]
    source: np.ndarray
    masks: list[np.ndarray] = field(default_factory=list)
    observed: list[np.ndarray] = field(default_factory=list)
    consensus: Optional[Consensus] = None


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


def in_free_space(xyz: np.ndarray, cam: Camera, observed: np.ndarray, tol: float, *,
                  filtered: bool = False) -> np.ndarray:
    """Points an earlier camera saw through: [N] bool.

    xyz: [N, 3] world; observed: [H, W] depth that cam saw (+inf = no claim). A point is in cam's
    free space when it projects into the image in front of the camera with
    z < (1 − tol)·min₃ₓ₃(observed) at its pixel. filtered: observed is min₃ₓ₃ already.
    """
    uv, z = world_to_pixels(cam, xyz)
    H, W = observed.shape
    with np.errstate(invalid="ignore"):
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    out = np.zeros(len(xyz), bool)
    idx = np.flatnonzero(inside)
    if idx.size:
        O = observed if filtered else min_filter3(observed)
        col = np.floor(uv[idx, 0]).astype(np.int64)
        row = np.floor(uv[idx, 1]).astype(np.int64)
        out[idx] = z[idx] < (1.0 - tol) * O[row, col]
    return out


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
    H, W = cam.height, cam.width
    step = max(1, -(-len(P) // max_points))
    uv, z = world_to_pixels(cam, P.xyz[::step])
    with np.errstate(invalid="ignore"):
        ok = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    idx = np.flatnonzero(ok)
    pix = np.floor(uv[idx, 1]).astype(np.int64) * W + np.floor(uv[idx, 0]).astype(np.int64)
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
          *, crack_tol: float = 0.03, free_space_tol: float = 0.03, init=None,
          refine: bool = True) -> DreamResult:
    """Algorithm 1 over cams in order. engine: an engines.base.Engine. → DreamResult.

    init: None, or (I_0, D_0, M_0) for cams[0] (check_init): the user's image [H, W, 3], metric
    z-depth [H, W] (+inf/NaN where none) and known pixels [H, W] bool. View 0 then paints only
    ¬M_0 and keeps D_0 wherever M_0 has a finite depth.
    refine: after the last view, bend all views jointly so they agree (consensus.py); the
    user's depth never moves. observed then holds the depths after that step.
    progress("dream", step, total, message) after each view (step = views done, total = N) and
    after each denoising step of an engine that denoises: with T steps per view, step v·T + s of
    total N·T during view v's step s, and views done · T after each view. should_cancel() is
    polled before each view and handed to engine.inpaint (with on_step) as call arguments, so the
    shared engine holds no hooks; it raises errors.JobCancelled when True.
    """
    if not cams:
        raise ValueError("cameras: need at least one camera to dream")
    N = len(cams)
    report = progress or (lambda *a: None)
    space = getattr(engine, "depth_space", "depth")
    if init is not None:
        init = check_init(init, cams[0])

    def check_cancel():
        if should_cancel is not None and should_cancel():
            raise JobCancelled("cancelled during dream")

    steps = [1]  # denoising steps per view T: known after the engine's first on_step (1: none)

    def view_done(views: int, message: str) -> None:
        report("dream", views * steps[0], N * steps[0], message)

    def on_step_of(v: int):
        """The on_step of view v's inpaint: stage "dream", step v·T + s of N·T."""
        def on_step(s: int, T: int) -> None:
            steps[0] = T
            report("dream", v * T + s, N * T, f"view {v + 1}/{N}: denoising step {s}/{T}")
        return on_step

    def view_report(cam, n_new, d, seam, fallback, overlap, kept, crack=0, free=0):
        c = seam.correction[kept] if seam is not None and kept.any() else np.zeros(1)
        return ViewReport(cam.name, int(n_new), float(d.scale), float(d.shift), float(overlap),
                          bool(fallback), int(seam.used) if seam is not None else 0,
                          float(np.abs(c).max()), int(crack), int(free))

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
    masks = [M_0]
    observed = [np.where(kept0, D_0, np.inf)]
    views = [view_report(cam, len(P), d_prev, seam, fallback, float(M_0.mean()), kept0 & ~M_0)]
    view_done(1, f"view 1/{N} '{cam.name}': {len(P)} points{note}")

    for i in range(1, N):
        check_cancel()
        cam = cams[i]
        H, W = cam.height, cam.width
        proj = project(P, cam)
        I_hat_i, M_i, D_tilde_i = proj.image, proj.mask, proj.depth.astype(np.float64)
        overlap = float(M_i.mean())

        I_i = engine.inpaint(I_hat_i, ~M_i, prompt, cam, seed, on_step=on_step_of(i),
                             should_cancel=should_cancel)
        D_hat_i = np.asarray(engine.estimate_depth(I_i, cam, seed=seed, role="view"), dtype=np.float64)

        # d_i: robust global fit on the overlap, then c_i: the seam; D_i = d_i(D̂_i) · exp(c_i)
        samples_i = overlap_samples(P, proj, cam, D_hat_i)
        D_i, d_i, seam_i, fallback, note = align_view(D_hat_i, D_tilde_i, M_i, samples_i, d_prev,
                                                      space)

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

        if seam_i is not None:
            links.append(_link(P, cams, np.concatenate(source), i, samples_i, samples_i.point,
                               D_hat_i, d_i, seam_i))
        pix_i = _pixel_of_points(cam, hole)[~free]
        point_pix.append(pix_i)
        fixed.append(np.zeros(len(pix_i), bool))
        point_c.append(seam_i.correction.reshape(-1)[pix_i] if seam_i is not None
                       else np.zeros(len(pix_i)))
        winners.append(np.where(M_i, proj.index, -1))

        P = merge(P, P_hat_i)
        source.append(np.full(len(P_hat_i), i, np.int32))
        masks.append(M_i)
        observed.append(np.where(M_i, D_tilde_i, np.where(kept, D_i, np.inf)))
        views.append(view_report(cam, len(P_hat_i), d_i, seam_i, fallback, overlap, kept,
                                 crack.sum(), free.sum()))
        d_prev = d_i
        view_done(i + 1, f"view {i + 1}/{N} '{cam.name}': overlap {overlap:.0%}, "
                         f"scale {d_i.scale:.3f}, {len(P_hat_i)} new points{note}")

    source = np.concatenate(source)
    agreed = None
    if refine and links:
        P, source, observed, agreed, dropped = refine_views(
            P, cams, source, np.concatenate(point_pix), np.concatenate(point_c),
            np.concatenate(fixed), links, observed, winners, free_space_tol)
        for v, n in zip(views, dropped):
            v.new_points -= int(n)
            v.dropped_free_space += int(n)
    return DreamResult(cloud=P, views=views, source=source, masks=masks, observed=observed,
                       consensus=agreed)


def refine_views(P: PointCloud, cams: list[Camera], source: np.ndarray, point_pix: np.ndarray,
                 point_c: np.ndarray, fixed: np.ndarray, links: list[Link],
                 observed: list[np.ndarray], winners: list[np.ndarray], free_space_tol: float):
    """The consensus step (consensus.py) and what it changes: points moved along their rays, the
    observed depths re-read, and any point the move put into an earlier view's free space
    dropped again (the dream's rule holds for the final cloud). → (cloud, source, observed,
    Consensus, points dropped per view)."""
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
    dropped = np.bincount(source[drop], minlength=len(cams))
    if drop.any():
        P, source = P.select(~drop), source[~drop]
    return P, source, observed, agreed, dropped.tolist()


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
