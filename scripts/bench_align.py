"""Alignment benchmark: our robust fit + screened-Poisson seam against LucidDreamer, on ground truth.

The procedural world is the ground truth; its depth "model" lies per view with a scale 0.3..3×,
a shift of a few %, 1 % per-pixel noise and (condition "warp") a smooth low-frequency warp of
max 3 %. Every method runs the same dream loop (zoomscape.dream.dream) over the same cameras,
which translate as well as turn (parallax, disocclusion, occlusion); only the alignment differs:

  (a) none          D_i = D̂_i
  (b) LucidDreamer  as published: the scale tensor is built outside the autograd graph, so its
                    optimisation never moves it (scale 1); seam: δ = D̃ − D on the overlap pixels
                    at the mask border, spread over the hole by scipy.interpolate.griddata
                    (linear) with δ = 0 pinned at the four image corners; D_i = D̂_i + δ
  (c) LD, fixed     (b) with a least-squares scale s = Σ D̃·D̂ / Σ D̂² over the overlap
  (d) ours          robust global fit (align.fit_depth_pairs) + screened Poisson seam fill
                    solved by multigrid (align.seam_fill), on unbiased overlap samples
                    (dream.overlap_samples: every visible old point, D̂ read where it projects)
  and for reference: ours without the seam, the floor "true scale" (the inverse of the lie
  the engine told, no seam), and "true fit+seam" (that fit with our seam fill: the floor of any
  global fit that keeps the seam invisible, since the seam copies the old surface's own error).

Figures per (resolution, condition, method), pooled over scenes:
  err mean / p95   |z − z_true| / z_true per point of the merged cloud, % (z along the point's
                   own camera ray; view 0 included: its noise and warp are shared by all methods)
  new mean         the same over the points of views ≥ 1 only (what alignment decides)
  seam jump        mean |e_old − e_new| over 4-neighbour pixel pairs across view i's mask border
                   (old point shown on the covered side, new point on the other, the same true
                   surface on both sides), divided by the same mean over pairs of neighbouring new
                   pixels inside the view: 1.0 = an invisible seam
  ms/view          time of the alignment step per view ≥ 1 (sampling, fit, seam, applying it;
                   not the engine, not the projection, which every method shares)
(b) and (c) pair D̂ and D̃ at pixel centres, as LucidDreamer does; "seam jump" for them is low
because the griddata correction pins the new depth to the old at the border pixels exactly; its
cost shows further in (away from the seam), in the mean error.

Usage: scripts/bench_align [--sizes 512 1024] [--seeds 7 11] [--large-seeds 7] [--views 5]
"""
from __future__ import annotations

import os

# One BLAS thread: on a shared 2-core machine a multithreaded BLAS spins and slows small calls
# (scipy's griddata, dot products) by 10–300×, which would make every timing noise.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import griddata

import zoomscape.dream as dream_mod
from zoomscape.align import DepthFit, Seam
from zoomscape.cameras import blender_intrinsics, from_wire, look_at, pixel_grid, world_to_pixels
from zoomscape.engines.procedural import ProceduralEngine, World

PROMPT = "a misty harbour town at dawn"
EYES = [((0, -16, 2.5), (0, 0, 0.5)), ((5, -14, 3.0), (1, 2, 0.5)), ((-6, -13, 2.0), (-2, 3, 0.8)),
        ((2, -11, 4.0), (3, 4, 0.0)), ((-3, -12, 3.5), (2, 2, 0.3))]
LIES = [(1.0, 0.0), (2.6, 0.02), (0.35, 0.01), (1.7, 0.03), (0.5, 0.0)]
CONDITIONS = {"scale": 0.0, "warp": 0.03}          # depth_warp amplitude
NOISE = 0.01
EDGE = 0.1                                         # relative true-depth jump = another surface


def make_cams(W: int, H: int, n: int = len(EYES)):
    out = []
    for k, (eye, target) in enumerate(EYES[:n]):
        intr = blender_intrinsics(30.0, 36.0, 24.0, "AUTO", 0.0, 0.0, W, H)
        out.append(from_wire(dict(name=f"V{k}", matrix_world=look_at(eye, target).tolist(), **intr)))
    return out


