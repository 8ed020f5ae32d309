"""Zoom-level Gaussians: per-pixel Gaussians reproduce the level image (≥ 30 dB) before
refinement raises it; a lying depth estimator is aligned onto the coarser level; deep levels in
their local frame keep float32 precision."""
import numpy as np
import pytest
import torch

from zoomscape.cameras import from_wire, level_frame, look_at, pixel_grid, pixels_to_world, zoom_level_camera
from zoomscape.engines.base import DepthFor
from zoomscape.engines.procedural import ProceduralEngine, World
from zoomscape import gaussians
from zoomscape.gaussians import lift_levels, overlap_reference, pixel_gaussians, psnr, render_level

PROMPT, SEED = "a mossy valley", 3


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one torch thread is faster than forking to every core of a shared machine."""
    from zoomscape.gaussians import torch_threads
    with torch_threads(1):
        yield


def zoom_cam(n=32):
    return from_wire({"name": "Zoom", "matrix_world": look_at([0, -8, 3], [0, 0, 0.5]),
                      "fx": 1.1 * n, "fy": 1.1 * n, "cx": n / 2, "cy": n / 2, "width": n, "height": n})


def stack(cam, world, levels, p=4.0):
    anchor = world.trace(cam, np.array([[cam.width / 2, cam.height / 2]])).point[0]
    return anchor, [world.render(zoom_level_camera(cam, p, i))[0] for i in range(levels)]


def test_per_pixel_gaussians_reach_30db_and_refinement_raises_it(monkeypatch):
    """The refinement is checked from the plain footprint (every pixel's Gaussian σ wide, also in
    front of a depth edge): the edge footprint (the default, gaussians.EDGE_SHRINK) starts it
    6 dB higher on level 0 here, nearer to what 8 Adam steps can still improve."""
    cam = zoom_cam(32)
    engine = ProceduralEngine(depth_lies={"Zoom/level_00": (1.0, 0.0), "Zoom/level_01": (2.0, 0.02)})
    world = engine.world_for(PROMPT, SEED)
    anchor, images = stack(cam, world, 2)
    edge = lift_levels(images, cam, anchor, 4.0, DepthFor(engine, SEED))
    monkeypatch.setattr(gaussians, "EDGE_SHRINK", 1.0)
    levels = lift_levels(images, cam, anchor, 4.0, DepthFor(engine, SEED), refine_steps=8)
    for i, (lv, e) in enumerate(zip(levels, edge)):
        own = psnr(render_level(e.gaussians, zoom_level_camera(cam, 4.0, i), e.frame)[0], images[i])
        assert own >= lv.stats["psnr_init"], (i, own, lv.stats)
    for lv in levels:
        assert lv.stats["refined"]
        assert lv.stats["psnr_init"] >= 30.0, lv.stats
        assert lv.stats["psnr"] > lv.stats["psnr_init"] + 0.2, lv.stats
        assert lv.stats["loss_last"] < lv.stats["loss_first"]
    # the raw pixel colours (no deconvolution) are clearly worse: the colour fit does real work
    plain = ProceduralEngine(depth_lies={"Zoom/level_00": (1.0, 0.0)})
    lv = lift_levels(images[:1], cam, anchor, 4.0, DepthFor(plain, SEED), colour_steps=0)[0]
    rgb, _ = render_level(lv.gaussians,
                          zoom_level_camera(cam, 4.0, 0), lv.frame)
    assert psnr(rgb, images[0]) < levels[0].stats["psnr_init"] - 2


def test_lying_depth_lands_on_the_coarser_level():
    cam = zoom_cam(48)
    lies = [(1.0, 0.0), (2.5, 0.03), (0.4, 0.02)]
    engine = ProceduralEngine(depth_lies={f"Zoom/level_{i:02d}": lie for i, lie in enumerate(lies)})
    world = engine.world_for(PROMPT, SEED)
    anchor, images = stack(cam, world, 3)
    levels = lift_levels(images, cam, anchor, 4.0, DepthFor(engine, SEED), colour_steps=0)
    for i in (1, 2):
        ci = zoom_level_camera(cam, 4.0, i)
        truth = world.depth(ci)
        ref = overlap_reference(levels[i - 1].depth, 4.0)
        lied = engine.lie(SEED, ci, "level")       # what the lift's estimate of level i was told
        raw = (lied.scale * truth + lied.shift)
        assert np.median(np.abs(raw - ref) / ref) > 0.3          # the estimator lies a lot
        err = np.median(np.abs(levels[i].depth - ref) / ref)
        assert err < 0.02, (i, err)                              # ... and lifting undoes it
        assert np.median(np.abs(levels[i].depth - truth) / truth) < 0.03
        assert abs(levels[i].stats["scale"] * lied.scale - 1) < 0.1
        # the Gaussians sit on that depth: their world means project back to their pixels at D_i
        wm = levels[i].world_means()
        X = pixels_to_world(ci, pixel_grid(48, 48), levels[i].depth.reshape(-1))
        assert np.max(np.linalg.norm(wm - X, axis=1)) < 1e-5 * np.median(levels[i].depth)


def test_deep_level_local_frame_keeps_float32_precision():
    p, i = 4.0, 10
    cam = zoom_cam(24)
    world = World(PROMPT, SEED)
    anchor = world.trace(cam, np.array([[12.0, 12.0]])).point[0]
    ci = zoom_level_camera(cam, p, i)
    rgb, depth = world.render(ci)
    frame = level_frame(cam, anchor, p, i)
    g = pixel_gaussians(ci, rgb, depth, frame)
    assert g.means.dtype == np.float32
    truth = pixels_to_world(ci, pixel_grid(24, 24), depth.reshape(-1))      # float64 metres
    unit = frame.unit
    err = np.abs(frame.to_world(g.means) - truth).max() / unit
    # the only error left is float32 rounding of the local coordinates themselves (the procedural
    # world's depth at 4^10 varies by ~10^4 units along the ray, so |x_l| reaches ~10^4)
    rounding = 2.0 ** -23 * np.abs(g.means).max()
    assert err <= 2 * rounding, (err, rounding)
    local_err = (frame.to_world(g.means) - truth) @ frame.rotation / unit
    assert np.abs(local_err[:, :2]).max() < 1e-5          # across the image: < 10^-5 of a unit
    naive = np.abs(truth.astype(np.float32).astype(np.float64) - truth).max() / unit
    assert naive > 100 * err                              # world coordinates in float32: 500× worse
    np.testing.assert_allclose(frame.to_local(frame.to_world(g.means)), g.means, atol=1e-5)
    # and the level renders from its camera in local units
    out, _ = render_level(g, ci, frame)
    assert psnr(out, rgb) > 27


def test_bad_inputs_name_the_field():
    cam = zoom_cam(32)
    img = np.zeros((32, 32, 3), np.float32)
    eng = ProceduralEngine()
    with pytest.raises(ValueError, match="factor"):
        lift_levels([img], cam, [0, 0, 0], 20.0, eng)
    with pytest.raises(ValueError, match=r"level_images\[1\]"):
        lift_levels([img, img[:16]], cam, [0, 0, 0], 4.0, eng)
    with pytest.raises(ValueError, match="anchor"):
        lift_levels([img], cam, [0, 0], 4.0, eng)


def test_colour_fit_is_the_bounded_least_squares_optimum():
    """fit_colors against scipy's bounded least squares on the same sparse system: the colours
    stay in [0, 1] and reach the optimum's objective; the operator is the render."""
    from scipy.optimize import lsq_linear
    from scipy.sparse import csr_matrix, identity, vstack

    from zoomscape.gaussians import COLOUR_RIDGE, colour_operator, fit_colors

    cam = zoom_cam(24)
    world = World(PROMPT, SEED)
    anchor = world.trace(cam, np.array([[12.0, 12.0]])).point[0]
    rgb, depth = world.render(cam)
    frame = level_frame(cam, anchor, 4.0, 0)
    g = pixel_gaussians(cam, rgb, depth, frame)
    bg = torch.full((24, 24, 3), 0.5)
    # a target with saturated patches, so the bounds are active
    target = np.clip(rgb * 1.6 - 0.2, 0, 1).astype(np.float32)
    A, At, T = colour_operator(g, cam, frame)
    out, alpha = render_level(g.replace(colors=target.reshape(-1, 3)), cam, frame, background=bg)
    lin = (A @ torch.as_tensor(target.reshape(-1, 3))) + T[:, None] * 0.5
    torch.testing.assert_close(lin, out.reshape(-1, 3), atol=2e-6, rtol=0)
    torch.testing.assert_close(T, 1 - alpha.reshape(-1), atol=2e-6, rtol=0)

    c = fit_colors(g, target, cam, frame, background=bg)
    assert c.shape == g.colors.shape and c.min() >= 0 and c.max() <= 1
    # the same problem for scipy: [A; √λ I] c ≈ [I − b; √λ c₀], bounded to [0, 1]
    Ad = A.to_dense().numpy().astype(np.float64)
    lam = COLOUR_RIDGE * float((Ad ** 2).sum(0).mean())
    n = Ad.shape[1]
    M = vstack([csr_matrix(Ad), np.sqrt(lam) * identity(n)])
    b = (T.numpy()[:, None] * 0.5).astype(np.float64)
    obj = lambda x, ch: (np.sum((Ad @ x + b[:, 0] - target.reshape(-1, 3)[:, ch]) ** 2)  # noqa: E731
                         + lam * np.sum((x - g.colors[:, ch]) ** 2))
    for ch in range(3):
        y = np.concatenate([target.reshape(-1, 3)[:, ch] - b[:, 0], np.sqrt(lam) * g.colors[:, ch]])
        best = lsq_linear(M, y, bounds=(0, 1), tol=1e-10).x
        start = obj(g.colors[:, ch].astype(np.float64), ch)
        ours = obj(c[:, ch].astype(np.float64), ch)
        assert ours - obj(best, ch) < 0.02 * (start - obj(best, ch)), (ch, start, ours, obj(best, ch))
    # and the deconvolution renders the target far better than the pixel colours themselves
    fitted, _ = render_level(g.replace(colors=c), cam, frame, background=bg)
    plain, _ = render_level(g.replace(colors=target.reshape(-1, 3)), cam, frame, background=bg)
    assert psnr(fitted, target) > psnr(plain, target) + 3


def test_torch_threads_is_scoped():
    from zoomscape.gaussians import torch_threads
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with torch_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
