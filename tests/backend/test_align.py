"""Depth alignment: known scales (and shifts) come back to 1% through noise, 20% outliers and depth
edges, in depth and in disparity; too little overlap is a clear error. (The seam: test_seam.py.)"""
import numpy as np
import pytest

from zoomscape.align import (DepthFit, apply_depth_fit, bilinear, depth_edges, fit_depth_pairs,
                             fit_depth_scale)

H, W = 96, 128


def scene_depth(rng, box_shift=0):
    """A z-depth map with a sloped ground, a box in front (sharp depth edges) and relief.
    box_shift moves the box's left edge right by that many pixels. Returns (z, box mask)."""
    i, j = np.mgrid[0:H, 0:W].astype(np.float64)
    z = 3.0 + 5.0 * (1.0 - i / H) + 0.3 * np.sin(j / 7.0) * np.cos(i / 5.0)
    box = (i > 30) & (i < 70) & (j > 40 + box_shift) & (j < 90)
    z[box] = 2.0 + 0.01 * j[box]
    return z, box


def monocular(rng, true, scale, shift, noise=0.03, outliers=0.2, edge_blur=2, one_sided=False):
    """pred such that true ≈ scale · pred + shift, with multiplicative noise, a fraction of wrong
    pixels (a contiguous blob plus scattered pixels, depths unrelated to the truth, or with
    one_sided all 1.3–3× too far, which drags a plain median ratio) and the box's depth edge
    displaced by a couple of pixels, as a monocular estimator would get it."""
    t = scene_depth(rng, box_shift=edge_blur)[0] if edge_blur else true
    assert (t != true).sum() == 39 * edge_blur     # the box rows 31..69, edge_blur columns
    pred = (t - shift) / scale * (1.0 + noise * rng.standard_normal(true.shape))
    wrong = np.zeros(true.shape, bool)
    if outliers == 0:
        return pred, wrong
    wrong[5:25, 5:45] = True                               # a hallucinated object
    n_scatter = int(outliers * true.size) - wrong.sum()
    flat = rng.choice(np.flatnonzero(~wrong), n_scatter, replace=False)
    wrong.flat[flat] = True
    lo, hi = (true.min() - shift) / scale, (true.max() - shift) / scale
    if one_sided:
        pred[wrong] *= rng.uniform(1.3, 3.0, wrong.sum())
    else:
        pred[wrong] = rng.uniform(0.3 * lo, 3.0 * hi, wrong.sum())
    return pred, wrong


@pytest.mark.parametrize("one_sided", [False, True])
@pytest.mark.parametrize("scale", [0.3, 0.5, 1.0, 2.0, 3.0])
def test_recovers_scale_without_shift(scale, one_sided):
    rng = np.random.default_rng(int(scale * 10))
    ref, _ = scene_depth(rng)
    pred, wrong = monocular(rng, ref, scale, 0.0, one_sided=one_sided)
    assert wrong.mean() == pytest.approx(0.2, abs=0.005)
    fit = fit_depth_scale(pred, ref, np.ones((H, W), bool), shift=False)
    assert fit.shift == 0.0
    assert fit.scale == pytest.approx(scale, rel=0.01)
    assert 0.6 * H * W < fit.inliers < 0.85 * H * W        # the wrong 20% are not inliers
    assert 0.02 < fit.residual < 0.05                      # ≈ the 3% noise