class CachedWorld(World):
    """The procedural World with full-frame renders and hits memoised per camera, so methods
    and conditions share the (slow) ray tracing. truth(cam) → (depth, surface id) [H, W]."""

    def __init__(self, prompt, seed):
        super().__init__(prompt, seed)
        self._cache = {}

    def _frame(self, cam):
        key = (cam.name, cam.width, cam.height, cam.c2w.tobytes(), cam.K.tobytes())
        if key not in self._cache:
            rgb, depth = World.render(self, cam)
            hits = self.trace(cam, pixel_grid(cam.width, cam.height))
            surface = (hits.kind.astype(np.int64) * 1000 + hits.obj).reshape(cam.height, cam.width)
            self._cache[key] = (rgb, depth, surface)
        return self._cache[key]

    def render(self, cam, mask=None):
        rgb, depth, _ = self._frame(cam)
        if mask is None:
            return rgb.copy(), depth.copy()
        m = np.asarray(mask, bool)
        return np.where(m[..., None], rgb, 0).astype(np.float32), np.where(m, depth, np.inf)

    def depth(self, cam):
        return self._frame(cam)[1].copy()

    def truth(self, cam):
        _, depth, surface = self._frame(cam)
        return depth, surface


# ---------------------------------------------------------------------------------------------
# LucidDreamer, re-implemented from the paper and the behaviour of its published code

def lucid_scale_stuck(D_hat, D_ref, M):
    """Published: Adam on a scale tensor that is not part of the autograd graph: it stays 1."""
    return 1.0


def lucid_scale_lsq(D_hat, D_ref, M):
    """Bug fixed: the least-squares scale of D̃ ≈ s · D̂ over the finite overlap pixels."""
    ok = M & np.isfinite(D_hat) & np.isfinite(D_ref)
    if ok.sum() < 50:
        raise ValueError(f"only {ok.sum()} overlap pixels")
    p, r = D_hat[ok], D_ref[ok]
    return float(np.sum(p * r) / np.sum(p * p))


def lucid_seam(D, D_ref, M):
    """δ = D̃ − D on the overlap pixels that touch the hole, linearly interpolated (scipy
    griddata over a Delaunay triangulation) into the hole, δ = 0 pinned at the image corners.
    → δ [H, W] (metres; 0 on the overlap)."""
    H, W = M.shape
    ok = M & np.isfinite(D) & np.isfinite(D_ref)
    hole = ~M
    near_hole = np.zeros_like(M)
    near_hole[1:] |= hole[:-1]
    near_hole[:-1] |= hole[1:]
    near_hole[:, 1:] |= hole[:, :-1]
    near_hole[:, :-1] |= hole[:, 1:]
    border = ok & near_hole
    delta = np.zeros((H, W))
    if border.sum() >= 3 and hole.any():
        bi, bj = np.nonzero(border)
        ci, cj = np.array([0, 0, H - 1, H - 1]), np.array([0, W - 1, 0, W - 1])
        pts = np.concatenate([np.stack([bi, bj], 1), np.stack([ci, cj], 1)]).astype(np.float64)
        vals = np.concatenate([D_ref[border] - D[border], np.zeros(4)])
        hi, hj = np.nonzero(hole)
        delta[hi, hj] = griddata(pts, vals, (hi.astype(np.float64), hj.astype(np.float64)),
                                 method="linear", fill_value=0.0)
    return delta


def lucid_align(scale_fn, seam: bool):
    """LucidDreamer's alignment step as a drop-in for dream.align_view: D = s·D̂ (+ δ)."""
    def align_view(D_hat, D_ref, M, samples, d_prev, space="depth"):
        try:
            s = scale_fn(D_hat, D_ref, M)
        except ValueError as exc:
            s, note = d_prev.scale, f"; fallback ({exc})"
        else:
            note = ""
        d = DepthFit(scale=s, shift=0.0, inliers=0, residual=0.0)
        D = s * np.asarray(D_hat, np.float64)
        delta = lucid_seam(D, D_ref, M) if seam else np.zeros(D.shape)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.where(D + delta > 0, np.log(np.maximum(D + delta, 1e-300) / D), 0.0)
        return D + delta, d, Seam(corr, 0, 0.0, 0), bool(note), note
    return align_view


def no_seam(rho, pix, shape, **kw):
    return Seam(np.zeros(shape), 0, 0.0, 0)


class BenchEngine(ProceduralEngine):
    """The procedural engine over one CachedWorld (shared ray tracing), plus the bench's own
    note of the last lie told, for the oracle (the engine itself keeps no state)."""

    def __init__(self, world, **options):
        super().__init__(**options)
        self.world, self.last_lie = world, None

    def world_for(self, prompt, seed):
        return self.world

    def estimate_depth(self, image, cam, *, seed=None, role=None):
        self.last_lie = self.lie(seed, cam, role)      # CachedWorld.depth: no second trace
        return super().estimate_depth(image, cam, seed=seed, role=role)


