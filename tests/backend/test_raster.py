"""The reference rasterizer: analytic footprints, front-to-back order, tiles = one big tile,
autograd, gsplat's conventions; gsplat itself is checked against it when CUDA exists."""
import math

import numpy as np
import pytest
import torch

from zoomscape.raster import quat_to_rotmat, rasterize, rasterize_naive, rotmat_to_quat

W = H = 32
K = torch.tensor([[[40.0, 0, 16], [0, 40.0, 16], [0, 0, 1]]])
V = torch.eye(4)[None]
ID = torch.tensor([[1.0, 0, 0, 0]])


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
