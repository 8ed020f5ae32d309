"""The 3D zoom stack (DOLLY levels, zoom3d): on the anchor plane it is the 2D stack exactly; off
it, its mapping, visibility and noise against brute force through cameras.LevelCameras, and joint
sampling with a tiny random Stable Diffusion gives levels consistent through the level cameras."""
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers.tiny_models import build_tiny_sd  # noqa: E402

from zoomscape import zoom, zoom3d  # noqa: E402
from zoomscape.cameras import (Camera, LevelCameras, intrinsics_matrix, pixel_grid,  # noqa: E402
                               pixels_to_world, world_to_pixels)

ROOT = Path(__file__).resolve().parents[2]
Z_A = 10.0
# zoom.py as it was before the 3D stack (the LENS reference)
LENS_REFERENCE_COMMIT = "abed40580321726115903a6ed7c6ef0915b5ede5"


# --- a scene: a tilted ground plane z = z_a − s·y and a fronto-parallel box, in level 0's camera ---

def rig_for(W, H, p):
    """Level 0 at the origin looking down +z (world = level 0's OpenCV frame), anchor on the axis."""
    cam = Camera("c", intrinsics_matrix(W, W, W / 2, H / 2), np.eye(4), W, H)
    return LevelCameras(cam, np.array([0.0, 0.0, Z_A]), float(p), "dolly")


BOX = dict(x=(0.05, 0.25), y=(-0.1, 0.15), z=0.6 * Z_A)     # angular extent from C_0, depth


def truth_depth(rig, j, W, H, s=1.2, box=BOX):
    """The analytic z-depth of level j's pixel centres: [H, W] (the ground, or the box in front)."""
    cam = rig.level(j, W, H)
    uv = pixel_grid(W, H)
    xr, yr = (uv[:, 0] - cam.K[0, 2]) / cam.K[0, 0], (uv[:, 1] - cam.K[1, 2]) / cam.K[1, 1]
    c = cam.center[2]
    t = (Z_A - c) / (1 + s * yr)
    t = np.where(t > 0, t, np.inf)
    if box is not None:
        zb = box["z"]
        tb = zb - c
        X, Y = tb * xr, tb * yr
        inside = (tb > 0) & (X >= box["x"][0] * zb) & (X <= box["x"][1] * zb) \
            & (Y >= box["y"][0] * zb) & (Y <= box["y"][1] * zb)
        t = np.where(inside & (tb < t), tb, t)
    return t.reshape(H, W)


def hidden_by_box(rig, i, P, box=BOX):
    """Brute-force visibility: whether the segment from C_i to each world point P: [K, 3] crosses
    the box's rectangle (all cameras share level 0's orientation; the box is at z = box z)."""
    c = rig.level(i).center
    zb = box["z"]
    t = (zb - c[2]) / (P[:, 2] - c[2])
    X = c + t[:, None] * (P - c)
    return (t > 0) & (t < 1) & (X[:, 0] >= box["x"][0] * zb) & (X[:, 0] <= box["x"][1] * zb) \
        & (X[:, 1] >= box["y"][0] * zb) & (X[:, 1] <= box["y"][1] * zb)


def geometry(W, p, N, **kw):
    rig = rig_for(W, W, p)
    return rig, zoom3d.stack_geometry(truth_depth(rig, 0, W, W, **kw), rig.anchor_depth, p, N, (W, W))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- on the anchor plane the 3D stack is the 2D stack --------------------------------------------

@pytest.mark.parametrize("p, H, N", [(2, 16, 4), (2, 32, 5), (4, 16, 3), (4, 64, 3)])
def test_on_the_anchor_plane_the_3d_operators_are_the_2d_ones(p, H, N):
    geo = zoom3d.stack_geometry(np.full((H, H), Z_A), Z_A, p, N, (H, H))
    assert torch.allclose(geo.D, torch.tensor([Z_A * p ** -j for j in range(N)], dtype=torch.float64)[:, None, None])
    x = torch.randn(N, 3, H, H, generator=gen(H))
    for j in range(N):
        for i in range(N):
            a, b = zoom.resample_level(x[j], j - i, p), zoom3d.resample_3d(x[j], geo, j, i)
            assert torch.allclose(a[0], b[0], atol=1e-6), (j, i)
            assert torch.allclose(a[1], b[1], atol=1e-6) and torch.allclose(a[2], b[2], atol=1e-6), (j, i)
    assert torch.allclose(zoom.pi_image_all(x, p), zoom3d.pi_image_3d(x, geo), atol=1e-6)
    assert torch.allclose(zoom.pi_noise_all(x, p), zoom3d.pi_noise_3d(x, geo), atol=1e-5)
    assert torch.allclose(zoom.blend(x, p), zoom3d.blend_3d(x, geo), atol=1e-5)
    assert torch.allclose(zoom.consistency_error(x, p), zoom3d.consistency_error_3d(x, geo), atol=1e-6)
    L = zoom.pi_image_all(x, p)                                  # consistent: 0 in both senses
    assert (zoom3d.consistency_error_3d(L, geo) < 1e-6).all()


