"""The procedural engine: an analytic world that needs no weights, and the tests' ground truth.

The world (Blender coordinates: Z up, metres) is
- a ground heightfield z = h(x, y): gentle hills (a few sine waves) plus fractal relief
  (value-noise octaves with amplitude ∝ wavelength), traced by a conservative march that sums
  the octaves coarse to fine as far as each step needs (World._march_ground) and a safeguarded
  Newton refinement of the bracketed first hit, exact from a camera on a hill or 0.1 mm above
  the relief,
- spheres and boxes resting on the ground, placed from the seed (analytic intersections),
- a sky dome, a sphere of radius SKY_RADIUS about the origin, so every ray has a finite depth.
The palette (ground, objects, sky, sun) comes from a stable hash of the prompt; the layout and
the noise from the seed.

Detail at every scale: texture and relief are sums of octaves λ_k = λ_0 · 2^-k down to
LAMBDA_MIN. Each pixel keeps the octaves its footprint f (metres per pixel at its depth) can
resolve, w_k = clip(λ_k / 2f − 1, 0, 1), which both anti-aliases wide views and keeps new detail
appearing as a camera zooms in. Texture octaves have equal amplitude (every zoom looks as busy);
relief octaves have amplitude ∝ λ_k (the same slopes at every scale).

As an engine it "inpaints" by rendering the world at the hole pixels and "estimates depth" as the
true z-depth D seen through a per-view lie, like a monocular model:

    D̂ = s · D · (1 + w(u, v) + ε) + t

with s drawn log-uniformly in depth_scale_range (the dream's first view close to 1), t a few %
of the median depth, w a smooth low-frequency warp of the image (a real monocular model bends:
a random mix of two 1–3 cycle sinusoids and a bilinear ramp, max |w| = depth_warp) and
ε ~ N(0, depth_noise²) per pixel. Every draw is seeded by a stable hash of (seed, camera, role)
(lie_key), never by how many calls came before: the engine keeps no state, so the same request
gives the same lies on a fresh engine and on one that has served many jobs. The world's geometry
(and so its depth) depends on the seed only; the prompt picks its palette. Whole frames it has
traced are memoised (FrameMemo: FRAMES, DEPTHS), which spares a second trace and changes no result.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import struct
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..cameras import Camera, pixel_grid, pixel_rays
from ..errors import JobCancelled
from .base import check_hole, check_image, check_role

SKY_RADIUS = 200.0
FBM_RAGGED_MAX = 8192     # fbm2 evaluates all octaves at once below this many points
LAMBDA_MIN = 1e-7          # finest octave (metres): detail keeps appearing down to ~1 µm pixels
OBJECT_RING = (3.0, 10.0)  # objects stand this far (metres) from the world origin

SKY, GROUND, OBJECT = 0, 1, 2


# ---------------------------------------------------------------------------------------------
# Stable hashing and value noise

def stable_int(*parts) -> int:
    """A 64-bit integer from any printable parts (sha256; stable across runs, unlike hash())."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return struct.unpack("<Q", digest[:8])[0]


