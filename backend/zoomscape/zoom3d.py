"""The zoom stack in 3D: Generative Powers of Ten's operators for DOLLY levels (issue 11).

In DOLLY, level i is painted from C_i = a + (C_0 − a)·p^−i (moved toward the anchor a, level 0's
orientation and lens; ``cameras.LevelCameras``). Every level camera lies on the centre ray, so a
level-j pixel u at z-depth z_j is seen by level i at

    u_i = e + (u − e)·m,   m = z_j / (z_j + δ_ij),   z_i = z_j + δ_ij,   δ_ij = z_a·(p^−i − p^−j)   (R)

with e = (W/2, H/2) at any resolution (a radial scale about the centre) and z_a the anchor's
z-depth from C_0. On the anchor's fronto-parallel plane (z_j = z_a·p^−j) m = p^(i−j): the 2D
stack of zoom.py. So the 3D stack is zoom.py's resampling with a per-pixel shrink factor m from
depth instead of a constant one, plus occlusion:

  i < j (a finer level drawn in a coarser one's frame): every level-j pixel is splatted into level
      i with exact box-overlap weights on the level-i pixels it touches (≤ 2×2 where m < 1):
      img = Σ w·x, cov = Σ w, var = Σ w² per level-i pixel — zoom.resample_level's area integral,
      coverage and variance. Its footprint is the rectangle between the images of its edge
      midpoints under (R), each at the surface's depth there: for constant depth the square of
      side m about u_i (on the anchor plane these tile the 2D footprint exactly); on a slope the
      edges follow the surface, so neighbouring footprints meet (squares of side m would leave
      the perspective's stretch, (u − e)·∇m, as gaps and overlaps of up to ±20 % coverage).
  i > j (a coarser level drawn in a finer one's frame): every level-i pixel is mapped into level
      j by (R) with level i's own depth D_i (δ_ji > 0: level j is behind) and its footprint there
      (the same rectangle, ≈ a square of side D_i/(D_i + δ_ji) level-j pixels) is area-averaged
      (weights sum to 1: on integer-aligned grids exactly the nearest pixel, as resample_level's
      rel < 0).
  Occlusion: a sample counts on a pixel only where its depth in the target camera agrees with the
      target level's depth map (OCCLUSION_TOL) at that pixel or at the sample's mapped centre;
      hidden or disoccluded samples have weight 0, so cov is 0 where the target camera sees
      something the source level does not.
  Blending: a coarser level j < i observes band k of level i's pyramid from the band its local
      magnification 1/m' allows (k0 = ⌈log_q(1/m')⌉ per pixel, the largest over the band's parent
      block: a per-pixel choice, which on the anchor plane is zoom.blend's per-level k0).

The geometry (per-level depth maps and the warps between levels) is built once per stack
(``stack_geometry``) and cached on the StackGeometry: every denoising step repeats it.

Π_image, Π_noise, the multi-resolution blend and the consistency error below are zoom.py's, with
resample_level replaced by resample_3d; a composite pixel counts as seen by a finer level where its
coverage is ≥ SEEN (pi_image_all's "inside") and is then the coverage-normalised average img/cov.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .zoom import (CACHE_PIXELS, _FULL, _box_down, _nearest_up, blend_window, collapse_pyramid,
                   laplacian_pyramid, noise_depth, pyramid_spec)

# Two depths agree (one surface, seen by both cameras) when they differ by at most this fraction.
# Treating two surfaces within OCCLUSION_TOL as one misplaces the farther by Δu = (u − e)·Δm with
# Δm = m(1 − m)·Δz/z ≤ Δz/(4z): at the image edge of a 64-latent level (|u − e| ≤ 32) and 3 %,
# at most 0.24 latent pixels, under the quarter pixel that area resampling blurs anyway. Depths are
# compared at the sample's exact landing point (inverse depth interpolated there, exact on planes)
# as well as at the pixel it touches, so sloped ground needs no slack beyond that.
OCCLUSION_TOL = 0.03
# Neighbouring depths within this fraction are one continuous surface: inverse depth is
# interpolated between them (exact for planes: 1/z is affine in the pixel coordinates); a larger
# jump is an occlusion edge, where the nearest pixel's depth is used (no "rubber sheet").
EDGE_TOL = 0.25
# Samples nearer than NEAR·z_a·p^−j to camera j (or behind it) are not seen by level j.
NEAR = 1e-3
# Coverage above which a finer level counts as seeing a composite pixel (zoom.pi_image_all's 0.5).
SEEN = 0.5
# Forward-warping a depth map: each source pixel is split into S×S samples with S·m ≥ SUPERSAMPLE
# (samples ≤ 1/SUPERSAMPLE target pixels apart: no holes where the source saw the surface, and ≥ 3×3
# samples per target pixel to fit the surface's depth at its centre),
# S ≤ MAX_SUPERSAMPLE (nearer surfaces, magnified more, leave holes filled from neighbours).
SUPERSAMPLE, MAX_SUPERSAMPLE = 3.0, 16
_CHUNK = 1 << 22                 # samples per forward-warp batch (bounded memory at pixel size)
_TINY = 1e-9                     # box-overlap slivers below this (float round-off) are dropped


# ---------------------------------------------------------------------------------------------
# The geometry of a stack

@dataclass(frozen=True)
class Warp:
    """One level drawn in another's frame, as a sparse matrix: level j's pixel src[k] contributes
    with weight w[k] to level i's pixel dst[k] (flat row-major indices, [K] each); cov = Σ w and
    var = Σ w² per level-i pixel: [h, w]. Visibility is already in w (hidden samples are absent)."""

    src: torch.Tensor
    dst: torch.Tensor
    w: torch.Tensor
    cov: torch.Tensor
    var: torch.Tensor


@dataclass(eq=False)
class StackGeometry:
    """The 3D zoom stack's geometry at one resolution (DOLLY levels).

    D: [N, h, w] float64 z-depth of every level from its own camera C_i (finite, > 0), at the
    resolution the sampling runs at; z_a: the anchor's z-depth from C_0; p: the zoom factor.
    depth0: the level-0 z-depth it was built from ([H0, W0], for ``at``); chain: [N, H', W'] the
    level depths at the resolution they were warped at (H' ≥ h), reused by ``at`` for smaller sizes.
    Warps and blend masks are cached on it (never modify them): every denoising step repeats them.
    """

    D: torch.Tensor
    z_a: float
    p: float
    depth0: Optional[np.ndarray] = None
    chain: Optional[torch.Tensor] = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def N(self) -> int:
        return int(self.D.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.D.shape[1]), int(self.D.shape[2])

    def delta(self, i: int, j: int) -> float:
        """δ_ij = z_a·(p^−i − p^−j): how much farther C_i is than C_j along the axis."""
        return self.z_a * (self.p ** -i - self.p ** -j)

    def at(self, size) -> "StackGeometry":
        """The same stack's geometry at another resolution (h, w) (cached): level depths
        downsampled from the warped chain where it is at least that large, else warped afresh."""
        size = (int(size[0]), int(size[1]))
        if size == self.size:
            return self
        key = ("at", size)
        if key not in self._cache:
            chain = self.chain if self.chain is not None else self.D
            if chain.shape[1] >= size[0] and chain.shape[2] >= size[1]:
                D = torch.stack([_resize_depth(d, size) for d in chain])
                self._cache[key] = StackGeometry(D, self.z_a, self.p, self.depth0, chain)
            elif self.depth0 is not None:
                self._cache[key] = stack_geometry(self.depth0, self.z_a, self.p, self.N, size,
                                                  device=self.D.device)
            else:
                D = torch.stack([_resize_depth(d, size) for d in chain])
                self._cache[key] = StackGeometry(D, self.z_a, self.p, None, None)
        return self._cache[key]

    def _cacheable(self) -> bool:
        h, w = self.size
        return h * w <= CACHE_PIXELS


def stack_geometry(depth0: np.ndarray, z_anchor: float, p: float, N: int, size=None, *,
                   device=None) -> StackGeometry:
    """The StackGeometry of an N-level DOLLY stack from level 0's z-depth.

    depth0: [H0, W0] z-depth from C_0 in metres (+inf, nan or ≤ 0 where unknown); z_anchor: z_a;
    p: the zoom factor; size: (h, w) the resolution the sampling runs at (default depth0's).
    Level 0: depth0 with its holes filled from the farther neighbour (all unknown: the anchor
    plane z_a, where the 3D stack is the 2D one). Level j: level j−1's depth forward-warped into
    C_j by (R) inverted, u_j = e + (u − e)·z/(z − δ), z_j = z − δ (δ = δ_{j−1,j}; only z_j >
    NEAR·z_a·p^−j), z-buffered (nearest wins, scatter_reduce "amin"), supersampled so no holes
    open where level j−1 saw the surface, and its disocclusions filled from the farther neighbour.
    The chain runs at depth0's resolution when that is at least size (each level then downsampled
    by the per-block median), else at size. → StackGeometry with D: [N, h, w].
    """
    z_a = float(z_anchor)
    p = float(p)
    if not (math.isfinite(z_a) and z_a > 0):
        raise ValueError(f"z_anchor: the anchor's depth must be finite and > 0, got {z_anchor!r}")
    if int(N) < 1:
        raise ValueError(f"N: need at least one level, got {N}")
    d0 = np.asarray(depth0, dtype=np.float64)
    if d0.ndim != 2 or d0.size == 0:
        raise ValueError(f"depth0: must be an [H, W] depth map, got shape {d0.shape}")
    size = d0.shape if size is None else (int(size[0]), int(size[1]))
    dev = torch.device(device) if device is not None else torch.device("cpu")
    D0 = _fill_far(torch.as_tensor(d0, device=dev), z_a)
    work = tuple(D0.shape) if (D0.shape[0] >= size[0] and D0.shape[1] >= size[1]) else size
    D0 = _resize_depth(D0, work)
    chain = [D0]
    for j in range(1, int(N)):
        d = z_a * (p ** -(j - 1) - p ** -j)
        chain.append(warp_depth(chain[-1], d, NEAR * z_a * p ** -j, fallback=z_a * p ** -j))
    chain = torch.stack(chain)
    D = chain if work == size else torch.stack([_resize_depth(c, size) for c in chain])
    return StackGeometry(D, z_a, p, d0, chain)


def warp_depth(D: torch.Tensor, delta: float, near: float, fallback: float) -> torch.Tensor:
    """A depth map seen from a camera δ closer along the centre ray: D: [h, w] → [h, w].

    Every source pixel is split into S×S samples (S·m ≥ SUPERSAMPLE with m = (z − δ)/z the local
    shrink, S ≤ MAX_SUPERSAMPLE; inverse depth interpolated within continuous surfaces), each moved
    to u' = e + (u − e)/m at depth z − δ. The nearest sample picks each pixel's surface (z-buffer,
    scatter_reduce "amin"); the pixel's depth is that surface's at the pixel centre, ζ = 1/z fitted
    as an affine function of the position over the samples of the front surface (those within
    EDGE_TOL of the nearest: exact on planes, where a bare minimum would be biased half a pixel's
    slope nearer), clamped to their range. Pixels no sample reaches (disocclusions) take the
    farther neighbour's depth (fallback where nothing lands).
    """
    h, w = D.shape
    dev = D.device
    e = torch.tensor([w / 2.0, h / 2.0], dtype=torch.float64, device=dev)
    uv = _pixel_centres(h, w, dev)                                   # [hw, 2]
    z = D.reshape(-1)
    zj = z - delta
    m = (zj / z).clamp_min(1e-12)
    # only pixels whose footprint can land in the frame (a margin of half a source pixel)
    reach = ((uv - e).abs() - 0.5).clamp_min(0.0) / m[:, None]
    keep = (zj > near) & (reach[:, 0] < w / 2.0) & (reach[:, 1] < h / 2.0)
    S = torch.clamp(torch.ceil(SUPERSAMPLE / m), 1, MAX_SUPERSAMPLE).to(torch.int64)

    def samples():
        """(target pixel [K], offset from its centre [K, 2], depth [K]) in batches."""
        for s in torch.unique(S[keep]).tolist():
            idx = torch.nonzero(keep & (S == s)).flatten()
            off = (torch.arange(s, dtype=torch.float64, device=dev) + 0.5) / s - 0.5
            oy, ox = torch.meshgrid(off, off, indexing="ij")
            offs = torch.stack([ox.reshape(-1), oy.reshape(-1)], 1)   # [s², 2]
            per = max(1, _CHUNK // (s * s))
            for k in range(0, idx.numel(), per):
                pos = (uv[idx[k:k + per], None, :] + offs[None]).reshape(-1, 2)
                zsrc = sample_depth(D, pos)
                zs = zsrc - delta
                ok = zs > near
                pos, zs, zsrc = pos[ok], zs[ok], zsrc[ok]
                tgt = e + (pos - e) * (zsrc / zs)[:, None]
                col, row = torch.floor(tgt[:, 0]).long(), torch.floor(tgt[:, 1]).long()
                inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
                pix = (row * w + col)[inside]
                centre = torch.stack([col[inside], row[inside]], 1).to(torch.float64) + 0.5
                yield pix, tgt[inside] - centre, zs[inside]

    zmin = torch.full((h * w,), math.inf, dtype=torch.float64, device=dev)
    for pix, _, zs in samples():                                      # pass 1: the z-buffer
        zmin.scatter_reduce_(0, pix, zs, reduce="amin")
    # pass 2: ζ = a + b·du + c·dv by least squares over the front surface's samples of each pixel
    acc = torch.zeros(h * w, 9, dtype=torch.float64, device=dev)
    zmax = torch.zeros(h * w, dtype=torch.float64, device=dev)
    for pix, d, zs in samples():
        front = zs <= zmin[pix] * (1.0 + EDGE_TOL)
        pix, d, zs = pix[front], d[front], zs[front]
        zeta, du, dv = 1.0 / zs, d[:, 0], d[:, 1]
        one = torch.ones_like(du)
        acc.index_add_(0, pix, torch.stack([one, du, dv, du * du, du * dv, dv * dv,
                                            zeta, zeta * du, zeta * dv], 1))
        zmax.scatter_reduce_(0, pix, zs, reduce="amax")
    n, su, sv, suu, suv, svv, sz, szu, szv = acc.unbind(1)
    A = torch.stack([torch.stack([n, su, sv], -1), torch.stack([su, suu, suv], -1),
                     torch.stack([sv, suv, svv], -1)], -2)             # [hw, 3, 3]
    b = torch.stack([sz, szu, szv], -1)
    hit = n > 0
    mean_zeta = sz / n.clamp_min(1.0)
    det = torch.linalg.det(A)
    good = hit & (det > 1e-9 * n.clamp_min(1.0) ** 3)
    a = mean_zeta.clone()
    if good.any():
        a[good] = torch.linalg.solve(A[good], b[good][..., None])[:, 0, 0]
    zfit = torch.where(a > 0, 1.0 / a.clamp_min(1e-300), zmin)
    out = torch.where(hit, torch.minimum(torch.maximum(zfit, zmin), zmax), zmin)
    return _fill_far(out.reshape(h, w), fallback)


def _pixel_centres(h: int, w: int, device) -> torch.Tensor:
    """Pixel centres (u, v) = (col + ½, row + ½) of an h×w image, row-major: [hw, 2] float64."""
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=device) + 0.5,
                          torch.arange(w, dtype=torch.float64, device=device) + 0.5, indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], 1)


def sample_depth(D: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """The depth map D: [h, w] at continuous pixel positions uv: [K, 2] → [K].

    Inverse depth interpolated bilinearly between the four surrounding pixel centres (exact on a
    plane; within half a pixel of the border extrapolated from the two outermost) when they are
    one surface (max/min ≤ 1 + EDGE_TOL), else the depth of the pixel uv falls in (an occlusion
    edge keeps its two sides). Positions outside clamp to the border pixel.
    """
    h, w = D.shape
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    x0 = torch.floor(x).clamp(0, max(w - 2, 0))
    y0 = torch.floor(y).clamp(0, max(h - 2, 0))
    fx = (x - x0).clamp(-0.5, 1.5) if w > 1 else torch.zeros_like(x)
    fy = (y - y0).clamp(-0.5, 1.5) if h > 1 else torch.zeros_like(y)
    x0, y0 = x0.long(), y0.long()
    xs = (x0, (x0 + 1).clamp_max(w - 1))
    ys = (y0, (y0 + 1).clamp_max(h - 1))
    t = torch.stack([D[ys[a], xs[b]] for a in (0, 1) for b in (0, 1)])       # [4, K]
    wt = torch.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])
    zeta = (wt / t).sum(0)
    cont = (t.max(0).values <= t.min(0).values * (1.0 + EDGE_TOL)) & (zeta > 0)
    near = D[torch.floor(uv[:, 1]).long().clamp(0, h - 1), torch.floor(uv[:, 0]).long().clamp(0, w - 1)]
    return torch.where(cont, 1.0 / zeta.clamp_min(1e-300), near)


def _fill_far(D: torch.Tensor, fallback: float) -> torch.Tensor:
    """D: [h, w] with its unknown pixels (non-finite or ≤ 0) filled from the farthest known
    neighbour, ring by ring (a disocclusion shows what lies behind); fallback where none is known."""
    D = D.to(torch.float64).clone()
    bad = ~torch.isfinite(D) | (D <= 0)
    if bad.all():
        return torch.full_like(D, float(fallback))
    while bad.any():
        known = torch.where(bad, torch.full_like(D, -math.inf), D)
        grown = F.max_pool2d(known[None, None], 3, stride=1, padding=1)[0, 0]
        fill = bad & torch.isfinite(grown)
        if not fill.any():
            break
        D = torch.where(fill, grown, D)
        bad = bad & ~fill
    return D


def _resize_depth(D: torch.Tensor, size) -> torch.Tensor:
    """A depth map D: [H, W] (finite) at size (h, w): the median of the source pixels whose centres
    fall in each target pixel (robust at edges: one surface or the other, never a mix); a smaller
    source is first upsampled by an integer factor with sample_depth. → [h, w] float64."""
    h, w = int(size[0]), int(size[1])
    H, W = D.shape
    if (H, W) == (h, w):
        return D
    if H < h or W < w:
        k = max(math.ceil(h / H), math.ceil(w / W))
        uv = _pixel_centres(H * k, W * k, D.device) / k
        D = sample_depth(D, uv).reshape(H * k, W * k)
        H, W = D.shape
    if H % h == 0 and W % w == 0:
        r, c = H // h, W // w
        blocks = D.reshape(h, r, w, c).permute(0, 2, 1, 3).reshape(h, w, r * c).sort(-1).values
        n = r * c                                             # the median (of the two middle ones)
        return 0.5 * (blocks[..., (n - 1) // 2] + blocks[..., n // 2])
    rows = torch.div(torch.arange(H, device=D.device) * h, H, rounding_mode="floor")
    cols = torch.div(torch.arange(W, device=D.device) * w, W, rounding_mode="floor")
    block = (rows[:, None] * w + cols[None, :]).reshape(-1)
    val = D.reshape(-1)
    order = torch.argsort(val)
    order = order[torch.argsort(block[order], stable=True)]     # by block, then by depth
    counts = torch.bincount(block, minlength=h * w)
    starts = torch.cumsum(counts, 0) - counts
    last = val.numel() - 1
    lo = val[order[(starts + (counts - 1).clamp_min(0) // 2).clamp_max(last)]]
    hi = val[order[(starts + counts // 2).clamp_max(last)]]
    med = 0.5 * (lo + hi)
    return torch.where(counts > 0, med, torch.full_like(med, math.inf)).reshape(h, w)


# ---------------------------------------------------------------------------------------------
# Drawing one level in another's frame

def radial_map(uv: torch.Tensor, z: torch.Tensor, delta: float, size) -> tuple[torch.Tensor, torch.Tensor]:
    """(R): pixels uv: [K, 2] at z-depths z: [K] of one level seen from a camera δ farther back
    along the centre ray (δ < 0: nearer) → (uv' [K, 2], z' = z + δ [K]); u' = e + (u − e)·z/(z + δ),
    e = (w/2, h/2) with size = (h, w)."""
    h, w = size
    e = torch.tensor([w / 2.0, h / 2.0], dtype=uv.dtype, device=uv.device)
    z2 = z + delta
    return e + (uv - e) * (z / z2)[:, None], z2


def _agree(z: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (z - ref).abs() <= OCCLUSION_TOL * ref


def _edge_depths(D: torch.Tensor, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The depths at the two edge midpoints of every pixel along one axis (axis 1: left/right,
    axis 0: top/bottom): D: [h, w] → (low edge [h, w], high edge [h, w]).

    Inside one surface (neighbours within EDGE_TOL) 1/z is the mean of the two pixels' (exact on a
    plane; the image border extrapolates it), across an occlusion edge the pixel's own depth."""
    zeta = 1.0 / D
    n = D.shape[axis]
    if n == 1:
        return D, D
    nb = zeta.narrow(axis, 1, n - 1), zeta.narrow(axis, 0, n - 1)           # (next, previous)
    mid = 0.5 * (nb[0] + nb[1])
    cont = torch.maximum(nb[0], nb[1]) <= torch.minimum(nb[0], nb[1]) * (1.0 + EDGE_TOL)
    own_hi, own_lo = zeta.narrow(axis, 0, n - 1), zeta.narrow(axis, 1, n - 1)
    hi_in = torch.where(cont, mid, own_hi)                   # high edge of pixels 0 … n−2
    lo_in = torch.where(cont, mid, own_lo)                   # low edge of pixels 1 … n−1
    # the border: ζ extrapolated half a pixel outward from the inner neighbour, when continuous
    first, second = zeta.narrow(axis, 0, 1), zeta.narrow(axis, 1, 1)
    last, before = zeta.narrow(axis, n - 1, 1), zeta.narrow(axis, n - 2, 1)
    c0 = torch.maximum(first, second) <= torch.minimum(first, second) * (1.0 + EDGE_TOL)
    c1 = torch.maximum(last, before) <= torch.minimum(last, before) * (1.0 + EDGE_TOL)
    lo0 = torch.where(c0, (1.5 * first - 0.5 * second).clamp_min(0.5 * first), first)
    hi1 = torch.where(c1, (1.5 * last - 0.5 * before).clamp_min(0.5 * last), last)
    lo = torch.cat([lo0, lo_in], axis)
    hi = torch.cat([hi_in, hi1], axis)
    return 1.0 / lo, 1.0 / hi


def _box_taps(lo: torch.Tensor, hi: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixels an interval [lo, hi) overlaps on an n-pixel axis and the overlaps:
    (index [K, T], overlap [K, T]), T = the most any interval touches; out-of-range pixels and
    float slivers get overlap 0."""
    c0 = torch.floor(lo)
    T = max(1, int(torch.ceil((hi - c0).max()).item()) if lo.numel() else 1)
    idx = c0[:, None] + torch.arange(T, dtype=lo.dtype, device=lo.device)[None]
    ov = (torch.minimum(hi[:, None], idx + 1.0) - torch.maximum(lo[:, None], idx)).clamp_min(0.0)
    idx = idx.long()
    ov = torch.where((idx >= 0) & (idx < n) & (ov > _TINY), ov, torch.zeros_like(ov))
    return idx.clamp(0, n - 1), ov


def build_warp(geo: StackGeometry, j: int, i: int) -> Warp:
    """Level j drawn in level i's frame (i ≠ j) as a Warp (float64 on geo.D's device).

    Every pixel (a level-j one for i < j, a level-i one for i > j) at its depth z maps by (R) to
    the other level, and its footprint there is the rectangle between the images of its edge
    midpoints, X(x, z_edge) = e + (x − e)·z_edge/(z_edge + δ) (edge depths: _edge_depths; for
    constant depth a square of side m = z/(z + δ) about the mapped centre, which on the anchor
    plane is zoom.resample_level's area footprint; on a slope the edges follow the surface, so
    neighbouring footprints meet instead of leaving the perspective's stretch as gaps).
    i < j (finer into coarser): a level-j pixel's weight on the level-i pixel a is the overlap area
    with a, kept where z_i = z_j + δ_ij agrees with D_i at a or at the mapped centre u_i.
    i > j (coarser into finer): a level-i pixel's weights on the level-j pixels b it overlaps are
    overlap/area (they sum to 1), kept where z_j = D_i + δ_ji agrees with D_j at b or at u_j.
    """
    h, w = geo.size
    D = geo.D
    uv = _pixel_centres(h, w, D.device)
    if i < j:
        src_map, tgt_map, delta = D[j], D[i], geo.delta(i, j)
    else:
        src_map, tgt_map, delta = D[i], D[j], geo.delta(j, i)
    z = src_map.reshape(-1)
    u2, z2 = radial_map(uv, z, delta, (h, w))
    (zl, zr), (zt, zb) = _edge_depths(src_map, 1), _edge_depths(src_map, 0)
    col, row = uv[:, 0] - 0.5, uv[:, 1] - 0.5

    def X(x, ze, c):
        return c + (x - c) * ze / (ze + delta)
    x_lo, x_hi = X(col, zl.reshape(-1), w / 2.0), X(col + 1.0, zr.reshape(-1), w / 2.0)
    y_lo, y_hi = X(row, zt.reshape(-1), h / 2.0), X(row + 1.0, zb.reshape(-1), h / 2.0)
    x_hi, y_hi = torch.maximum(x_hi, x_lo), torch.maximum(y_hi, y_lo)
    z_here = sample_depth(tgt_map, u2)                       # the target's depth at the mapped centre
    tgt = tgt_map.reshape(-1)
    # most footprints touch ≤ 2×2 pixels; the few wider ones (oblique surfaces) in a second group
    narrow = ((x_hi - torch.floor(x_lo)) <= 2.0) & ((y_hi - torch.floor(y_lo)) <= 2.0)
    parts = []
    for group in (torch.nonzero(narrow).flatten(), torch.nonzero(~narrow).flatten()):
        if group.numel() == 0:
            continue
        ix, ox = _box_taps(x_lo[group], x_hi[group], w)
        iy, oy = _box_taps(y_lo[group], y_hi[group], h)
        T = ix.shape[1] * iy.shape[1]
        tap = (iy[:, :, None] * w + ix[:, None, :]).reshape(-1, T)                 # [K, T]
        wt = (oy[:, :, None] * ox[:, None, :]).reshape(-1, T)
        if i > j:
            area = ((x_hi - x_lo) * (y_hi - y_lo))[group].clamp_min(1e-300)
            wt = wt / area[:, None]
        seen = _agree(z2[group, None], tgt[tap]) | _agree(z2[group], z_here[group])[:, None]
        keep = seen & (wt > 0)
        here = group[:, None].expand(-1, T)
        parts.append((here[keep], tap[keep], wt[keep]))
    here, tap, wk = (torch.cat(t) for t in zip(*parts))
    src, dst = (here, tap) if i < j else (tap, here)
    cov = torch.zeros(h * w, dtype=torch.float64, device=D.device).index_add_(0, dst, wk)
    var = torch.zeros(h * w, dtype=torch.float64, device=D.device).index_add_(0, dst, wk * wk)
    return Warp(src, dst, wk, cov.reshape(h, w), var.reshape(h, w))


def warp(geo: StackGeometry, j: int, i: int, device=None, dtype=torch.float32) -> Warp:
    """build_warp(geo, j, i) on device in dtype, cached on geo (latent sizes ≤ zoom.CACHE_PIXELS)."""
    device = torch.device(device) if device is not None else geo.D.device
    key = ("warp", j, i, str(device), dtype)
    hit = geo._cache.get(key)
    if hit is not None:
        return hit
    wp = build_warp(geo, j, i)
    wp = Warp(wp.src.to(device), wp.dst.to(device), wp.w.to(device, dtype), wp.cov.to(device, dtype),
              wp.var.to(device, dtype))
    if geo._cacheable():
        geo._cache[key] = wp
    return wp


def resample_3d(x: torch.Tensor, geo: StackGeometry, j: int, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Level j drawn in the frame of level i through the level cameras: zoom.resample_level in 3D.

    x: [..., h, w] (level j) → (img [..., h, w], cov [h, w], var [h, w]):
      img = Σ_k w_k x[src_k] per level-i pixel (the area integral of level j's visible samples,
            0 where it sees nothing of them), cov = Σ w (coverage: 1 inside a fully seen footprint,
            0 where hidden/disoccluded or outside), var = Σ w² (img's variance for i.i.d. N(0, 1) x).
    i < j: level j's pixels splatted as squares of side m (build_warp); i > j: level i's pixel
    footprints area-sampled in level j. i = j: (x, 1, 1).
    """
    h, w = x.shape[-2:]
    if (h, w) != geo.size:
        raise ValueError(f"resample_3d: level size {(h, w)} is not the geometry's {geo.size}")
    if i == j:
        one = torch.ones(h, w, device=x.device, dtype=x.dtype)
        return x, one, one
    wp = warp(geo, j, i, x.device, x.dtype)
    flat = x.reshape(-1, h * w)
    img = flat.new_zeros(flat.shape).index_add(1, wp.dst, flat[:, wp.src] * wp.w)
    return img.reshape(x.shape), wp.cov, wp.var


def _seen_average(img: torch.Tensor, cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(img/cov where cov ≥ SEEN else 0, seen [h, w] bool)."""
    seen = cov >= SEEN
    return torch.where(seen, img / cov.clamp_min(1e-12), torch.zeros_like(img)), seen


# ---------------------------------------------------------------------------------------------
# Rendering the zoom stack: Π_image, Π_noise

def pi_image_3d(L: torch.Tensor, geo: StackGeometry) -> torch.Tensor:
    """Π_image(L; i) for every level through the level cameras, finest first: [N, C, h, w] → same.

    Π_image(L; i) = (1 − M_i) ⊙ L_i + M_i ⊙ R_{i+1→i}(Π_image(L; i+1)) / cov, M_i = [cov ≥ SEEN],
    R = resample_3d: level i+1's visible surface, averaged over each level-i pixel it covers,
    replaces level i there; elsewhere (outside C_{i+1}'s view, or hidden from it) L_i stays.
    The result is consistent: level i drawn into level i−1's frame is level i−1 where it is seen.
    """
    out = [L[-1]]
    for i in range(L.shape[0] - 2, -1, -1):
        img, cov, _ = resample_3d(out[-1], geo, i + 1, i)
        inside = cov >= SEEN
        out.append(torch.where(inside, img / cov.clamp_min(1e-12), L[i]))
    return torch.stack(out[::-1])


def pi_noise_3d(E: torch.Tensor, geo: StackGeometry) -> torch.Tensor:
    """Π_noise(E; i) for every level through the level cameras, exactly N(0, 1) per pixel.

    E: [N, C, h, w] i.i.d. N(0, 1) → [N, C, h, w]. As zoom.pi_noise with R = resample_3d:
        Π_noise(E; i) = Σ_j w_j ⊙ R_{j→i}(E_j) / sqrt(Σ_j w_j² ⊙ Σ_k w_jk²),  w_j = Π_{k>j}(1 − cov_k)₊
    over j = i … i + noise_depth: every output pixel is a linear combination of independent
    N(0, 1) entries (each level-j sample enters a level-i pixel once) whose squared weights sum
    to 1. (1 − cov)₊ clamps the overlap of neighbouring splats (cov > 1 on slopes) at 0.
    """
    N = E.shape[0]
    h, w = E.shape[-2:]
    out_all = []
    for i in range(N):
        last = min(N, i + 1 + noise_depth(min(h, w), geo.p))
        out = E[i].clone()
        var = torch.ones(h, w, device=E.device, dtype=E.dtype)
        for j in range(i + 1, last):
            img, cov, v = resample_3d(E[j], geo, j, i)
            keep = (1.0 - cov).clamp(0.0, 1.0)
            out = out * keep + img
            var = var * keep ** 2 + v
        out_all.append(out / var.sqrt())
    return torch.stack(out_all)


# ---------------------------------------------------------------------------------------------
# Multi-resolution blending

def _band_masks_3d(seen: torch.Tensor, k0: torch.Tensor, q: int, D: int) -> list[torch.Tensor]:
    """zoom._band_masks with a per-pixel first band: seen, k0: [M, h, w] → [M, 1, h/q^k, w/q^k] each.

    Band k at a pixel is observed when every pixel of its parent block (q^(k+1); q^D for G_D) is
    seen and k ≥ the largest k0 in that block (the observation carries no detail finer than its
    own pixels, which the local magnification sets)."""
    s = seen.to(k0.dtype)
    masks = []
    for k in range(D + 1):
        r = q ** (k + 1) if k < D else q ** D
        full = _box_down(s, r) >= _FULL
        fine = F.max_pool2d(k0[:, None], r)[:, 0] <= k if r > 1 else k0 <= k
        ok = (full & fine).to(k0.dtype)
        masks.append((_nearest_up(ok, q) if k < D else ok)[:, None])
    return masks


def _blend_weights_3d(geo: StackGeometry, i: int, window: tuple, q: int, D: int, device, dtype,
                      covs: Sequence[torch.Tensor]) -> tuple:
    """The band masks of level i's blend over the levels `window`, stacked, and their sums:
    ((m_k [M, 1, h_k, w_k], Σ_j m_jk clamped) for every band k), cached on geo.

    A coarser level j < i observes band k of a level-i pixel from k0 = ⌈log_q(1/m')⌉ on, m' =
    D_i/(D_i + δ_ji) the local shrink (1/m' level-i pixels per level-j pixel; p^(i−j) on the anchor
    plane: zoom._coarse_k0); a finer level (or i itself) every band, where it fully covers the block.
    covs: each window level's coverage in level i's frame (resample_3d's cov) [h, w]."""
    key = ("blend", i, window, str(device), dtype, q, D)
    hit = geo._cache.get(key)
    if hit is not None:
        return hit
    h, w = geo.size
    seens, k0s = [], []
    for j, cov in zip(window, covs):
        seens.append(cov >= SEEN)
        if j < i:
            Di = geo.D[i]
            mag = (Di + geo.delta(j, i)) / Di                     # 1/m' ≥ 1 (float64)
            k0 = torch.ceil(torch.log(mag) / math.log(q) - 1e-9).clamp_min(0.0)
            k0s.append(k0.to(device, dtype))
        else:
            k0s.append(torch.zeros(h, w, device=device, dtype=dtype))
    masks = _band_masks_3d(torch.stack(seens), torch.stack(k0s), q, D)
    out = tuple((m, m.sum(0).clamp_min(1e-12)) for m in masks)
    if geo._cacheable():
        geo._cache[key] = out
    return out


def blend_3d(xhat: torch.Tensor, geo: StackGeometry) -> torch.Tensor:
    """Multi-resolution blending through the level cameras: xhat: [N, C, h, w] → L: [N, C, h, w].

    For each level i, every level j in its window (zoom.blend_window) is drawn in level i's frame
    (resample_3d, averaged over what it covers: x̂_j→i = img/cov where cov ≥ SEEN) and split into
    Laplacian bands; each band is averaged over the levels that observe it,
        B_k(L_i) = Σ_j m_jk B_k(x̂_j → i) / Σ_j m_jk,
    m_jk = 1 where x̂_j→i is seen over the whole parent block and, for a coarser j, where band k is
    no finer than its local magnification allows (_blend_weights_3d: the first band from the local
    shrink m' of every pixel, the largest over the block; per pixel, not one per level).
    On the anchor plane this is zoom.blend exactly (integer-aligned p).
    """
    N, C, h, w = xhat.shape
    q, D = pyramid_spec(h, w, geo.p)
    coarse, fine = blend_window(h, w, geo.p)
    out = []
    for i in range(N):
        window = tuple(range(max(0, i - coarse), min(N, i + fine + 1)))
        drawn = [resample_3d(xhat[j], geo, j, i) for j in window]                # (img, cov, var)
        obs = [xhat[j] if j == i else _seen_average(img, cov)[0] for j, (img, cov, _) in zip(window, drawn)]
        weights = _blend_weights_3d(geo, i, window, q, D, xhat.device, xhat.dtype, [d[1] for d in drawn])
        bands = laplacian_pyramid(torch.stack(obs), q, D)
        blended = [(m * band).sum(0) / m_sum for band, (m, m_sum) in zip(bands, weights)]
        out.append(collapse_pyramid(blended, q))
    return torch.stack(out)


def consistency_error_3d(L: torch.Tensor, geo: StackGeometry) -> torch.Tensor:
    """Per-pair cross-level error: [N−1], entry i−1 = mean |L_{i−1} − R_{i→i−1}(L_i)/cov| over the
    level-(i−1) pixels level i is seen in (cov ≥ SEEN). L: [N, C, h, w]. 0 for a consistent stack
    (pi_image_3d's output); zoom.consistency_error on the anchor plane (integer-aligned p)."""
    errs = []
    for i in range(1, L.shape[0]):
        img, cov, _ = resample_3d(L[i], geo, i, i - 1)
        avg, seen = _seen_average(img, cov)
        d = (avg - L[i - 1]).abs() * seen
        errs.append(d.sum() / (seen.sum() * L.shape[1]).clamp_min(1))
    return torch.stack(errs) if errs else torch.zeros(0, device=L.device)


# ---------------------------------------------------------------------------------------------
# Photograph-conditioned zoom in 3D (level 0 is the photograph's camera in both modes)

def photo_loss_3d(images: torch.Tensor, levels: Sequence[int], photo: torch.Tensor, mask: torch.Tensor,
                  geo: StackGeometry) -> torch.Tensor:
    """zoom.photo_loss with level i drawn into level 0's frame by resample_3d (where it is seen).

    images: [M, 3, H, W] decoded levels `levels`; photo: [3, H, W]; mask: [H, W]; geo at (H, W)."""
    loss = images.new_zeros(())
    for img, i in zip(images, levels):
        shrunk, seen = _seen_average(*resample_3d(img, geo, i, 0)[:2])
        wgt = mask * seen
        loss = loss + (wgt * (shrunk - photo) ** 2).sum() / (wgt.sum() * 3).clamp_min(1)
    return loss


def resample_3d_adjoint(y: torch.Tensor, geo: StackGeometry, j: int, i: int) -> torch.Tensor:
    """The transpose of resample_3d(·, geo, j, i)'s img: y: [..., h, w] in level i's frame →
    [..., h, w] in level j's, out[src_k] += w_k·y[dst_k] (a gradient's way back)."""
    h, w = y.shape[-2:]
    if i == j:
        return y
    wp = warp(geo, j, i, y.device, y.dtype)
    flat = y.reshape(-1, h * w)
    return flat.new_zeros(flat.shape).index_add(1, wp.src, flat[:, wp.dst] * wp.w).reshape(y.shape)


def hold_to_photo_3d(x0: torch.Tensor, levels: Sequence[int], z_photo: torch.Tensor, m_photo: torch.Tensor,
                     geo: StackGeometry, weight: float) -> torch.Tensor:
    """zoom.hold_to_photo through the level cameras: one Jacobi-preconditioned gradient step on
    ℓ_i = ½ ‖m ⊙ (S_i x̂_i − z_photo)‖² per held level, S_i x = R_{i→0}(x)/cov (resample_3d: level i
    averaged over each level-0 pixel where seen),
        x̂_i ← x̂_i + w · S_iᵀ P (m ⊙ seen ⊙ (z_photo − S_i x̂_i)), P = diag(S_i S_iᵀ)⁻¹ = cov²/var,
    which on the anchor plane is zoom.hold_to_photo's residual enlarged back by p^i exactly.
    x0: [N, C, h, w]; z_photo: [C, h, w]; m_photo: [h, w]; weight w ∈ [0, 1]."""
    out = x0.clone()
    for i in levels:
        img, cov, var = resample_3d(x0[i], geo, i, 0)
        shrunk, seen = _seen_average(img, cov)
        q = m_photo * seen * (z_photo - shrunk) * (cov / var.clamp_min(1e-12))   # P·resid/cov
        out[i] = x0[i] + weight * resample_3d_adjoint(torch.where(seen, q, torch.zeros_like(q)), geo, i, 0)
    return out


def check_geometry(geometry, N: int, p: float) -> StackGeometry:
    """geometry if it describes an N-level stack at zoom p, else ValueError naming the field."""
    if not isinstance(geometry, StackGeometry):
        raise ValueError(f"geometry: must be a zoom3d.StackGeometry, got {type(geometry).__name__}")
    if geometry.N != N:
        raise ValueError(f"geometry: has {geometry.N} levels, the stack {N}")
    if abs(geometry.p - float(p)) > 1e-9:
        raise ValueError(f"geometry: built for zoom factor {geometry.p:g}, the stack's is {p:g}")
    return geometry
