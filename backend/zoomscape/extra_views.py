"""Extra views: LucidDreamer's M cameras beyond the user's N, planned one at a time from the
cloud grown so far, so the world is complete where a user would fly (issue 10 e).

Candidates come from the user's cameras C_0 … C_{N−1} (centres c_i, camera-to-world rotations
R_i, view directions f_i = R_i ẑ_cam); each keeps the intrinsics and resolution of the user
camera it was made from (for a pair, the nearer one):

    s = mean ‖c_j − c_i‖ over neighbouring pairs (i, i+1); the rig is a loop (the pair (N−1, 0)
        is a neighbour pair too) when N > 2 and ‖c_{N−1} − c_0‖ ≤ LOOP_FACTOR · s_open;
        no spacing (one camera, or all at one place): s = DEPTH_SPACING · scene depth
    between (i, j), t ∈ BETWEEN:  c = (1 − t) c_i + t c_j,   R = slerp(R_i, R_j, t)
    ahead of i, (a, u) ∈ AHEAD:   c = c_i + a·s·f_i + u·s·ẑ,   R = R_i   (ẑ: world up)
    around i:                     c = c_i,  R = Rot_ẑ(±α)·R_i (yaw),  R_i·Rot_x(±β) (pitch),
                                  α = AROUND · horizontal field of view, β = AROUND · vertical
    dive (a DOLLY zoom's path):   the zoom camera C_τ = a + (C_0 − a)·p^−τ, τ ∈ DIVE (given by the
                                  caller: cameras.dolly_camera), aimed at the anchor a

Dive candidates come first: while one is allowed, it is the next view, whatever it fills. Between
its first two levels a dolly passes what stands beside its path and sees what no other view saw:
the ground behind a box it passes. Those pixels are few against the frame, so neither E(c) nor
G(c) would pick the view. The dream paints its holes only (dream.py: no coarse cover for a dive
view), so the surface the zoom dives to keeps the points the other views put there.

A candidate is rejected, for good, once it would be inside or behind a surface of the cloud:

    free space  for every view v whose image the centre projects into (z_v > 0, inside W × H):
                z_v(c) + r < (1 − τ) · min₃ₓ₃ O_v(π_v(c))      (O_v: the depth view v saw)
    clearance   min_k ‖c − X_k‖ ≥ r over the cloud's points X_k
    near        at most NEAR_FRACTION of its sample pixels show a point nearer than NEAR · r
    with r = max(CLEAR_SPACING · s, CLEAR_DEPTH · scene depth), scene depth = the median finite
    depth the user's views saw, τ the dream's free-space tolerance.

Coverage at a reduced resolution: a candidate's sample pixels are every b-th pixel of every
b-th row (b = plan_block: its long side / PLAN_SIZE, rounded; pixel (i·b + ⌊b/2⌋, j·b + ⌊b/2⌋)
stands for the block (i, j)). M_c and Z_c there are exactly pointcloud.project's covered mask
and z-buffer depth at those pixels (sample_projection applies its splat rule to them only), so
the pinholes a point cloud shows from a new viewpoint count as they do at full resolution.

Pick (greedy, what fills the most): E(c) = 1 − mean(M_c) is the fraction c leaves empty.
Dreaming c would put points at its empty pixels; their depth is guessed (hole_depth) as the
farther of the nearest covered pixels to the left and right in the row (a hole beside a depth
edge shows the background; else the nearest above and below in the column), Ẑ_c, giving
X̂_c = φ2→3(¬M_c, Ẑ_c). What they fill is counted over every candidate still allowed (the places a
user would fly), each kind of place weighted by KIND_WEIGHT whatever its number of candidates:

    G(c) = Σ_c' w_c' · |¬M_c' ∩ blocks of π_c'(X̂_c)| / |samples of c'|,
    w_c' = KIND_WEIGHT[kind of c'] / #(allowed candidates of that kind)
    next = argmax_c G(c) among the candidates with E(c) ≥ MIN_EMPTY

(the c' = c term is E(c) itself), so a view whose holes many candidates share wins over one that
looks away from the rest; dream it, and repeat with the grown cloud, up to the requested count;
none when every candidate left has E < MIN_EMPTY.

Each candidate's M_c, Z_c and clearance are updated with the points added since the last pick
only (the cloud only grows while the views are dreamed), the free-space rule with the views
dreamed since. Everything is vectorised over the points; the loops run over candidates and views.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from scipy.ndimage import minimum_filter
from scipy.spatial.transform import Rotation, Slerp

from .cameras import Camera, aim_at, dolly_camera, pixel_rays
from .pointcloud import PointCloud

KINDS = ("between", "ahead", "around", "dive")
# what filling a kind of place is worth: the paths a user flies (between the cameras, ahead of
# them) count fully; turning on the spot counts a little, so those views come once the paths are
# complete (a view around can still be picked first for what it fills on the paths)
KIND_WEIGHT = {"between": 1.0, "ahead": 1.0, "around": 0.05, "dive": 1.0}

LOOP_FACTOR = 1.5        # last–first distance ≤ this × the open rig's spacing: a loop
DEPTH_SPACING = 0.1      # no spacing: s = this × scene depth
BETWEEN = (0.25, 0.5, 0.75)
AHEAD = ((0.5, 0.25), (1.0, 0.25), (0.25, 0.5))   # (forward, up) × s: ahead, farther, rising
AROUND = 0.2             # yaw / pitch, × the horizontal / vertical field of view
CLEAR_SPACING = 0.1      # r ≥ this × s
CLEAR_DEPTH = 0.02       # r ≥ this × scene depth
NEAR = 3.0               # "near": nearer than NEAR · r
NEAR_FRACTION = 0.05     # at most this fraction of the sample pixels near
MIN_EMPTY = 0.005        # stop when no candidate leaves more than this fraction empty
PLAN_SIZE = 80           # sample pixels along the long side
MAX_SPLAT = 8.0          # pointcloud.project's largest splat half-extent (pixels)
WORLD_UP = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class PlannedView:
    """One extra view the planner picked.

    camera: the Camera to dream (intrinsics and resolution of a user camera); kind: "between",
    "ahead", "around" or "dive"; source: the names of the user cameras it was made from (two for
    "between"); empty: E(c), the fraction of its sample pixels the cloud left empty when it was
    picked, before it was dreamed; fills: G(c), what its points were guessed to fill, summed over
    the candidates (weighted fractions of their sample pixels; 0 for a dive view: not measured).
    """

    camera: Camera
    kind: str
    source: tuple[str, ...]
    empty: float
    fills: float = 0.0


@dataclass(frozen=True)
class DivePath:
    """Where a DOLLY zoom passes, for the dream to see from (the "dive" candidates).

    camera: the zoom camera as the user gave it; factor: p; taus: the zoom values τ of the views,
    in the order to dream them; anchor_of: the anchor a the zoom will dive toward, given the cloud
    of the user's views ([3] world); widen: each view's field of view (and its pixels, at the same
    focal length) this much wider than the zoom camera's. Its cameras are cameras.dolly_camera at
    each τ of the zoom camera aimed at a (cameras.aim_at), widened about the principal point.

    Wider, because what a dolly uncovers beside its path shows at the border of the frame for a
    moment only: on the demo the ground behind the box it passes is in the frame from τ ≈ 0.56 and
    out of it again by 0.7, so views at τ = 0.5 and 0.625 of the zoom camera's own field left
    4.5 % of the frame at τ = 0.5625 black (20.4 dB against the truth), and 1.15 wider fill it
    (28.9 dB)."""

    camera: Camera
    factor: float
    taus: tuple[float, ...]
    anchor_of: Callable[[PointCloud], Sequence[float]]
    widen: float = 1.0

    def cameras(self, cloud: PointCloud) -> tuple[Camera, ...]:
        """The views at taus, aimed at the anchor the cloud puts."""
        a = np.asarray(self.anchor_of(cloud), np.float64)
        z = aim_at(self.camera, a)
        return tuple(widened(dolly_camera(z, a, self.factor, t), self.widen) for t in self.taus)


def widened(cam: Camera, widen: float) -> Camera:
    """cam with a field of view `widen` times wider at the same focal length and pixel size: its
    width and height × widen rounded to multiples of 8 (what a latent diffusion model paints),
    the principal point moved by half the added pixels. widen 1: cam itself."""
    if widen == 1.0:
        return cam
    W, H = (max(8, int(round(n * widen / 8.0)) * 8) for n in (cam.width, cam.height))
    K = cam.K.copy()
    K[0, 2] += (W - cam.width) / 2.0
    K[1, 2] += (H - cam.height) / 2.0
    return Camera(cam.name, K, cam.c2w.copy(), W, H)


@dataclass(frozen=True)
class Candidate:
    """A pose the planner may pick. c2w: [4, 4] camera-to-world (OpenCV axes); like: the user
    camera whose intrinsics and resolution it takes; kind, source: as PlannedView."""

    c2w: np.ndarray
    like: Camera
    kind: str
    source: tuple[str, ...]

    @property
    def center(self) -> np.ndarray:
        return self.c2w[:3, 3]

    def camera(self, name: str) -> Camera:
        return Camera(name, self.like.K.copy(), self.c2w.copy(), self.like.width, self.like.height)


# ------------------------------------------------------------------------------ the candidates

def rig_pairs(cams: Sequence[Camera]) -> list[tuple[int, int]]:
    """Neighbouring pairs (i, i+1), and (N−1, 0) when the rig is a loop: N > 2 and the last–first
    distance ≤ LOOP_FACTOR × the mean distance of the open pairs."""
    pairs = [(i, i + 1) for i in range(len(cams) - 1)]
    if len(cams) > 2:
        open_s = np.mean([np.linalg.norm(cams[j].center - cams[i].center) for i, j in pairs])
        if np.linalg.norm(cams[-1].center - cams[0].center) <= LOOP_FACTOR * open_s:
            pairs.append((len(cams) - 1, 0))
    return pairs


def rig_spacing(cams: Sequence[Camera], scene_depth: float) -> float:
    """s: the mean distance between neighbouring cameras (rig_pairs); DEPTH_SPACING × scene depth
    when there is none (one camera, or every camera at one place)."""
    pairs = rig_pairs(cams)
    s = float(np.mean([np.linalg.norm(cams[j].center - cams[i].center) for i, j in pairs])) \
        if pairs else 0.0
    fallback = DEPTH_SPACING * float(scene_depth)
    return s if s > 1e-3 * fallback else fallback


def _pose(R: np.ndarray, c: np.ndarray) -> np.ndarray:
    M = np.eye(4)
    M[:3, :3], M[:3, 3] = R, c
    return M


def field_of_view(cam: Camera) -> tuple[float, float]:
    """Horizontal and vertical field of view (radians)."""
    return (2.0 * np.arctan(0.5 * cam.width / cam.K[0, 0]),
            2.0 * np.arctan(0.5 * cam.height / cam.K[1, 1]))


def candidates(cams: Sequence[Camera], spacing: float) -> list[Candidate]:
    """Every candidate pose of the module docstring, in order: between, ahead, around."""
    out = []
    for i, j in rig_pairs(cams):
        a, b = cams[i], cams[j]
        slerp = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([a.c2w[:3, :3], b.c2w[:3, :3]])))
        for t in BETWEEN:
            R = slerp([t]).as_matrix()[0]
            c = (1.0 - t) * a.center + t * b.center
            out.append(Candidate(_pose(R, c), a if t <= 0.5 else b, "between", (a.name, b.name)))
    for cam in cams:
        R, f = cam.c2w[:3, :3], cam.c2w[:3, 2]
        for a, up in AHEAD:
            c = cam.center + a * spacing * f + up * spacing * WORLD_UP
            out.append(Candidate(_pose(R, c), cam, "ahead", (cam.name,)))
    for cam in cams:
        R = cam.c2w[:3, :3]
        hfov, vfov = field_of_view(cam)
        for sign in (-1.0, 1.0):
            yaw = Rotation.from_rotvec(sign * AROUND * hfov * WORLD_UP).as_matrix()
            out.append(Candidate(_pose(yaw @ R, cam.center), cam, "around", (cam.name,)))
        for sign in (-1.0, 1.0):
            pitch = Rotation.from_rotvec([sign * AROUND * vfov, 0.0, 0.0]).as_matrix()
            out.append(Candidate(_pose(R @ pitch, cam.center), cam, "around", (cam.name,)))
    return out


# ------------------------------------------------------------------ the rules and the coverage

def scene_depth(observed: Sequence[np.ndarray]) -> float:
    """The median finite, positive depth the views saw (1.0 when none)."""
    d = np.concatenate([np.asarray(o, np.float64).reshape(-1) for o in observed])
    with np.errstate(invalid="ignore"):
        d = d[np.isfinite(d) & (d > 0)]
    return float(np.median(d)) if d.size else 1.0


def to_camera(cam: Camera, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World points [N, 3] → their camera coordinates (x, y, z), each [N] float64 (OpenCV axes).
    Column by column: an [N, 3] × [3, 3] product goes through BLAS threads, which a busy machine
    makes many times slower."""
    R, c = cam.c2w[:3, :3], cam.c2w[:3, 3]
    d = [np.asarray(xyz[:, a], np.float64) - c[a] for a in range(3)]
    return tuple(R[0, k] * d[0] + R[1, k] * d[1] + R[2, k] * d[2] for k in range(3))