@pytest.mark.parametrize("p", [1.5, 2.5])
def test_on_the_anchor_plane_non_integer_factors_resample_as_the_area_matrices(p):
    H, N = 40, 3
    geo = zoom3d.stack_geometry(np.full((H, H), Z_A), Z_A, p, N, (H, H))
    x = torch.randn(N, 2, H, H, generator=gen(3))
    for j in range(N):
        for i in range(N):
            for a, b in zip(zoom.resample_level(x[j], j - i, p), zoom3d.resample_3d(x[j], geo, j, i)):
                assert torch.allclose(a, b, atol=1e-5), (j, i)


def test_geometry_without_any_depth_is_the_anchor_plane():
    d = np.full((16, 16), np.inf)
    d[3, 4] = np.nan
    geo = zoom3d.stack_geometry(d, Z_A, 2, 3, (8, 8))
    assert geo.size == (8, 8) and torch.allclose(geo.D[2], torch.full((8, 8), Z_A / 4, dtype=torch.float64))


# --- the level depths ---------------------------------------------------------------------------

def test_level_depths_follow_the_surface_seen_from_each_level_camera():
    """D_j by forward-warping level 0's depth: exact on the ground plane (1/z is affine in the
    pixels), within 1 % of the analytic depth on ≥ 90 % of what level 0 saw with a box in front,
    finite everywhere, and downsampled with StackGeometry.at."""
    W, p, N = 32, 2, 3
    rig, plane = geometry(W, p, N, box=None)
    for j in range(N):
        assert np.allclose(plane.D[j].numpy(), truth_depth(rig, j, W, W, box=None), rtol=1e-9)
    rig, geo = geometry(W, p, N)
    for j in range(1, N):
        truth = truth_depth(rig, j, W, W)
        P = pixels_to_world(rig.level(j), pixel_grid(W, W), truth.reshape(-1))
        seen0 = ~hidden_by_box(rig, 0, P) | (np.abs(P[:, 2] - BOX["z"]) < 1e-9)
        rel = np.abs(geo.D[j].numpy().reshape(-1) / truth.reshape(-1) - 1)
        assert (rel[seen0] < 0.01).mean() > 0.9, (j, (rel[seen0] < 0.01).mean())
    holes = truth_depth(rig, 0, W, W)
    holes[5:9, 20:30] = np.inf
    holes[0, :] = np.nan
    g = zoom3d.stack_geometry(holes, Z_A, p, N, (W, W))
    assert torch.isfinite(g.D).all() and (g.D > 0).all()
    small = geo.at((16, 16))
    assert small.size == (16, 16) and small is geo.at((16, 16))
    rig16, small_plane = geometry(16, p, N, box=None)
    assert np.allclose(plane.at((16, 16)).D[1].numpy(), truth_depth(rig16, 1, 16, 16, box=None), rtol=1e-2)
    up = small_plane.at((W, W))                                  # larger than its source: warped afresh
    for j in range(N):
        assert np.allclose(up.D[j].numpy(), truth_depth(rig, j, W, W, box=None), rtol=1e-9), j


# --- the mapping against unproject-then-project --------------------------------------------------

def basis(hw, H):
    return torch.eye(hw, dtype=torch.float64).reshape(hw, H, H)