@pytest.mark.parametrize("scale", [0.3, 0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("shift", [-1.0, 0.8])
def test_recovers_scale_and_shift(scale, shift):
    rng = np.random.default_rng(int(scale * 10) + 7)
    ref, _ = scene_depth(rng)
    pred, _ = monocular(rng, ref, scale, shift)
    fit = fit_depth_scale(pred, ref, np.ones((H, W), bool), shift=True)
    assert fit.scale == pytest.approx(scale, rel=0.01)
    assert fit.shift == pytest.approx(shift, abs=0.01 * np.median(ref))
    aligned = apply_depth_fit(pred, fit)
    good = np.abs(aligned / ref - 1.0) < 0.1
    assert good.mean() > 0.75


def test_uses_only_the_masked_overlap():
    rng = np.random.default_rng(11)
    ref, _ = scene_depth(rng)
    pred, _ = monocular(rng, ref, 2.0, 0.0, outliers=0.0)
    pred[:, W // 2:] *= 3.0          # the right half disagrees: outside the overlap it must not count
    ref_inf = ref.copy()
    ref_inf[:, W // 2:] = np.inf     # as Projection.depth: +inf where the cloud is empty
    mask = np.zeros((H, W), bool)
    mask[:, :W // 2] = True
    for r in (ref, ref_inf):
        fit = fit_depth_scale(pred, r, mask, shift=False)
        assert fit.scale == pytest.approx(2.0, rel=0.01)
        assert fit.usable <= mask.sum()


def test_noise_free_fit_is_exact():
    rng = np.random.default_rng(12)
    ref, _ = scene_depth(rng)
    fit = fit_depth_scale((ref - 0.25) / 1.7, ref, np.ones((H, W), bool))
    assert fit.scale == pytest.approx(1.7, rel=1e-9)
    assert fit.shift == pytest.approx(0.25, abs=1e-8)
    assert fit.residual < 1e-9


def test_depth_edges_are_left_out():
    rng = np.random.default_rng(13)
    ref, box = scene_depth(rng)
    edges = depth_edges(ref, 0.1, dilate=0)
    # The box outline is an edge; the smooth ground is not.
    boundary = box ^ (np.roll(box, 1, 0) & np.roll(box, -1, 0) & np.roll(box, 1, 1)
                      & np.roll(box, -1, 1))
    assert edges[boundary].all()
    assert edges.sum() < 2.5 * boundary.sum()
    assert depth_edges(ref, 0.1, dilate=1).sum() > edges.sum()
    # With perfect data except at the box outline (misregistered by the estimator), the fit
    # ignores the outline entirely and is exact.
    pred = ref / 2.0
    pred[depth_edges(ref, 0.1, dilate=1)] = 100.0
    fit = fit_depth_scale(pred, ref, np.ones((H, W), bool), shift=False)
    assert fit.scale == pytest.approx(2.0, rel=1e-9)
    assert fit.inliers == fit.usable


def test_too_little_overlap_is_a_clear_error():
    rng = np.random.default_rng(14)
    ref, _ = scene_depth(rng)
    pred = ref / 2.0
    mask = np.zeros((H, W), bool)
    mask[10:15, 10:19] = True        # 45 pixels
    with pytest.raises(ValueError, match=r"only 45 usable overlap pixels.*at least 50"):
        fit_depth_scale(pred, ref, mask)
    mask[10:15, 10:20] = True        # 50 pixels is enough
    assert fit_depth_scale(pred, ref, mask, shift=False).scale == pytest.approx(2.0)
    nan_pred = pred.copy()
    nan_pred[10:15, 10:20] = np.nan  # non-finite predictions are not usable
    with pytest.raises(ValueError, match="only 0 usable"):
        fit_depth_scale(nan_pred, ref, mask)
    with pytest.raises(ValueError, match="same"):
        fit_depth_scale(pred, ref[:, :-1], mask)


def test_apply_depth_fit():
    pred = np.array([[1.0, 2.0], [3.0, np.inf]], np.float32)
    out = apply_depth_fit(pred, DepthFit(scale=2.0, shift=0.5, inliers=3, residual=0.0))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[2.5, 4.5], [6.5, np.inf]])


def test_flat_wall_with_shift_falls_back_to_scale():
    """A wall facing the camera has one depth: shift and scale cannot be told apart, so the fit
    keeps t = 0 and matches the depths with the scale alone."""
    rng = np.random.default_rng(15)
    ref = np.full((H, W), 4.0)
    pred = 1.6 * (1.0 + 0.01 * rng.standard_normal((H, W)))
    fit = fit_depth_scale(pred, ref, np.ones((H, W), bool), shift=True)
    assert fit.shift == 0.0
    assert fit.scale == pytest.approx(2.5, rel=0.005)


@pytest.mark.parametrize("scale,shift", [(0.4, 0.1), (2.5, -0.3), (1.0, 0.08)])
def test_disparity_fit_recovers_a_relative_models_affine_inverse_depth(scale, shift):
    """A relative model: 1/ref = s · (1/pred) + t. The disparity fit gets (s, t) back and its
    depth matches ref; a depth-space scale-and-shift fit cannot (the map is not affine in depth)."""
    rng = np.random.default_rng(int(scale * 100))
    ref, _ = scene_depth(rng)
    disp = (1.0 / ref * (1.0 + 0.01 * rng.standard_normal(ref.shape)) - shift) / scale
    pred = 1.0 / disp                                  # the engine hands depth = 1 / its disparity
    pred[5:25, 5:45] *= 2.5                            # a wrong blob
    mask = np.ones((H, W), bool)
    fit = fit_depth_scale(pred, ref, mask, space="disparity")
    assert fit.space == "disparity"
    assert fit.scale == pytest.approx(scale, rel=0.01)
    assert fit.shift == pytest.approx(shift, abs=0.01 * scale / np.median(ref))
    good = np.abs(apply_depth_fit(pred, fit) / ref - 1.0)
    good[5:25, 5:45] = 0.0
    depth_fit = fit_depth_scale(pred, ref, mask, space="depth")
    bad = np.abs(apply_depth_fit(pred, depth_fit) / ref - 1.0)
    bad[5:25, 5:45] = 0.0
    print(f"\nmean error: disparity fit {good.mean():.4f}, depth fit {bad.mean():.4f}")
    assert np.median(good) < 0.01 and good.mean() < 0.6 * bad.mean()


def test_disparity_fit_past_infinity_is_infinite():
    out = apply_depth_fit(np.array([1.0, 2.0, 4.0]), DepthFit(1.0, -0.4, 0, 0.0, space="disparity"))
    np.testing.assert_allclose(out[:2], [1.0 / 0.6, 1.0 / 0.1])
    assert out[2] == np.inf                            # 1/4 − 0.4 < 0: no finite depth


def test_pairs_subsample_fits_like_all_pairs():
    rng = np.random.default_rng(21)
    ref = rng.uniform(2.0, 50.0, 300_000)
    pred = (ref - 0.3) / 1.7 * (1.0 + 0.01 * rng.standard_normal(ref.size))
    full = fit_depth_pairs(pred, ref, max_samples=300_000)
    part = fit_depth_pairs(pred, ref, max_samples=20_000)
    assert part.scale == pytest.approx(1.7, rel=0.002) and full.scale == pytest.approx(1.7, rel=0.001)
    assert part.usable == full.usable == ref.size
    assert abs(part.inliers - full.inliers) < 0.01 * ref.size


def test_bad_options_are_named():
    ref = np.full((H, W), 4.0)
    with pytest.raises(ValueError, match="space: must be one of depth, disparity"):
        fit_depth_scale(ref, ref, np.ones((H, W), bool), space="log")
    with pytest.raises(ValueError, match="max_samples: must be at least min_pixels"):
        fit_depth_pairs(ref.ravel(), ref.ravel(), max_samples=10)
    with pytest.raises(ValueError, match="pred .* and ref .* must match"):
        fit_depth_pairs(ref.ravel(), ref.ravel()[:-1])


def test_bilinear_is_exact_on_a_plane_and_holds_the_edges():
    i, j = np.indices((H, W)).astype(np.float64)
    plane = 2.0 + 0.1 * i - 0.05 * j                  # value at pixel centre (j + ½, i + ½)
    uv = np.array([[0.5, 0.5], [10.25, 3.75], [W - 0.5, H - 0.5], [-3.0, 5.5], [W + 2.0, 0.0]])
    got = bilinear(plane, uv)
    x = np.clip(uv[:, 0] - 0.5, 0, W - 1)
    y = np.clip(uv[:, 1] - 0.5, 0, H - 1)
    np.testing.assert_allclose(got, 2.0 + 0.1 * y - 0.05 * x, rtol=1e-12)


def test_fronto_parallel_wall_fits_a_scale_not_a_wild_shift():
    """Over a wall facing the camera (ref nearly constant) scale and shift trade off against each
    other: the fit keeps the shift at 0 instead of a noise-driven pair (a scale of 100 and a
    shift of −1000 m fit such an overlap as well, and are wrong everywhere else)."""
    rng = np.random.default_rng(3)
    ref = 10.0 * (1 + 0.003 * rng.normal(size=5000))
    pred = ref / 2.5 * (1 + 0.003 * rng.normal(size=5000))
    fit = fit_depth_pairs(pred, ref)
    assert fit.shift == 0.0 and fit.scale == pytest.approx(2.5, rel=0.005)