def _mix(h: np.ndarray) -> np.ndarray:
    """64-bit finaliser (murmur3 fmix64) of uint64 h: [N] → [N] (h is overwritten)."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


_PRIMES = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F),
           np.uint64(0x165667B19E3779F9))


def _seed_hash(seed, shape) -> np.ndarray:
    """The lattice seed (an int, or a uint64 array broadcast to shape) as a fresh uint64 array."""
    if isinstance(seed, np.ndarray):
        return np.broadcast_to(seed.astype(np.uint64), shape).copy()
    return np.full(shape, np.uint64(seed & 0xFFFFFFFFFFFFFFFF))


def _hash_step(h: np.ndarray, c: np.ndarray, prime: np.uint64) -> np.ndarray:
    """One coordinate folded into the lattice hash: fmix64(h ^ c·prime), a new array."""
    return _mix(h ^ (c.astype(np.uint64) * prime))


def _unit(h: np.ndarray) -> np.ndarray:
    """The top 53 bits of a uint64 hash as a float in [-1, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * (2.0 ** -52) - 1.0


def lattice_value(seed, *coords: np.ndarray) -> np.ndarray:
    """Random value in [-1, 1) at integer lattice points: coords are int64 arrays [N] → [N]; seed
    an int or a uint64 array [N] (one lattice per point)."""
    h = _seed_hash(seed, coords[0].shape)
    for c, p in zip(coords, _PRIMES):
        h = _hash_step(h, c, p)
    return _unit(h)


def value_noise2(x: np.ndarray, y: np.ndarray, seed):
    """Smooth 2-D value noise and its gradient. x, y: [N] lattice units, seed an int or [N]
    (lattice_value) → (n, ∂n/∂x, ∂n/∂y)."""
    fx, fy = np.floor(x), np.floor(y)
    ix, iy = fx.astype(np.int64), fy.astype(np.int64)
    tx, ty = x - fx, y - fy
    u, v = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
    du, dv = 6 * tx * (1 - tx), 6 * ty * (1 - ty)
    h = _seed_hash(seed, ix.shape)           # lattice_value at the 4 corners, x hashes shared
    hx0, hx1 = _hash_step(h, ix, _PRIMES[0]), _hash_step(h, ix + 1, _PRIMES[0])
    y0, y1 = iy.astype(np.uint64) * _PRIMES[1], (iy + 1).astype(np.uint64) * _PRIMES[1]
    a, b = _unit(_mix(hx0 ^ y0)), _unit(_mix(hx1 ^ y0))
    c, d = _unit(_mix(hx0 ^ y1)), _unit(_mix(hx1 ^ y1))
    k = a - b - c + d
    n = a + (b - a) * u + (c - a) * v + k * u * v
    return n, du * ((b - a) + k * v), dv * ((c - a) + k * u)


def value_noise3(x: np.ndarray, y: np.ndarray, z: np.ndarray, seed: int) -> np.ndarray:
    """Smooth 3-D value noise: x, y, z: [N] lattice units → [N] in [-1, 1]."""
    f = [np.floor(x), np.floor(y), np.floor(z)]
    i = [a.astype(np.int64) for a in f]
    t = [x - f[0], y - f[1], z - f[2]]
    s = [a * a * (3 - 2 * a) for a in t]
    out = 0.0
    for cx in (0, 1):
        wx = s[0] if cx else 1 - s[0]
        for cy in (0, 1):
            wy = s[1] if cy else 1 - s[1]
            for cz in (0, 1):
                wz = s[2] if cz else 1 - s[2]
                out = out + wx * wy * wz * lattice_value(seed, i[0] + cx, i[1] + cy, i[2] + cz)
    return out


def octave_weight(lam: float, footprint: np.ndarray) -> np.ndarray:
    """How much of an octave of wavelength lam a pixel of footprint f resolves: [N] in [0, 1].

    w = clip(λ / 2f − 1, 0, 1): full down to 4 pixels per wavelength, gone at 2 (Nyquist).
    """
    with np.errstate(divide="ignore"):           # f = 0 (a hit at the eye): every octave
        return np.clip(lam / (2.0 * footprint) - 1.0, 0.0, 1.0)


def _octaves(lam0: float, footprint: np.ndarray):
    """Octave indices and wavelengths λ_k = λ0·2^-k that some pixel of footprint [N] resolves."""
    finest = max(float(np.min(footprint)) * 2.0, LAMBDA_MIN) if footprint.size else lam0
    k = 0
    while lam0 * 2.0 ** -k > finest:
        yield k, lam0 * 2.0 ** -k
        k += 1


def octave_count(lam0: float, footprint: np.ndarray) -> np.ndarray:
    """How many octaves λ_k = λ0·2^-k > max(2f, LAMBDA_MIN) a footprint f [N] resolves: [N] int."""
    finest = np.maximum(2.0 * np.asarray(footprint, np.float64), LAMBDA_MIN)
    return np.maximum(np.ceil(np.log2(lam0 / finest)), 0).astype(np.int64)


@functools.lru_cache(maxsize=256)
def _octave_table(seed: int, count: int) -> np.ndarray:
    """Every octave k < count of fbm2's seed: [count, 5] rows (cos, sin, ox, oy, lattice seed);
    the lattice seed column is the uint64 seed's bits viewed as float64."""
    table = np.empty((count, 5))
    for k in range(count):
        rng = np.random.default_rng(stable_int("octave2", seed, k))
        th, ox, oy = rng.uniform(0, 2 * np.pi), rng.uniform(0, 1e4), rng.uniform(0, 1e4)
        table[k, :4] = np.cos(th), np.sin(th), ox, oy
        table[k, 4] = np.array([stable_int("lattice2", seed, k)], np.uint64).view(np.float64)[0]
    table.flags.writeable = False
    return table


def fbm2(x, y, footprint, seed: int, lam0: float, amp_of, k_lo=0, k_hi=None):
    """Fractal sum of 2-D value noise over world x, y: [N] metres, with per-pixel footprint [N].

    Σ_k w_k · a_k · n(R_k (x, y) / λ_k + o_k), a_k = amp_of(λ_k) (λ_k an array), rotation R_k and
    offset o_k from the seed, over the octaves k_lo ≤ k < k_hi (each an int or [N]; k_hi None:
    all) the footprint resolves. Returns (value, ∂/∂x, ∂/∂y), each [N]. Below FBM_RAGGED_MAX
    points every (point, octave) pair is one element of a single vectorised evaluation (no
    per-octave overhead); above it the octaves are summed one by one (arrays that stay in cache).
    Both give the same sums.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    footprint = np.broadcast_to(np.asarray(footprint, np.float64), x.shape)
    n = len(x)
    top = octave_count(lam0, footprint)
    if k_hi is not None:
        top = np.minimum(top, k_hi)
    k_lo = np.broadcast_to(np.asarray(k_lo, np.int64), x.shape)
    kmax = int(top.max()) if n else 0
    if kmax <= (int(k_lo.min()) if n else 0):
        return np.zeros(n), np.zeros(n), np.zeros(n)
    table = _octave_table(int(seed), kmax)
    if n >= FBM_RAGGED_MAX:                  # many points: one octave at a time (cache-sized arrays)
        val, gx, gy = np.zeros(n), np.zeros(n), np.zeros(n)
        for k in range(int(k_lo.min()), kmax):
            idx = np.flatnonzero((top > k) & (k_lo <= k))
            lam = lam0 * 2.0 ** -k
            c, s, ox, oy = table[k, :4]
            xi, yi = x[idx], y[idx]
            nv, nx, ny = value_noise2((c * xi - s * yi) / lam + ox, (s * xi + c * yi) / lam + oy,
                                      table[k:k + 1, 4].view(np.uint64)[0])
            a = amp_of(lam) * octave_weight(lam, footprint[idx])
            val[idx] += a * nv
            gx[idx] += a * (c * nx + s * ny) / lam
            gy[idx] += a * (-s * nx + c * ny) / lam
        return val, gx, gy
    cnt = np.maximum(top - k_lo, 0)          # few points: every (point, octave) pair at once
    total = int(cnt.sum())
    rows = np.repeat(np.arange(n), cnt)
    ks = np.repeat(k_lo, cnt) + np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    tab = table[ks]
    c, s, lam = tab[:, 0], tab[:, 1], lam0 * np.exp2(-ks.astype(np.float64))
    xr, yr = x[rows], y[rows]
    nv, nx, ny = value_noise2((c * xr - s * yr) / lam + tab[:, 2], (s * xr + c * yr) / lam + tab[:, 3],
                              tab[:, 4].view(np.uint64))
    a = amp_of(lam) * octave_weight(lam, footprint[rows]) / lam
    return (np.bincount(rows, a * lam * nv, n), np.bincount(rows, a * (c * nx + s * ny), n),
            np.bincount(rows, a * (-s * nx + c * ny), n))


def fbm3(p: np.ndarray, footprint: np.ndarray, seed: int, lam0: float) -> np.ndarray:
    """Fractal sum of equal-amplitude 3-D value noise at world points p: [N, 3] → [N]."""
    val = np.zeros(len(p))
    for k, lam in _octaves(lam0, footprint):
        w = octave_weight(lam, footprint)
        idx = np.flatnonzero(w > 0)
        if idx.size == 0:
            break
        o = np.random.default_rng(stable_int("octave3", seed, k)).uniform(0, 1e4, 3)
        q = p[idx] / lam + o
        val[idx] += w[idx] * value_noise3(q[:, 0], q[:, 1], q[:, 2], stable_int("lattice3", seed, k))
    return val


# ---------------------------------------------------------------------------------------------
# Colours

def hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (all in [0, 1]) → RGB [3] float64."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


@dataclasses.dataclass(frozen=True)
class Palette:
    """Colours (RGB [3] in [0, 1]) and the sun direction [3] of a world, from the prompt."""

    ground: tuple
    objects: tuple
    sky_zenith: np.ndarray
    sky_horizon: np.ndarray
    cloud: np.ndarray
    sun: np.ndarray


def palette_from_prompt(prompt: str) -> Palette:
    """A stable palette for a prompt: same prompt, same colours, on every machine."""
    rng = np.random.default_rng(stable_int("palette", prompt))
    hg = rng.uniform()
    ground = tuple(hsv_to_rgb((hg + rng.uniform(-0.08, 0.08)) % 1.0, rng.uniform(0.3, 0.65),
                              rng.uniform(0.3, 0.7)) for _ in range(3))
    objects = tuple(hsv_to_rgb(rng.uniform(), rng.uniform(0.45, 0.85), rng.uniform(0.5, 0.95))
                    for _ in range(6))
    hs = rng.uniform(0.5, 0.7)
    zenith = hsv_to_rgb(hs, rng.uniform(0.4, 0.7), rng.uniform(0.6, 0.9))
    horizon = hsv_to_rgb((hs + rng.uniform(-0.1, 0.1)) % 1.0, rng.uniform(0.1, 0.35), 0.95)
    cloud = hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.15), 0.97)
    az, el = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(30), np.radians(65))
    sun = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return Palette(ground, objects, zenith, horizon, cloud, sun)


# ---------------------------------------------------------------------------------------------
# The world

TRACE_SHARE_MIN = 4096     # rays per thread below which a trace stays on one thread
_POOL: list = []
_POOL_LOCK = threading.Lock()


def trace_workers() -> int:
    """Threads a trace uses: the cores this process may run on, at most 8."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:           # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _trace_pool() -> ThreadPoolExecutor:
    """The process's thread pool for traces (made on first use)."""
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(trace_workers(), thread_name_prefix="zoomscape-trace"))
        return _POOL[0]


