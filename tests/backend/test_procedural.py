"""The procedural engine: a deterministic analytic world with detail at every scale, and a depth
model that lies by exactly the parameters it is given."""
import dataclasses
import time

import numpy as np
import pytest

from zoomscape.cameras import (Camera, blender_intrinsics, from_wire, intrinsics_matrix, look_at,
                               pixel_grid)
from zoomscape.engines import ENGINES, EngineUnavailable, get_engine
from zoomscape.engines.base import Engine, protocol_problems
from zoomscape.engines.procedural import (GROUND, SKY, SKY_RADIUS, ProceduralEngine, World,
                                          depth_lie, fbm2, lie_key, stable_int)

PROMPT = "a misty harbour town at dawn"


def make_cam(eye, target, W=128, H=96, lens=30.0, name="cam"):
    intr = blender_intrinsics(lens, 36.0, 24.0, "AUTO", 0.0, 0.0, W, H)
    return from_wire(dict(name=name, matrix_world=look_at(eye, target).tolist(), **intr))


@pytest.fixture(scope="module")
def world():
    return World(PROMPT, 7)


@pytest.fixture(scope="module")
def view(world):
    cam = make_cam((0, -16, 2.5), (0, 0, 0.5))
    return cam, *world.render(cam)


def test_registry():
    assert "procedural" in ENGINES and "diffusers" in ENGINES
    eng = get_engine("procedural")
    assert isinstance(eng, Engine) and eng.name == "procedural" and eng.device == "cpu"
    assert protocol_problems(eng) == [] and eng.depth_space == "depth"   # by signature too
    assert eng.models and all("name" in m for m in eng.models)
    with pytest.raises(EngineUnavailable, match="missing model weights"):
        get_engine("diffusers")
    with pytest.raises(EngineUnavailable, match="unknown engine 'nope'"):
        get_engine("nope")


