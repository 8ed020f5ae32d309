"""Generative Powers of Ten (Wang et al. 2023) in Stable Diffusion latent space.

The zoom stack  L = (L_0, …, L_{N−1}),  every L_i: [C, H, W] (latents or pixels), level i at zoom p^i:
level i shows the centre 1/p^i of level 0, zoomed about the image centre (``cameras.zoom_level_camera``).
A level-j pixel u maps into level i < j at  u_i = c + (u − c) / p^(j−i),  c = (W/2, H/2).

Everything here is a pure function over torch tensors, except ``paint_zoom_stack`` (the pipeline's
entry point), which runs the joint sampling loop top to bottom:

    E ~ N(0, I)^N ;  x_T,i = Π_noise(E; i)
    for t = T … 1:
        ε_i   = ε_θ(x_t,i; t, ∅) + w (ε_θ(x_t,i; t, y_i) − ε_θ(x_t,i; t, ∅))         (CFG, per level prompt y_i)
        x̂_i   = (x_t,i − √(1−ᾱ_t) ε_i) / √ᾱ_t                                     (predicted clean level)
        x̂_i  ← held to the photograph's latent on the held levels (a few gradient steps)
        L     = Blend(x̂_0 … x̂_{N−1})                                              (multi-resolution blending)
        x_t−1,i = DDPM posterior μ̃(x_t,i, Π_image(L; i)) + σ̃_t Π_noise(E'; i)     (or DDIM)
    decode every level with the VAE; Blend + Π_image once more in pixels → exactly consistent levels.

Resampling between levels is exact area averaging: for integer p on aligned grids it is an r×r box
average (fast path, avg_pool), otherwise separable area-overlap matrices with per-pixel coverage.

This is the LENS stack (every level a longer lens at level 0's pose). DOLLY levels (painted from
cameras moved toward the anchor) need the 3D stack, zoom3d: the same loop with a per-pixel shrink
from depth and occlusion (paint_zoom_stack's geometry=zoom3d.StackGeometry).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .wire.names import MAX_LEVELS

Progress = Callable[[str, int, int, str], None]

MIN_FACTOR, MAX_FACTOR = 1.0, 8.0
# The zoom between two painted levels is at most MAX_STEP (painted_levels): between levels i and
# i + 1 a frame shows level i magnified up to the step around level i + 1, so a step of p = 4
# magnified level 0 2× over three quarters of the frame half way (demo, true depth: 27.9 dB against
# the true world there; painted at steps of 2, the same dive's worst frame is 29.9 dB).
MAX_STEP = 2.0
# Levels up to this many pixels (latents: 64² for 512² images) keep their resampling and blending
# geometry cached between calls (every denoising step repeats it); the one pixel-space pass at the
# end computes its own, so the cache stays a few MB.
CACHE_PIXELS = 128 * 128
_FULL = 1.0 - 1e-6  # coverage counted as full


# ---------------------------------------------------------------------------------------------
# Validation

def substeps(factor: float, levels: int) -> int:
    """m: the levels painted per zoom factor p the user asked, the least m with p^(1/m) ≤ MAX_STEP
    (p ≤ 2: 1; p ≤ 4: 2; p ≤ 8: 3); 1 for a single level (its dive zooms p× past it, into no
    finer level)."""
    p = check_factor(factor)
    if int(levels) <= 1:
        return 1
    return max(1, math.ceil(math.log(p) / math.log(MAX_STEP) - 1e-9))


@dataclass(frozen=True)
class PaintedLevels:
    """The levels a zoom paints for the user's N prompts at factor p: M = (N − 1)·m + 1 levels at
    factor q = p^(1/m) (m = substeps), painted level j = k·m + r (0 ≤ r < m) between the user's
    levels k and k + 1 at zoom p^(k + r/m), with prompt k. So painted level k·m is the user's
    level k, and the dive still ends on the user's deepest level."""

    prompts: list
    factor: float
    substeps: int

    def __len__(self) -> int:
        return len(self.prompts)


