"""Pure-tensor tests of the zoom stack: Π_noise, Π_image, resampling, multi-resolution blending."""
import math

import pytest
import torch
import torch.nn.functional as F

from zoomscape import zoom
from zoomscape.zoom import (blend, blend_window, check_factor, collapse_pyramid, consistency_error,
                            ddim_step, ddpm_step, laplacian_pyramid, noise_depth, pi_image, pi_image_all,
                            pi_noise, pi_noise_all, pyramid_spec, resample_level, timesteps)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def consistent_stack(N, C, H, p, seed=0):
    """Random levels made consistent by Π_image (finer levels pasted into coarser ones)."""
    return pi_image_all(torch.rand(N, C, H, H, generator=gen(seed)), p)


# --- resampling --------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [2, 4])
def test_integer_fast_path_matches_area_matrices(p):
    x = torch.rand(3, 32, 32, generator=gen(1))
    for rel in (1, 2, -1, -2):
        img, cov, var = resample_level(x, rel, p)
        s = float(p) ** rel
        A = torch.as_tensor(zoom._area_weights_np(32, 32, s), dtype=x.dtype)
        assert torch.allclose(img, A @ x @ A.T, atol=1e-6)
        assert torch.allclose(cov, A.sum(1)[:, None] * A.sum(1)[None])


def test_shrunk_level_is_exact_box_average_in_the_centre():
    x = torch.rand(2, 16, 16, generator=gen(2))
    img, cov, _ = resample_level(x, 1, 2)
    assert torch.allclose(img[:, 4:12, 4:12], F.avg_pool2d(x, 2))
    assert cov[4:12, 4:12].eq(1).all() and cov.sum() == 64
    assert img[:, :4].abs().max() == 0


@pytest.mark.parametrize("p", [1.5, 2.5])
def test_non_integer_area_resample_preserves_the_mean(p):
    x = torch.rand(1, 40, 40, generator=gen(3))
    img, cov, _ = resample_level(x, 1, p)          # the whole of x lands in the footprint
    assert math.isclose(img.sum().item(), x.mean().item() * (40 / p) ** 2, rel_tol=1e-4)
    assert math.isclose(cov.sum().item(), (40 / p) ** 2, rel_tol=1e-4)


# --- Π_noise -----------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [2, 4, 2.5])
def test_pi_noise_is_unit_gaussian_in_every_level_and_every_pasted_region(p):
    N, C, H = 5, 256, 32
    Z = pi_noise_all(torch.randn(N, C, H, H, generator=gen(4)), p)
    for i in range(N):
        # region r: pixels whose finest pasted level is i + r (r = 0: level i's own noise)
        depth = torch.zeros(H, H)
        for j in range(i + 1, min(N, i + 1 + noise_depth(H, p))):
            depth = torch.where(resample_level(torch.zeros(H, H), j - i, p)[1] > 0, float(j - i), depth)
        for r in depth.unique():
            z = Z[i][:, depth == r]
            n = z.numel()
            assert abs(z.mean().item()) < 6 / math.sqrt(n), (i, r)
            assert abs(z.var().item() - 1.0) < 6 * math.sqrt(2 / n), (i, r, z.var().item())


