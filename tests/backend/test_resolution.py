"""Resolution-aware coverage (dream.coarse_cover, coarse_points, replaced_points): an old point
lifted by a view that saw the surface from farther away is no coverage for a view that sees it
closer; that view paints and lifts the surface at its own resolution, and the coarse points its
finer ones wholly cover leave the cloud. Checked on planes with known footprints and on the
procedural world's truth along a forward walk."""
import math

import numpy as np
import pytest

from zoomscape.cameras import Camera, blender_intrinsics, from_wire, look_at, world_to_pixels
from zoomscape.dream import COARSE, coarse_cover, coarse_points, dream, replaced_points
from zoomscape.engines.procedural import ProceduralEngine, World
from zoomscape.gaussians import psnr
from zoomscape.pointcloud import FOOTPRINT_PX, PointCloud, merge, project, unproject

W, H = 160, 120
PROMPT, SEED = "a quiet valley of mossy boulders under a pale sky", 7


def cam_at(name: str, eye, target, w: int = W, h: int = H) -> Camera:
    K = blender_intrinsics(30.0, 36.0, 24.0, "AUTO", 0.0, 0.0, w, h)
    return from_wire(dict(name=name, matrix_world=look_at(np.asarray(eye, float), np.asarray(target, float)).tolist(), **K))


def wall(cam: Camera, distance: float) -> PointCloud:
    """A flat wall facing cam at z-depth `distance`, lifted by cam (one point per pixel)."""
    rgb = np.random.default_rng(0).random((cam.height, cam.width, 3)).astype(np.float32)
    return unproject(cam, rgb, np.full((cam.height, cam.width), distance))


# Cameras on the -y axis looking at a wall in the plane y = 0 (z-depth = their distance).
FAR = cam_at("far", (0, -8, 1), (0, 0, 1))


@pytest.mark.parametrize("distance, coarse", [(4.0, True), (7.0, False), (8.0, False)])
def test_coarse_cover_is_the_points_lifted_at_under_1_over_ratio_of_the_views_resolution(distance, coarse):
    """The wall lifted from 8 m, seen from 4 m (2× closer: its points span 2 of the view's pixel
    footprints) is coarse everywhere; from 7 m (1.14×, under COARSE) or its own 8 m it is not."""
    P = wall(FAR, 8.0)
    near = cam_at("near", (0, -distance, 1), (0, 0, 1))
    proj = project(P, near)
    R = coarse_cover(P, proj, near, COARSE)
    assert proj.mask.mean() > 0.99
    assert R.mean() == (pytest.approx(proj.mask.mean(), abs=1e-9) if coarse else 0.0)
    # the footprint ratio it measures is the distance ratio
    f = math.sqrt(near.K[0, 0] * near.K[1, 1])
    k = proj.index[proj.mask]
    ratio = P.radius[k] * f / proj.depth[proj.mask] / FOOTPRINT_PX
    assert np.allclose(ratio, 8.0 / distance, rtol=1e-3)
    # the user's own points never count as coarse; a ratio of 0 or inf turns the rule off
    assert not coarse_cover(P, proj, near, COARSE, fixed=np.ones(len(P), bool)).any()
    assert not coarse_cover(P, proj, near, 0.0).any() and not coarse_cover(P, proj, near, math.inf).any()