@pytest.mark.parametrize("i, j", [(0, 1), (0, 2), (1, 2)])
def test_mapping_matches_unproject_then_project(i, j):
    """Every level-j pixel (its centre at depth D_j) lands where pixels_to_world through level j's
    camera and world_to_pixels through level i's put it, and resample_3d's splat of it covers that
    pixel (and nothing more than a pixel away); the other way, every level-i pixel samples the
    level-j pixel its centre projects into."""
    W, p, N = 16, 2, 3
    rig, geo = geometry(W, p, N)
    uv = pixel_grid(W, W)
    # finer into coarser
    Dj = geo.D[j].numpy().reshape(-1)
    ui, zi = world_to_pixels(rig.level(i), pixels_to_world(rig.level(j), uv, Dj))
    mine, z_mine = zoom3d.radial_map(torch.from_numpy(uv), geo.D[j].reshape(-1), geo.delta(i, j), (W, W))
    assert np.allclose(mine.numpy(), ui, atol=1e-9) and np.allclose(z_mine.numpy(), zi)
    splats = zoom3d.resample_3d(basis(W * W, W), geo, j, i)[0].reshape(W * W, W, W)
    land = np.floor(ui).astype(int)
    Di_land = geo.D[i].numpy()[land[:, 1].clip(0, W - 1), land[:, 0].clip(0, W - 1)]
    counted = landed = 0
    for b in range(W * W):
        nz = torch.nonzero(splats[b]).numpy()                   # (row, col) it touches
        if len(nz) == 0:
            continue                                             # hidden from C_i
        counted += 1
        assert np.abs(nz - land[b, ::-1]).max() <= 1, b
        touched = bool(splats[b, land[b, 1], land[b, 0]] > 0)
        if abs(zi[b] - Di_land[b]) <= zoom3d.OCCLUSION_TOL * Di_land[b]:   # level i sees it there
            assert touched, b
        landed += touched
    assert counted > 0.5 * W * W and landed > 0.9 * counted
    # coarser into finer
    Di = geo.D[j].numpy().reshape(-1)                            # level j is now the finer one
    uc, zc = world_to_pixels(rig.level(i), pixels_to_world(rig.level(j), uv, Di))
    weights = zoom3d.resample_3d(basis(W * W, W), geo, i, j)[0].reshape(W * W, W * W)   # [src b, dst a]
    src = np.floor(uc).astype(int)
    D_src = geo.D[i].numpy()[src[:, 1], src[:, 0]]
    seen = weights.sum(0) > 0
    assert seen.sum() > 0.5 * W * W
    sampled = 0
    for a in torch.nonzero(seen).flatten().tolist():
        hit = bool(weights[src[a, 1] * W + src[a, 0], a] > 0)
        if abs(zc[a] - D_src[a]) <= zoom3d.OCCLUSION_TOL * D_src[a]:
            assert hit, a
        sampled += hit
    assert sampled > 0.9 * seen.sum()
    assert (weights.sum(0) <= 1 + 1e-9).all()                   # an average over what it sees


# --- occlusion against a brute-force visibility test ----------------------------------------------

