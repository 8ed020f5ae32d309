"""The multi-view depth consensus: the coupling of a point's move to another view's disagreement,
and the joint correction on a known scene where every view's depth estimate bends differently."""
import numpy as np
import pytest

from zoomscape.cameras import blender_intrinsics, from_wire, look_at, pixel_grid, pixels_to_world, \
    world_to_pixels
from zoomscape.consensus import apply_consensus, consensus, coupling, view_parts
from zoomscape.dream import dream
from zoomscape.pointcloud import PointCloud

W, H = 160, 120


def make_cam(eye, target, name):
    intr = blender_intrinsics(30.0, 36.0, 24.0, "AUTO", 0.0, 0.0, W, H)
    return from_wire(dict(name=name, matrix_world=look_at(eye, target).tolist(), **intr))


def plane_depth(cam, normal, offset):
    """z-depth through every pixel of cam to the plane normal · X = offset: [H, W]."""
    o = cam.center
    rays = pixels_to_world(cam, pixel_grid(cam.width, cam.height), np.ones(cam.width * cam.height)) - o
    return ((offset - normal @ o) / (rays @ normal)).reshape(cam.height, cam.width)


def test_coupling_on_a_ground_plane_is_the_ratio_of_camera_heights():
    """A ground point moved along camera i's ray changes its disagreement with camera j's view of
    the ground by h_i / h_j (not by the change of its own depth in j)."""
    up = np.array([0.0, 0.0, 1.0])
    cam_i = make_cam((0, -12, 2.0), (0, 0, 0), "i")
    cam_j = make_cam((3, -10, 5.0), (1, 2, 0), "j")
    Di = plane_depth(cam_i, up, 0.0)
    Dj = plane_depth(cam_j, up, 0.0)
    Dj[Dj <= 0] = np.inf                                   # above the horizon: no ground
    pts = pixels_to_world(cam_i, pixel_grid(W, H), Di.reshape(-1))
    uv, z = world_to_pixels(cam_j, pts)
    seen = np.flatnonzero((z > 0) & (uv[:, 0] > 3) & (uv[:, 0] < W - 3) & (uv[:, 1] > 3) &
                          (uv[:, 1] < H - 3) & (Di.reshape(-1) > 0) & (Di.reshape(-1) < 60))
    g = coupling(pts[seen], np.tile(cam_i.center, (len(seen), 1)), cam_j, np.log(Dj))
    assert len(seen) > 1000
    np.testing.assert_allclose(np.median(g), 2.0 / 5.0, rtol=0.02)
    assert np.percentile(np.abs(g - 0.4), 90) < 0.02
    own_depth_only = ((pts[seen] - cam_i.center) @ cam_j.c2w[:3, 2]) / z[seen]
    assert np.median(np.abs(own_depth_only - 0.4)) > 0.3        # what the slide term corrects


class BentWall:
    """An engine over a textured wall y = 6: paints it grey, and estimates depth as the truth bent
    by a known smooth field per call: D̂ = D · exp(bend[call](u, v))."""

    depth_space = "depth"

    def __init__(self, bends, noise=0.002, seed=0):
        self.bends, self.noise, self.calls = bends, noise, 0
        self.rng = np.random.default_rng(seed)

    def inpaint(self, image, hole, prompt, cam, seed, *, on_step=None, should_cancel=None):
        return np.where(hole[..., None], 0.5, image).astype(np.float32)

    def estimate_depth(self, image, cam, *, seed=None, role=None):
        D = plane_depth(cam, np.array([0.0, 1.0, 0.0]), 6.0)
        u = (np.arange(cam.width) + 0.5) / cam.width - 0.5
        bend = self.bends[self.calls](np.broadcast_to(u, D.shape))
        self.calls += 1
        return D * np.exp(bend + self.noise * self.rng.normal(size=D.shape))


WALL_CAMS = [make_cam((0, -4, 0), (0, 6, 0), "A"), make_cam((4, -4, 0), (4, 6, 0), "B")]


def wall_errors(result):
    """Relative error of each point's depth along its own ray, and its view."""
    errs = []
    for v, cam in enumerate(WALL_CAMS):
        P = result.cloud.xyz[result.source == v]
        uv, z = world_to_pixels(cam, P)
        T = plane_depth(cam, np.array([0.0, 1.0, 0.0]), 6.0)
        col = np.floor(uv[:, 0]).astype(int)
        row = np.floor(uv[:, 1]).astype(int)
        errs.append(z / T[row, col] - 1)
    return errs