def oracle_fit(engine):
    """The floor: the inverse of the lie the engine just told (true scale and shift)."""
    def fit(pred, ref, **kw):
        lie = engine.last_lie
        return DepthFit(scale=1.0 / lie.scale, shift=-lie.shift / lie.scale, inliers=0,
                        residual=0.0, usable=len(pred))
    return fit


ORIGINAL = {k: getattr(dream_mod, k) for k in ("align_view", "overlap_samples", "fit_depth_pairs",
                                               "seam_fill", "refine_views", "_link")}
METHODS = {                                   # name → engine → the functions dream() uses
    "(a) none": lambda e: dict(align_view=lucid_align(lucid_scale_stuck, False)),
    "(b) LucidDreamer": lambda e: dict(align_view=lucid_align(lucid_scale_stuck, True)),
    "(c) LD, LSQ scale": lambda e: dict(align_view=lucid_align(lucid_scale_lsq, True)),
    "(d) ours": lambda e: dict(),
    "    ours, no seam": lambda e: dict(seam_fill=no_seam),
    "    true scale": lambda e: dict(fit_depth_pairs=oracle_fit(e), seam_fill=no_seam),
    "    true fit+seam": lambda e: dict(fit_depth_pairs=oracle_fit(e)),
    "    LSQ scale only": lambda e: dict(align_view=lucid_align(lucid_scale_lsq, False)),
}
TABLE = [m for m in METHODS if m != "    LSQ scale only"]     # the tests also use the last one
REFINED = {"(d) ours"}                   # the methods that end with the multi-view consensus


@contextlib.contextmanager
def method(name: str, engine, clock: list):
    """Swap the alignment functions dream() uses for those of `name`; time them into clock."""
    fns = dict(ORIGINAL)
    fns.update(METHODS[name](engine))

    def timed(f):
        def g(*a, **k):
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                clock.append(time.perf_counter() - t)
        return g

    timed_names = ["align_view"] + (["overlap_samples"] if "ours" in name else []) + \
        (["refine_views", "_link"] if name in REFINED else [])
    try:
        for k, f in fns.items():
            setattr(dream_mod, k, timed(f) if k in timed_names else f)
        yield
    finally:
        for k, f in ORIGINAL.items():
            setattr(dream_mod, k, f)


# ---------------------------------------------------------------------------------------------
# Ground-truth figures

def point_errors(world, cams, result) -> tuple[np.ndarray, np.ndarray]:
    """Signed relative error of every point along its own camera's ray, and its view: ([N], [N]).

    View i's new points sit at its pixels outside M_i with depth observed[i] there."""
    errs, views = [], []
    for i, cam in enumerate(cams):
        T, _ = world.truth(cam)
        new = ~result.masks[i] & np.isfinite(result.observed[i])
        if i == 0:
            new = np.isfinite(result.observed[0])
        errs.append(result.observed[i][new] / T[new] - 1.0)
        views.append(np.full(int(new.sum()), i))
    return np.concatenate(errs), np.concatenate(views)


