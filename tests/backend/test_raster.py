"""The reference rasterizer: analytic footprints, front-to-back order, tiles = one big tile,
autograd, gsplat's conventions; gsplat itself is checked against it when CUDA exists."""
import math

import numpy as np
import pytest
import torch

from zoomscape.gaussians import torch_threads
from zoomscape.raster import quat_to_rotmat, rasterize, rasterize_naive, rotmat_to_quat

W = H = 32
K = torch.tensor([[[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]]])
V = torch.eye(4)[None]
ID = torch.tensor([[1.0, 0, 0, 0]])


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: one torch thread is faster than forking to every core of a shared machine."""
    with torch_threads(1):
        yield


def one(mean, s, o, aa=True, Ks=K):
    return rasterize(torch.tensor([mean]), ID, torch.full((1, 3), s), torch.tensor([o]),
                     torch.ones(1, 3), V, Ks, W, H, antialiased=aa)


@pytest.mark.parametrize("aa", [True, False])
def test_single_isotropic_gaussian_footprint_and_peak(aa):
    z, s, o = 4.0, 0.2, 0.8                                    # σ = 40·0.2/4 = 2 px
    K_c = torch.tensor([[[40.0, 0, 16.5], [0, 40.0, 16.5], [0, 0, 1]]])  # axis through pixel (16, 16)
    _, alpha = one([0.0, 0.0, z], s, o, aa, Ks=K_c)
    a = alpha[0, :, :, 0].double().numpy()
    var = (40 * s / z) ** 2 + 0.3                               # + the 0.3 px² low-pass
    peak = o * (math.sqrt((var - 0.3) ** 2 / var ** 2) if aa else 1.0)
    assert a[16, 16] == pytest.approx(peak, rel=1e-5)
    for r in (1, 2, 3, 4):                                      # Gaussian fall-off along a row
        assert a[16, 16 + r] == pytest.approx(peak * math.exp(-r * r / (2 * var)), rel=1e-4)
        assert a[16 + r, 16] == pytest.approx(a[16, 16 + r], rel=1e-5)
    # nothing where α < 1/255: the footprint ends at √(2 ln(255·peak)·var)
    reach = math.sqrt(2 * math.log(255 * peak) * var)
    assert a[16, 16 + math.ceil(reach)] == 0 and a[16, 16 + math.floor(reach)] > 0


def test_front_to_back_order_not_input_order():
    means = torch.tensor([[0.0, 0, 4], [0.02, 0, 8]])           # red near, blue far, overlapping
    cols = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]])
    args = dict(quats=ID.repeat(2, 1), scales=torch.tensor([[0.2] * 3, [0.4] * 3]),
                opacities=torch.tensor([0.6, 0.9]), viewmats=V, Ks=K, width=W, height=H)
    rgb, alpha = rasterize(means, colors=cols, **args)
    rgb2, _ = rasterize(means.flip(0), colors=cols.flip(0), quats=args["quats"],
                        scales=args["scales"].flip(0), opacities=args["opacities"].flip(0),
                        viewmats=V, Ks=K, width=W, height=H)
    torch.testing.assert_close(rgb, rgb2)
    c = rgb[0, 16, 16]
    _, a_red = one([0.0, 0, 4], 0.2, 0.6)
    _, a_blue = one([0.02, 0, 8], 0.4, 0.9)
    ar, ab = float(a_red[0, 16, 16]), float(a_blue[0, 16, 16])
    assert float(c[0]) == pytest.approx(ar, rel=1e-5)                 # red in front: α_r
    assert float(c[2]) == pytest.approx(ab * (1 - ar), rel=1e-5)      # blue behind: α_b(1 − α_r)
    assert float(alpha[0, 16, 16]) == pytest.approx(1 - (1 - ar) * (1 - ab), rel=1e-5)
    means_swapped = torch.tensor([[0.0, 0, 8], [0.02, 0, 4]])   # now blue is nearer
    rgb3, _ = rasterize(means_swapped, colors=cols, **{k: v for k, v in args.items()})
    assert rgb3[0, 16, 16, 2] > rgb3[0, 16, 16, 0]


def random_scene(n, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * torch.tensor([3.0, 3, 1], dtype=dtype)
    means[:, 2] += 4
    return (means, torch.randn(n, 4, generator=g, dtype=dtype),
            torch.rand(n, 3, generator=g, dtype=dtype) * 0.1 + 0.01,
            torch.rand(n, generator=g, dtype=dtype), torch.rand(n, 3, generator=g, dtype=dtype))


def test_tiles_match_one_big_tile_and_chunking():
    means, quats, scales, opac, cols = random_scene(600)
    Vs, Ks = torch.cat([V, V]), torch.cat([K, K * torch.tensor([[1.2], [1.2], [1.0]])])
    a = rasterize(means, quats, scales, opac, cols, Vs, Ks, 40, 24)
    b = rasterize_naive(means, quats, scales, opac, cols, Vs, Ks, 40, 24)
    c = rasterize(means, quats, scales, opac, cols, Vs, Ks, 40, 24, tile_size=16, budget=5000)
    for x, y in ((a, b), (a, c)):
        torch.testing.assert_close(x[0], y[0], atol=2e-6, rtol=0)
        torch.testing.assert_close(x[1], y[1], atol=2e-6, rtol=0)
    assert a[0].shape == (2, 24, 40, 3) and a[1].shape == (2, 24, 40, 1)
    assert float(a[1].mean()) > 0.3


def test_autograd_matches_finite_differences():
    means, quats, scales, opac, cols = random_scene(12, seed=3, dtype=torch.float64)
    scales = scales * 3
    params = [t.clone().requires_grad_(True) for t in (means, scales, opac, cols)]
    f = lambda m, s, o, c: rasterize(m, quats, s, o, c, V.double(), K.double(), 12, 10)[0]  # noqa: E731
    assert torch.autograd.gradcheck(f, params, eps=1e-6, atol=1e-5, rtol=1e-3)


def test_background_and_per_view_colours():
    means, quats, scales, opac, cols = random_scene(50, seed=5)
    bg = torch.tensor([[0.2, 0.3, 0.4]])
    rgb, alpha = rasterize(means, quats, scales, opac, cols, V, K, W, H, backgrounds=bg)
    rgb0, _ = rasterize(means, quats, scales, opac, cols[None], V, K, W, H)
    torch.testing.assert_close(rgb, rgb0 + bg[:, None, None] * (1 - alpha))


def test_quaternion_round_trip():
    R = quat_to_rotmat(torch.randn(500, 4, dtype=torch.float64))
    q = rotmat_to_quat(R)
    torch.testing.assert_close(quat_to_rotmat(q), R)
    assert (q[:, 0] >= 0).all()


def test_bad_input_names_the_field():
    means, quats, scales, opac, cols = random_scene(5)
    with pytest.raises(ValueError, match="quats"):
        rasterize(means, quats[:4], scales, opac, cols, V, K, W, H)
    with pytest.raises(ValueError, match="Ks"):
        rasterize(means, quats, scales, opac, cols, V, K[:, :2], W, H)
    with pytest.raises(ValueError, match="backend"):
        rasterize(means, quats, scales, opac, cols, V, K, W, H, backend="opengl")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="gsplat's rasterizer needs CUDA; this CPU machine has none")
def test_gsplat_matches_reference_on_cuda():
    means, quats, scales, opac, cols = random_scene(2000, seed=7)
    ref = rasterize(means, quats, scales, opac, cols, V, K, 64, 48, backend="reference")
    dev = [t.cuda() for t in (means, quats, scales, opac, cols, V, K)]
    out = rasterize(*dev, 64, 48, backend="gsplat")
    torch.testing.assert_close(out[0].cpu(), ref[0], atol=2e-3, rtol=0)
    torch.testing.assert_close(out[1].cpu(), ref[1], atol=2e-3, rtol=0)


def dense_weights(rows, cols, w, n_pix, n):
    A = torch.zeros(n_pix, n, dtype=w.dtype)
    A.index_put_((rows, cols), w, accumulate=True)
    return A


def test_composite_weights_are_the_render_as_a_linear_map():
    from zoomscape.raster import composite_weights, project
    means, quats, scales, opac, cols = random_scene(600, seed=11)
    Vs, Ks = torch.cat([V, V]), torch.cat([K, K * torch.tensor([[1.3], [1.3], [1.0]])])
    Wd, Hd = 40, 24
    p = project(means, quats, scales, opac, Vs, Ks, Wd, Hd)
    for tile, budget in ((4, 1 << 22), (8, 3000)):
        rows, gauss, w, T = composite_weights(p, Wd, Hd, tile_size=tile, budget=budget)
        assert len(torch.unique(rows * 2 * 600 + gauss)) == len(rows)            # no duplicates
        assert (w > 0).all() and rows.max() < 2 * Hd * Wd and gauss.max() < 2 * 600
        A = dense_weights(rows, gauss, w, 2 * Hd * Wd, 2 * 600)
        rgb, alpha = rasterize(means, quats, scales, opac, cols, Vs, Ks, Wd, Hd)
        per_cam = torch.block_diag(*[torch.ones(Hd * Wd, 600)] * 2).bool()
        assert not A[~per_cam].any()                       # a camera's pixels see only its Gaussians
        lin = A @ torch.cat([cols, cols])                  # c·N + n → the colour of Gaussian n
        torch.testing.assert_close(lin.reshape(2, Hd, Wd, 3), rgb, atol=2e-6, rtol=0)
        torch.testing.assert_close(T, 1 - alpha[..., 0], atol=2e-6, rtol=0)
        # linear: a second set of colours gives that render too
        cols2 = torch.rand(600, 3, generator=torch.Generator().manual_seed(1))
        rgb2, _ = rasterize(means, quats, scales, opac, cols2, Vs, Ks, Wd, Hd)
        torch.testing.assert_close((A @ torch.cat([cols2, cols2])).reshape(2, Hd, Wd, 3), rgb2, atol=2e-6, rtol=0)


def test_a_pixel_stops_for_good_at_t_min_even_across_chunks():
    # six layers of α ≈ 0.83 at the image centre in front of one faint green one: at the four
    # centre pixels T after five layers is ≈ 0.17⁵ ≈ 1.6e-4 and the sixth would take it below
    # T_MIN = 1e-4, so they stop there (gsplat) and the faint layer must not show, whether the walk
    # sees the layers in one chunk or one per chunk; the corners (α ≈ 0.5) never stop and show it
    n = 7
    means = torch.tensor([[0.0, 0.0, 2.0 + 0.01 * k] for k in range(n)])
    opac = torch.tensor([0.85] * 6 + [0.1])
    cols = torch.zeros(n, 3)
    cols[:6, 0] = 1.0
    cols[6, 1] = 1.0
    scales = torch.full((n, 3), 1.0)                         # σ ≈ 2 px over a 4×4 image
    Kc = torch.tensor([[[4.0, 0, 2.0], [0, 4.0, 2.0], [0, 0, 1]]])
    args = (means, ID.repeat(n, 1), scales, opac, cols, V, Kc, 4, 4)
    one_chunk = rasterize(*args, antialiased=False)
    per_layer = rasterize(*args, antialiased=False, budget=16)         # 1 Gaussian per chunk
    torch.testing.assert_close(per_layer[0], one_chunk[0], atol=1e-7, rtol=0)
    torch.testing.assert_close(per_layer[1], one_chunk[1], atol=1e-7, rtol=0)
    green = one_chunk[0][0, :, :, 1]
    assert float(green[1:3, 1:3].max()) == 0.0                        # stopped: hidden
    assert float(green[0, 0]) > 1e-4                                   # corners never stop
    T = 1 - one_chunk[1][0, 1:3, 1:3, 0]                                # Π of the five kept layers
    assert float(T.max()) < 1e-3 and float(T.min()) > 1e-4