@dataclasses.dataclass(frozen=True)
class Hits:
    """Nearest surface along N rays: t z-depth [N], point [N, 3], normal [N, 3] (unit),
    kind [N] (SKY, GROUND, OBJECT), obj [N] (object index or -1), footprint [N] (m per pixel)."""

    t: np.ndarray
    point: np.ndarray
    normal: np.ndarray
    kind: np.ndarray
    obj: np.ndarray
    footprint: np.ndarray


class World:
    """The analytic world of one (prompt, seed). render(cam) → (rgb, depth) is the ground truth."""

    HILL_WAVES = 5          # sine waves of the hills, wavelengths 60 m down to 9 m
    HILL_SLOPE = 0.008      # hill amplitude per metre of wavelength
    RELIEF_LAMBDA0 = 4.0    # coarsest relief octave (m)
    RELIEF_SLOPE = 0.012    # relief amplitude per metre of wavelength: a_k = 0.012 λ_k
    GROUND_TEX_LAMBDA0 = 16.0
    OBJECT_TEX_LAMBDA0 = 1.0
    CLOUD_LAMBDA0 = 80.0
    MARCH_STEPS = 600       # the most steps of the relief march (grazing rays need a few hundred)
    MARCH_FLOOR_PX = 0.5    # shortest march step, in footprints at the ray's depth
    REFINE_STEPS = 3        # safeguarded Newton steps (each one evaluation) on the bracketed hit

    def __init__(self, prompt: str, seed: int):
        self.prompt, self.seed = str(prompt), int(seed)
        self.palette = palette_from_prompt(self.prompt)
        rng = np.random.default_rng(stable_int("layout", self.seed))
        lam = np.geomspace(60.0, 9.0, self.HILL_WAVES)
        ang = rng.uniform(0, 2 * np.pi, self.HILL_WAVES)
        self.hill_k = np.stack([np.cos(ang), np.sin(ang)], 1) * (2 * np.pi / lam)[:, None]  # [K, 2]
        self.hill_a = self.HILL_SLOPE * lam * rng.uniform(0.6, 1.0, self.HILL_WAVES)       # [K]
        self.hill_phase = rng.uniform(0, 2 * np.pi, self.HILL_WAVES)
        self.hill_bound = float(self.hill_a.sum())                                  # max |h_hills|
        self.hill_slope = float((self.hill_a * np.linalg.norm(self.hill_k, axis=1)).sum())
        self.relief_bound = 2.0 * self.RELIEF_SLOPE * self.RELIEF_LAMBDA0           # max |h_relief|
        self.relief_seed = stable_int("relief", self.seed)
        self.hill_curvature = float((self.hill_a * (self.hill_k ** 2).sum(1)).sum())  # max |h_hills''|
        self.objects = self._place_objects(rng)

    # -- layout ---------------------------------------------------------------------------------
    def _place_objects(self, rng) -> list[dict]:
        """Spheres and z-rotated boxes resting on the hills, in the ring OBJECT_RING."""
        objects = []
        n = int(rng.integers(6, 10))
        for i in range(n):
            for _ in range(50):  # rejection: keep objects apart
                r = np.sqrt(rng.uniform(OBJECT_RING[0] ** 2, OBJECT_RING[1] ** 2))
                a = rng.uniform(0, 2 * np.pi)
                xy = np.array([r * np.cos(a), r * np.sin(a)])
                size = rng.uniform(0.4, 1.4)
                if all(np.linalg.norm(xy - o["center"][:2]) > size + o["size"] + 0.5 for o in objects):
                    break
            ground = float(self.hills(xy[:1], xy[1:])[0][0])
            colour = self.palette.objects[i % len(self.palette.objects)]
            if rng.uniform() < 0.5:
                objects.append({"type": "sphere", "size": size, "colour": colour,
                                "center": np.array([xy[0], xy[1], ground + 0.8 * size])})
            else:
                half = size * rng.uniform(0.5, 1.0, 3)
                yaw = rng.uniform(0, np.pi)
                R = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
                objects.append({"type": "box", "size": float(np.linalg.norm(half[:2])), "half": half,
                                "R": R, "colour": colour,
                                "center": np.array([xy[0], xy[1], ground + 0.85 * half[2]])})
        return objects

    # -- ground ---------------------------------------------------------------------------------
    def hills(self, x: np.ndarray, y: np.ndarray):
        """The hills: h(x, y) = Σ_j a_j sin(k_j·(x, y) + φ_j) and its gradient. x, y: [N]."""
        ph = np.outer(x, self.hill_k[:, 0]) + np.outer(y, self.hill_k[:, 1]) + self.hill_phase
        h = np.sin(ph) @ self.hill_a
        c = np.cos(ph) * self.hill_a
        return h, c @ self.hill_k[:, 0], c @ self.hill_k[:, 1]

    def height(self, x: np.ndarray, y: np.ndarray, footprint: np.ndarray):
        """Ground height with relief resolved at footprint [N]: (h, ∂h/∂x, ∂h/∂y), each [N]."""
        h, gx, gy = self.hills(x, y)
        r, rx, ry = fbm2(x, y, footprint, self.relief_seed, self.RELIEF_LAMBDA0,
                         lambda lam: self.RELIEF_SLOPE * lam)
        return h + r, gx + rx, gy + ry

    def _ground_hit(self, o, d, t_max, foot_per_m):
        """First hit of the ground with relief, z = h(x, y) resolved at the ray's footprint
        f·t (f = foot_per_m): (t [N] or inf, normal [N, 3]).

        The ground lies in the slab |z| ≤ hill_bound + relief_bound; each ray is marched from where
        it enters it (_march_ground), the first step with g ≤ 0 brackets the hit, and safeguarded
        Newton ends it (_refine_hit). There is no absolute length anywhere: this holds for a
        camera millimetres above the relief as for one on a hill.
        """
        n = len(d)
        t_out = np.full(n, np.inf)
        normal = np.zeros((n, 3))
        top = self.hill_bound + self.relief_bound
        if o[2] > top:                       # start where the ray enters the slab
            idx = np.flatnonzero(d[:, 2] < 0)
            t0 = (o[2] - top) / -d[idx, 2]
        else:
            idx, t0 = np.arange(n), np.zeros(n)
        keep = t0 < t_max[idx]
        ii, a, b, ga = self._march_ground(o, d, idx[keep], t0[keep], t_max, foot_per_m)
        t_hit, hx, hy = self._refine_hit(o, d, ii, a, b, ga, foot_per_m)
        t_out[ii] = t_hit
        nrm = np.stack([-hx, -hy, np.ones_like(hx)], 1)
        normal[ii] = nrm / np.linalg.norm(nrm, axis=1, keepdims=True)
        return t_out, normal

    def _march_ground(self, o, d, idx, t, t_max, foot_per_m):
        """March rays idx from t [M] on g(t) = z − h(x, y; f t) to the first point with g ≤ 0.

        Returns the brackets (ray, a, b, g(a) or nan): g(a) > 0 ≥ g(b), no root before a.

        At each point the height is summed coarse to fine: the hills, then the relief's first m
        octaves, m enough that those left (|Σ_{k≥m}| ≤ 2 a_m = 2 RELIEF_SLOPE λ_m: the amplitudes
        halve) are at most a quarter of g (m guessed from the last step, all octaves where that
        was too few; none left is exact). g > 0 is then certain on [t, t + ahead], ahead the larger
        of two bounds on how far the partial sum g_m can fall by its margin c = g_m − 2 a_m:
        - Lipschitz: c / (σ_m − d_z), σ_m = (hill_slope + m · 3√2 RELIEF_SLOPE) |d_xy| + φ, an
          octave's slope being at most a_k / λ_k · max|∇n| (max|∂n/∂x| = 1.5 · 2 for the smoothstep
          value noise) and φ = 8 RELIEF_SLOPE f ≤ 0.1 f per metre the fade of the one octave in
          its footprint band;
        - second order: the first root of c + (g_m' − φ) Δ − ½ B Δ² (for Δ ≤ t), g_m' the slope
          along the ray at t and B a bound on its change per metre: (hill curvature + 21
          RELIEF_SLOPE Σ_{k<m} 1/λ_k) |d_xy|² (|∂²n| ≤ 12 + 9 per lattice unit²) plus the change
          of the fading octaves' weights (2 octaves · 4/t · 3√2 RELIEF_SLOPE |d_xy|).
        Far from the ground only the hills and the coarse octaves are summed and steps are long;
        near it g is exact and the second-order bound keeps steps a fixed fraction of g at any
        zoom. A floor of MARCH_FLOOR_PX footprints keeps grazing rays moving (a bump narrower than
        that can be stepped over: it is below the pixel); a ray whose certain interval reaches
        t_max (or never ends: it cannot come down) has no hit.
        """
        lam0, amp = self.RELIEF_LAMBDA0, self.RELIEF_SLOPE
        octave_slope = amp * 3.0 * np.sqrt(2.0)
        fade = 0.1 * foot_per_m
        dxy = np.hypot(d[:, 0], d[:, 1])
        found = [[idx[:0]], [t[:0]], [t[:0]], [t[:0]]]  # (ray, a, b, g(a)) of the brackets
        last = t.copy()                      # the last point where g > 0 was proven
        g_last = np.full(t.size, np.nan)     # g there where it was summed to the end, else nan
        hint = np.full(t.size, np.inf)       # the g expected at t (how many octaves to sum)
        for _ in range(self.MARCH_STEPS):
            if idx.size == 0:
                break
            dd = d[idx]
            p = o + t[:, None] * dd
            h, hx, hy = self.hills(p[:, 0], p[:, 1])
            g = p[:, 2] - h
            gs = dd[:, 2] - hx * dd[:, 0] - hy * dd[:, 1]     # dg/dt of the partial sum
            foot = np.maximum(foot_per_m * t, LAMBDA_MIN / 4)
            count = octave_count(lam0, foot)
            with np.errstate(divide="ignore"):
                m = np.minimum(np.ceil(np.log2(16.0 * amp * lam0 / np.maximum(hint, 1e-300))), count)
            m = np.maximum(m, 0).astype(np.int64)

            def add_octaves(j, lo, hi):      # octaves [lo, hi) of rays j into g and its slope
                if j.size:
                    r, rx, ry = fbm2(p[j, 0], p[j, 1], foot[j], self.relief_seed, lam0,
                                     lambda lam: amp * lam, lo, hi)
                    g[j] -= r
                    gs[j] -= rx * dd[j, 0] + ry * dd[j, 1]

            add_octaves(np.flatnonzero(m > 0), 0, m[m > 0])
            left = 2.0 * amp * lam0 * np.exp2(-m.astype(np.float64))
            few = np.flatnonzero((m < count) & (left > 0.25 * g))   # too few for these: all
            add_octaves(few, m[few], count[few])
            m[few] = count[few]
            full = count <= m
            left = np.where(full, 0.0, left)
            margin = g - left
            u = dxy[idx]
            fall = (self.hill_slope + m * octave_slope) * u + fade - dd[:, 2]
            ahead = np.where(fall > 0, margin / np.maximum(fall, 1e-300), np.inf)
            bend = ((self.hill_curvature + 21.0 * amp * (np.exp2(m.astype(np.float64)) - 1.0) / lam0) * u * u
                    + 34.0 * amp * u / np.maximum(t, 1e-300))
            b = gs - fade
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                second = 2.0 * margin / (np.sqrt(b * b + 2.0 * bend * np.maximum(margin, 0.0)) - b)
            second = np.where(margin > 0, np.minimum(np.nan_to_num(second, nan=0.0, posinf=np.inf), t), 0.0)
            ahead = np.maximum(ahead, second)
            hit = full & (g <= 0)
            for acc, v in zip(found, (idx, last, t, g_last)):
                acc.append(v[hit])
            t_max_i = t_max[idx]
            t_next = np.minimum(t + np.maximum(ahead, self.MARCH_FLOOR_PX * foot), t_max_i)
            going = ~hit & (t + ahead < t_max_i) & (t < t_max_i)   # else clear up to t_max
            last, g_last, hint = t, np.where(full, g, np.nan), 0.5 * np.maximum(margin, 0.0)
            idx, last, g_last, hint, t = (v[going] for v in (idx, last, g_last, hint, t_next))
        return tuple(np.concatenate(v) for v in found)

    def _refine_hit(self, o, d, ii, a, b, ga, foot_per_m):
        """The root of g in brackets [a, b] (g(a) > 0 ≥ g(b); ga = g(a), nan if unknown) of rays ii
        → (t, ∂h/∂x, ∂h/∂y at the last point evaluated). REFINE_STEPS of Newton from b, each step
        that would leave the bracket replaced by the secant of its ends (regula falsi) where both
        g are known, else by bisection; the last step is not evaluated."""
        x, gb = b, np.full(ii.size, np.nan)
        hx = hy = np.zeros(ii.size)
        for it in range(self.REFINE_STEPS):
            p = o + x[:, None] * d[ii]
            h, hx, hy = self.height(p[:, 0], p[:, 1], np.maximum(foot_per_m * x, LAMBDA_MIN / 4))
            gx, sx = p[:, 2] - h, d[ii, 2] - hx * d[ii, 0] - hy * d[ii, 1]
            pos = gx > 0
            a, ga = np.where(pos, x, a), np.where(pos, gx, ga)
            b, gb = np.where(pos, b, x), np.where(pos, gb, gx)
            newton = x - gx / np.minimum(sx, -1e-12)
            with np.errstate(invalid="ignore"):
                secant = b - gb * (b - a) / np.minimum(gb - ga, -1e-300)
            inside = (newton > a) & (newton < b)
            x = np.where(inside, newton, np.where(np.isfinite(secant), np.clip(secant, a, b), 0.5 * (a + b)))
        return x, hx, hy

    # -- objects and sky -------------------------------------------------------------------------
    @staticmethod
    def _sphere_hit(o, d, center, radius):
        """Nearest t > 0 of rays o + t·d with a sphere: [N] (inf if none)."""
        oc = o - center
        a = np.einsum("ij,ij->i", d, d)
        b = d @ oc
        c = oc @ oc - radius * radius
        disc = b * b - a * c
        sq = np.sqrt(np.maximum(disc, 0))
        t1, t2 = (-b - sq) / a, (-b + sq) / a
        t = np.where(t1 > 1e-9, t1, t2)
        return np.where((disc >= 0) & (t > 1e-9), t, np.inf)

    @staticmethod
    def _box_hit(o, d, obj):
        """Nearest t > 0 with a z-rotated box, and the normal there: ([N], [N, 3])."""
        R, half = obj["R"], obj["half"]
        ol = R.T @ (o - obj["center"])
        dl = d @ R                                       # R^T d per row
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / dl
            t_a, t_b = (-half - ol) * inv, (half - ol) * inv
        t_near, t_far = np.minimum(t_a, t_b), np.maximum(t_a, t_b)
        t_near = np.nan_to_num(t_near, nan=-np.inf)
        t_far = np.nan_to_num(t_far, nan=np.inf)
        axis = np.argmax(t_near, axis=1)
        t0, t1 = t_near.max(axis=1), t_far.min(axis=1)
        hit = (t0 <= t1) & (t1 > 1e-9)
        inside = t0 <= 1e-9
        t = np.where(hit, np.where(inside, t1, t0), np.inf)
        axis = np.where(inside, np.argmin(t_far, axis=1), axis)
        nl = np.zeros((len(d), 3))
        rows = np.arange(len(d))
        nl[rows, axis] = -np.sign(dl[rows, axis])
        return t, nl @ R.T

    def _sky_t(self, o, d):
        """Exit t of the rays from the sky dome |X| = SKY_RADIUS: [N]."""
        if np.linalg.norm(o) >= SKY_RADIUS:
            raise ValueError(f"camera centre {np.round(o, 3).tolist()} is outside the procedural "
                             f"world's sky dome (radius {SKY_RADIUS:g} m about the origin)")
        a = np.einsum("ij,ij->i", d, d)
        b = d @ o
        c = o @ o - SKY_RADIUS ** 2
        return (-b + np.sqrt(b * b - a * c)) / a

    # -- tracing and shading ---------------------------------------------------------------------
    def trace(self, cam: Camera, uv: np.ndarray) -> Hits:
        """Nearest surface through pixels uv: [N, 2] (continuous pixels) of cam.

        Rays are X(t) = o + t·d with d = R·K⁻¹[u, v, 1], so t is the z-depth. Many rays are traced
        on every core (trace_workers interleaved shares: numpy frees the GIL in its loops); the
        result does not depend on how they are split.
        """
        uv = np.asarray(uv, np.float64)
        k = min(trace_workers(), len(uv) // TRACE_SHARE_MIN)
        if k < 2:
            return self._trace(cam, uv)
        parts = list(_trace_pool().map(lambda i: self._trace(cam, uv[i::k]), range(k)))
        merged = {}
        for field in dataclasses.fields(Hits):
            first = getattr(parts[0], field.name)
            out = np.empty((len(uv),) + first.shape[1:], first.dtype)
            for i, part in enumerate(parts):
                out[i::k] = getattr(part, field.name)
            merged[field.name] = out
        return Hits(**merged)

    def _trace(self, cam: Camera, uv: np.ndarray) -> Hits:
        """trace() on one share of the rays."""
        o = cam.center
        d = pixel_rays(cam, uv) @ cam.c2w[:3, :3].T
        foot_per_m = 1.0 / np.sqrt(cam.K[0, 0] * cam.K[1, 1])
        n = len(d)
        t = self._sky_t(o, d)
        kind = np.full(n, SKY, np.int8)
        obj = np.full(n, -1, np.int32)
        normal = -d / np.linalg.norm(d, axis=1, keepdims=True)
        for i, ob in enumerate(self.objects):
            if ob["type"] == "sphere":
                ti = self._sphere_hit(o, d, ob["center"], ob["size"])
                ni = None
            else:
                ti, ni = self._box_hit(o, d, ob)
            closer = ti < t
            if closer.any():
                t[closer], kind[closer], obj[closer] = ti[closer], OBJECT, i
                if ni is None:
                    p = o + ti[closer, None] * d[closer]
                    normal[closer] = (p - ob["center"]) / ob["size"]
                else:
                    normal[closer] = ni[closer]
        tg, ng = self._ground_hit(o, d, t, foot_per_m)
        closer = tg < t
        t[closer], kind[closer], obj[closer], normal[closer] = tg[closer], GROUND, -1, ng[closer]
        point = o + t[:, None] * d
        return Hits(t, point, normal, kind, obj, foot_per_m * t)

    def shade(self, hits: Hits) -> np.ndarray:
        """Colour of the hits: [N, 3] float32 in [0, 1] (Lambert sun + sky light, fractal texture)."""
        pal = self.palette
        n = len(hits.t)
        rgb = np.zeros((n, 3))
        light = 0.4 + 0.6 * np.clip(hits.normal @ pal.sun, 0.0, 1.0)

        g = np.flatnonzero(hits.kind == GROUND)
        if g.size:
            p, fp = hits.point[g], hits.footprint[g]
            tex, _, _ = fbm2(p[:, 0], p[:, 1], fp, stable_int("ground-tex", self.seed),
                             self.GROUND_TEX_LAMBDA0, lambda lam: 1.0)
            tex2, _, _ = fbm2(p[:, 0], p[:, 1], fp, stable_int("ground-tex2", self.seed),
                              self.GROUND_TEX_LAMBDA0 / 3.0, lambda lam: 1.0)
            # a periodic map of the (unbounded) octave sum never saturates: contrast at every scale
            a = 0.5 + 0.5 * np.sin(2.0 * tex)[:, None]
            b = 0.5 + 0.5 * np.sin(2.0 * tex2)[:, None]
            c0, c1, c2 = (np.asarray(c) for c in pal.ground)
            rgb[g] = ((1 - a) * c0 + a * c1) * (1 - 0.5 * b) + 0.5 * b * c2
        o = np.flatnonzero(hits.kind == OBJECT)
        if o.size:
            tex = fbm3(hits.point[o], hits.footprint[o], stable_int("object-tex", self.seed),
                       self.OBJECT_TEX_LAMBDA0)
            base = np.stack([np.asarray(self.objects[i]["colour"]) for i in hits.obj[o]])
            rgb[o] = base * (0.7 + 0.3 * np.sin(2.0 * tex))[:, None]
        rgb *= light[:, None]
        s = np.flatnonzero(hits.kind == SKY)
        if s.size:
            p = hits.point[s]
            up = np.clip(p[:, 2] / SKY_RADIUS, 0.0, 1.0)[:, None]
            base = (1 - np.sqrt(up)) * pal.sky_horizon + np.sqrt(up) * pal.sky_zenith
            cloud = fbm3(p, hits.footprint[s], stable_int("clouds", self.seed), self.CLOUD_LAMBDA0)
            cover = np.clip(cloud - 0.2, 0.0, 1.0)[:, None] * 0.8
            rgb[s] = (1 - cover) * base + cover * pal.cloud
        return np.clip(rgb, 0.0, 1.0).astype(np.float32)

    def render(self, cam: Camera, mask: np.ndarray | None = None):
        """Ground truth through cam: (rgb [H, W, 3] float32, depth [H, W] float64 z-depth).

        mask: [H, W] bool or None; pixels outside it stay rgb 0 and depth +inf.
        """
        H, W = cam.height, cam.width
        key = frame_key(cam)
        frame = FRAMES.get((self.prompt, self.seed, key))
        if frame is not None:
            rgb, depth = frame
        else:
            flat = np.arange(H * W) if mask is None else np.flatnonzero(np.asarray(mask).reshape(-1))
            hits = self.trace(cam, pixel_grid(W, H)[flat])
            rgb = np.zeros((H * W, 3), np.float32)
            depth = np.full(H * W, np.inf)
            rgb[flat], depth[flat] = self.shade(hits), hits.t
            rgb, depth = rgb.reshape(H, W, 3), depth.reshape(H, W)
            if mask is None:
                FRAMES.put((self.prompt, self.seed, key), rgb, depth)
                DEPTHS.put((self.seed, key), depth)
                return rgb, depth
        if mask is not None:                 # the rest of a memoised frame stays black, at +inf
            out = ~np.asarray(mask, bool).reshape(H, W)
            rgb[out], depth[out] = 0.0, np.inf
        return rgb, depth

    def depth(self, cam: Camera) -> np.ndarray:
        """True z-depth through every pixel of cam: [H, W] float64 (no shading). A whole frame
        traced for this seed and camera before (render without a mask, or depth) is not traced
        again (DEPTHS)."""
        key = (self.seed, frame_key(cam))
        known = DEPTHS.get(key)
        if known is not None:
            return known[0]
        depth = self.trace(cam, pixel_grid(cam.width, cam.height)).t.reshape(cam.height, cam.width)
        DEPTHS.put(key, depth)
        return depth


class FrameMemo:
    """The last whole frames traced, key → a tuple of arrays, at most max_bytes of them (the
    oldest go first); thread-safe; get and put copy, so no caller shares an array with another.

    The world is a function of (prompt, seed) and its geometry of the seed alone, so a memo
    changes no result. It spares the engine the second trace of a camera it has just rendered:
    the depth estimate of each dreamed view and zoom level, and the sharpening and second pass of
    a view after its holes were painted (0.2–0.5 s a trace at 320×240)."""

    def __init__(self, max_bytes: int = 64 << 20):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return tuple(a.copy() for a in item)

    def put(self, key, *arrays: np.ndarray) -> None:
        item = tuple(np.array(a) for a in arrays)
        size = sum(a.nbytes for a in item)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= sum(a.nbytes for a in old)
            self._items[key] = item
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, gone = self._items.popitem(last=False)
                self._bytes -= sum(a.nbytes for a in gone)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)