def test_pi_noise_is_identical_where_levels_overlap():
    """Centre of Π_noise(E; i) = p · avg_p(Π_noise(E; i+1)) over the levels both include."""
    p, H, N = 2, 32, 8
    E = torch.randn(N, 4, H, H, generator=gen(5))
    d = noise_depth(H, p)
    for i in range(N - 1):
        a = pi_noise(E, i, p)[:, H // 4:3 * H // 4, H // 4:3 * H // 4]
        b = p * F.avg_pool2d(pi_noise(E[:i + 1 + d], i + 1, p), p)
        assert torch.allclose(a, b, atol=1e-5), i


def test_plain_average_would_not_be_unit_variance():
    """The ×r matters: without it the pasted noise has variance 1/r² (guards the test above)."""
    E = torch.randn(2, 256, 16, 16, generator=gen(6))
    img, _, _ = resample_level(E[1], 1, 2)
    assert img[:, 4:12, 4:12].var() < 0.3
    assert abs(pi_noise(E, 0, 2)[:, 4:12, 4:12].var() - 1) < 0.05


# --- Π_image -----------------------------------------------------------------------------------

def direct_pi_image(L, i, p):
    """Π_image by the definition: paste every finer level, shrunk by p^(j−i), into the centre."""
    out = L[i].clone()
    H = L.shape[-1]
    for j in range(i + 1, L.shape[0]):
        r = p ** (j - i)
        if H % r or (H - H // r) % 2:
            break
        o = (H - H // r) // 2
        out[:, o:o + H // r, o:o + H // r] = F.avg_pool2d(L[j], r)
    return out


def test_pi_image_pastes_every_finer_level():
    L = torch.rand(4, 3, 32, 32, generator=gen(7))
    for i in range(4):
        assert torch.allclose(pi_image(L, i, 2), direct_pi_image(L, i, 2), atol=1e-6)
    assert not torch.allclose(pi_image(L, 0, 2), L[0])


@pytest.mark.parametrize("p,H", [(2, 64), (3, 54), (4, 64), (1.5, 48), (2.5, 40)])
def test_pi_image_of_a_consistent_stack_returns_the_stack(p, H):
    L = torch.rand(6, 3, H, H, generator=gen(8))
    assert consistency_error(L, p).min() > 0.05
    S = pi_image_all(L, p)
    assert consistency_error(S, p).max() < 1e-6
    assert torch.allclose(pi_image_all(S, p), S, atol=1e-6)


# --- blending ----------------------------------------------------------------------------------

def test_laplacian_pyramid_collapses_back():
    x = torch.rand(2, 3, 64, 64, generator=gen(9))
    for q in (2, 4):
        q_, D = pyramid_spec(64, 64, q)
        bands = laplacian_pyramid(x, q, D)
        assert [b.shape[-1] for b in bands] == [64 // q ** k for k in range(D + 1)]
        assert torch.allclose(collapse_pyramid(bands, q), x, atol=1e-6)


@pytest.mark.parametrize("p,H,N", [(2, 64, 9), (3, 54, 5), (4, 64, 5), (8, 64, 3)])
def test_blending_a_consistent_stack_is_the_identity(p, H, N):
    S = consistent_stack(N, 4, H, p)
    assert torch.allclose(blend(S, p), S, atol=1e-5)


@pytest.mark.parametrize("p,H", [(1.5, 48), (2.5, 40)])
def test_blending_non_integer_p_nearly_keeps_a_consistent_stack(p, H):
    S = consistent_stack(5, 3, H, p)
    X = torch.rand(5, 3, H, H, generator=gen(10))            # an inconsistent stack
    assert (blend(S, p) - S).abs().mean() < 0.3 * (blend(X, p) - X).abs().mean()  # measured ≈ 0.2


def test_blending_agrees_low_frequencies_and_keeps_the_finest_detail():
    p, H = 2, 32
    X = torch.rand(4, 3, H, H, generator=gen(11))
    B = blend(X, p)
    before, after = consistency_error(X, p, size=4), consistency_error(B, p, size=4)
    assert (after < 0.35 * before).all(), (before, after)  # measured ≈ 0.2; Π_image then makes it exact
    q, D = pyramid_spec(H, H, p)
    # the finest level's finest band has no other observer: it is kept exactly
    assert torch.allclose(laplacian_pyramid(B[-1], q, D)[0], laplacian_pyramid(X[-1], q, D)[0], atol=1e-5)
    # level 0 outside level 1's footprint has no other observer of its fine band either
    b0, x0 = laplacian_pyramid(B[0], q, D)[0], laplacian_pyramid(X[0], q, D)[0]
    assert torch.allclose(b0[:, :4], x0[:, :4], atol=1e-5)


def test_blend_window_is_the_laplacian_depth_limit():
    assert blend_window(8, 8, 2) == (2, 2)       # 8 px: coarse up to 4 px blocks, fine ≥ 2 px
    assert blend_window(64, 64, 4) == (2, 2)
    assert blend_window(64, 64, 2) == (5, 5)


# --- steps and input checks ----------------------------------------------------------------------

def test_last_steps_return_the_prediction():
    x, x0 = torch.randn(2, 4, 8, 8, generator=gen(12)), torch.randn(2, 4, 8, 8, generator=gen(13))
    assert torch.allclose(ddpm_step(x, x0, torch.randn_like(x), 0.999, 1.0), x0, atol=1e-6)
    assert torch.allclose(ddim_step(x, x0, 0.999, 1.0), x0, atol=1e-5)
    ts = timesteps(1000, 10)
    assert ts[0] == 999 and ts[-1] == 0 and len(ts) == 10 and ts == sorted(ts, reverse=True)


@pytest.mark.parametrize("bad", [1, 0.5, 9, "x", float("nan")])
def test_bad_factor_names_the_field(bad):
    with pytest.raises(ValueError, match="factor"):
        check_factor(bad)


@pytest.mark.parametrize("p, n, m", [(4.0, 3, 2), (2.0, 3, 1), (1.5, 4, 1), (3.0, 2, 2), (8.0, 3, 3),
                                     (2.1, 2, 2), (4.0, 1, 1), (8.0, 1, 1)])
def test_each_step_of_the_factor_is_painted_in_steps_of_at_most_two(p, n, m):
    """painted_levels: N prompts at p → (N − 1)·m + 1 levels at q = p^(1/m) ≤ MAX_STEP, the
    least such m; painted level k·m is the user's level k (zoom q^(k·m) = p^k), the levels
    between carry the coarser user level's prompt; one level is painted as it is."""
    prompts = [f"level {k}" for k in range(n)]
    painted = zoom.painted_levels(prompts, p)
    assert painted.substeps == m == zoom.substeps(p, n)
    assert len(painted) == (n - 1) * m + 1
    q = painted.factor
    if n == 1:                                   # a single level: its dive zooms p× past it
        assert q == p
    else:
        assert q <= zoom.MAX_STEP + 1e-12 and (m == 1 or p ** (1.0 / (m - 1)) > zoom.MAX_STEP)
    assert q ** m == pytest.approx(p, rel=1e-12)
    for j, prompt in enumerate(painted.prompts):
        assert prompt == prompts[j // m]
    assert [painted.prompts[k * m] for k in range(n)] == prompts


def test_the_painted_levels_fit_every_request_the_schema_allows():
    from zoomscape.wire.names import MAX_LEVELS, ZOOM_FACTOR_RANGE

    most = zoom.painted_levels(["x"] * MAX_LEVELS, ZOOM_FACTOR_RANGE[1])
    assert len(most) == zoom.MAX_PAINTED_LEVELS == 46
    with pytest.raises(ValueError, match="factor"):
        zoom.painted_levels(["x", "y"], 9.0)
