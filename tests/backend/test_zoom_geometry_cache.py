"""zoom.py caches the geometry of its resampling and blending (area matrices, coverage, band
masks: the same every denoising step) — a speed-up that must not change a single value. The
reference here is the uncached computation, written out as zoom.py did it before the cache."""
import pytest
import torch

from zoomscape import zoom


def uncached_resample(x, rel, p):
    H, W = x.shape[-2:]
    if rel == 0:
        one = torch.ones(H, W, dtype=x.dtype)
        return x, one, one
    s = float(p) ** rel
    Ay, Ax = zoom._area_weights(H, H, s, x.device, x.dtype), zoom._area_weights(W, W, s, x.device, x.dtype)
    cov = Ay.sum(1)[:, None] * Ax.sum(1)[None, :]
    var = (Ay ** 2).sum(1)[:, None] * (Ax ** 2).sum(1)[None, :]
    q = zoom._int_factor(p)
    if q is not None:
        r = q ** abs(rel)
        if zoom._aligned(H, r, rel > 0) and zoom._aligned(W, r, rel > 0):
            mh, mw = H // r, W // r
            oh, ow = (H - mh) // 2, (W - mw) // 2
            if rel > 0:
                img = x.new_zeros(x.shape)
                img[..., oh:oh + mh, ow:ow + mw] = zoom._box_down(x, r)
            else:
                img = zoom._nearest_up(x[..., oh:oh + mh, ow:ow + mw], r)
            return img, cov, var
    nzy, nzx = Ay > 0, Ax > 0
    ry = torch.nonzero(nzy.any(1)).flatten(); cy = torch.nonzero(nzy.any(0)).flatten()
    rx = torch.nonzero(nzx.any(1)).flatten(); cx = torch.nonzero(nzx.any(0)).flatten()
    ry, cy = slice(int(ry[0]), int(ry[-1]) + 1), slice(int(cy[0]), int(cy[-1]) + 1)
    rx, cx = slice(int(rx[0]), int(rx[-1]) + 1), slice(int(cx[0]), int(cx[-1]) + 1)
    img = x.new_zeros(x.shape)
    img[..., ry, rx] = Ay[ry, cy] @ x[..., cy, cx] @ Ax[rx, cx].T
    return img, cov, var


def uncached_blend(xhat, p):
    N, C, H, W = xhat.shape
    q, D = zoom.pyramid_spec(H, W, p)
    coarse, fine = zoom.blend_window(H, W, p)
    out = []
    for i in range(N):
        obs, masks = [], []
        for j in range(max(0, i - coarse), min(N, i + fine + 1)):
            img, cov, _ = uncached_resample(xhat[j], j - i, p)
            obs.append(img)
            masks.append(zoom._band_masks(cov[None], q, D, zoom._coarse_k0(i - j, p, q) if j < i else 0))
        bands = zoom.laplacian_pyramid(torch.stack(obs), q, D)
        blended = []
        for k, band in enumerate(bands):
            m = torch.cat([mk[k] for mk in masks])
            blended.append((m * band).sum(0) / m.sum(0).clamp_min(1e-12))
        out.append(zoom.collapse_pyramid(blended, q))
    return torch.stack(out)


@pytest.mark.parametrize("N, C, H, W, p", [(8, 4, 64, 64, 2.0), (8, 4, 64, 64, 4.0), (6, 4, 64, 48, 3.0),
                                           (5, 3, 96, 96, 2.5), (4, 4, 40, 40, 1.5)])
def test_cached_blending_is_bit_identical_to_the_uncached_computation(N, C, H, W, p):
    zoom._resampling.cache_clear()
    zoom._blend_weights.cache_clear()
    x = torch.randn(N, C, H, W, generator=torch.Generator().manual_seed(N * 100 + H))
    first = zoom.blend(x, p)                      # fills the caches
    assert zoom._blend_weights.cache_info().currsize > 0 and zoom._resampling.cache_info().currsize > 0
    again = zoom.blend(x, p)                      # reads them
    assert torch.equal(first, again) and torch.equal(first, uncached_blend(x, p))
    for rel in (-2, -1, 1, 2):
        for a, b in zip(zoom.resample_level(x[0], rel, p), uncached_resample(x[0], rel, p)):
            assert torch.equal(a, b), rel
    assert torch.equal(zoom.pi_noise_all(x, p), zoom.pi_noise_all(x, p))


def test_the_cached_geometry_is_not_changed_by_its_callers():
    zoom._resampling.cache_clear()
    x = torch.randn(3, 4, 32, 32)
    _, cov, var = zoom.resample_level(x[0], 1, 2.0)
    before = (cov.clone(), var.clone())
    zoom.pi_noise_all(x, 2.0), zoom.pi_image_all(x, 2.0), zoom.consistency_error(x, 2.0, size=4)
    _, cov2, var2 = zoom.resample_level(x[0], 1, 2.0)
    assert cov2 is cov and torch.equal(cov, before[0]) and torch.equal(var, before[1])


def test_pixel_sized_levels_are_not_cached():
    """Only latent-sized levels (≤ zoom.CACHE_PIXELS) keep their geometry: the pixel pass at the
    end of a job would hold megabytes per window for nothing."""
    zoom._resampling.cache_clear()
    zoom._blend_weights.cache_clear()
    x = torch.randn(3, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    assert 256 * 256 > zoom.CACHE_PIXELS
    assert torch.equal(zoom.blend(x, 2.0), uncached_blend(x, 2.0))
    assert zoom._resampling.cache_info().currsize == 0 and zoom._blend_weights.cache_info().currsize == 0


@pytest.mark.parametrize("r, shape", [(2, (3, 4, 8, 8)), (4, (2, 5, 7)), (3, (6, 6))])
def test_nearest_up_in_one_copy_is_the_repeat_it_replaced(r, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(r))
    assert torch.equal(zoom._nearest_up(x, r), x.repeat_interleave(r, dim=-2).repeat_interleave(r, dim=-1))