def test_two_views_that_bend_apart_meet_halfway():
    """View A's estimate bends −3 % → +3 % across its image, view B's is straight. B's global fit
    takes out the mean; the rest of the disagreement is split between the two (neither can know
    which is right): A's points on the overlap lose about a third of their error (the membrane
    keeps A's correction smooth into the part of A that B never saw), and B's new points still
    meet them."""
    bends = [lambda u: 0.06 * u, lambda u: 0.0 * u]
    runs = {r: dream(WALL_CAMS, "wall", BentWall(bends), 0, refine=r) for r in (False, True)}
    before, after = wall_errors(runs[False]), wall_errors(runs[True])
    res = runs[True]
    # A's points that B saw (its right part): the bend there is halved
    uvA, _ = world_to_pixels(WALL_CAMS[1], res.cloud.xyz[res.source == 0])
    shared = (uvA[:, 0] >= 0) & (uvA[:, 0] < W)
    a_before, a_after = np.abs(before[0][shared]).mean(), np.abs(after[0][shared]).mean()
    print(f"\nA on the overlap: |error| {a_before:.3%} → {a_after:.3%}; all points "
          f"{np.abs(np.concatenate(before)).mean():.3%} → {np.abs(np.concatenate(after)).mean():.3%}")
    assert a_after < 0.75 * a_before
    assert np.abs(np.concatenate(after)).mean() < 0.8 * np.abs(np.concatenate(before)).mean()
    # B's new points continue A's surface across the seam (where A's points end in B's image)
    uvB, _ = world_to_pixels(WALL_CAMS[1], res.cloud.xyz[res.source == 1])
    seam = np.percentile(uvA[:, 0], 99.9)
    a_edge = after[0][(uvA[:, 0] >= seam - 3) & (uvA[:, 0] < seam)].mean()
    b_edge = after[1][(uvB[:, 0] >= seam) & (uvB[:, 0] < seam + 3)].mean()
    print(f"at the seam: A {a_edge:+.3%}, B {b_edge:+.3%}")
    assert abs(a_edge - b_edge) < 0.002
    assert res.consensus.used > 1000 and res.consensus.sigma_after < 0.005


def test_agreeing_views_are_left_alone():
    """No bends: the correction is noise-sized and the error does not grow."""
    flat = [lambda u: 0.0 * u, lambda u: 0.0 * u]
    res = dream(WALL_CAMS, "wall", BentWall(flat), 0)
    assert np.abs(res.consensus.factor).max() < 0.002
    assert np.abs(np.concatenate(wall_errors(res))).mean() < 0.002


def test_bad_options_are_named():
    cam = WALL_CAMS[0]
    cloud = PointCloud(np.zeros((1, 3)), np.zeros((1, 3), np.float32), np.ones(1, np.float32))
    for name, value in (("grid", 0), ("prior", -1.0), ("decay", float("nan")), ("max_samples", 0)):
        with pytest.raises(ValueError, match=name):
            consensus(cloud, [cam], np.zeros(1, int), np.zeros(1, int), np.zeros(1),
                      np.zeros(1, bool), [], **{name: value})


def test_points_move_along_their_own_rays_in_any_order():
    """apply_consensus: depth · exp(factor) along each point's own camera ray, the radius with
    it, factor 0 leaves a point bit-identical; the same whether the views' points are in order
    (slices) or shuffled (index arrays)."""
    rng = np.random.default_rng(5)
    cams = WALL_CAMS
    source = np.repeat([0, 1], 50)
    xyz = rng.uniform(-3, 3, (100, 3)).astype(np.float32) + np.float32([0, 6, 0])
    cloud = PointCloud(xyz, np.zeros((100, 3), np.float32), np.full(100, 0.01, np.float32))
    factor = np.where(np.arange(100) % 3 == 0, 0.0, rng.normal(0, 0.05, 100))
    moved = apply_consensus(cloud, cams, source, factor)
    for v, cam in enumerate(cams):
        sel = source == v
        _, z0 = world_to_pixels(cam, xyz[sel])
        uv0, _ = world_to_pixels(cam, xyz[sel])
        uv1, z1 = world_to_pixels(cam, moved.xyz[sel])
        np.testing.assert_allclose(z1 / z0, np.exp(factor[sel]), rtol=1e-5)
        np.testing.assert_allclose(uv1, uv0, atol=1e-3)                  # the same ray
    still = factor == 0
    assert np.array_equal(moved.xyz[still], xyz[still])
    np.testing.assert_allclose(moved.radius, 0.01 * np.exp(factor), rtol=1e-6)
    order = rng.permutation(100)
    assert isinstance(view_parts(source, 2)[0], slice)
    assert not isinstance(view_parts(source[order], 2)[0], slice)
    shuffled = apply_consensus(cloud.select(order), cams, source[order], factor[order])
    assert np.array_equal(shuffled.xyz, moved.xyz[order])