@pytest.mark.parametrize("case", ["passed", "parallax"])
def test_hidden_wall_pixels_do_not_count(case):
    """A box in front of a far wall. "passed": the box is behind C_1 (the dolly flew past it), so
    level 1 sees wall where level 0 sees the box: those level-1 pixels have no weight in level 0
    and level 0's box pixels inside level 1's footprint have coverage 0. "parallax": the box is
    seen by both and hides from C_0 a strip of wall next to it that C_1 sees. Against the segment
    from C_0 to each level-1 pixel's wall point crossing the box's rectangle."""
    W, p = 32, 2.0
    box = dict(BOX, z=(0.3 if case == "passed" else 0.6) * Z_A)
    rig = rig_for(W, W, p)
    geo = zoom3d.stack_geometry(truth_depth(rig, 0, W, W, s=0.0, box=box), rig.anchor_depth, p, 2, (W, W))
    truth1 = truth_depth(rig, 1, W, W, s=0.0, box=box)
    cam1 = rig.level(1)
    on_wall = np.abs(truth1.reshape(-1) - (Z_A - cam1.center[2])) < 1e-9
    uv = pixel_grid(W, W)

    def hid(r):      # whether C_0's rays to the corners of each level-1 pixel grown by r cross the box
        return np.stack([hidden_by_box(rig, 0, pixels_to_world(cam1, uv + np.array(c) * r, truth1.reshape(-1)), box)
                         for c in ((-1, -1), (1, -1), (-1, 1), (1, 1))])
    # margins: a level-1 pixel touches level-0 pixels up to 0.75 of theirs (1.5 of its) away
    hidden, visible = on_wall & hid(1.5).all(0), on_wall & ~hid(2.5).any(0)
    assert hidden.sum() >= 4 and visible.sum() >= 50, (hidden.sum(), visible.sum())
    splats = zoom3d.resample_3d(basis(W * W, W), geo, 1, 0)[0].reshape(W * W, -1).sum(1).numpy()
    assert (splats[hidden] == 0).all()                        # hidden from C_0: not counted
    assert (splats[visible] > 0).all()                        # seen by both: counted
    # the other way: level-0 pixels see nothing of level 1 where its wall is hidden from C_0
    _, cov01, _ = zoom3d.resample_3d(torch.zeros(W, W), geo, 0, 1)
    assert (cov01.reshape(-1).numpy()[hidden] == 0).all() and (cov01.reshape(-1).numpy()[visible] > 0.99).all()
    if case == "passed":
        _, cov, _ = zoom3d.resample_3d(torch.zeros(W, W), geo, 1, 0)
        g0 = pixel_grid(W, W)
        far = np.full(W * W, 2 * Z_A)                             # level-0 pixels wholly inside the box
        corner_box = np.stack([hidden_by_box(rig, 0, pixels_to_world(rig.level(0), g0 + c, far), box)
                               for c in ((-.5, -.5), (.5, -.5), (-.5, .5), (.5, .5))]).all(0).reshape(W, W)
        footprint = np.zeros((W, W), bool)
        footprint[W // 4 + 1:3 * W // 4 - 1, W // 4 + 1:3 * W // 4 - 1] = True
        assert (corner_box & footprint).sum() >= 4
        assert (cov.numpy()[corner_box & footprint] == 0).all()


# --- Π_noise: exactly N(0, 1) per pixel -----------------------------------------------------------

def test_pi_noise_3d_is_unit_gaussian_at_every_pixel_off_the_plane():
    W, p, N = 16, 2, 3
    _, geo = geometry(W, p, N)
    hw = W * W
    E = torch.eye(N * hw).reshape(N * hw, N, W, W).permute(1, 0, 2, 3).contiguous()  # the basis, as channels
    Wt = zoom3d.pi_noise_3d(E, geo)                     # [N, N·hw, W, W]: each pixel's weights
    assert torch.allclose((Wt ** 2).sum(1), torch.ones(N, W, W), atol=1e-5)
    mixed = (Wt[0].reshape(N, hw, W, W).abs().sum(1) > 0).sum(0)   # levels entering each pixel
    assert (mixed >= 2).sum() > 30 and (mixed == 3).sum() > 5
    n = 4000
    Z = zoom3d.pi_noise_3d(torch.randn(N, n, W, W, generator=gen(7)), geo)
    assert (Z.mean(1).abs() < 5 / math.sqrt(n)).all()
    assert ((Z.var(1) - 1).abs() < 5 * math.sqrt(2 / n)).all()


# --- blending and holding through the level cameras ---------------------------------------------

def test_blend_3d_keeps_a_stack_consistent_through_the_level_cameras():
    """Π_image_3d's output is consistent through the cameras; blend_3d nearly keeps it (the
    levels it averages agree there; only non-neighbouring levels' direct warps differ slightly
    from the chained ones), while the 2D blend, blind to depth, moves it ≥ 4× as much."""
    _, geo = geometry(16, 2, 3)
    L = zoom3d.pi_image_3d(torch.randn(3, 4, 16, 16, generator=gen(1)), geo)
    assert (zoom3d.consistency_error_3d(L, geo) < 1e-6).all()
    d3, d2 = (zoom3d.blend_3d(L, geo) - L).abs().mean(), (zoom.blend(L, 2) - L).abs().mean()
    assert d3 * 4 < d2, (d3, d2)
    assert (zoom3d.consistency_error_3d(zoom3d.blend_3d(L, geo), geo)
            < 0.5 * zoom3d.consistency_error_3d(zoom.blend(L, 2), geo)).all()


def test_hold_to_photo_3d_pulls_every_held_level_toward_the_photograph_in_level_0s_frame():
    _, geo = geometry(16, 2, 3)
    x = torch.randn(3, 4, 16, 16, generator=gen(1))
    z, m = torch.randn(4, 16, 16, generator=gen(2)), torch.ones(16, 16)

    def resid(y, i):
        avg, seen = zoom3d._seen_average(*zoom3d.resample_3d(y[i], geo, i, 0)[:2])
        return ((avg - z).abs() * seen).sum() / (seen.sum() * 4)
    h3 = zoom.hold_to_photo(x, [0, 1, 2], z, m, 2, 1.0, geometry=geo)
    h2 = zoom.hold_to_photo(x, [0, 1, 2], z, m, 2, 1.0)
    assert torch.allclose(h3[0], z)                                  # level 0: the photograph's camera
    for i in (1, 2):
        assert resid(h3, i) < 0.4 * resid(x, i) and resid(h3, i) < 0.6 * resid(h2, i), i
    again = zoom.hold_to_photo(h3, [1, 2], z, m, 2, 1.0, geometry=geo)
    assert all(resid(again, i) < 0.5 * resid(h3, i) for i in (1, 2))   # a convergent gradient step


# --- joint sampling with a tiny random Stable Diffusion ------------------------------------------

PROMPTS = ["a valley", "a boulder", "moss on the boulder"]
SIZE = (64, 64)


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory):
    from zoomscape.engines.denoiser import SDDenoiser
    return SDDenoiser.from_pretrained(build_tiny_sd(tmp_path_factory.mktemp("zoom3d-models")))