def painted_levels(prompts: Sequence[str], factor: float) -> PaintedLevels:
    """The levels to paint for the user's prompts at factor p (PaintedLevels)."""
    p = check_factor(factor)
    prompts = list(prompts)
    m = substeps(p, len(prompts))
    if m == 1:
        return PaintedLevels(prompts, p, 1)
    out = [prompts[j // m] for j in range((len(prompts) - 1) * m + 1)]
    return PaintedLevels(out, p ** (1.0 / m), m)


def check_factor(factor) -> float:
    """p as a float in (1, 8], or ValueError naming the field."""
    try:
        p = float(factor)
    except (TypeError, ValueError):
        raise ValueError(f"factor: the zoom factor must be a number in (1, 8], got {factor!r}") from None
    if not (MIN_FACTOR < p <= MAX_FACTOR) or not math.isfinite(p):
        raise ValueError(f"factor: the zoom factor p must be in (1, 8], got {factor!r}")
    return p


# The most levels a zoom paints: MAX_LEVELS prompts at the largest factor
MAX_PAINTED_LEVELS = (MAX_LEVELS - 1) * substeps(MAX_FACTOR, MAX_LEVELS) + 1


def _int_factor(p: float) -> Optional[int]:
    """p as an int when it is one (2.0 → 2), else None."""
    return int(round(p)) if abs(p - round(p)) < 1e-9 else None


# ---------------------------------------------------------------------------------------------
# Resampling one level into another level's frame

@lru_cache(maxsize=512)
def _area_weights_np(n_out: int, n_in: int, s: float) -> np.ndarray:
    """Area-overlap weights A: [n_out, n_in] along one axis.

    The input field is s times smaller than the output field (s = p^(j−i): s > 1 shrinks a finer
    level into a coarser one, s < 1 enlarges a coarser one), both centred. Input pixel b covers the
    output interval c_out + ([b, b+1) − c_in)·g with g = n_out / (n_in s); A[a, b] = |[a, a+1) ∩ that|.
    Row sums are the coverage of each output pixel (1 inside the input's footprint).
    """
    g = n_out / (n_in * s)
    b = np.arange(n_in, dtype=np.float64)
    lo = n_out / 2.0 + (b - n_in / 2.0) * g
    hi = lo + g
    a = np.arange(n_out, dtype=np.float64)[:, None]
    A = np.clip(np.minimum(a + 1.0, hi[None]) - np.maximum(a, lo[None]), 0.0, None)
    A[A < 1e-12] = 0.0
    return A


def _area_weights(n_out: int, n_in: int, s: float, device, dtype) -> torch.Tensor:
    return torch.as_tensor(_area_weights_np(n_out, n_in, round(float(s), 12)), device=device, dtype=dtype)


@dataclass(frozen=True)
class _Resampling:
    """What resample_level needs of one (H, W, s) on one device, computed once: the area matrices
    Ay [H, H], Ax [W, W], cov and var [H, W], and the rows/columns the matrices touch."""
    Ay: torch.Tensor
    Ax: torch.Tensor
    cov: torch.Tensor
    var: torch.Tensor
    support: tuple


@lru_cache(maxsize=128)
def _resampling(H: int, W: int, s: float, device: torch.device, dtype: torch.dtype) -> _Resampling:
    """The geometry of drawing an H×W level s times smaller (s > 1) or larger into another, cached:
    every denoising step blends the same shapes, and on a GPU each small tensor op is a launch."""
    Ay_np, Ax_np = _area_weights_np(H, H, s), _area_weights_np(W, W, s)
    Ay = torch.as_tensor(Ay_np, device=device, dtype=dtype)
    Ax = torch.as_tensor(Ax_np, device=device, dtype=dtype)
    cov = Ay.sum(1)[:, None] * Ax.sum(1)[None, :]
    var = (Ay ** 2).sum(1)[:, None] * (Ax ** 2).sum(1)[None, :]
    return _Resampling(Ay, Ax, cov, var, (*_support_np(Ay_np), *_support_np(Ax_np)))


def _support_np(A: np.ndarray) -> tuple[slice, slice]:
    """The contiguous row and column ranges where A: [n_out, n_in] is non-zero."""
    nz = A > 0
    rows, cols = np.flatnonzero(nz.any(1)), np.flatnonzero(nz.any(0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _aligned(n: int, r: int, down: bool) -> bool:
    """True when an integer zoom r between two n-pixel levels lands on whole pixels."""
    m = n // r
    return n % r == 0 and m >= 1 and (n - m) % 2 == 0


def resample_level(x: torch.Tensor, rel: int, p: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Level j drawn in the frame of level i = j − rel, by exact area averaging.

    x: [..., H, W] (level j) → (img [..., H, W], cov [H, W], var [H, W]):
      img = A_y x A_xᵀ  (the area integral of x over each level-i pixel, zero outside the footprint),
      cov = coverage of each level-i pixel by level j's field (1 inside, 0 outside, fractional at edges),
      var = Σ_b A² per pixel (the variance of img when x is i.i.d. N(0, 1)).
    rel > 0: a finer level, shrunk by r = p^rel and landing in the centre (integer aligned: r×r box
    average). rel < 0: a coarser level, its centre 1/r crop enlarged by r (integer aligned: nearest).
    """
    H, W = x.shape[-2:]
    if rel == 0:
        one = torch.ones(H, W, device=x.device, dtype=x.dtype)
        return x, one, one
    s = float(p) ** rel
    geometry = _resampling if H * W <= CACHE_PIXELS else _resampling.__wrapped__
    geo = geometry(int(H), int(W), round(s, 12), x.device, x.dtype)   # cached: never modify it
    Ay, Ax, cov, var = geo.Ay, geo.Ax, geo.cov, geo.var
    q = _int_factor(p)
    if q is not None:
        r = q ** abs(rel)
        if _aligned(H, r, rel > 0) and _aligned(W, r, rel > 0):
            mh, mw = H // r, W // r
            oh, ow = (H - mh) // 2, (W - mw) // 2
            if rel > 0:  # L_j shrunk: exact r×r average pasted into the centre
                img = x.new_zeros(x.shape)
                img[..., oh:oh + mh, ow:ow + mw] = _box_down(x, r)
            else:        # the centre crop of the coarser L_j, each pixel repeated r×r
                img = _nearest_up(x[..., oh:oh + mh, ow:ow + mw], r)
            return img, cov, var
    # general case: separable area matrices, restricted to the rows/columns they touch
    ry, cy, rx, cx = geo.support
    img = x.new_zeros(x.shape)
    img[..., ry, rx] = Ay[ry, cy] @ x[..., cy, cx] @ Ax[rx, cx].T
    return img, cov, var


def _box_down(x: torch.Tensor, r: int) -> torch.Tensor:
    """Exact r×r block average: x: [..., H, W] → [..., H/r, W/r]."""
    if r == 1:
        return x
    shape = x.shape
    y = F.avg_pool2d(x.reshape(-1, 1, shape[-2], shape[-1]), r)
    return y.reshape(*shape[:-2], *y.shape[-2:])


def _nearest_up(x: torch.Tensor, r: int) -> torch.Tensor:
    """Each pixel repeated r×r: x: [..., h, w] → [..., h·r, w·r]."""
    if r == 1:
        return x
    *lead, h, w = x.shape        # one copy (two repeat_interleaves were two: kernel launches on a GPU)
    return x[..., :, None, :, None].expand(*lead, h, r, w, r).reshape(*lead, h * r, w * r)


# ---------------------------------------------------------------------------------------------
# Rendering the zoom stack: Π_image, Π_noise

def pi_image(L: torch.Tensor, i: int, p: float) -> torch.Tensor:
    """Π_image(L; i): level i with every finer level j > i shrunk by p^(j−i) and pasted into its centre.

    L: [N, C, H, W] → [C, H, W].  Π_image(L; i) = (1 − M_i) ⊙ L_i + M_i ⊙ D_p(Π_image(L; i+1)),
    where D_p is the area average into the centre (an exact p×p average for integer p) and M_i the
    pixels it covers (non-integer p: covered at least half, averaged over the covered part);
    unrolled this pastes D_{p^(j−i)}(L_j) for every j > i, finest on top, down to the finest level.
    Idempotent: Π_image of a consistent stack returns it.
    """
    return pi_image_all(L[i:], p)[0]


def pi_image_all(L: torch.Tensor, p: float) -> torch.Tensor:
    """Π_image(L; i) for every level i at once, finest first: L: [N, C, H, W] → [N, C, H, W].

    The result is consistent: the centre of level i−1 is exactly level i shrunk by p.
    """
    out = [L[-1]]
    for i in range(L.shape[0] - 2, -1, -1):
        img, cov, _ = resample_level(out[-1], 1, p)
        inside = cov >= 0.5
        out.append(torch.where(inside, img / cov.clamp_min(1e-12), L[i]))
    return torch.stack(out[::-1])


def noise_depth(n: int, p: float) -> int:
    """How many finer levels Π_noise pastes: while their footprint keeps ≥ 1 whole pixel of n.

    Integer p: the footprint n/p^m must be whole and centred on pixel boundaries (exact r×r
    averages); otherwise while n/p^m ≥ 1. Deeper levels would land inside a single pixel.
    """
    q = _int_factor(p)
    m = 0
    while True:
        if q is not None:
            r = q ** (m + 1)
            if not _aligned(n, r, True):
                return m
        elif n / p ** (m + 1) < 1.0:
            return m
        m += 1


def pi_noise(E: torch.Tensor, i: int, p: float) -> torch.Tensor:
    """Π_noise(E; i): the zoom stack's noise seen from level i, exactly N(0, I) per pixel.

    E: [N, C, H, W] i.i.d. N(0, 1) → [C, H, W]. As Π_image, but the pasted noise is scaled to unit
    variance: an r×r average of i.i.d. noise has variance 1/r², so the integer case pastes
    r · avg_r(E_j) (exactly N(0, 1), and the centre of Π_noise(E; i) is p · avg_p(Π_noise(E; i+1))
    over the levels both include). In general
        Π_noise(E; i) = Σ_j w_j ⊙ A_j(E_j) / sqrt(Σ_j w_j² ⊙ Σ_b A_j²),  w_j = M_j Π_{k>j}(1 − M_k)
    which is a unit-variance Gaussian at every pixel. Levels j ≤ i + noise_depth(min(H, W), p).
    """
    H, W = E.shape[-2:]
    last = min(E.shape[0], i + 1 + noise_depth(min(H, W), p))
    out = E[i].clone()
    var = torch.ones(H, W, device=E.device, dtype=E.dtype)
    for j in range(i + 1, last):
        img, cov, v = resample_level(E[j], j - i, p)
        keep = 1.0 - cov
        out = out * keep + img
        var = var * keep ** 2 + v
    return out / var.sqrt()


def pi_noise_all(E: torch.Tensor, p: float) -> torch.Tensor:
    """Π_noise(E; i) for every level: E: [N, C, H, W] → [N, C, H, W]."""
    return torch.stack([pi_noise(E, i, p) for i in range(E.shape[0])])


# ---------------------------------------------------------------------------------------------
# Multi-resolution blending

def pyramid_spec(H: int, W: int, p: float) -> tuple[int, int]:
    """(q, D): the Laplacian pyramid's factor and depth for H×W levels at zoom p.

    q = p for integer p dividing H and W (pyramid blocks align with the zoom footprints, so
    blending is exact on consistent stacks), else q = 2. D = how often q divides both sizes.
    """
    ip = _int_factor(p)
    q = ip if ip is not None and H % ip == 0 and W % ip == 0 else 2
    D = 0
    while H % q ** (D + 1) == 0 and W % q ** (D + 1) == 0:
        D += 1
    return q, D


def laplacian_pyramid(x: torch.Tensor, q: int, D: int) -> list[torch.Tensor]:
    """Bands of x: [..., H, W] → [B_0 … B_{D−1}, G_D], B_k = G_k − up_q(G_{k+1}), G_{k+1} = avg_q(G_k).

    B_k: [..., H/q^k, W/q^k]. Box average down, nearest up (so avg_q(B_k) = 0 exactly).
    """
    bands, g = [], x
    for _ in range(D):
        g_next = _box_down(g, q)
        bands.append(g - _nearest_up(g_next, q))
        g = g_next
    return bands + [g]


def collapse_pyramid(bands: Sequence[torch.Tensor], q: int) -> torch.Tensor:
    """The inverse of laplacian_pyramid: x = B_0 + up(B_1 + up(… + up(G_D)))."""
    x = bands[-1]
    for b in reversed(bands[:-1]):
        x = b + _nearest_up(x, q)
    return x


@lru_cache(maxsize=64)
def _blend_weights(H: int, W: int, p: float, rels: tuple, q: int, D: int, device: torch.device,
                   dtype: torch.dtype) -> tuple:
    """The band masks of one level's blend, stacked, and their sums, cached per shape and window:
    rels = (j − i for every level j in the window) → ((m_k [M, 1, h_k, w_k], Σ_j m_jk clamped)
    for every band k). They depend only on the geometry, which every denoising step repeats."""
    masks = []
    for rel in rels:
        if rel == 0:
            cov = torch.ones(H, W, device=device, dtype=dtype)
        else:
            geometry = _resampling if H * W <= CACHE_PIXELS else _resampling.__wrapped__
            cov = geometry(H, W, round(float(p) ** rel, 12), device, dtype).cov
        masks.append(_band_masks(cov[None], q, D, _coarse_k0(-rel, p, q) if rel < 0 else 0))
    out = []
    for k in range(D + 1):
        m = torch.cat([mk[k] for mk in masks])                      # [M, 1, h_k, w_k]
        out.append((m, m.sum(0).clamp_min(1e-12)))
    return tuple(out)


def _band_masks(cov: torch.Tensor, q: int, D: int, k0: int) -> list[torch.Tensor]:
    """Where an observation with coverage cov: [M, H, W] sees each band: [M, 1, H/q^k, W/q^k] each.

    Band k at a pixel is observed when its parent block (q^(k+1) pixels; q^D for the top G_D) is
    fully covered and k ≥ k0 (a coarser level carries no detail finer than its own pixels).
    """
    masks = []
    for k in range(D + 1):
        if k < D:
            full = _nearest_up((_box_down(cov, q ** (k + 1)) >= _FULL).to(cov.dtype), q)
        else:
            full = (_box_down(cov, q ** D) >= _FULL).to(cov.dtype)
        masks.append(full[:, None] * float(k >= k0))
    return masks


def blend_window(H: int, W: int, p: float) -> tuple[int, int]:
    """(coarser, finer): how many levels on each side take part in a level's blend.

    The Laplacian depth limit: a level m steps coarser observes only bands of blocks ≥ p^m pixels,
    so it counts while p^m ≤ q^D (and, for integer p, while level i's field lands on whole pixels
    of it); a level m steps finer counts while its footprint min(H, W)/p^m
    still holds a whole parent block (≥ q pixels). Deeper stacks are blended in these overlapping
    windows, level by level, so consistency carries through the whole stack.
    """
    q, D = pyramid_spec(H, W, p)
    ip = _int_factor(p)
    coarse = 0
    while _coarse_k0(coarse + 1, p, q) <= D and (
            ip is None or (_aligned(H, ip ** (coarse + 1), False) and _aligned(W, ip ** (coarse + 1), False))):
        coarse += 1
    fine = 0
    while min(H, W) / p ** (fine + 1) >= q:
        fine += 1
    return coarse, fine


def _coarse_k0(m: int, p: float, q: int) -> int:
    """First band a level m steps coarser observes: the smallest k with q^k ≥ p^m."""
    return max(0, math.ceil(m * math.log(p) / math.log(q) - 1e-9))


def blend(xhat: torch.Tensor, p: float) -> torch.Tensor:
    """Multi-resolution blending of per-level predictions: xhat: [N, C, H, W] → L: [N, C, H, W].

    For each level i, every level j in its window is drawn in level i's frame (finer ones shrunk
    into the centre, coarser ones' centres enlarged) and split into Laplacian bands; each band is
    averaged over the levels that observe it,
        B_k(L_i) = Σ_j m_jk B_k(x̂_j → i) / Σ_j m_jk,
    so low frequencies agree across levels and high frequencies come from the finest levels that
    see them. On a consistent stack (x̂_{i−1}'s centre = x̂_i shrunk by p) it returns the stack.
    """
    N, C, H, W = xhat.shape
    q, D = pyramid_spec(H, W, p)
    coarse, fine = blend_window(H, W, p)
    out = []
    for i in range(N):
        window = range(max(0, i - coarse), min(N, i + fine + 1))
        obs = [resample_level(xhat[j], j - i, p)[0] for j in window]
        weights = (_blend_weights if H * W <= CACHE_PIXELS else _blend_weights.__wrapped__)(
            H, W, float(p), tuple(j - i for j in window), q, D, xhat.device, xhat.dtype)
        bands = laplacian_pyramid(torch.stack(obs), q, D)          # [M, C, h_k, w_k] per band
        blended = [(m * band).sum(0) / m_sum for band, (m, m_sum) in zip(bands, weights)]
        out.append(collapse_pyramid(blended, q))
    return torch.stack(out)


def consistency_error(L: torch.Tensor, p: float, size: Optional[int] = None) -> torch.Tensor:
    """Per-pair cross-level error: [N−1], entry i−1 = mean |crop(L_{i−1}) − D_p(L_i)| over the footprint.

    L: [N, C, H, W]. crop(L_{i−1}) is its centre 1/p (the pixels fully covered by level i) and
    D_p(L_i) level i shrunk by p into it. size: also average both down to blocks of `size`
    pixels first (integer) to compare only coarse structure. 0 for a consistent stack.
    """
    errs = []
    for i in range(1, L.shape[0]):
        img, cov, _ = resample_level(L[i], 1, p)
        full = cov >= _FULL
        d = (img - L[i - 1]).abs() * full
        if size:
            d = _box_down((img - L[i - 1]) * full, size).abs()
            full = _box_down(full.to(d.dtype), size) >= _FULL
            d = d * full
        errs.append(d.sum() / (full.sum() * L.shape[1]).clamp_min(1))
    return torch.stack(errs) if errs else torch.zeros(0, device=L.device)


# ---------------------------------------------------------------------------------------------
# Diffusion steps (the paper's equations over ᾱ)

def timesteps(num_train: int, steps: int) -> list[int]:
    """steps evenly spaced training timesteps, descending from num_train − 1 to 0."""
    ts = np.unique(np.round(np.linspace(num_train - 1, 0, steps)).astype(int))[::-1]
    return [int(t) for t in ts]


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, ab_t: float) -> torch.Tensor:
    """x̂ = (x_t − √(1−ᾱ_t) ε) / √ᾱ_t."""
    return (x_t - math.sqrt(1.0 - ab_t) * eps) / math.sqrt(ab_t)


def ddpm_step(x_t, x0, noise, ab_t: float, ab_prev: float) -> torch.Tensor:
    """DDPM posterior sample x_{t'} ~ q(x_{t'} | x_t, x̂) between timesteps t > t' (t' = −1: ᾱ = 1):

    β = 1 − ᾱ_t/ᾱ_t',  μ̃ = √ᾱ_t' β/(1−ᾱ_t) x̂ + √(1−β)(1−ᾱ_t')/(1−ᾱ_t) x_t,
    σ̃² = β (1−ᾱ_t')/(1−ᾱ_t);  x_t' = μ̃ + σ̃ z with z = Π_noise(E; i).
    """
    beta = 1.0 - ab_t / ab_prev
    mean = (math.sqrt(ab_prev) * beta / (1.0 - ab_t)) * x0 \
        + (math.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab_t)) * x_t
    return mean + math.sqrt(max(beta * (1.0 - ab_prev) / (1.0 - ab_t), 0.0)) * noise


def ddim_step(x_t, x0, ab_t: float, ab_prev: float) -> torch.Tensor:
    """DDIM (η = 0): ε̂ = (x_t − √ᾱ_t x̂)/√(1−ᾱ_t),  x_t' = √ᾱ_t' x̂ + √(1−ᾱ_t') ε̂."""
    eps = (x_t - math.sqrt(ab_t) * x0) / math.sqrt(1.0 - ab_t)
    return math.sqrt(ab_prev) * x0 + math.sqrt(1.0 - ab_prev) * eps


def guided_eps(denoiser, x_t: torch.Tensor, t: int, cond: torch.Tensor, uncond: torch.Tensor,
               guidance: float, batch: int) -> torch.Tensor:
    """Classifier-free guidance per level: ε = ε(x, ∅) + w (ε(x, y_i) − ε(x, ∅)).

    x_t: [N, C, h, w]; cond, uncond: [N, T, D] (level i's prompt); levels (and the two branches)
    go through the UNet in batches of ≤ batch. → [N, C, h, w].
    """
    if guidance == 1.0:
        return denoiser.predict_eps(x_t, t, cond, batch_size=batch)
    e = denoiser.predict_eps(torch.cat([x_t, x_t]), t, torch.cat([uncond, cond]), batch_size=batch)
    e_u, e_c = e.chunk(2)
    return e_u + guidance * (e_c - e_u)


# ---------------------------------------------------------------------------------------------
# Photograph-conditioned zoom

def photo_loss(images: torch.Tensor, levels: Sequence[int], photo: torch.Tensor, mask: torch.Tensor,
               p: float, geometry=None) -> torch.Tensor:
    """Σ over held levels of the masked mean squared error to the photograph, in level 0's frame.

    images: [M, 3, H, W] decoded levels `levels`; photo: [3, H, W]; mask: [H, W] (1 = known pixel).
    Level i is shrunk by p^i into the photograph's centre and compared where it covers it fully.
    geometry: a zoom3d.StackGeometry at (H, W) (DOLLY): level i drawn into level 0's frame through
    the level cameras instead (zoom3d.photo_loss_3d).
    """
    if geometry is not None:
        from .zoom3d import photo_loss_3d
        return photo_loss_3d(images, levels, photo, mask, geometry)
    loss = images.new_zeros(())
    for img, i in zip(images, levels):
        shrunk, cov, _ = resample_level(img, i, p)
        w = mask * (cov >= _FULL)
        loss = loss + (w * (shrunk - photo) ** 2).sum() / (w.sum() * 3).clamp_min(1)
    return loss


def invert_photo(denoiser, photo: torch.Tensor, mask: torch.Tensor, steps: int = 50,
                 lr: float = 0.1) -> torch.Tensor:
    """z_photo: the latent of the photograph, E(photo) refined by Adam on ‖M ⊙ (D(z) − photo)‖².

    photo: [3, H, W]; mask: [H, W] (1 = known pixel) → [C, H/s, W/s].
    """
    z = denoiser.encode(photo[None]).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss = photo_loss(denoiser.decode(z, clamp=False), [0], photo, mask, 1.0)
            loss.backward()
            opt.step()
    return z.detach()[0]


def hold_to_photo(x0: torch.Tensor, levels: Sequence[int], z_photo: torch.Tensor, m_photo: torch.Tensor,
                  p: float, weight: float, geometry=None) -> torch.Tensor:
    """One preconditioned gradient step on ℓ_i = ½ ‖m ⊙ (D_{p^i}(x̂_i) − z_photo)‖² for each held level.

    x0: [N, C, h, w]; z_photo: [C, h, w]; m_photo: [h, w] known latent pixels. Level i shrunk by p^i
    is compared with the photograph's latent where it covers it; the residual, enlarged back by p^i,
    is added with weight w ∈ [0, 1] (w = 1 sets x̂_0 = z_photo on known pixels and every held level's
    p^i-block means to the photograph's: only the frequencies the photograph resolves are held).
    geometry: a zoom3d.StackGeometry at (h, w) (DOLLY): through the level cameras instead.
    """
    if geometry is not None:
        from .zoom3d import hold_to_photo_3d
        return hold_to_photo_3d(x0, levels, z_photo, m_photo, geometry, weight)
    out = x0.clone()
    for i in levels:
        shrunk, cov, _ = resample_level(x0[i], i, p)
        resid = m_photo * (cov >= _FULL) * (z_photo - shrunk)
        out[i] = x0[i] + weight * resample_level(resid, -i, p)[0]
    return out


def refine_to_photo(denoiser, x0: torch.Tensor, levels: Sequence[int], photo: torch.Tensor,
                    mask: torch.Tensor, p: float, steps: int, lr: float, geometry=None) -> torch.Tensor:
    """A few Adam steps on x̂ of the held levels on photo_loss through the VAE decoder (pixels).

    x0: [N, C, h, w] → the same with x0[levels] moved to lower photo_loss(D(x̂)); lr in latent units
    (Adam moves each value by about lr per step; SD's scaled latents have unit spread).
    geometry: None, a zoom3d.StackGeometry at the decoded size, or a callable returning one
    (DOLLY; built only when a held level other than 0 needs it): photo_loss through the level cameras.
    """
    if steps <= 0 or not levels:
        return x0
    if callable(geometry):
        geometry = geometry() if any(i != 0 for i in levels) else None
    z = x0[list(levels)].detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss = photo_loss(denoiser.decode(z, clamp=False), levels, photo, mask, p, geometry)
            loss.backward()
            opt.step()
    out = x0.clone()
    out[list(levels)] = z.detach().to(x0.dtype)
    return out


# ---------------------------------------------------------------------------------------------
# The pipeline's entry point

@dataclass
class ZoomStack:
    """A painted zoom stack.

    levels: N images [H, W, 3] float32 in [0, 1], consistent (level i−1's centre = level i shrunk by p;
    with a zoom3d geometry: level i drawn into level i−1's frame through the level cameras = level i−1
    where it is seen);
    latents: [N, C, h, w] the consistent latent stack (None for engines without latents);
    predictions: [N, C, h, w] the model's own x̂ per level at the last step, before blending
    (a diagnostic: how far the levels agreed on their own);
    cameras: the camera each level was painted from where the engine says so (the procedural
    engine's DOLLY stack: engines/procedural_zoom.true_dolly_rig), None = the level cameras; a
    level's depth is estimated at it (gaussians.lift_levels: an estimator that reads the pixels
    ignores the camera, the procedural one looks the depth up there).
    """

    levels: list
    latents: Optional[torch.Tensor] = None
    factor: float = 2.0
    prompts: list = field(default_factory=list)
    predictions: Optional[torch.Tensor] = None
    cameras: Optional[list] = None


def _check_request(prompts, size, steps, guidance, scale):
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("prompts: need one prompt per zoom level (at least 1)")
    if len(prompts) > MAX_PAINTED_LEVELS:
        raise ValueError(f"prompts: at most {MAX_PAINTED_LEVELS} zoom levels, got {len(prompts)}")
    if any(not isinstance(s, str) for s in prompts):
        raise ValueError("prompts: every level's prompt must be a string")
    H, W = (int(v) for v in size)
    if H <= 0 or W <= 0 or H % scale or W % scale:
        raise ValueError(f"size: height and width must be positive multiples of {scale} "
                         f"(the VAE's downsampling), got {tuple(size)}")
    if not (1 <= int(steps) <= 1000):
        raise ValueError(f"steps: must be in [1, 1000], got {steps}")
    if not (0.0 <= float(guidance) <= 30.0):
        raise ValueError(f"guidance: must be in [0, 30], got {guidance}")
    return H, W


def _photo_tensor(photo, photo_mask, H, W, device):
    a = np.asarray(photo, dtype=np.float32)
    if a.shape != (H, W, 3):
        raise ValueError(f"photo: shape {a.shape} must be (H, W, 3) = {(H, W, 3)} of size")
    if not np.isfinite(a).all():
        raise ValueError("photo: has non-finite values; colours must be finite in [0, 1]")
    m = np.ones((H, W), np.float32) if photo_mask is None else np.asarray(photo_mask, dtype=np.float32)
    if m.shape != (H, W):
        raise ValueError(f"photo_mask: shape {m.shape} must be (H, W) = {(H, W)}")
    return (torch.from_numpy(a).permute(2, 0, 1).to(device), torch.from_numpy(m).to(device))


def paint_zoom_stack(denoiser, prompts: list[str], factor, seed: int, *, steps: int = 50,
                     guidance: float = 7.5, photo: Optional[np.ndarray] = None,
                     photo_mask: Optional[np.ndarray] = None, photo_levels: int = 1,
                     photo_weight: float = 0.5, photo_steps: int = 2, photo_lr: float = 0.05,
                     size=(512, 512),
                     sampler: str = "ddpm", negative_prompt: str = "", batch: int = 8,
                     joint: bool = True, progress: Optional[Progress] = None,
                     should_cancel: Optional[Callable[[], bool]] = None,
                     geometry=None) -> ZoomStack:
    """Jointly sample a zoom stack of len(prompts) levels at zoom factor p per level. → ZoomStack.

    denoiser: an SDDenoiser-like object (encode_prompts, predict_eps, decode, alphas_cumprod,
    vae_scale_factor, latent_channels, device). photo: [H, W, 3] in [0, 1] (e.g. the point cloud
    seen from the zoom camera), photo_mask: [H, W] known pixels; levels 0 … photo_levels−1 are held
    to it at every denoising step by a preconditioned gradient step on x̂ toward the photograph's
    latent (weight photo_weight, see hold_to_photo) and photo_steps Adam steps (lr photo_lr) on the
    decoded pixels (refine_to_photo). sampler: "ddpm" (the
    paper's posterior) or "ddim" (deterministic, fewer steps). joint=False samples every level
    independently (the baseline of scripts/bench_zoom). progress("zoom", step, total, message)
    after every denoising step and decoded level; should_cancel() raises errors.JobCancelled.
    geometry: None (LENS: every level a lens zoom from level 0's pose, the 2D stack above) or a
    zoom3d.StackGeometry of the N levels (DOLLY: level i from the camera p^i times closer to the
    anchor; any resolution, it is rebuilt at the latent and pixel sizes with StackGeometry.at):
    Π_noise, Π_image, the blend and the final pixel pass go through the level cameras
    (zoom3d.pi_noise_3d, pi_image_3d, blend_3d), held levels > 0 are compared with the photograph
    in level 0's frame through them, and the levels come back consistent in the 3D sense
    (zoom3d.consistency_error_3d = 0).
    """
    from .errors import JobCancelled

    p = check_factor(factor)
    scale = int(denoiser.vae_scale_factor)
    H, W = _check_request(prompts, size, steps, guidance, scale)
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler: must be 'ddpm' or 'ddim', got {sampler!r}")
    N, h, w = len(prompts), H // scale, W // scale
    if not (0 <= int(photo_levels) <= N):
        raise ValueError(f"photo_levels: must be in [0, {N}] (the number of levels), got {photo_levels}")
    report = progress or (lambda *a: None)

    def check_cancel(stage):
        if should_cancel is not None and should_cancel():
            raise JobCancelled(f"cancelled during zoom ({stage})")

    device = torch.device(denoiser.device)
    held = list(range(int(photo_levels))) if photo is not None else []
    if not (0.0 <= float(photo_weight) <= 1.0):
        raise ValueError(f"photo_weight: must be in [0, 1], got {photo_weight}")
    if photo is not None:
        photo_t, mask_t = _photo_tensor(photo, photo_mask, H, W, device)
        z_photo = invert_photo(denoiser, photo_t, mask_t)
        m_photo = (_box_down(mask_t, scale) > 0.5).to(z_photo.dtype)
    ab = denoiser.alphas_cumprod.double().cpu().numpy()
    ts = timesteps(len(ab), int(steps))
    gen = torch.Generator().manual_seed(int(seed))

    if geometry is None:
        geo_lat = geo_px = None
        noise_op, image_op, blend_op = (lambda E: pi_noise_all(E, p)), (lambda L: pi_image_all(L, p)), \
            (lambda X: blend(X, p))
    else:                                                   # DOLLY: the 3D stack
        from . import zoom3d
        zoom3d.check_geometry(geometry, N, p)
        geo_lat = geometry.at((h, w))
        geo_px = lambda: geometry.at((H, W))                # noqa: E731 (built when first needed)
        noise_op, image_op, blend_op = (lambda E: zoom3d.pi_noise_3d(E, geo_lat)), \
            (lambda L: zoom3d.pi_image_3d(L, geo_lat)), (lambda X: zoom3d.blend_3d(X, geo_lat))

    def fresh_noise():
        E = torch.randn((N, denoiser.latent_channels, h, w), generator=gen, device="cpu").to(device)
        return noise_op(E) if joint else E

    render = image_op if joint else (lambda L: L)
    mix = blend_op if joint else (lambda X: X)

    with torch.no_grad():
        cond, uncond = denoiser.encode_prompts(list(prompts), negative_prompt)
        x = fresh_noise()                                   # x_T,i = Π_noise(E; i)
        for k, t in enumerate(ts):
            check_cancel(f"step {k + 1}/{len(ts)}")
            ab_t = float(ab[t])
            ab_prev = float(ab[ts[k + 1]]) if k + 1 < len(ts) else 1.0
            eps = guided_eps(denoiser, x, t, cond, uncond, float(guidance), batch)
            x0 = predict_x0(x, eps, ab_t)
            raw = x0
            if held:                                        # photograph-conditioned zoom
                x0 = hold_to_photo(x0, held, z_photo, m_photo, p, float(photo_weight), geo_lat)
                x0 = refine_to_photo(denoiser, x0, held, photo_t, mask_t, p, int(photo_steps), photo_lr,
                                     geo_px)
            L = mix(x0)                                     # multi-resolution blending
            x0r = render(L)                                 # Π_image(L; i) for every level
            if sampler == "ddpm":
                noise = fresh_noise() if ab_prev < 1.0 else torch.zeros_like(x)
                x = ddpm_step(x, x0r, noise, ab_t, ab_prev)
            else:
                x = ddim_step(x, x0r, ab_t, ab_prev)
            report("zoom", k + 1, len(ts), f"denoising step {k + 1}/{len(ts)} (t={t}), "
                                           f"{N} levels through the UNet")
        latents = render(mix(x))                            # consistent latent stack

        # decode every level, then blend once more in pixels so the decoded levels agree exactly
        images = []
        for i in range(N):
            check_cancel(f"decoding level {i + 1}/{N}")
            images.append(denoiser.decode(latents[i:i + 1], clamp=True)[0].float())
            report("zoom", len(ts), len(ts), f"decoded level {i + 1}/{N}")
        pix = torch.stack(images)                           # [N, 3, H, W]
        if joint and geometry is None:
            pix = pi_image_all(blend(pix, p).clamp(0.0, 1.0), p)
        elif joint:
            pix = zoom3d.pi_image_3d(zoom3d.blend_3d(pix, geo_px()).clamp(0.0, 1.0), geo_px())
    levels = [np.ascontiguousarray(im.permute(1, 2, 0).cpu().numpy(), dtype=np.float32) for im in pix]
    return ZoomStack(levels=levels, latents=latents.float().cpu(), factor=p, prompts=list(prompts),
                     predictions=raw.float().cpu())
