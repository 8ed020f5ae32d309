"""Depth alignment: fit a monocular depth map to the depths the point cloud already has.

LucidDreamer lifts view i with the estimated depth D̂_i scaled by d_i, chosen so that the new
points agree with P_{i-1} where the two overlap. Here the fit is robust and relative:

    ref ≈ s · pred + t   over the overlap, with relative residuals  r = (s · pred + t − ref) / ref

weighted by Huber (from a median-ratio start) then Tukey's biweight of r / σ (σ from the median
absolute residual), so wrong pixels (occlusion edges, hallucinated objects) carry no weight. Each
reweighted step regresses the noisy pred on the clean ref (pred/ref ≈ α + β/ref, s = 1/α,
t = −β/α), which keeps the noise in pred from shrinking s. Depth edges of ref are left out: there
a pixel's offset between the two maps makes any residual meaningless. numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HUBER_K = 1.345     # Huber threshold in robust standard deviations (95% efficiency)
TUKEY_C = 4.685     # Tukey biweight cut-off in robust standard deviations (95% efficiency)
MAD_TO_SIGMA = 1.4826
SIGMA_FLOOR = 1e-4  # relative; keeps the weights finite on noise-free data


@dataclass(frozen=True)
class DepthFit:
    """ref ≈ scale · pred + shift.

    inliers: pixels with non-zero final weight; residual: relative rms of ref over the inliers;
    usable: pixels that entered the fit (mask ∧ finite ∧ ref > 0 ∧ not a depth edge).
    """

    scale: float
    shift: float
    inliers: int
    residual: float
    usable: int = 0


def depth_edges(depth: np.ndarray, threshold: float, dilate: int = 1) -> np.ndarray:
    """Pixels next to a depth edge: [H, W] z-depth → [H, W] bool.

    A pair of 4-neighbours is an edge when |Δz| / min(z) exceeds threshold (or either depth is not
    finite); both pixels are marked, then the marks grow by `dilate` pixels (a square).
    """
    z = np.asarray(depth, dtype=np.float64)
    edge = np.zeros(z.shape, bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        for axis in (0, 1):
            a = np.moveaxis(z, axis, 0)
            g = np.abs(a[1:] - a[:-1]) / np.minimum(a[1:], a[:-1])
            e = np.moveaxis(edge, axis, 0)
            bad = ~(g <= threshold)
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
    W = np.sum(w)
    a_mean = float(np.dot(w, a) / W)
    alpha, beta = a_mean, 0.0
    if shift:
        b_mean = float(np.dot(w, b) / W)
        db = b - b_mean
        var_b = float(np.dot(w, db * db))
        if var_b > 1e-12 * b_mean ** 2 * W:    # else ref is constant: no shift is identifiable
            beta = float(np.dot(w, db * (a - a_mean)) / var_b)
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


def fit_depth_scale(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray, *, shift: bool = True,
                    edge_threshold: float = 0.1, edge_dilate: int = 1, min_pixels: int = 50,
                    iterations: int = 30) -> DepthFit:
    """Robust fit of ref ≈ s · pred + t (t = 0 when shift is False).

    pred: [H, W] predicted z-depth (e.g. monocular D̂_i); ref: [H, W] z-depth of the existing
    cloud (e.g. Projection.depth, +inf where empty); mask: [H, W] bool, the overlap.
    Pixels enter the fit where mask is True, both depths are finite, ref > 0 and ref has no depth
    edge (relative jump > edge_threshold) nearby. Raises ValueError with fewer than min_pixels.
    """
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if pred.ndim != 2 or ref.shape != pred.shape or mask.shape != pred.shape:
        raise ValueError(f"fit_depth_scale: pred {pred.shape}, ref {ref.shape} and mask "
                         f"{mask.shape} must be the same [H, W] shape")
    with np.errstate(invalid="ignore"):
        use = mask & np.isfinite(pred) & np.isfinite(ref) & (ref > 0)
    use &= ~depth_edges(ref, edge_threshold, edge_dilate)
    n = int(use.sum())
    if n < min_pixels:
        raise ValueError(f"fit_depth_scale: only {n} usable overlap pixels (mask ∧ finite ∧ "
                         f"ref > 0 ∧ not a depth edge), need at least {min_pixels}")
    p, r_ = pred[use], ref[use]
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
    res = s * a + t * b - 1.0
    inl = np.abs(res) < TUKEY_C * _sigma(res)
    rms = float(np.sqrt(np.mean(res[inl] ** 2))) if inl.any() else float("inf")
    return DepthFit(scale=float(s), shift=float(t), inliers=int(inl.sum()), residual=rms, usable=n)


def apply_depth_fit(pred: np.ndarray, fit: DepthFit) -> np.ndarray:
    """The aligned depth s · pred + t, same shape and dtype as pred (float)."""
    pred = np.asarray(pred)
    out = fit.scale * pred.astype(np.float64) + fit.shift
    return out.astype(pred.dtype if pred.dtype.kind == "f" else np.float64)