def test_render_is_deterministic_and_sane(world, view):
    cam, rgb, depth = view
    rgb2, depth2 = World(PROMPT, 7).render(cam)          # a fresh world from the same inputs
    assert np.array_equal(rgb, rgb2) and np.array_equal(depth, depth2)
    assert rgb.shape == (96, 128, 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert np.isfinite(depth).all() and depth.min() > 0
    # every ray ends on the sky dome at the latest: |X| ≤ SKY_RADIUS (z-depth ≥ ray length·cos)
    hits = world.trace(cam, pixel_grid(cam.width, cam.height))
    assert np.linalg.norm(hits.point, axis=1).max() <= SKY_RADIUS * (1 + 1e-9)
    kinds = set(np.unique(hits.kind).tolist())
    assert {SKY, GROUND} <= kinds and len(kinds) == 3      # sky, ground and some object in view
    # ground hits lie on the heightfield (relief included) at their own footprint
    g = hits.kind == GROUND
    h, _, _ = world.height(hits.point[g, 0], hits.point[g, 1], hits.footprint[g])
    assert np.median(np.abs(hits.point[g, 2] - h) / hits.t[g]) < 1e-4


def test_other_prompt_or_seed_changes_the_world(view):
    cam, rgb, depth = view
    rgb_p, depth_p = World("a red desert canyon at noon", 7).render(cam)
    rgb_s, depth_s = World(PROMPT, 8).render(cam)
    assert np.abs(rgb_p - rgb).mean() > 0.05                  # palette follows the prompt
    assert np.array_equal(depth_p, depth)                     # ... and only the palette
    assert np.abs(depth_s - depth).mean() / depth.mean() > 0.02   # layout follows the seed
    assert np.abs(rgb_s - rgb).mean() > 0.02
    # the hash is stable (sha256), not Python's per-process hash()
    assert stable_int("palette", "x") == stable_int("palette", "x") != stable_int("palette", "y")


def test_detail_at_every_zoom_scale(world):
    """Cameras zooming 4^k into the same ground point keep finding texture."""
    target = np.array([1.0, -3.0, 0.0])
    target[2] = world.height(target[:1], target[1:2], np.array([1e-9]))[0][0]
    stds = []
    for k in (0, 2, 4, 6):
        fx = 200.0 * 4 ** k                          # 1 px = 1 cm at 2 m, then 4^k finer
        base = make_cam(target + np.array([0.0, -1.2, 1.6]), target, W=64, H=64)
        cam = Camera("zoom", intrinsics_matrix(fx, fx, 32.0, 32.0), base.c2w, 64, 64)
        rgb, depth = world.render(cam)
        assert np.isfinite(depth).all()
        assert np.allclose(depth[30:34, 30:34], 2.0, rtol=0.03)   # the same point, 2 m away
        stds.append(float(rgb.mean(axis=2).std()))
    # the image spans 64·2^-… m: 0.64 m at k=0 down to 0.16 mm at k=6 (1/4^6 m ≈ 0.24 mm)
    print("\nluminance std per zoom 4^0, 4^2, 4^4, 4^6:", np.round(stds, 4))
    assert min(stds) > 0.01, stds
    assert max(stds) / min(stds) < 10, stds


def test_fbm_fades_octaves_below_the_footprint():
    x = np.linspace(0, 1, 2000)
    y = np.zeros_like(x)
    fine, _, _ = fbm2(x, y, np.full_like(x, 1e-4), 3, 1.0, lambda lam: 1.0)
    coarse, _, _ = fbm2(x, y, np.full_like(x, 0.05), 3, 1.0, lambda lam: 1.0)
    # coarse footprint keeps only λ ≥ 0.1: smoother (smaller sample-to-sample differences)
    assert np.abs(np.diff(coarse)).mean() < 0.2 * np.abs(np.diff(fine)).mean()


def test_depth_lie_matches_its_parameters(view):
    cam, rgb, depth = view
    cam2 = Camera("cam2", cam.K, cam.c2w, cam.width, cam.height)   # the same view, another camera
    # No smooth warp here: this checks scale, shift and noise (the warp is checked in test_seam.py).
    eng = ProceduralEngine(depth_lies={"cam": (1.0, 0.0), "cam2": (2.5, 0.02)}, depth_noise=0.01,
                           depth_warp=0.0)
    img = eng.inpaint(np.zeros_like(rgb), np.ones(depth.shape, bool), PROMPT, cam, 7)
    assert np.array_equal(img, rgb)
    d0 = eng.estimate_depth(img, cam, seed=7, role="first").astype(np.float64)
    d1 = eng.estimate_depth(img, cam2, seed=7, role="view").astype(np.float64)
    lies = [eng.lie(7, cam, "first"), eng.lie(7, cam2, "view")]         # what the calls told
    assert [(l.camera, l.role, l.scale, l.shift_frac) for l in lies] == [("cam", "first", 1.0, 0.0),
                                                                         ("cam2", "view", 2.5, 0.02)]
    t1 = lies[1].shift
    assert t1 == pytest.approx(0.02 * np.median(depth))
    rel0 = d0 / depth - 1
    assert abs(np.median(rel0)) < 2e-3 and 0.008 < rel0.std() < 0.012        # noise ~1 %
    # a least-squares fit of d1 against the true depth gives back s and t
    A = np.stack([depth.ravel(), np.ones(depth.size)], 1)
    (s, t), *_ = np.linalg.lstsq(A, d1.ravel(), rcond=None)
    assert s == pytest.approx(2.5, rel=0.01) and t == pytest.approx(t1, abs=0.05 * t1 + 0.02)
    assert (d1 > 0).all()


def test_drawn_lies_stay_in_range():
    cams = [make_cam((0.5 * c, -16, 2.5), (0, 0, 0.5), name=f"c{c}") for c in range(6)]
    s0 = [depth_lie(seed, cams[0], "first")[0] for seed in range(50)]
    s = [depth_lie(seed, c, role)[0] for seed in range(20) for c in cams[1:] for role in ("view", "level")]
    t = [depth_lie(seed, c, role)[1] for seed in range(20) for c in cams for role in ("first", "view")]
    assert all(0.95 <= v <= 1.05 for v in s0)
    assert all(0.3 <= v <= 3.0 for v in s) and max(s) / min(s) > 3
    assert all(0.0 <= v <= 0.03 for v in t)
    assert depth_lie(5, cams[2], "view") == depth_lie(5, cams[2], "view") != depth_lie(6, cams[2], "view")
    # the lie is keyed by (seed, camera, role), nothing else: another camera or role draws anew
    assert depth_lie(5, cams[2], "view") != depth_lie(5, cams[3], "view")
    assert depth_lie(5, cams[2], "view") != depth_lie(5, cams[2], "level")
    copy = Camera("c2", cams[2].K.copy(), cams[2].c2w.copy(), 128, 96)
    assert lie_key(5, copy, "view") == lie_key(5, cams[2], "view")            # an equal camera, the same key
    copy.c2w[0, 3] += 0.01
    assert lie_key(5, copy, "view") != lie_key(5, cams[2], "view")            # its pose is part of it


def test_inpaint_keeps_pixels_outside_the_hole(view):
    cam, rgb, depth = view
    eng = ProceduralEngine()
    given = np.full_like(rgb, 0.25)
    hole = np.zeros(depth.shape, bool)
    hole[20:40, 30:90] = True
    out = eng.inpaint(given, hole, PROMPT, cam, 7)
    assert np.array_equal(out[~hole], given[~hole])
    assert np.array_equal(out[hole], rgb[hole])


def test_bad_input_names_the_field(view):
    cam, rgb, depth = view
    eng = ProceduralEngine()
    with pytest.raises(ValueError, match="image: shape"):
        eng.inpaint(rgb[:10], np.ones(depth.shape, bool), PROMPT, cam, 7)
    with pytest.raises(ValueError, match="hole: must be a boolean"):
        eng.inpaint(rgb, np.ones(depth.shape), PROMPT, cam, 7)
    with pytest.raises(ValueError, match="seed: the procedural engine's depth model measures"):
        eng.estimate_depth(rgb, cam)                 # the world it measures is the seed's
    with pytest.raises(ValueError, match="role: 'side' is not one of first, view, level"):
        eng.estimate_depth(rgb, cam, seed=7, role="side")
    with pytest.raises(ValueError, match="seed: must be an integer"):
        eng.estimate_depth(rgb, cam, seed="7", role="view")
    with pytest.raises(ValueError, match="depth_lies: must map camera names"):
        ProceduralEngine(depth_lies=[(1.0, 0.0)])
    with pytest.raises(ValueError, match="depth_scale_range"):
        ProceduralEngine(depth_scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="outside the procedural world's sky dome"):
        World(PROMPT, 7).render(make_cam((0, -300, 2), (0, 0, 0)))


def test_render_time_512(world, record_property):
    cam = make_cam((0, -16, 2.5), (0, 0, 0.5), W=512, H=512)
    t0 = time.perf_counter()
    rgb, depth = world.render(cam)
    elapsed = time.perf_counter() - t0
    record_property("render_512_seconds", elapsed)
    print(f"\nprocedural render 512×512: {elapsed:.2f} s")
    assert np.isfinite(depth).all()
    assert elapsed < 6.0   # ~1 s on one free core; generous for a shared machine


def first_ground_hit_by_sampling(world, o, d, foot_per_m, t_max=60.0, per_footprint=20):
    """Brute-force first hit of each ray o + t·d on the ground: g = z − h(x, y; f·t) sampled
    per_footprint times per footprint (a geometric grid from 1 nm), then bisected."""
    q = np.log1p(foot_per_m / per_footprint)
    t = 1e-9 * np.exp(np.arange(int(np.log(t_max / 1e-9) / q) + 2) * q)
    out = np.full(len(d), np.inf)
    for i in range(len(d)):
        def g(tt):
            p = o + tt[:, None] * d[i]
            return p[:, 2] - world.height(p[:, 0], p[:, 1], foot_per_m * tt)[0]
        below = np.flatnonzero(g(t) <= 0)
        if below.size == 0:
            continue
        a, b = (t[below[0] - 1], t[below[0]]) if below[0] else (0.0, 0.0)
        for _ in range(60):
            m = 0.5 * (a + b)
            a, b = (m, b) if g(np.array([m]))[0] > 0 else (a, m)
        out[i] = b
    return out


@pytest.mark.parametrize("height", [0.03, 1e-3, 1e-4])
def test_the_ground_is_found_from_a_camera_just_above_it(world, height):
    """A camera millimetres above the relief (a deep DOLLY level) sees the ground where it is:
    grazing rays 5–30° down hit it within 1 % of the brute-force first hit (a Newton step from the
    hills alone found surfaces up to 55× too far at 0.1 mm)."""
    rng = np.random.default_rng(int(height * 1e6))
    x, y = rng.uniform(-5, 5, 2)
    z = world.height(np.array([x]), np.array([y]), np.array([1e-9]))[0][0] + height
    o = np.array([x, y, z])
    down, az = np.radians(rng.uniform(5, 30, 12)), rng.uniform(0, 2 * np.pi, 12)
    d = np.stack([np.cos(down) * np.cos(az), np.cos(down) * np.sin(az), -np.sin(down)], 1)
    foot_per_m = 1 / 266.7                               # the demo's 320 px lens
    t, normal = world._ground_hit(o, d, np.full(12, 60.0), foot_per_m)
    want = first_ground_hit_by_sampling(world, o, d, foot_per_m)
    assert np.isfinite(want).all() and np.isfinite(t).all()
    assert np.all(np.abs(t - want) / want < 0.01), (t / want).round(4)
    p = o + t[:, None] * d
    h, hx, hy = world.height(p[:, 0], p[:, 1], foot_per_m * t)
    assert np.abs(p[:, 2] - h).max() < 1e-6 * t.max()    # on the surface
    up = np.stack([-hx, -hy, np.ones_like(hx)], 1)
    up /= np.linalg.norm(up, axis=1, keepdims=True)
    assert np.abs((normal * up).sum(1)).min() > 0.999     # its normal


def test_a_grazing_ray_stops_at_the_first_crest(world):
    """A ray skimming the relief 45 m out (the demo's Cam.003, pixel (251, 73)) meets a crest
    6 m before the surface behind it: the march must not step over it."""
    o = np.array([2.0, -1.0, 1.7000000476837158])
    d = np.array([[0.7396817803010345, 0.7743497090600431, -0.03734716303646568]])
    t, _ = world._ground_hit(o, d, np.array([186.0]), 1 / 266.67)
    want = first_ground_hit_by_sampling(world, o, d, 1 / 266.67)
    assert abs(t[0] - want[0]) < 0.01 * want[0], (t, want)


def test_a_trace_is_the_same_on_one_thread_or_several(world, monkeypatch):
    from zoomscape.engines import procedural

    cam = make_cam((2, -9, 1.2), (0, 0, 0.4), W=96, H=64)
    uv = pixel_grid(cam.width, cam.height)
    monkeypatch.setattr(procedural, "trace_workers", lambda: 3)
    monkeypatch.setattr(procedural, "TRACE_SHARE_MIN", 512)
    several = world.trace(cam, uv)
    monkeypatch.setattr(procedural, "TRACE_SHARE_MIN", 10 ** 9)
    one = world.trace(cam, uv)
    for field in dataclasses.fields(one):
        assert np.array_equal(getattr(one, field.name), getattr(several, field.name)), field.name


def test_fbm_sums_the_same_octave_by_octave_or_all_at_once():
    from zoomscape.engines.procedural import FBM_RAGGED_MAX

    rng = np.random.default_rng(3)
    n = FBM_RAGGED_MAX + 100                              # summed octave by octave
    x, y = rng.uniform(-30, 30, n), rng.uniform(-30, 30, n)
    f = np.exp(rng.uniform(np.log(1e-6), np.log(1.0), n))
    amp = lambda lam: 0.012 * lam
    many = fbm2(x, y, f, 11, 4.0, amp)
    few = fbm2(x[:200], y[:200], f[:200], 11, 4.0, amp)   # every (point, octave) pair at once
    for a, b in zip(many, few):
        assert np.allclose(a[:200], b, rtol=1e-12, atol=1e-15)
    # a range of octaves adds up to the whole
    lo = fbm2(x[:200], y[:200], f[:200], 11, 4.0, amp, 0, 5)[0]
    hi = fbm2(x[:200], y[:200], f[:200], 11, 4.0, amp, 5)[0]
    assert np.allclose(lo + hi, few[0], rtol=1e-12, atol=1e-15)


def test_a_frame_is_traced_once_and_the_memo_changes_no_result(monkeypatch):
    """The engine traces a camera's whole frame once (procedural.FRAMES, DEPTHS): painting its
    holes, sharpening, a second pass and the depth estimate reuse it, and give exactly what a
    fresh trace gives; another prompt shares the geometry but not the colours."""
    from zoomscape.engines import procedural

    cam = make_cam((1, -12, 2.0), (0, 0, 0.7), W=64, H=48, name="memo")
    eng = ProceduralEngine()
    procedural.FRAMES.clear()
    procedural.DEPTHS.clear()
    calls = []
    trace = World.trace
    monkeypatch.setattr(World, "trace", lambda self, c, uv: calls.append(len(uv)) or trace(self, c, uv))
    hole = np.zeros((48, 64), bool)
    hole[10:30, 5:40] = True
    painted = eng.inpaint(np.zeros((48, 64, 3), np.float32), hole, PROMPT, cam, 7)
    sharp = eng.sharpen(painted, ~hole, PROMPT, cam, 7)
    D = eng.estimate_depth(sharp, cam, seed=7, role="view")
    masked_rgb, masked_depth = World(PROMPT, 7).render(cam, hole)
    assert calls == [64 * 48]                               # one whole frame, traced once
    procedural.FRAMES.clear()
    procedural.DEPTHS.clear()
    rgb, depth = World(PROMPT, 7).render(cam)
    assert np.array_equal(sharp, rgb) and np.array_equal(painted[hole], rgb[hole])
    assert np.array_equal(masked_rgb[hole], rgb[hole]) and np.all(masked_rgb[~hole] == 0)
    assert np.array_equal(masked_depth[hole], depth[hole]) and np.all(np.isinf(masked_depth[~hole]))
    procedural.DEPTHS.clear()
    assert np.array_equal(D, eng.estimate_depth(sharp, cam, seed=7, role="view"))
    renamed = Camera("another name", cam.K.copy(), cam.c2w.copy(), cam.width, cam.height)
    calls.clear()
    assert np.array_equal(World(PROMPT, 7).render(renamed)[0], rgb) and calls == []  # one pose, one frame
    other, other_depth = World("a red desert canyon", 7).render(cam)
    assert calls == [64 * 48] and not np.array_equal(other, rgb)
    assert np.array_equal(other_depth, depth)                # the seed's geometry


def test_the_frame_memo_is_bounded_and_hands_out_copies():
    from zoomscape.engines.procedural import FrameMemo

    memo = FrameMemo(max_bytes=3 * 800)
    for k in range(5):
        memo.put(k, np.full(100, float(k)))                 # 800 bytes each
    assert len(memo) == 3 and memo.get(0) is None and memo.get(1) is None
    got = memo.get(4)[0]
    got[:] = -1.0
    assert memo.get(4)[0][0] == 4.0                          # the memo kept its own
    memo.get(2)                                              # 2 is now the newest used
    memo.put(5, np.zeros(100))
    assert memo.get(3) is None and memo.get(2) is not None
    memo.put("big", np.zeros(1000))                          # larger than the memo: not kept
    assert memo.get("big") is None and len(memo) == 3