def pixels(stack):
    return torch.from_numpy(np.stack(stack.levels)).permute(0, 3, 1, 2)


def test_paint_zoom_stack_on_the_anchor_plane_is_the_2d_stack(denoiser):
    z_star = torch.randn(1, 4, 8, 8, generator=gen(5))
    photo = denoiser.decode(z_star)[0].permute(1, 2, 0).numpy()
    plane = zoom3d.stack_geometry(np.full(SIZE, Z_A), Z_A, 2, 3, SIZE)
    for kw in (dict(), dict(photo=photo, photo_levels=2, photo_steps=1)):
        a = zoom.paint_zoom_stack(denoiser, PROMPTS, 2, 0, steps=4, guidance=3.0, size=SIZE, **kw)
        b = zoom.paint_zoom_stack(denoiser, PROMPTS, 2, 0, steps=4, guidance=3.0, size=SIZE, geometry=plane, **kw)
        assert torch.allclose(a.latents, b.latents, atol=1e-4), (a.latents - b.latents).abs().max()
        assert np.allclose(np.stack(a.levels), np.stack(b.levels), atol=1e-4)


@pytest.fixture(scope="module")
def dolly_stacks(denoiser):
    rig = rig_for(*SIZE, 2)
    geo = zoom3d.stack_geometry(truth_depth(rig, 0, *SIZE), rig.anchor_depth, 2, 3, SIZE)
    kw = dict(steps=8, guidance=3.0, size=SIZE, geometry=geo)
    return geo, (zoom.paint_zoom_stack(denoiser, PROMPTS, 2, 0, **kw),
                 zoom.paint_zoom_stack(denoiser, PROMPTS, 2, 0, joint=False, **kw))


def test_joint_3d_sampling_gives_levels_consistent_through_the_level_cameras(dolly_stacks):
    geo, (joint, indep) = dolly_stacks
    lat, px = geo.at((8, 8)), geo.at(SIZE)
    assert len(joint.levels) == 3 and joint.latents.shape == (3, 4, 8, 8)
    assert (zoom3d.consistency_error_3d(joint.latents, lat) < 1e-5 * joint.latents.abs().mean()).all()
    assert (zoom3d.consistency_error_3d(pixels(joint), px) < 1e-5).all()
    # the model's own predictions agree ≥ 10× better than sampled alone
    e_joint = zoom3d.consistency_error_3d(joint.predictions, lat)
    e_indep = zoom3d.consistency_error_3d(indep.predictions, lat)
    assert (e_joint * 10 < e_indep).all(), (e_joint, e_indep)
    # and the geometry matters: the 3D-consistent levels are not the 2D stack's crops
    assert (zoom.consistency_error(pixels(joint), 2) > 10 * zoom3d.consistency_error_3d(pixels(joint), px)).all()


def test_held_levels_are_compared_through_the_level_cameras(denoiser):
    rig = rig_for(*SIZE, 2)
    geo = zoom3d.stack_geometry(truth_depth(rig, 0, *SIZE), rig.anchor_depth, 2, 3, SIZE)
    photo = denoiser.decode(torch.randn(1, 4, 8, 8, generator=gen(5)))[0].permute(1, 2, 0).numpy()
    kw = dict(steps=4, guidance=3.0, size=SIZE, geometry=geo)
    free = zoom.paint_zoom_stack(denoiser, PROMPTS, 2, 0, **kw)
    held = zoom.paint_zoom_stack(denoiser, PROMPTS, 2, 0, photo=photo, photo_levels=2, photo_weight=1.0, **kw)
    assert np.abs(held.levels[0] - photo).mean() < 0.8 * np.abs(free.levels[0] - photo).mean()
    assert (zoom3d.consistency_error_3d(pixels(held), geo) < 1e-5).all()
    with pytest.raises(ValueError, match="geometry"):
        zoom.paint_zoom_stack(denoiser, PROMPTS[:2], 2, 0, **kw)


