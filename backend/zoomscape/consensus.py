"""Multi-view depth consensus: after the dream, bend every view's depth at once so all views agree.

The dream aligns each view to the cloud it finds (align.py): the new view's global fit and seam
copy the old surface, errors and all. View 0's own bend is never corrected, and every later view
inherits it near its seams. But every later view also measured the old surface with its own
depth estimate (D̂_j on its overlap M_j), and monocular bends differ from view to view. This step
uses all those measurements together.

Each view v gets a smooth log-depth correction C_v on a coarse grid of cells (bilinear between
cell centres); a point from view v at pixel u moves along its ray to depth · exp(C_v(u)) from its
fitted depth (without the dream's seam, which C_v replaces). Every overlap sample s of view j —
an old point k of view i, seen in j where j's fitted estimate said depth p_s — asks that the two
meet:

    g_s · C_i(u_k) − C_j(u_s) = log p_s − log z_s + g_s · c_k          (linearised in C)

z_s: the old point's depth in camera j as the dream left it (after its seam c_k); g_s = d log z_s /
d log (its depth in camera i), = 1 when the cameras coincide. Points of the user's own depth
(init) are fixed: C = 0 for them. With a prior that keeps each C_v small (every view's fit is
trusted alike, |C| ~ prior) and a membrane term that spreads corrections over `decay` of the image
where no other view looked, the least-squares solution splits each disagreement between the views
that see it, so independent bends average out instead of one view's bend winning, while the
views still meet at every seam. Samples the dream's own alignment calls outliers (occlusion edges,
wrong surfaces) are left out, and a second pass drops those the first solution calls outliers.

Two sparse solves (scipy's conjugate gradients) of a few thousand unknowns per view; no
per-point Python loops.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spl

from .align import MAD_TO_SIGMA, TUKEY_C, bilinear, cell_weights, upsample_cells
from .cameras import Camera
from .pointcloud import PointCloud


@dataclass(frozen=True)
class Link:
    """Overlap samples of view j: old points seen in j, each with j's fitted depth estimate.

    point: [n] index of the old point in the final cloud; pix: [n] flat pixel (row · W + col) in j;
    log_pred: [n] log of j's fitted estimate (after the global fit, before the seam) there;
    seam: [n] the dream's seam correction of j there; coupling: [n] g_s (see coupling(); the
    consensus takes 0 for the user's fixed points, which cannot move); density: samples per
    covered pixel of j (< 1 for a strided subset).
    """

    view: int
    point: np.ndarray
    pix: np.ndarray
    log_pred: np.ndarray
    seam: np.ndarray
    coupling: np.ndarray
    density: float = 1.0


@dataclass(frozen=True)
class Consensus:
    """What consensus() did: log-depth factor per point (0 for fixed points), the robust std of
    the overlap disagreement before and after, and how many samples entered the final solve."""

    factor: np.ndarray
    sigma_before: float
    sigma_after: float
    used: int


def coupling(xyz: np.ndarray, origins: np.ndarray, cam: Camera, log_depth: np.ndarray,
             reach: int = 3, limit: float = 4.0) -> np.ndarray:
    """How much the disagreement of old points with camera cam's surface changes when they move
    along their own rays: g = d/dc [log z − log S(π(X'))] at c = 0, X' = o + e^c (X − o).

    xyz: [n, 3] the old points; origins: [n, 3] the centres of the cameras they came from;
    log_depth: [H, W] log of cam's fitted depth estimate S. The first term, (X − o)·forward / z,
    is the change of the point's own depth; the second, ∇log S · dπ/dc, is the surface's depth
    changing under the point as its projection slides (it makes g = h_i / h_j on a ground plane
    seen by cameras at heights h_i, h_j: a plain depth ratio would be off by tens of %). ∇log S
    is a central difference over ±reach pixels, averaged over two parallel lines ±reach/2 apart
    (an estimate is noisy per pixel), read only at the points; g is clipped to [0, limit] (a point near a
    depth edge), and where S has no finite depth nearby only the first term counts. → [n].
    """
    w2c = cam.w2c
    Xc = (xyz - cam.center) @ w2c[:3, :3].T
    dXc = (xyz - origins) @ w2c[:3, :3].T
    z = Xc[:, 2]
    g = dXc[:, 2] / z
    du = cam.K[0, 0] * (dXc[:, 0] - Xc[:, 0] * g) / z
    dv = cam.K[1, 1] * (dXc[:, 1] - Xc[:, 1] * g) / z
    uv = np.stack([cam.K[0, 0] * Xc[:, 0] / z + cam.K[0, 2], cam.K[1, 1] * Xc[:, 1] / z + cam.K[1, 2]], 1)
    grad = np.zeros((2, len(z)))
    with np.errstate(invalid="ignore"):
        for axis in (0, 1):
            step = np.zeros(2)
            step[axis] = reach
            across = np.zeros(2)
            across[1 - axis] = reach
            for t in (-0.5, 0.5):
                grad[axis] += bilinear(log_depth, uv + step + t * across) - \
                    bilinear(log_depth, uv - step + t * across)
    slide = (grad[0] * du + grad[1] * dv) / (4.0 * reach)
    return np.clip(np.where(np.isfinite(slide), g - slide, g), 0.0, limit)


def _membrane(gh: int, gw: int) -> sp.csr_matrix:
    """The graph Laplacian of a [gh, gw] grid (4-neighbours, Neumann borders): [gh·gw]²."""
    idx = np.arange(gh * gw).reshape(gh, gw)
    pairs = [(idx[1:].ravel(), idx[:-1].ravel()), (idx[:, 1:].ravel(), idx[:, :-1].ravel())]
    p = np.concatenate([a for a, _ in pairs])
    q = np.concatenate([b for _, b in pairs])
    n = gh * gw
    D = sp.coo_matrix((np.concatenate([np.ones(p.size), -np.ones(p.size)]),
                       (np.concatenate([np.arange(p.size)] * 2), np.concatenate([p, q]))),
                      shape=(p.size, n)).tocsr()
    return (D.T @ D).tocsr()


def _sigma(r: np.ndarray) -> float:
    """Robust standard deviation of r about its median (floored at 1e-4)."""
    return max(MAD_TO_SIGMA * float(np.median(np.abs(r - np.median(r)))), 1e-4)


def consensus(cloud: PointCloud, cams: list[Camera], source: np.ndarray, point_pix: np.ndarray,
              point_c: np.ndarray, fixed: np.ndarray, links: list[Link], *, grid: int = 32,
              prior: float = 0.01, decay: float = 0.3, max_samples: int = 40_000,
              tol: float = 1e-8) -> Consensus:
    """The joint correction of all views (module docstring). → Consensus (apply_consensus moves
    the points).

    cloud: the dream's cloud; source: [N] view of each point; point_pix: [N] its flat pixel in that
    view; point_c: [N] the seam's log factor already applied to it; fixed: [N] bool, points that
    must not move (the user's own depth); links: the overlap samples of each view. grid: cells
    across the longer image side; prior: the typical |C| a view's fit may be off (relative);
    decay: how far, as a fraction of the longer side, a correction spreads where no view looked;
    max_samples: per link, evenly strided; tol: relative residual of the linear solve.
    """
    for name, v in (("grid", grid), ("prior", prior), ("decay", decay), ("max_samples", max_samples)):
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"{name}: must be a finite number > 0, got {v}")
    N = len(cloud)
    factor = np.zeros(N)
    layout, offset = [], 0                        # per view: (cell, gh, gw, first unknown)
    for cam in cams:
        cell = max(1, -(-max(cam.width, cam.height) // int(grid)))
        gh, gw = -(-cam.height // cell), -(-cam.width // cell)
        layout.append((cell, gh, gw, offset))
        offset += gh * gw
    n_unknowns = offset

    rows_c, rows_w, rhs, weight, r_now = [], [], [], [], []
    for link in links:
        j = link.view
        cam_j = cams[j]
        step = max(1, -(-len(link.point) // max_samples))
        k, pix, lp = link.point[::step], link.pix[::step], link.log_pred[::step]
        seam = link.seam[::step]
        if k.size == 0:
            continue
        z = (cloud.xyz[k] - cam_j.center) @ cam_j.c2w[:3, 2]        # z-depth in cam j
        i = source[k]
        g = np.where(fixed[k], 0.0, link.coupling[::step])
        b = lp - np.log(z) + g * point_c[k]
        cell, gh, gw, off = layout[j]
        cj, wj = cell_weights(pix, cam_j.width, cell, gh, gw)
        ci = np.zeros_like(cj)
        wi = np.zeros_like(wj)
        pix_k, movable = point_pix[k], ~fixed[k]
        for v in np.unique(i):                     # the old points' own cells, view by view
            sel = (i == v) & movable
            if sel.any():
                cv, hv, wv, ov = layout[v]
                c, w = cell_weights(pix_k[sel], cams[v].width, cv, hv, wv)
                ci[sel], wi[sel] = c + ov, w * g[sel, None]
        rows_c.append(np.concatenate([ci, cj + off], axis=1))
        rows_w.append(np.concatenate([wi, -wj], axis=1))
        rhs.append(b)
        weight.append(np.full(k.size, step / link.density))       # pixels a sample stands for
        r_now.append(lp + seam - np.log(z))       # the disagreement the dream left

    if not rhs:
        return Consensus(factor, 0.0, 0.0, 0)
    cols = np.concatenate(rows_c)
    vals = np.concatenate(rows_w)
    b = np.concatenate(rhs)
    w = np.concatenate(weight)
    r0 = np.concatenate(r_now)
    sigma0 = _sigma(r0)
    keep = np.abs(r0 - np.median(r0)) <= TUKEY_C * sigma0

    A = sp.csr_matrix((vals.ravel(), cols.ravel(), np.arange(0, vals.size + 1, 8)),
                      shape=(len(b), n_unknowns))
    A.sum_duplicates()
    blocks = []
    for cell, gh, gw, _ in layout:
        # per cell: |C| ~ prior, and a membrane that spreads over decay · the longer side
        ell = decay * max(gh, gw)
        blocks.append((sp.identity(gh * gw) + ell ** 2 * _membrane(gh, gw)) / prior ** 2)
    R = sp.block_diag(blocks, format="csr")

    def solve(keep, x0=None):
        """The normal equations by conjugate gradients, Jacobi-preconditioned (they are
        symmetric positive definite; a direct factorisation costs 10× more here)."""
        wk = np.where(keep, w, 0.0) / sigma0 ** 2
        Aw = A.multiply(wk[:, None]).tocsr()
        M = (A.T @ Aw + R).tocsr()
        diag = M.diagonal()
        x, info = spl.cg(M, Aw.T @ b, x0=x0, rtol=tol, maxiter=10 * n_unknowns,
                         M=spl.LinearOperator(M.shape, matvec=lambda v: v / diag))
        if info != 0:
            raise RuntimeError(f"consensus: conjugate gradients did not converge ({info} steps)")
        return x

    x = solve(keep)
    res = b - A @ x
    s1 = _sigma(res[keep])
    keep = np.abs(res) <= TUKEY_C * s1
    x = solve(keep, x)
    res = b - A @ x

    for (cell, gh, gw, off), part, cam in zip(layout, view_parts(source, len(cams)), cams):
        C = upsample_cells(x[off:off + gh * gw].reshape(gh, gw), cell, cam.height, cam.width)
        factor[part] = C.reshape(-1)[point_pix[part]] - point_c[part]
    factor[fixed] = 0.0
    return Consensus(factor, sigma0, _sigma(res[keep]), int(keep.sum()))


def view_parts(source: np.ndarray, n_views: int) -> list:
    """Where each view's points are in a cloud: a slice per view when source: [N] is sorted (a
    dream's cloud is: views are appended in order), else an index array per view."""
    source = np.asarray(source)
    if source.size < 2 or bool(np.all(source[1:] >= source[:-1])):
        bounds = np.searchsorted(source, np.arange(n_views + 1))
        return [slice(int(bounds[v]), int(bounds[v + 1])) for v in range(n_views)]
    return [np.flatnonzero(source == v) for v in range(n_views)]


def apply_consensus(cloud: PointCloud, cams: list[Camera], source: np.ndarray,
                    factor: np.ndarray) -> PointCloud:
    """Move every point along its own camera's ray to depth · exp(factor): a new PointCloud (the
    splat radius scales with the depth; a point with factor 0 keeps its exact position)."""
    f = np.exp(np.asarray(factor, np.float64))
    xyz = np.empty_like(cloud.xyz)
    for part, cam in zip(view_parts(source, len(cams)), cams):
        o = cam.center
        xyz[part] = o + (cloud.xyz[part] - o) * f[part, None]
    return PointCloud(xyz, cloud.rgb, (cloud.radius * f).astype(cloud.radius.dtype))
