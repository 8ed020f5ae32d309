"""Depth alignment: fit a monocular depth map to the depths the point cloud already has, then bend
the new depth at the seam so the two surfaces meet.

1. Global fit (LucidDreamer's d_i, done robustly). ref ≈ s · pred + t over the overlap, with
   relative residuals  r = (s · pred + t − ref) / ref,  weighted by Huber (from a median-ratio
   start) then Tukey's biweight of r / σ (σ from the median absolute residual), so wrong pixels
   (occlusion edges, hallucinated objects) carry no weight. Each reweighted step regresses the
   noisy pred on the clean ref (pred/ref ≈ α + β/ref, s = 1/α, t = −β/α), which keeps the noise
   in pred from shrinking s. Depth edges of ref are left out: there a pixel's offset between the
   two maps makes any residual meaningless. space="depth" fits metric depth (scale, or scale and
   shift); space="disparity" fits 1/ref ≈ s · (1/pred) + t, for relative (affine-invariant
   inverse-depth) models.

2. Seam (what LucidDreamer does with a corner-pinned linear griddata). The residual after the
   fit, ρ = log(ref / D) on the reliable overlap Ω, is spread over the new region by the screened
   Poisson problem

       min_c  Σ_{p∈Ω} (c_p − ρ_p)² / ℓ_s²  +  ‖∇c‖²  +  Σ_{p∉Ω} c_p² / ℓ_d²

   so c follows ρ on the overlap (smoothed over ℓ_s pixels against the noise), meets it at the mask
   border, and decays to 0 (the global fit) over ℓ_d pixels into the hole, instead of being pinned
   to zero at the image corners. New depth D ← D · exp(c): points move along their rays. c is
   low-frequency, so it is solved on a grid of cells of a few pixels by multigrid (red-black
   Gauss–Seidel V-cycles), twice, the second time without the overlap pixels the first solution
   calls outliers, then interpolated bilinearly to the pixels.

numpy only; no per-pixel Python loops.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HUBER_K = 1.345     # Huber threshold in robust standard deviations (95% efficiency)
TUKEY_C = 4.685     # Tukey biweight cut-off in robust standard deviations (95% efficiency)
MAD_TO_SIGMA = 1.4826
SIGMA_FLOOR = 1e-4  # relative; keeps the weights finite on noise-free data
MIN_SHIFT_SPREAD = 0.05  # relative spread of 1/ref below which a shift is not identifiable
SPACES = ("depth", "disparity")


@dataclass(frozen=True)
class DepthFit:
    """ref ≈ scale · pred + shift (space "depth"), or 1/ref ≈ scale / pred + shift ("disparity").

    inliers: usable pixels within the Tukey cut-off of the final fit; residual: relative rms over
    the inliers; usable: pixels that could enter the fit (mask ∧ finite ∧ > 0 ∧ not a depth edge).
    """

    scale: float
    shift: float
    inliers: int
    residual: float
    usable: int = 0
    space: str = "depth"


def depth_edges(depth: np.ndarray, threshold: float, dilate: int = 1, *, gaps: bool = True
                ) -> np.ndarray:
    """Pixels next to a depth edge: [H, W] z-depth → [H, W] bool.

    A pair of 4-neighbours is an edge when |Δz| / min(z) exceeds threshold, or, with gaps, when
    either depth is not finite (gaps=False: a pixel with no depth, e.g. a crack between splats of
    a reprojected cloud, is not an edge of its neighbours); both pixels are marked, then the marks
    grow by `dilate` pixels (a square).
    """
    z = np.asarray(depth, dtype=np.float64)
    edge = np.zeros(z.shape, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        for axis in (0, 1):
            a = np.moveaxis(z, axis, 0)
            g = np.abs(a[1:] - a[:-1]) / np.minimum(a[1:], a[:-1])
            e = np.moveaxis(edge, axis, 0)
            bad = ~(g <= threshold) if gaps else \
                (g > threshold) & np.isfinite(a[1:]) & np.isfinite(a[:-1])
            e[1:] |= bad
            e[:-1] |= bad
    for _ in range(dilate):
        grown = edge.copy()
        grown[1:] |= edge[:-1]
        grown[:-1] |= edge[1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        edge = grown
    return edge


def _solve(a: np.ndarray, b: np.ndarray, w: np.ndarray, shift: bool) -> tuple[float, float]:
    """Weighted least squares for (s, t) from a = pred/ref and b = 1/ref (all [n]).

    The noise is in pred, so pred is the regressand: fit a ≈ α + β·b (i.e. pred ≈ α·ref + β,
    relative to ref) and return s = 1/α, t = −β/α. Regressing ref on the noisy pred instead
    would shrink s by the noise variance (errors-in-variables attenuation).
    """
    W = np.sum(w)                  # plain ufunc sums: BLAS dot spins badly on a busy machine
    a_mean = float(np.sum(w * a) / W)
    alpha, beta = a_mean, 0.0
    if shift:
        b_mean = float(np.sum(w * b) / W)
        db = b - b_mean
        var_b = float(np.sum(w * db * db))
        # a shift needs depths that differ: over a nearly constant ref (a wall facing the camera)
        # scale and shift trade off against each other and the noise picks a wild pair that
        # agrees on the overlap and is wrong everywhere else
        if var_b > MIN_SHIFT_SPREAD ** 2 * b_mean ** 2 * W:
            beta = float(np.sum(w * db * (a - a_mean)) / var_b)
            alpha = a_mean - beta * b_mean
    if not alpha > 0:
        return float("nan"), float("nan")
    return 1.0 / float(alpha), (-float(beta) / float(alpha) if shift else 0.0)


def _sigma(r: np.ndarray) -> float:
    """Robust standard deviation of residuals r: [n] (1.4826 · median |r|, floored)."""
    return max(MAD_TO_SIGMA * float(np.median(np.abs(r))), SIGMA_FLOOR)


def _initial(pred: np.ndarray, ref: np.ndarray, shift: bool) -> tuple[float, float]:
    """Start of the robust fit: the median ratio (t = 0), or with a shift, whichever of that and
    an interquartile match has the smaller median relative residual."""
    pos = pred > 0
    starts = []
    if pos.any():
        starts.append((float(np.median(ref[pos] / pred[pos])), 0.0))
    if shift:
        qp = np.percentile(pred, [25, 50, 75])
        qr = np.percentile(ref, [25, 50, 75])
        if qp[2] > qp[0]:
            s = (qr[2] - qr[0]) / (qp[2] - qp[0])
            starts.append((float(s), float(qr[1] - s * qp[1])))
    if not starts:
        return 1.0, 0.0
    cost = [np.median(np.abs((s * pred + t - ref) / ref)) for s, t in starts]
    return starts[int(np.argmin(cost))]


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise ValueError(f"space: must be one of {', '.join(SPACES)}, got {space!r}")


def fit_depth_pairs(pred: np.ndarray, ref: np.ndarray, *, shift: bool = True,
                    space: str = "depth", min_pixels: int = 50, iterations: int = 30,
                    max_samples: int = 100_000) -> DepthFit:
    """Robust fit of ref ≈ s · pred + t over pairs (t = 0 when shift is False), or in space
    "disparity" of 1/ref ≈ s · (1/pred) + t (a relative model's inverse depth; shift always).

    pred, ref: [n] finite depths > 0 of the same surface points (the new estimate, the old
    cloud). At most max_samples of them, evenly strided, drive the iterations; inliers and
    residual are measured on all. Raises ValueError with fewer than min_pixels pairs.
    """
    _check_space(space)
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    ref = np.asarray(ref, dtype=np.float64).reshape(-1)
    if pred.shape != ref.shape:
        raise ValueError(f"fit_depth_pairs: pred {pred.shape} and ref {ref.shape} must match")
    if max_samples < min_pixels:
        raise ValueError(f"max_samples: must be at least min_pixels ({min_pixels}), got {max_samples}")
    n = pred.size
    if n < min_pixels:
        raise ValueError(f"fit_depth_scale: only {n} usable overlap pixels (mask ∧ finite ∧ "
                         f"ref > 0 ∧ not a depth edge), need at least {min_pixels}")
    p_all, r_all = pred, ref
    if space == "disparity":
        p_all, r_all, shift = 1.0 / pred, 1.0 / ref, True
    step = -(-n // max_samples)                          # ceil: evenly strided subsample
    p, r_ = p_all[::step], r_all[::step]
    a, b = p / r_, 1.0 / r_

    s, t = _initial(p, r_, shift)
    for robust in ("huber", "tukey"):
        for _ in range(iterations):
            res = s * a + t * b - 1.0
            sigma = _sigma(res)
            if robust == "huber":
                k = HUBER_K * sigma
                w = np.minimum(1.0, k / np.maximum(np.abs(res), 1e-300))
            else:
                c = TUKEY_C * sigma
                w = np.clip(1.0 - (res / c) ** 2, 0.0, None) ** 2
            if np.count_nonzero(w) < min_pixels:
                break
            s_new, t_new = _solve(a, b, w, shift)
            if not (np.isfinite(s_new) and np.isfinite(t_new)):
                break
            done = abs(s_new - s) <= 1e-10 * abs(s) and abs(t_new - t) <= 1e-10 * (abs(t) + abs(s))
            s, t = s_new, t_new
            if done:
                break
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"fit_depth_scale: no positive scale fits the overlap (got {s}); "
                         "pred and ref do not describe the same surface")
    res = (s * p_all + t) / r_all - 1.0
    inl = np.abs(res) < TUKEY_C * _sigma(res[::step])
    rms = float(np.sqrt(np.mean(res[inl] ** 2))) if inl.any() else float("inf")
    return DepthFit(scale=float(s), shift=float(t), inliers=int(inl.sum()), residual=rms, usable=n,
                    space=space)


def usable_pixels(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, *,
                  edge_threshold: float = 0.1, edge_dilate: int = 1) -> np.ndarray:
    """Pixels whose (pred, ref) pair can enter a fit: [H, W] bool = mask ∧ both finite and > 0
    ∧ ref has no depth edge (relative jump > edge_threshold) within edge_dilate pixels. (Edges
    of pred are not excluded: a prediction's wrong pixels look like edges, and the robust
    weights already drop them.)"""
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if pred.ndim != 2 or ref.shape != pred.shape or mask.shape != pred.shape:
        raise ValueError(f"fit_depth_scale: pred {pred.shape}, ref {ref.shape} and mask "
                         f"{mask.shape} must be the same [H, W] shape")
    with np.errstate(invalid="ignore"):
        use = mask & np.isfinite(pred) & np.isfinite(ref) & (ref > 0) & (pred > 0)
    use &= ~depth_edges(ref, edge_threshold, edge_dilate)
    return use


def fit_depth_scale(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, *, shift: bool = True,
                    space: str = "depth", edge_threshold: float = 0.1, edge_dilate: int = 1,
                    min_pixels: int = 50, iterations: int = 30, max_samples: int = 100_000
                    ) -> DepthFit:
    """fit_depth_pairs over the usable pixels of two depth maps.

    pred: [H, W] predicted z-depth (e.g. monocular D̂_i); ref: [H, W] z-depth of the existing
    cloud (e.g. Projection.depth, +inf where empty); mask: [H, W] bool, the overlap. Pixels enter
    where usable_pixels says so. Raises ValueError with fewer than min_pixels.
    """
    _check_space(space)
    use = usable_pixels(pred, ref, mask, edge_threshold=edge_threshold, edge_dilate=edge_dilate)
    return fit_depth_pairs(np.asarray(pred, np.float64)[use], np.asarray(ref, np.float64)[use],
                           shift=shift, space=space, min_pixels=min_pixels, iterations=iterations,
                           max_samples=max_samples)


def apply_depth_fit(pred: np.ndarray, fit: DepthFit) -> np.ndarray:
    """The aligned depth, same shape and dtype as pred (float): s · pred + t, or in disparity
    1 / (s / pred + t) (+inf where that is not positive: the point would be at or past infinity)."""
    pred = np.asarray(pred)
    p = pred.astype(np.float64)
    if fit.space == "disparity":
        with np.errstate(divide="ignore", invalid="ignore"):
            q = fit.scale / p + fit.shift
            out = np.where(q > 0, 1.0 / q, np.inf)
    else:
        out = fit.scale * p + fit.shift
    return out.astype(pred.dtype if pred.dtype.kind == "f" else np.float64)


def box_blur(a: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)² window (edges replicated) of a: [H, W] → [H, W], via cumulative sums."""
    if r <= 0:
        return a.copy()
    p = np.pad(a, r, mode="edge")
    c = np.cumsum(np.cumsum(p, 0), 1)
    c = np.pad(c, ((1, 0), (1, 0)))
    n = 2 * r + 1
    H, W = a.shape
    return (c[n:n + H, n:n + W] - c[:H, n:n + W] - c[n:n + H, :W] + c[:H, :W]) / (n * n)


def bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples of image: [H, W] at continuous pixel positions uv: [N, 2] (u right, v
    down; pixel centres at +½; positions beyond the outer centres take the edge) → [N]."""
    H, W = image.shape
    x = np.clip(uv[:, 0] - 0.5, 0.0, W - 1.0)
    y = np.clip(uv[:, 1] - 0.5, 0.0, H - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), W - 2) if W > 1 else np.zeros(len(x), np.int64)
    y0 = np.minimum(np.floor(y).astype(np.int64), H - 2) if H > 1 else np.zeros(len(y), np.int64)
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


# ---------------------------------------------------------------------------------------------
# Seam: a screened Poisson fill of the log-depth residual, solved by multigrid on a coarse grid

@dataclass(frozen=True)
class Seam:
    """The seam correction of one view: D ← D · exp(correction).

    correction: [H, W] float64 log-depth factor c; used: overlap pixels whose residual entered
    the solve; sigma: robust std of the residual about c on them; cycles: V-cycles run.
    """

    correction: np.ndarray
    used: int
    sigma: float
    cycles: int


def _neighbour_sum(c: np.ndarray) -> np.ndarray:
    """Σ over the existing 4-neighbours of each cell of c: [h, w] → [h, w]."""
    s = np.zeros_like(c)
    s[1:] += c[:-1]
    s[:-1] += c[1:]
    s[:, 1:] += c[:, :-1]
    s[:, :-1] += c[:, 1:]
    return s


def _degree(h: int, w: int) -> np.ndarray:
    """How many 4-neighbours each cell of an [h, w] grid has: [h, w]."""
    return _neighbour_sum(np.ones((h, w)))


def _apply(c: np.ndarray, a: np.ndarray, deg: np.ndarray, h2: float) -> np.ndarray:
    """A c = (deg · c − Σ_neighbours c) / h² + a · c: the screened graph Laplacian (Neumann
    borders) with cell size h and reaction a: [h, w]."""
    return (deg * c - _neighbour_sum(c)) / h2 + a * c


def _smooth(c: np.ndarray, f: np.ndarray, a: np.ndarray, deg: np.ndarray, h2: float,
            red: np.ndarray, sweeps: int) -> np.ndarray:
    """Red-black Gauss–Seidel sweeps on A c = f (updates all cells of one colour at once)."""
    diag = deg / h2 + a
    for _ in range(sweeps):
        for colour in (red, ~red):
            c = np.where(colour, (f + _neighbour_sum(c) / h2) / diag, c)
    return c


def _restrict(x: np.ndarray) -> np.ndarray:
    """2×2 cell average: [2h, 2w] → [h, w]."""
    h, w = x.shape
    return x.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _prolong(x: np.ndarray) -> np.ndarray:
    """Bilinear interpolation between cell centres: [h, w] → [2h, 2w] (edges held)."""
    p = np.pad(x, 1, mode="edge")
    rows = np.empty((2 * x.shape[0], x.shape[1] + 2))
    rows[0::2] = 0.75 * p[1:-1] + 0.25 * p[:-2]
    rows[1::2] = 0.75 * p[1:-1] + 0.25 * p[2:]
    out = np.empty((2 * x.shape[0], 2 * x.shape[1]))
    out[:, 0::2] = 0.75 * rows[:, 1:-1] + 0.25 * rows[:, :-2]
    out[:, 1::2] = 0.75 * rows[:, 1:-1] + 0.25 * rows[:, 2:]
    return out


def _dense_solve(f: np.ndarray, a: np.ndarray, h2: float) -> np.ndarray:
    """Exact solution of A c = f on a small grid (the coarsest level)."""
    h, w = f.shape
    n = h * w
    idx = np.arange(n).reshape(h, w)
    A = np.diag(_degree(h, w).reshape(-1) / h2 + a.reshape(-1))
    for p, q in ((idx[1:], idx[:-1]), (idx[:, 1:], idx[:, :-1])):
        A[p.reshape(-1), q.reshape(-1)] = -1.0 / h2
        A[q.reshape(-1), p.reshape(-1)] = -1.0 / h2
    return np.linalg.solve(A, f.reshape(-1)).reshape(h, w)


def screened_poisson(f: np.ndarray, a: np.ndarray, h: float, *, c0: np.ndarray | None = None,
                     tol: float = 1e-6, max_cycles: int = 30, sweeps: int = 2
                     ) -> tuple[np.ndarray, int]:
    """Solve (−Δ_h + a) c = f on a cell grid by multigrid V-cycles. → (c: [h, w], cycles).

    f, a: [h, w] (a > 0: the reaction/screening term); h: cell size; −Δ_h is the 5-point graph
    Laplacian / h² with Neumann borders. Levels halve the grid (2×2 averages of a and of the
    residual, bilinear prolongation, `sweeps` red-black Gauss–Seidel sweeps before and after)
    down to a few cells solved exactly. Stops when ‖f − A c‖ ≤ tol · ‖f‖.
    """
    H0, W0 = f.shape
    depth = 0
    while min(H0, W0) >> (depth + 1) >= 4 and (H0 >> depth) % 2 == 0 and (W0 >> depth) % 2 == 0 \
            and (H0 >> depth) * (W0 >> depth) > 64:
        depth += 1
    levels = []                                          # (a, deg, h², red) per level
    al, hl = a, float(h)
    for lv in range(depth + 1):
        hh, ww = al.shape
        i, j = np.indices((hh, ww))
        levels.append((al, _degree(hh, ww), hl * hl, (i + j) % 2 == 0))
        if lv < depth:
            al, hl = _restrict(al), 2.0 * hl

    def vcycle(lv: int, c: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        al, deg, h2, red = levels[lv]
        if lv == depth:
            return _dense_solve(rhs, al, h2)
        c = _smooth(c, rhs, al, deg, h2, red, sweeps)
        r = rhs - _apply(c, al, deg, h2)
        e = vcycle(lv + 1, np.zeros((r.shape[0] // 2, r.shape[1] // 2)), _restrict(r))
        c = c + _prolong(e)
        return _smooth(c, rhs, al, deg, h2, red, sweeps)

    c = np.zeros_like(f) if c0 is None else c0.astype(np.float64).copy()
    norm = float(np.sqrt(np.sum(f * f)))
    if norm == 0:
        return np.zeros_like(f), 0
    al, deg, h2, _ = levels[0]
    for cycle in range(1, max_cycles + 1):
        c = vcycle(0, c, f)
        r = f - _apply(c, al, deg, h2)
        if np.sqrt(np.sum(r * r)) <= tol * norm:
            break
    return c, cycle


def upsample_cells(C: np.ndarray, cell: int, H: int, W: int) -> np.ndarray:
    """Bilinear interpolation of cell values C: [gh, gw] (cell centres at (k + ½)·cell) to the
    pixel centres of an [H, W] image (edges held)."""
    def axis(n, g):
        x = np.clip((np.arange(n) + 0.5) / cell - 0.5, 0.0, g - 1.0)
        x0 = np.floor(x).astype(np.int64)
        return x0, np.minimum(x0 + 1, g - 1), x - x0
    y0, y1, fy = axis(H, C.shape[0])
    x0, x1, fx = axis(W, C.shape[1])
    rows = C[y0] * (1 - fy)[:, None] + C[y1] * fy[:, None]
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx


def cell_weights(pix: np.ndarray, W: int, cell: int, gh: int, gw: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights of the four cell centres around each pixel centre: pix [n] flat (row · W +
    col) on a grid of [gh, gw] cells of `cell` pixels, centres at (k + ½)·cell, edges held.
    → (cells [n, 4] flat cell index, weights [n, 4] summing to 1)."""
    y = np.clip((pix // W + 0.5) / cell - 0.5, 0.0, gh - 1.0)
    x = np.clip((pix % W + 0.5) / cell - 0.5, 0.0, gw - 1.0)
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
    fy, fx = y - y0, x - x0
    cells = np.stack([y0 * gw + x0, y0 * gw + x1, y1 * gw + x0, y1 * gw + x1], axis=1)
    weights = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=1)
    return cells, weights


def _gather(C: np.ndarray, cell: int, pix: np.ndarray, W: int) -> np.ndarray:
    """Bilinear cell values C: [gh, gw] at the centres of flat pixels pix: [n] → [n]."""
    cells, weights = cell_weights(pix, W, cell, *C.shape)
    return np.sum(C.reshape(-1)[cells] * weights, axis=1)


def seam_fill(rho: np.ndarray, pix: np.ndarray, shape: tuple[int, int], *, density: float = 1.0,
              decay: float = 0.3, smooth: float = 1.5, grid: int = 128, min_samples: int = 50,
              tol: float = 1e-5) -> Seam:
    """The correction c that bends the new depth onto the old surface (module docstring, step 2).

    rho: [n] residuals ρ = log(ref / D) of overlap samples (old surface point ↔ new depth there);
    pix: [n] flat index (row · W + col) of each sample's pixel in an image of shape (H, W);
    density: samples expected per covered pixel (< 1 when the samples are a strided subset).
    c solves, on cells of ⌈max(H, W) / grid⌉ pixels, the screened Poisson problem with smoothing
    ℓ_s = smooth pixels where there are samples and decay ℓ_d = decay · max(H, W) pixels where
    there are none: (−Δ + κ·ω + μ·(1 − ω)) c = κ·ω·ρ̄, κ = 1/ℓ_s², μ = 1/ℓ_d², ω = the cell's
    sample coverage (≤ 1), ρ̄ its mean residual. Twice: first with the samples within Tukey's cut
    of the median, then within the cut of the first solution. With fewer than min_samples, c = 0.
    """
    H, W = (int(v) for v in shape)
    for name, v, lo in (("decay", decay, 0.0), ("smooth", smooth, 0.0), ("grid", grid, 1),
                        ("density", density, 0.0)):
        if not (np.isfinite(v) and v > lo):
            raise ValueError(f"{name}: must be a finite number > {lo}, got {v}")
    rho = np.asarray(rho, dtype=np.float64).reshape(-1)
    pix = np.asarray(pix, dtype=np.int64).reshape(-1)
    if rho.shape != pix.shape:
        raise ValueError(f"seam_fill: rho {rho.shape} and pix {pix.shape} must match")
    ok = np.isfinite(rho) & (pix >= 0) & (pix < H * W)
    rho, pix = rho[ok], pix[ok]
    if rho.size < min_samples:
        return Seam(np.zeros((H, W)), 0, 0.0, 0)

    # Cells of `cell` pixels, the grid padded to a multiple of 16 cells (no data: screened).
    cell = max(1, -(-max(H, W) // int(grid)))
    gh, gw = -(-H // cell), -(-W // cell)
    ph, pw = -(-gh // 16) * 16, -(-gw // 16) * 16
    kappa, mu = 1.0 / smooth ** 2, 1.0 / (decay * max(H, W)) ** 2
    cell_of = (pix // W // cell) * pw + (pix % W) // cell
    full = float(cell * cell) * density                 # samples in a fully covered cell

    def solve(keep: np.ndarray, c0):
        n = np.bincount(cell_of[keep], minlength=ph * pw).reshape(ph, pw)
        sr = np.bincount(cell_of[keep], rho[keep], minlength=ph * pw).reshape(ph, pw)
        omega = np.minimum(n / full, 1.0)
        mean = np.where(n > 0, sr / np.maximum(n, 1), 0.0)
        return screened_poisson(kappa * omega * mean, kappa * omega + mu * (1.0 - omega), cell,
                                c0=c0, tol=tol)

    med = float(np.median(rho))
    keep = np.abs(rho - med) <= TUKEY_C * _sigma(rho - med)
    C, cycles = solve(keep, None)
    dev = rho - _gather(C, cell, pix, W)
    keep = np.abs(dev) <= TUKEY_C * _sigma(dev)
    C, more = solve(keep, C)
    dev = (rho - _gather(C, cell, pix, W))[keep]
    return Seam(correction=upsample_cells(C[:gh, :gw], cell, H, W), used=int(keep.sum()),
                sigma=_sigma(dev), cycles=cycles + more)


def seam_correction(D: np.ndarray, D_ref: np.ndarray, M: np.ndarray, *, edge_threshold: float = 0.1,
                    edge_dilate: int = 1, **options) -> Seam:
    """seam_fill from two depth maps: D [H, W] the new depth after the global fit, D_ref [H, W]
    the old surface's depth at the same pixels (+inf where none), M [H, W] bool the overlap;
    residuals at usable_pixels. options go to seam_fill."""
    use = usable_pixels(D, D_ref, M, edge_threshold=edge_threshold, edge_dilate=edge_dilate)
    pix = np.flatnonzero(use)
    rho = np.log(np.asarray(D_ref, np.float64).reshape(-1)[pix] / np.asarray(D, np.float64).reshape(-1)[pix])
    return seam_fill(rho, pix, np.shape(D), **options)


def apply_seam(D: np.ndarray, seam: Seam) -> np.ndarray:
    """D · exp(c): the new depth moved along its rays to meet the old surface, float64 [H, W]."""
    return np.asarray(D, dtype=np.float64) * np.exp(seam.correction)