# (seed, frame_key) → (depth,), and (prompt, seed, frame_key) → (rgb, depth): whole frames
DEPTHS, FRAMES = FrameMemo(), FrameMemo()


# ---------------------------------------------------------------------------------------------
# The engine

def frame_key(cam: Camera) -> str:
    """What a frame of the world depends on: the camera's size and the sha256 of its K and c2w
    (float64), not its name (two names for one pose see one frame)."""
    digest = hashlib.sha256(np.ascontiguousarray(cam.K, np.float64).tobytes()
                            + np.ascontiguousarray(cam.c2w, np.float64).tobytes()).hexdigest()
    return f"{int(cam.width)}x{int(cam.height)}\x1f{digest[:32]}"


def camera_key(cam: Camera) -> str:
    """A stable identity of a camera: its name and its frame_key."""
    return f"{cam.name}\x1f{frame_key(cam)}"


def lie_key(seed: int, cam: Camera, role: str) -> int:
    """The 64-bit key every random draw of one depth estimate is seeded from: a stable hash of
    (seed, camera, role), so it never depends on which calls came before."""
    return stable_int("depth-lie", int(seed), check_role(role), camera_key(cam))


@dataclasses.dataclass(frozen=True)
class DepthLie:
    """What estimate_depth(…, cam, seed=…, role=…) tells: D̂ = scale · D · (1 + w + ε) + shift,
    ε ~ N(0, noise²), w = depth_warp_field(key, H, W, warp). camera: cam's name; key:
    lie_key(seed, cam, role); shift in metres (= shift_frac · median D); warp = max |w|."""

    camera: str
    role: str
    key: int
    scale: float
    shift: float
    shift_frac: float
    noise: float
    warp: float = 0.0