def own_surface(world, cams, source: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """The true surface id of the pixel each point came from in its own camera: [N]."""
    out = np.empty(len(xyz), np.int64)
    for v in np.unique(source):
        sel = source == v
        cam = cams[v]
        uv, _ = world_to_pixels(cam, xyz[sel])
        col = np.clip(np.floor(uv[:, 0]).astype(np.int64), 0, cam.width - 1)
        row = np.clip(np.floor(uv[:, 1]).astype(np.int64), 0, cam.height - 1)
        out[sel] = world.truth(cam)[1][row, col]
    return out


def seam_jumps(world, cams, result, max_pairs: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """|Δe| over pixel pairs across each view's mask border and inside its new region.

    For view i ≥ 1: e_new(q) = D_i(q)/T_i(q) − 1 at new pixels q; e_old(p) for a covered pixel p
    = z/t − 1 of the old point shown there in the final cloud (the points of views < i, z-buffered
    again: the consensus may have moved them; z its depth in cam i, t the true depth traced
    through its exact pixel position). Pairs are 4-neighbours on the same true surface: the old
    point's own surface (the object or ground at its pixel in the camera it came from) is the
    one q sees, and their true depths are within EDGE. At most max_pairs border pairs per view
    and direction (evenly strided) are traced. → (across: [n], inside: [m]).
    """
    across, inside = [], []
    for i in range(1, len(cams)):
        cam = cams[i]
        T, S = world.truth(cam)
        M = result.masks[i]
        obs = result.observed[i]
        new = ~M & np.isfinite(obs)
        e_new = np.where(new, obs / T - 1.0, np.nan)
        older = np.flatnonzero(result.source < i)
        P = result.cloud.select(older)
        index = dream_mod.project(P, cam).index
        H, W = M.shape
        for di, dj in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            q_is_new = np.pad(new, 1)[1 + di:1 + di + H, 1 + dj:1 + dj + W]
            pi, pj = np.nonzero(M & q_is_new)              # covered p, new q = p + (di, dj)
            step = max(1, -(-len(pi) // max_pairs))         # a strided subset bounds the tracing
            pi, pj = pi[::step], pj[::step]
            if pi.size == 0:
                continue
            qi, qj = pi + di, pj + dj
            k = index[pi, pj]
            pi, pj, qi, qj = (x[k >= 0] for x in (pi, pj, qi, qj))
            k = k[k >= 0]
            uv, z = world_to_pixels(cam, P.xyz[k])
            h = world.trace(cam, uv)
            Tq = T[qi, qj]
            same = (own_surface(world, cams, result.source[older[k]], P.xyz[k]) == S[qi, qj]) & \
                (np.abs(h.t - Tq) < EDGE * np.minimum(h.t, Tq))
            across.append(np.abs(z / h.t - 1.0 - e_new[qi, qj])[same])
        for axis in (0, 1):
            e, t, s = (np.moveaxis(x, axis, 0) for x in (e_new, T, S))
            ok = np.isfinite(e[1:]) & np.isfinite(e[:-1]) & (s[1:] == s[:-1]) & \
                (np.abs(t[1:] - t[:-1]) < EDGE * np.minimum(t[1:], t[:-1]))
            inside.append(np.abs(e[1:] - e[:-1])[ok])
    return np.concatenate(across), np.concatenate(inside)


def run(world, cams, warp: float, name: str, lies=LIES):
    """One dream with method `name`. → (result, seconds of alignment per view ≥ 1)."""
    engine = BenchEngine(world, depth_lies={c.name: lie for c, lie in zip(cams, lies)},
                         depth_noise=NOISE, depth_warp=warp)
    clock = []
    with method(name, engine, clock):
        res = dream_mod.dream(cams, PROMPT, engine, world.seed, refine=name in REFINED)
    # init=None: view 0 calls none of the timed functions
    return res, sum(clock) / max(len(cams) - 1, 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 11])
    ap.add_argument("--large-seeds", type=int, nargs="+", default=[7],
                    help="seeds for sizes above 512 (rendering the world at 1024² takes ~45 s)")
    ap.add_argument("--views", type=int, default=len(EYES))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    rows = []
    print(f"{'size':>5} {'cond':>5} {'method':<18} {'err mean':>8} {'err p95':>8} {'new mean':>8} "
          f"{'seam jump':>9} {'ms/view':>8}")
    for size in args.sizes:
        cams = make_cams(size, size, args.views)
        worlds = [CachedWorld(PROMPT, s) for s in (args.seeds if size <= 512 else args.large_seeds)]
        for cond, warp in CONDITIONS.items():
            for name in TABLE:
                errs, newv, across, inside, times = [], [], [], [], []
                for world in worlds:
                    res, dt = run(world, cams, warp, name)
                    e, v = point_errors(world, cams, res)
                    errs.append(np.abs(e))
                    newv.append(v > 0)
                    a, b = seam_jumps(world, cams, res)
                    across.append(a)
                    inside.append(b)
                    times.append(dt)
                e, nv = np.concatenate(errs), np.concatenate(newv)
                jump = np.concatenate(across).mean() / np.concatenate(inside).mean()
                row = dict(size=size, cond=cond, method=name, mean=100 * e.mean(),
                           p95=100 * np.percentile(e, 95), new=100 * e[nv].mean(), jump=jump,
                           ms=1000 * float(np.mean(times)))
                rows.append(row)
                print(f"{size:>5} {cond:>5} {name:<18} {row['mean']:>7.2f}% {row['p95']:>7.2f}% "
                      f"{row['new']:>7.2f}% {jump:>9.2f} {row['ms']:>8.0f}", flush=True)
    print("\ntargets: (d) mean error ≥ 10× lower than (b); (d) < (c) under warps; "
          "(d) < 250 ms/view at 1024²")
    for size in args.sizes:
        for cond in CONDITIONS:
            r = {x["method"][:3]: x for x in rows if x["size"] == size and x["cond"] == cond}
            if "(b)" in r and "(d)" in r:
                print(f"  {size}² {cond}: (b)/(d) mean error {r['(b)']['mean'] / r['(d)']['mean']:.1f}×, "
                      f"(c)/(d) {r['(c)']['mean'] / r['(d)']['mean']:.2f}×, (d) {r['(d)']['ms']:.0f} ms/view")
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