# --- LENS is unchanged ---------------------------------------------------------------------------

def _lens_reference():
    """zoom.py from before the 3D stack, as a module of the package (None without git history)."""
    try:
        src = subprocess.run(["git", "show", f"{LENS_REFERENCE_COMMIT}:backend/zoomscape/zoom.py"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("zoomscape._zoom_lens_reference", loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "zoomscape"
    sys.modules[spec.name] = mod                          # dataclasses look their module up
    try:
        exec(compile(src, "zoom_lens_reference.py", "exec"), mod.__dict__)
    finally:
        del sys.modules[spec.name]
    return mod


def test_lens_is_bit_for_bit_what_it_was(denoiser, monkeypatch):
    ref = _lens_reference()
    if ref is None:
        pytest.skip("no git history for the reference zoom.py")
    photo = denoiser.decode(torch.randn(1, 4, 8, 8, generator=gen(9)))[0].permute(1, 2, 0).numpy()
    for name in ("pi_noise_3d", "pi_image_3d", "blend_3d", "resample_3d", "hold_to_photo_3d", "photo_loss_3d"):
        monkeypatch.setattr(zoom3d, name, lambda *a, **k: pytest.fail("LENS touched the 3D stack"))
    for kw in (dict(), dict(photo=photo, photo_levels=2, photo_steps=1), dict(joint=False, sampler="ddim")):
        a = zoom.paint_zoom_stack(denoiser, PROMPTS, 2, 3, steps=3, guidance=3.0, size=SIZE, **kw)
        b = ref.paint_zoom_stack(denoiser, PROMPTS, 2, 3, steps=3, guidance=3.0, size=SIZE, **kw)
        assert torch.equal(a.latents, b.latents) and torch.equal(a.predictions, b.predictions)
        assert all(np.array_equal(x, y) for x, y in zip(a.levels, b.levels))


# --- the diffusers engine paints DOLLY levels with the 3D stack ------------------------------------

def test_diffusers_engine_paints_dolly_levels_through_the_level_cameras(tmp_path_factory):
    """rig.mode "dolly": the geometry comes from the photo callback's depth (a pointcloud.Projection);
    a tuple (image, mask) has no depth: the anchor's plane, i.e. the 2D stack; "lens" is rig=None."""
    pytest.importorskip("transformers")
    from tests.helpers.tiny_models import build_all
    from zoomscape.engines import get_engine
    from zoomscape.engines.diffusers import dolly_geometry
    from zoomscape.pointcloud import Projection

    torch.set_num_threads(1)
    engine = get_engine("diffusers", models=build_all(tmp_path_factory.mktemp("zoom3d-engine")), steps=3,
                        device="cpu")
    rig = rig_for(*SIZE, 2)
    depth = truth_depth(rig, 0, *SIZE)
    image = np.full((*SIZE, 3), 0.5, np.float32)
    mask = np.zeros(SIZE, bool)
    calls = []

    def photo(w, h):
        calls.append((w, h))
        return Projection(image, mask, depth.astype(np.float32), np.full(SIZE, -1, np.int64))

    prompts = PROMPTS
    dolly = engine.paint_zoom_stack(rig.camera, prompts, 2.0, 3, photo=photo, rig=rig)
    assert calls == [SIZE[::-1]] and len(dolly.levels) == 3
    geo = dolly_geometry(rig, photo(*SIZE[::-1]), 3, 2.0, SIZE)
    assert torch.allclose(geo.D[0], torch.from_numpy(depth), rtol=1e-6)
    assert (zoom3d.consistency_error_3d(pixels(dolly), geo) < 1e-5).all()
    assert (zoom.consistency_error(pixels(dolly), 2) > 1e-3).all()              # not the 2D stack
    flat = engine.paint_zoom_stack(rig.camera, prompts, 2.0, 3, photo=lambda w, h: (image, mask), rig=rig)
    assert (zoom.consistency_error(pixels(flat), 2) < 1e-5).all()               # no depth: the plane
    lens = LevelCameras(rig.camera, rig.anchor, 2.0, "lens")
    a = engine.paint_zoom_stack(rig.camera, prompts, 2.0, 3, photo=lambda w, h: (image, mask), rig=lens)
    b = engine.paint_zoom_stack(rig.camera, prompts, 2.0, 3, photo=lambda w, h: (image, mask))
    assert all(np.array_equal(x, y) for x, y in zip(a.levels, b.levels))