def depth_lie(seed: int, cam: Camera, role: str, *, scale_range=(0.3, 3.0),
              first_jitter: float = 0.05, shift: float = 0.03) -> tuple[float, float]:
    """The drawn lie (s, t_frac) of a depth estimate of cam in role for a seed.

    s is log-uniform in scale_range, but within 1 ± first_jitter for role "first" (a metric model
    is right on average, and the first view sets the world's scale); t_frac is uniform in
    [0, shift] (a positive shift keeps every estimated depth positive). Seeded by
    lie_key(seed, cam, role).
    """
    rng = np.random.default_rng(lie_key(seed, cam, role))
    if role == "first":
        s = rng.uniform(1.0 - first_jitter, 1.0 + first_jitter)
    else:
        lo, hi = scale_range
        s = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    return float(s), float(rng.uniform(0.0, shift))


def depth_warp_field(key: int, height: int, width: int, amplitude: float) -> np.ndarray:
    """The smooth warp w of the estimate with lie key `key`: [H, W] float64, max |w| = amplitude.

    w ∝ Σ_k a_k sin(2π f_k (cos θ_k x + sin θ_k y) + φ_k) + b₁x + b₂y + b₃xy over pixel centres
    (x, y) = ((j + ½) / L − ½·W/L, (i + ½) / L − ½·H/L), L = max(H, W): two sinusoids of f_k in
    [1, 3] cycles across the long side and a bilinear ramp, random weights from key, scaled so
    the largest |w| over the image is amplitude. The same field at every resolution.
    """
    if amplitude == 0:
        return np.zeros((height, width))
    rng = np.random.default_rng(stable_int("depth-warp", int(key)))
    L = float(max(height, width))
    x = ((np.arange(width) + 0.5) - 0.5 * width) / L
    y = ((np.arange(height) + 0.5) - 0.5 * height) / L
    X, Y = np.meshgrid(x, y)
    w = np.zeros((height, width))
    for _ in range(2):
        f, th, ph, a = rng.uniform(1.0, 3.0), rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi), \
            rng.uniform(0.3, 1.0)
        w += a * np.sin(2 * np.pi * f * (np.cos(th) * X + np.sin(th) * Y) + ph)
    b = rng.uniform(-1.0, 1.0, 3)
    w += b[0] * X + b[1] * Y + 4.0 * b[2] * X * Y
    return w * (amplitude / max(float(np.abs(w).max()), 1e-12))