def test_replaced_points_are_only_those_wholly_covered_and_unhidden():
    """From 4 m the wall of 8 m is coarse. With the new view's finer points on every pixel, the
    old points whose splat lies wholly inside the view are replaced; those across the image border
    are not (part of their surface is outside the view), nor those partly behind a nearer
    occluder, nor any when the new view lifted nothing there."""
    P = wall(FAR, 8.0)
    near = cam_at("near", (0, -4, 1), (0, 0, 1))
    proj = project(P, near)
    D_old = proj.depth.astype(np.float64)
    sharp = proj.mask.copy()
    cand = coarse_points(P, near, sharp, D_old, COARSE, 0.03)
    uv, _ = world_to_pixels(near, P.xyz[cand])
    assert len(cand) > 0.2 * W * H / 4      # 2× closer: about a quarter of the pixels' points each
    rep = replaced_points(P, near, cand, sharp, np.zeros_like(sharp), D_old, D_old, 0.03)
    border = (uv[:, 0] < 0.8) | (uv[:, 0] > W - 0.8) | (uv[:, 1] < 0.8) | (uv[:, 1] > H - 0.8)
    inner = (uv[:, 0] > 3) & (uv[:, 0] < W - 3) & (uv[:, 1] > 3) & (uv[:, 1] < H - 3)
    assert rep[inner].all() and not rep[border].any()
    # a nearer occluder over the left half of the image: the points behind it stay
    D_occ = D_old.copy()
    D_occ[:, : W // 2] = 2.0
    rep_occ = replaced_points(P, near, cand, sharp, np.zeros_like(sharp), D_old, D_occ, 0.03)
    assert not rep_occ[uv[:, 0] < W // 2 - 2].any() and rep_occ[inner & (uv[:, 0] > W // 2 + 3)].all()
    # nothing lifted again: nothing replaced, unless the old points there are fine for the view
    none = np.zeros_like(sharp)
    assert not replaced_points(P, near, cand, none, none, D_old, D_old, 0.03).any()
    assert replaced_points(P, near, cand, none, sharp, D_old, D_old, 0.03)[inner].all()


def walk_cams(n: int = 5, step: float = 1.0):
    """A forward walk on the procedural world: n cameras step apart along +y, pitched down 10°
    (bench_fidelity's walk rig at 160×120)."""
    world = World(PROMPT, SEED)
    cams = []
    for i in range(n):
        y = -2.0 + step * i
        g = float(world.height(np.array([0.0]), np.array([y]), np.array([0.05]))[0][0])
        eye = np.array([0.0, y, g + 1.6])
        cams.append(cam_at(f"Cam.{i:03d}", eye, eye + np.array([0.0, 10.0, 10.0 * math.tan(math.radians(-10))])))
    return world, cams


@pytest.fixture(scope="module")
def walk():
    world, cams = walk_cams()
    truth = ProceduralEngine(depth_scale_range=(1, 1), first_scale_jitter=0, depth_shift=0,
                             depth_noise=0, depth_warp=0)
    lies = ProceduralEngine()
    runs = {(name, c): dream(cams, PROMPT, eng, SEED, coarse=c)
            for name, eng in (("truth", truth), ("lies", lies)) for c in (COARSE, 0.0)}
    runs["extra", COARSE] = dream(cams, PROMPT, lies, SEED, coarse=COARSE, extra_views=3)
    return world, cams, runs


def coarse_fraction(res, cams) -> list[float]:
    """Per view: the fraction of its pixels whose visible point of the final cloud is coarser than
    COARSE there."""
    out = []
    for cam in cams:
        proj = project(res.cloud, cam)
        out.append(float(coarse_cover(res.cloud, proj, cam, COARSE).mean()))
    return out


@pytest.mark.parametrize("depth", ["truth", "lies"])
def test_along_a_walk_every_view_is_painted_and_kept_at_its_own_resolution(walk, depth):
    """With the true depth and with the engine's lies: every view of the walk sees a cloud at its
    own resolution (under 5 % / 10 % of its pixels show a coarse point, against 30–75 % under
    LucidDreamer's rule), and what the last views dreamed is far closer
    to the truth than under LucidDreamer's rule (coarse = 0), which keeps the first view's blur."""
    world, cams, runs = walk
    ours, plain = runs[depth, COARSE], runs[depth, 0.0]
    c_ours, c_plain = coarse_fraction(ours, cams), coarse_fraction(plain, cams)
    p_ours = [psnr(im, world.render(c)[0]) for im, c in zip(ours.images[1:], cams[1:])]
    p_plain = [psnr(im, world.render(c)[0]) for im, c in zip(plain.images[1:], cams[1:])]
    print(f"\n{depth}: coarse visible ours {np.round(c_ours, 3)}, plain {np.round(c_plain, 3)}; "
          f"dreamed PSNR ours {np.round(p_ours, 2)}, plain {np.round(p_plain, 2)}; "
          f"sharpened {[v.sharpened for v in ours.views]}, replaced {[v.replaced for v in ours.views]}")
    assert max(c_plain[2:]) > 0.3 and max(c_ours) < (0.05 if depth == "truth" else 0.1)
    assert p_ours[-1] > p_plain[-1] + 3.0 and min(np.subtract(p_ours, p_plain)) > -0.3
    assert sum(v.sharpened for v in ours.views) > 0.1 * W * H and sum(v.replaced for v in ours.views) > 0
    assert not any(v.sharpened or v.replaced for v in plain.views)


def test_the_cloud_keeps_its_books_after_replacing_points(walk):
    """The replaced points leave the cloud: each view's count is its new_points (with extra views
    planned too), and no view's z-buffer has pinholes the dream did not have without the rule."""
    world, cams, runs = walk
    assert len(runs["extra", COARSE].planned) == 3      # planned from the whole cloud as it grows
    for res in (runs["lies", COARSE], runs["lies", 0.0], runs["extra", COARSE]):
        counts = np.bincount(res.source, minlength=len(res.views))
        assert counts.tolist() == [v.new_points for v in res.views]
        assert len(res.cloud) == len(res.source)
    ours, plain = runs["lies", COARSE], runs["lies", 0.0]
    for cam in cams:
        e_ours = (~project(ours.cloud, cam).mask).mean()
        e_plain = (~project(plain.cloud, cam).mask).mean()
        assert e_ours <= e_plain + 0.002, (cam.name, e_ours, e_plain)


def test_with_the_rule_the_consensus_still_holds_the_views_together(walk):
    """The replaced points stay in the consensus (their links), so the final cloud is as close to
    the true surface with the rule as without it."""
    world, cams, runs = walk
    errs = {}
    for c in (COARSE, 0.0):
        res = runs["lies", c]
        cloud = res.cloud
        err = []
        for cam in cams:
            proj = project(cloud, cam)
            _, D = world.render(cam)
            ok = proj.mask & np.isfinite(D) & (D < 100)
            err.append(np.abs(proj.depth[ok] / D[ok] - 1).mean())
        errs[c] = np.mean(err)
    print(f"\nmean relative depth error of the visible surface: ours {errs[COARSE]:.4f}, plain {errs[0.0]:.4f}")
    assert errs[COARSE] < 1.1 * errs[0.0]


class Recorder:
    """The procedural engine, recording the masks each call paints; with_sharpen=False hides its
    sharpen (an engine of the protocol without the optional Sharpener)."""

    name, device, models, depth_space = "recorder", "cpu", [], "depth"

    def __init__(self, with_sharpen: bool):
        self.engine, self.calls = ProceduralEngine(), []
        if with_sharpen:
            self.sharpen = self._sharpen

    def inpaint(self, image, hole, prompt, cam, seed, *, on_step=None, should_cancel=None):
        self.calls.append(("inpaint", cam.name, hole.copy()))
        return self.engine.inpaint(image, hole, prompt, cam, seed, should_cancel=should_cancel)

    def _sharpen(self, image, mask, prompt, cam, seed, *, should_cancel=None):
        self.calls.append(("sharpen", cam.name, mask.copy()))
        return self.engine.sharpen(image, mask, prompt, cam, seed, should_cancel=should_cancel)

    def estimate_depth(self, image, cam, *, seed=None, role=None):
        return self.engine.estimate_depth(image, cam, seed=seed, role=role)

    def paint_zoom_stack(self, *a, **k):
        return self.engine.paint_zoom_stack(*a, **k)


def test_the_coarse_pixels_go_to_the_engines_sharpen_or_else_to_its_inpaint():
    """With a Sharpener the holes are inpainted and R_i is sharpened (disjoint masks, R_i among
    the covered pixels); without one R_i joins the inpaint's hole. The procedural engine paints
    the same pixels either way, so the two clouds are identical."""
    world, cams = walk_cams(3, step=1.5)
    runs = {}
    for with_sharpen in (True, False):
        eng = Recorder(with_sharpen)
        runs[with_sharpen] = (dream(cams, PROMPT, eng, SEED), eng.calls)
    (res_s, calls_s), (res_i, calls_i) = runs[True], runs[False]
    sharpened = [c for c in calls_s if c[0] == "sharpen"]
    assert sharpened and not any(c[0] == "sharpen" for c in calls_i)
    for kind, name, mask in sharpened:
        hole = next(m for k, n, m in calls_s if k == "inpaint" and n == name)
        assert not (mask & hole).any() and mask.sum() >= 4
        wider = next(m for k, n, m in calls_i if k == "inpaint" and n == name)
        assert np.array_equal(wider, hole | mask)
    np.testing.assert_array_equal(res_s.cloud.xyz, res_i.cloud.xyz)
    np.testing.assert_array_equal(res_s.cloud.rgb, res_i.cloud.rgb)