def in_front_of_observed(centres: np.ndarray, cam: Camera, observed: np.ndarray, tol: float,
                         clearance: float) -> np.ndarray:
    """The free-space rule for one view: [K] bool, True where the centre is allowed.

    centres: [K, 3] world; observed: [H, W] the depth cam saw (+inf: no claim). A centre cam does
    not see (behind it, or outside its image) is allowed; one it sees must lie in front of what
    it saw there: z + clearance < (1 − tol) · min₃ₓ₃(observed) at its pixel.
    """
    x, y, z = to_camera(cam, centres)
    H, W = observed.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        u, v = cam.K[0, 0] * x / z + cam.K[0, 2], cam.K[1, 1] * y / z + cam.K[1, 2]
        seen = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    ok = np.ones(len(centres), bool)
    idx = np.flatnonzero(seen)
    if idx.size:
        O = minimum_filter(np.asarray(observed, np.float64), size=3, mode="nearest")
        at = O[np.floor(v[idx]).astype(np.int64), np.floor(u[idx]).astype(np.int64)]
        with np.errstate(invalid="ignore"):
            ok[idx] = z[idx] + clearance < (1.0 - tol) * at
    return ok


def nearest_distance(centres: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """min_k ‖c − X_k‖ for each centre: [K] (inf for no points). centres: [K, 3]; xyz: [N, 3]."""
    out = np.full(len(centres), np.inf)
    if not len(xyz):
        return out
    cols = [np.asarray(xyz[:, a], np.float64) for a in range(3)]
    for k, c in enumerate(centres):
        d2 = (cols[0] - c[0]) ** 2 + (cols[1] - c[1]) ** 2 + (cols[2] - c[2]) ** 2
        out[k] = float(np.sqrt(d2.min()))
    return out


def plan_block(width: int, height: int, plan_size: int = PLAN_SIZE) -> int:
    """b: one sample pixel per b × b block, b = max(1, round(long side / plan_size))."""
    return max(1, int(round(max(width, height) / float(plan_size))))


def sample_shape(cam: Camera, b: int) -> tuple[int, int]:
    """(h, w): the sample pixels of cam, rows ⌊b/2⌋, ⌊b/2⌋ + b, … < H (columns likewise)."""
    o = b // 2
    return -(-(cam.height - o) // b), -(-(cam.width - o) // b)


def sample_projection(cloud: PointCloud, cam: Camera, b: int, *, near: float = 1e-6
                      ) -> tuple[np.ndarray, np.ndarray]:
    """pointcloud.project(cloud, cam)'s covered mask and z-buffer depth at the sample pixels only:
    (covered [h, w] bool, depth [h, w] float64, +inf where empty); h, w = sample_shape(cam, b).

    The same splat rule: a point covers the pixels whose centres lie within its half-extent
    min(radius·f/z, MAX_SPLAT) of it (at least the pixel it falls in; non-finite or negative
    radius: 0), points with z ≤ near·‖X_cam‖ count for nothing, and the nearest covers wins. Only
    the sample pixels (row i·b + ⌊b/2⌋, column j·b + ⌊b/2⌋) inside each splat's span are made
    fragments, so the cost is the points' transform, not the full image's z-buffer.
    """
    H, W = cam.height, cam.width
    h, w = sample_shape(cam, b)
    covered, depth = np.zeros(h * w, bool), np.full(h * w, np.inf)
    if not len(cloud):
        return covered.reshape(h, w), depth.reshape(h, w)
    x, y, z = to_camera(cam, cloud.xyz)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = z > near * np.sqrt(x * x + y * y + z * z)
        u = cam.K[0, 0] * x / z + cam.K[0, 2]
        v = cam.K[1, 1] * y / z + cam.K[1, 2]
        ok &= np.isfinite(u) & np.isfinite(v)
        ok &= (u > -MAX_SPLAT - 2) & (u < W + MAX_SPLAT + 2) & (v > -MAX_SPLAT - 2) & \
            (v < H + MAX_SPLAT + 2)
    idx = np.flatnonzero(ok)
    u, v, zp = u[idx], v[idx], z[idx]
    r = cloud.radius[idx].astype(np.float64)
    r = np.where(np.isfinite(r) & (r > 0), r, 0.0)
    o = b // 2

    def span(c, e, n, size):
        """Sample indices [lo, hi] covered along one axis (pointcloud._splat_spans, on samples)."""
        home = np.floor(c)
        lo = np.maximum(np.minimum(np.ceil(c - e - 0.5), home), 0)
        hi = np.minimum(np.maximum(np.floor(c + e - 0.5), home), size - 1)
        return np.maximum(np.ceil((lo - o) / b), 0).astype(np.int64), \
            np.minimum(np.floor((hi - o) / b), n - 1).astype(np.int64)

    j0, j1 = span(u, np.minimum(r * cam.K[0, 0] / zp, MAX_SPLAT), w, W)
    i0, i1 = span(v, np.minimum(r * cam.K[1, 1] / zp, MAX_SPLAT), h, H)
    nj, ni = np.maximum(j1 - j0 + 1, 0), np.maximum(i1 - i0 + 1, 0)
    count = nj * ni
    owner = np.repeat(np.arange(len(count)), count)
    k = np.arange(owner.size) - np.repeat(np.cumsum(count) - count, count)
    pix = (i0[owner] + k // nj[owner]) * w + (j0[owner] + k % nj[owner])
    covered[pix] = True
    np.minimum.at(depth, pix, zp[owner])
    return covered.reshape(h, w), depth.reshape(h, w)


def _nearest_along(covered: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """For each pixel of [H, W] arrays, the farther of the depths of the nearest covered pixels to
    its left and to its right in its row (NaN where the row has none): [H, W]."""
    H, W = covered.shape
    col = np.broadcast_to(np.arange(W), (H, W))
    left = np.maximum.accumulate(np.where(covered, col, -1), axis=1)
    right = np.minimum.accumulate(np.where(covered, col, W)[:, ::-1], axis=1)[:, ::-1]
    d = np.asarray(depth, np.float64)
    rows = np.arange(H)[:, None]
    dl = np.where(left >= 0, d[rows, np.clip(left, 0, W - 1)], np.nan)
    dr = np.where(right < W, d[rows, np.clip(right, 0, W - 1)], np.nan)
    return np.fmax(dl, dr)


def hole_depth(covered: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Ẑ: a depth guess at the empty pixels of a z-buffer: [H, W] (NaN where there is none).

    covered: [H, W] bool; depth: [H, W] the z-buffer depth. An empty pixel takes the farther of
    the nearest covered pixels to its left and right in its row (a hole beside a depth edge shows
    the background), else of those above and below in its column. Covered pixels: NaN.
    """
    rows = _nearest_along(covered, depth)
    cols = _nearest_along(covered.T, depth.T).T
    out = np.where(np.isnan(rows), cols, rows)
    return np.where(covered, np.nan, out)


# --------------------------------------------------------------------------------- the planner

class ExtraViewPlanner:
    """Plans extra views one at a time (module docstring), keeping what it measured between calls.

    user_cams: the user's cameras (the candidates' sources); user_observed: [H, W] per user view,
    the depth it saw (scene depth); tol: the dream's free-space tolerance τ; dive: the cameras of
    a DOLLY zoom's path (DivePath.cameras), dreamed first (kind "dive", while the rules allow
    them; source dive_source, the zoom camera's name). next(cloud, cams,
    observed) takes the cloud and every view dreamed so far (user, then extra; the cloud only grew
    since the last call) and returns the next PlannedView, or None when no candidate is left or
    none leaves more than min_empty empty. rejected counts the candidates each rule ruled out;
    alive says which candidates may still be picked.
    """

    def __init__(self, user_cams: Sequence[Camera], user_observed: Sequence[np.ndarray], *,
                 tol: float = 0.03, plan_size: int = PLAN_SIZE, min_empty: float = MIN_EMPTY,
                 dive: Sequence[Camera] = (), dive_source: str = ""):
        self.user_cams = list(user_cams)
        self.depth = scene_depth(user_observed)
        self.spacing = rig_spacing(self.user_cams, self.depth)
        self.clearance = max(CLEAR_SPACING * self.spacing, CLEAR_DEPTH * self.depth)
        self.near = NEAR * self.clearance
        self.tol, self.min_empty = float(tol), float(min_empty)
        self.candidates = candidates(self.user_cams, self.spacing) + \
            [Candidate(c.c2w.copy(), c, "dive", (dive_source,)) for c in dive]
        self.centres = np.stack([c.center for c in self.candidates]) if self.candidates else \
            np.zeros((0, 3))
        K = len(self.candidates)
        self.alive = np.ones(K, bool)
        self.rejected = {"free_space": 0, "clearance": 0, "near": 0}
        self.cams = [c.camera(f"candidate.{k:03d}") for k, c in enumerate(self.candidates)]
        self.block = [plan_block(c.width, c.height, plan_size) for c in self.cams]
        shapes = [sample_shape(c, b) for c, b in zip(self.cams, self.block)]
        self.covered = [np.zeros(s, bool) for s in shapes]
        self.nearest = [np.full(s, np.inf) for s in shapes]
        self.distance = np.full(K, np.inf)
        self._points, self._views = 0, 0
        self.planned: list[PlannedView] = []

    def _reject(self, bad: np.ndarray, rule: str) -> None:
        bad = bad & self.alive
        self.rejected[rule] += int(bad.sum())
        self.alive &= ~bad

    def update(self, cloud: PointCloud, cams: Sequence[Camera], observed: Sequence[np.ndarray]):
        """Take in the points and the views added since the last call, and apply the rules."""
        if len(cloud) < self._points or len(cams) < self._views:
            raise ValueError("ExtraViewPlanner: the cloud or the views shrank between calls; "
                             "they may only grow")
        for v in range(self._views, len(cams)):
            ok = in_front_of_observed(self.centres, cams[v], observed[v], self.tol, self.clearance)
            self._reject(~ok, "free_space")
        self._views = len(cams)
        new = cloud.select(np.arange(self._points, len(cloud))) if self._points else cloud
        self._points = len(cloud)
        if not len(new):
            return
        self.distance = np.minimum(self.distance, nearest_distance(self.centres, new.xyz))
        self._reject(self.distance < self.clearance, "clearance")
        for k in np.flatnonzero(self.alive):
            m, d = sample_projection(new, self.cams[k], self.block[k])
            self.covered[k] |= m
            self.nearest[k] = np.minimum(self.nearest[k], d)
        near = np.array([float((n < self.near).mean()) > NEAR_FRACTION for n in self.nearest])
        self._reject(near, "near")

    def empty(self) -> np.ndarray:
        """E(c) of every candidate: [K] (NaN for one no longer allowed)."""
        return np.array([1.0 - float(m.mean()) if a else np.nan
                         for m, a in zip(self.covered, self.alive)])

    def gains(self) -> np.ndarray:
        """G(c) of every candidate: [K] (NaN for one no longer allowed): what the points dreaming
        c would add (guessed at its empty sample pixels, hole_depth) fill, as weighted fractions
        of the sample pixels of the candidates still allowed, summed over them."""
        alive = np.flatnonzero(self.alive)
        K = len(self.candidates)
        G = np.full(K, np.nan)
        if not alive.size:
            return G
        pts, owner = [], []
        for k in alive:
            cam, b = self.cams[k], self.block[k]
            z = hole_depth(self.covered[k], self.nearest[k])
            with np.errstate(invalid="ignore"):
                i, j = np.nonzero(np.isfinite(z) & (z > 0))
            uv = np.stack([j * b + b // 2 + 0.5, i * b + b // 2 + 0.5], 1)
            pts.append(cam.c2w[:3, :3] @ (pixel_rays(cam, uv) * z[i, j][:, None]).T)
            pts[-1] = pts[-1].T + cam.center
            owner.append(np.full(len(i), k))
        pts, owner = np.concatenate(pts), np.concatenate(owner)
        kinds = np.array([c.kind for c in self.candidates])
        share = {kind: KIND_WEIGHT[kind] / max(1, int((kinds[alive] == kind).sum()))
                 for kind in KINDS}
        G[alive] = 0.0
        for t in alive:
            cam, b = self.cams[t], self.block[t]
            h, w = self.covered[t].shape
            x, y, z = to_camera(cam, pts)
            with np.errstate(invalid="ignore", divide="ignore"):
                i = np.floor((cam.K[1, 1] * y / z + cam.K[1, 2]) / b)
                j = np.floor((cam.K[0, 0] * x / z + cam.K[0, 2]) / b)
                ok = (z > 0) & (i >= 0) & (i < h) & (j >= 0) & (j < w)
            pix = i[ok].astype(np.int64) * w + j[ok].astype(np.int64)
            hit = ~self.covered[t].reshape(-1)[pix]
            key = np.unique(owner[ok][hit] * (h * w) + pix[hit])   # each sample once per owner
            G += np.bincount(key // (h * w), minlength=K) * (share[kinds[t]] / float(h * w))
        G[~self.alive] = np.nan
        return G

    def next(self, cloud: PointCloud, cams: Sequence[Camera], observed: Sequence[np.ndarray],
             name: Optional[str] = None) -> Optional[PlannedView]:
        """The next extra view (its camera named name, default "Extra.NNN", a dive view
        "Dive.NNN"), or None."""
        self.update(cloud, cams, observed)
        E = self.empty()
        dive = [k for k, c in enumerate(self.candidates) if c.kind == "dive" and self.alive[k]]
        if dive:
            k = dive[0]                             # the zoom's path first, in its order
            G = np.zeros(len(self.candidates))   # not measured
        else:
            with np.errstate(invalid="ignore"):
                open_ = np.isfinite(E) & (E >= self.min_empty)
            if not open_.any():
                return None
            G = self.gains()
            k = int(np.nanargmax(np.where(open_, G, np.nan)))
        self.alive[k] = False                       # picked: never again
        taken = {c.name for c in cams}
        kind = self.candidates[k].kind
        name = name or (f"Dive.{sum(v.kind == 'dive' for v in self.planned):03d}" if kind == "dive" else
                        f"Extra.{sum(v.kind != 'dive' for v in self.planned):03d}")
        while name in taken:
            name += "+"
        c = self.candidates[k]
        view = PlannedView(c.camera(name), c.kind, c.source, float(E[k]), float(G[k]))
        self.planned.append(view)
        return view