def _check_seed(seed) -> int:
    if seed is None:
        raise ValueError("seed: the procedural engine's depth model measures the world of the "
                         "request's seed; pass estimate_depth(image, cam, seed=…, role=…)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed: must be an integer, got {seed!r}")
    return int(seed)


class ProceduralEngine:
    """The offline engine: paints the analytic World of (prompt, seed) and lies about its depth.

    Options (keyword):
      depth_scale_range=(0.3, 3.0)  scale s of the depth lie, log-uniform
      first_scale_jitter=0.05       role "first" draws s in 1 ± this
      depth_shift=0.03              shift t in [0, this] × median depth
      depth_noise=0.01              relative per-pixel noise (std)
      depth_warp=0.03               max |w| of the smooth warp (0 = a straight lie)
      depth_lies=None               explicit {camera name: (s, t_frac)}, overriding the draws for
                                    the estimates of those cameras (others draw as usual)
    The options are fixed at construction and the engine keeps nothing else: every call depends
    on its arguments only (lie(seed, cam, role) is what estimate_depth tells, for tests).
    """

    name = "procedural"
    device = "cpu"
    depth_space = "depth"

    def __init__(self, *, depth_scale_range=(0.3, 3.0), first_scale_jitter: float = 0.05,
                 depth_shift: float = 0.03, depth_noise: float = 0.01, depth_warp: float = 0.03,
                 depth_lies=None):
        lo, hi = (float(v) for v in depth_scale_range)
        if not (0 < lo <= hi):
            raise ValueError(f"depth_scale_range: need 0 < low ≤ high, got {depth_scale_range}")
        if not (0 <= first_scale_jitter < 1):
            raise ValueError(f"first_scale_jitter: must be in [0, 1), got {first_scale_jitter}")
        if not (0 <= depth_shift < 1):
            raise ValueError(f"depth_shift: must be in [0, 1), got {depth_shift}")
        if not (0 <= depth_noise < 0.5):
            raise ValueError(f"depth_noise: must be in [0, 0.5), got {depth_noise}")
        if not (0 <= depth_warp < 0.5):
            raise ValueError(f"depth_warp: must be in [0, 0.5), got {depth_warp}")
        self.depth_scale_range = (lo, hi)
        self.first_scale_jitter = float(first_scale_jitter)
        self.depth_shift = float(depth_shift)
        self.depth_noise = float(depth_noise)
        self.depth_warp = float(depth_warp)
        if depth_lies is not None and not hasattr(depth_lies, "items"):
            raise ValueError("depth_lies: must map camera names to (scale, shift_frac), "
                             f"got {type(depth_lies).__name__}")
        self.depth_lies = None if depth_lies is None else {
            str(name): (float(s), float(t)) for name, (s, t) in depth_lies.items()}
        if self.depth_lies and any(s <= 0 for s, _ in self.depth_lies.values()):
            raise ValueError("depth_lies: every scale must be > 0")

    @property
    def models(self) -> list[dict]:
        return [{"name": "procedural-world", "role": "inpaint+depth", "status": "builtin",
                 "weights": None}]

    def world_for(self, prompt: str, seed: int) -> World:
        """The world of (prompt, seed), built afresh for every call: a World is cheap, and the
        engine keeps none. (A subclass may memoise, e.g. a benchmark sharing ray tracing.) Its
        geometry, and so every depth, depends on the seed only."""
        return World(prompt, seed)

    def inpaint(self, image, hole, prompt: str, cam: Camera, seed: int, *, on_step=None,
                should_cancel=None) -> np.ndarray:
        """Render the world at the hole pixels; keep image elsewhere. → [H, W, 3] float32.

        No denoising, so on_step is never called; should_cancel() is polled once."""
        image = check_image(image, cam)
        hole = check_hole(hole, cam)
        if should_cancel is not None and should_cancel():
            raise JobCancelled(f"cancelled before painting '{cam.name}'")
        out = image.copy()
        if hole.any():
            # the whole frame (FRAMES): the view's depth estimate, its sharpening and its second
            # pass then trace nothing again
            rgb, _ = self.world_for(prompt, seed).render(cam)
            out[hole] = rgb[hole]
        return out

    def sharpen(self, image, mask, prompt: str, cam: Camera, seed: int, *,
                should_cancel=None) -> np.ndarray:
        """The world at cam's resolution at the mask pixels (what a closer look resolves: the
        world rendered through cam, as inpaint paints holes); image elsewhere. → [H, W, 3]."""
        return self.inpaint(image, mask, prompt, cam, seed, should_cancel=should_cancel)

    def lie(self, seed: int, cam: Camera, role: str, depth=None) -> DepthLie:
        """The lie estimate_depth(…, cam, seed=seed, role=role) tells. depth: the true z-depth of
        cam [H, W] (default: traced here), for the shift in metres."""
        seed, role = _check_seed(seed), check_role(role)
        key = lie_key(seed, cam, role)
        if self.depth_lies is not None and cam.name in self.depth_lies:
            s, t_frac = self.depth_lies[cam.name]
        else:
            s, t_frac = depth_lie(seed, cam, role, scale_range=self.depth_scale_range,
                                  first_jitter=self.first_scale_jitter, shift=self.depth_shift)
        D = self.world_for("", seed).depth(cam) if depth is None else depth
        return DepthLie(cam.name, role, key, s, t_frac * float(np.median(D)), t_frac,
                        self.depth_noise, self.depth_warp)

    def estimate_depth(self, image, cam: Camera, *, seed=None, role=None) -> np.ndarray:
        """The true z-depth seen through the lie of (seed, cam, role) (module docstring):
        [H, W] float32. The image is only checked; seed and role are required."""
        check_image(image, cam)
        seed, role = _check_seed(seed), check_role(role)
        D = self.world_for("", seed).depth(cam)  # the geometry depends on the seed only
        lie = self.lie(seed, cam, role, depth=D)
        eps = np.random.default_rng(stable_int("depth-noise", lie.key)).normal(
            0.0, 1.0, D.shape) * self.depth_noise
        w = depth_warp_field(lie.key, cam.height, cam.width, self.depth_warp)
        return (lie.scale * D * (1.0 + w + eps) + lie.shift).astype(np.float32)

    def paint_zoom_stack(self, cam: Camera, prompts: list[str], factor: float, seed: int, *,
                         scene_prompt=None, photo=None, progress=None, should_cancel=None, rig=None):
        """The zoom stack of cam: the world rendered from every zoom level's camera (rig; None:
        LENS) (procedural_zoom.py), which is consistent and agrees with the point cloud by
        construction, so photo is not needed."""
        from .procedural_zoom import procedural_zoom_stack

        return procedural_zoom_stack(cam, list(prompts), factor, seed, scene_prompt=scene_prompt,
                                     progress=progress, should_cancel=should_cancel, rig=rig)
