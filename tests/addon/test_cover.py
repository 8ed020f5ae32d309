"""Cover weights (addon/cover.py) against brute-force visibility: which Gaussians of a coarser
level (or of the world) the next level's camera sees, in DOLLY (the camera p^i times closer to
the anchor: parallax) and LENS (the first camera, a longer lens), and the world's cover through
the whole import.

The scene, in world coordinates (Blender: x right, z up): the zoom camera at (0, −5, 1) looking
along +y at the anchor (0, 0, 1) on a wall y = 0, and an opaque square patch in front of the wall
(at y = py, off the axis, in view of the level camera tested). The finer level's Gaussians are that scene ray-cast through each pixel
centre of its camera (a level is lifted one Gaussian per pixel); the coarser Gaussians are
scattered over the wall and the patch. A coarse Gaussian is seen by the finer camera when the
segment from the camera to it does not cross the patch; within 2 px of the patch's silhouette
the z-buffer's pixel grid decides either way."""
import dataclasses
import os

import numpy as np
import pytest

import bpy

from test_deep_zoom import source_camera, write_dive
from test_world_import import write_world

W, H, F_PX = 64, 48, 60.0
C0 = np.array([0.0, -5.0, 1.0])
ANCHOR = np.array([0.0, 0.0, 1.0])
PATCH_X, PATCH_Z = (0.1, 0.5), (0.75, 1.25)  # the patch's extent; its plane y = py, per test
R_CAM = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # columns: camera x, y, z axes (looks along −z = +y)


def zoom_info(zs, mode: str, factor: float):
    M = np.eye(4)
    M[:3, :3], M[:3, 3] = R_CAM, C0
    k = zs.wire.cameras.Intrinsics(F_PX, F_PX, W / 2.0, H / 2.0, W, H)
    return zs.wire.manifest.ZoomInfo("Cam.000", M, k, factor, ["a", "b"], ANCHOR.copy(), mode=mode)


def camera_of(mode: str, factor: float, i: int) -> tuple[np.ndarray, float]:
    """Level i's camera from its definition (issue 11): (centre, focal length in pixels)."""
    if mode == "dolly":
        return ANCHOR + (C0 - ANCHOR) * factor ** -i, F_PX
    return C0.copy(), F_PX * factor ** i


def pixels(centre, f, X):
    """World points [N, 3] → (pixels [N, 2], z-depth [N]) in the camera at centre with R_CAM."""
    Xc = (X - centre) @ R_CAM
    z = -Xc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.column_stack([f * Xc[:, 0] / z + W / 2.0, -f * Xc[:, 1] / z + H / 2.0]), z


def in_patch(x, z):
    return (x >= PATCH_X[0]) & (x <= PATCH_X[1]) & (z >= PATCH_Z[0]) & (z <= PATCH_Z[1])


def ray_cast_level(centre, f, py) -> np.ndarray:
    """One Gaussian centre per pixel of the camera: the nearest of the patch and the wall."""
    j, i = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d = np.column_stack([(j.ravel() - W / 2.0) / f, -(i.ravel() - H / 2.0) / f, -np.ones(W * H)]) @ R_CAM.T
    out = centre + d * ((0.0 - centre[1]) / d[:, 1])[:, None]  # the wall
    hit = centre + d * ((py - centre[1]) / d[:, 1])[:, None]
    front = in_patch(hit[:, 0], hit[:, 2])
    out[front] = hit[front]
    return out


def coarse_points(rng, py, n=12000) -> np.ndarray:
    wall = np.column_stack([rng.uniform(-2.5, 2.5, n), np.zeros(n), rng.uniform(-1.0, 3.0, n)])
    m = n // 6
    patch = np.column_stack([rng.uniform(*PATCH_X, m), np.full(m, py), rng.uniform(*PATCH_Z, m)])
    behind = np.column_stack([rng.uniform(-1, 1, 50), np.full(50, -6.0), rng.uniform(0, 2, 50)])  # behind C0
    return np.concatenate([wall, patch, behind])


def brute_force(centre, f, X, py):
    """(expected cover [N], near the silhouette [N] bool): frustum feather × not behind the patch."""
    t = (py - centre[1]) / (X[:, 1] - centre[1])
    hit = centre + t[:, None] * (X - centre)
    occluded = (t > 0) & (t < 1 - 1e-9) & in_patch(hit[:, 0], hit[:, 2])
    uv, z = pixels(centre, f, X)
    inside = np.minimum(np.minimum(uv[:, 0], W - uv[:, 0]), np.minimum(uv[:, 1], H - uv[:, 1]))
    frustum = np.clip(np.nan_to_num(inside / (0.1 * min(W, H)), nan=0.0), 0.0, 1.0)
    expected = np.where((z > 0) & ~occluded, frustum, 0.0)
    # the patch's silhouette in this camera: its projected rectangle (it faces the camera)
    corners = np.array([[PATCH_X[0], py, PATCH_Z[0]], [PATCH_X[1], py, PATCH_Z[1]]])
    cuv, _ = pixels(centre, f, corners)
    lo, hi = cuv.min(axis=0), cuv.max(axis=0)
    dx = np.maximum(lo[0] - uv[:, 0], uv[:, 0] - hi[0])
    dy = np.maximum(lo[1] - uv[:, 1], uv[:, 1] - hi[1])
    near = np.abs(np.maximum(dx, dy)) < 2.0  # (outside a corner it over-counts: conservative)
    return expected, near & (z > 0)


@pytest.mark.parametrize("mode,factor,py", [("dolly", 2.0, -1.5), ("dolly", 4.0, -0.5), ("lens", 2.0, -1.5)])
def test_cover_is_what_the_next_camera_sees(zs, mode, factor, py):
    zoom = zoom_info(zs, mode, factor)
    i = 1
    M, k = zs.cover.level_camera(zoom, i)
    centre, f = camera_of(mode, factor, i)
    np.testing.assert_allclose(M[:3, 3], centre, atol=1e-12)
    assert k.fx == pytest.approx(f) and (k.width, k.height) == (W, H)

    X = coarse_points(np.random.default_rng(3), py)
    cover = zs.cover.cover_weights(X, ray_cast_level(centre, f, py), zoom, i)
    expected, near = brute_force(centre, f, X, py)
    far = ~near
    np.testing.assert_allclose(cover[far], expected[far], atol=1e-5)
    occluded_in_view = far & (expected == 0) & (pixels(centre, f, X)[1] > 0)
    inside = pixels(centre, f, X)[0]
    in_frame = (inside[:, 0] > 0.1 * H) & (inside[:, 0] < W - 0.1 * H) & (inside[:, 1] > 0.1 * H) & (inside[:, 1] < H - 0.1 * H)
    assert (occluded_in_view & in_frame).sum() > 30  # the patch hides wall Gaussians in full view
    assert (far & (expected == 1)).sum() > 200 and (far & (expected > 0) & (expected < 1)).sum() > 20
    assert (cover[-50:] == 0).all()  # behind the camera
    # near the silhouette either answer is a pixel's worth of the z-buffer, nothing else
    assert np.isin(np.round(cover[near] - expected[near], 5), [0.0]).mean() > 0.5


def test_a_dolly_sees_behind_what_the_first_camera_hides(zs):
    """Parallax: the wall Gaussians the patch hides from the dolly's level-1 camera are not the
    ones it hides from the first camera (LENS's level 1), so a LENS cover would be wrong."""
    X = coarse_points(np.random.default_rng(5), -1.5)
    covers = {}
    for mode in ("dolly", "lens"):
        centre, f = camera_of(mode, 2.0, 1)
        covers[mode] = zs.cover.cover_weights(X, ray_cast_level(centre, f, -1.5), zoom_info(zs, mode, 2.0), 1)
    wall = X[:, 1] == 0.0
    hidden = {m: wall & (c == 0) for m, c in covers.items()}
    only_lens = hidden["lens"] & ~hidden["dolly"] & (covers["dolly"] == 1)
    only_dolly = hidden["dolly"] & ~hidden["lens"] & (covers["lens"] == 1)
    assert only_lens.sum() > 20 and only_dolly.sum() > 20, (only_lens.sum(), only_dolly.sum())


def test_an_empty_finer_level_claims_no_occlusion(zs):
    """Where no Gaussian of the finer level lands (+∞ in its z-buffer) the frustum alone decides."""
    X = coarse_points(np.random.default_rng(6), -1.5)
    zoom = zoom_info(zs, "dolly", 2.0)
    centre, f = camera_of("dolly", 2.0, 1)
    expected_frustum = np.where(pixels(centre, f, X)[1] > 0, 1.0, 0.0)
    cover = zs.cover.cover_weights(X, np.zeros((0, 3)), zoom, 1)
    uv, z = pixels(centre, f, X)
    inside = np.minimum(np.minimum(uv[:, 0], W - uv[:, 0]), np.minimum(uv[:, 1], H - uv[:, 1]))
    frustum = np.clip(np.nan_to_num(inside / (0.1 * min(W, H)), nan=0.0), 0.0, 1.0) * expected_frustum
    np.testing.assert_allclose(cover, frustum, atol=1e-5)


def test_the_world_behind_level_0_keeps_its_opacity_through_the_dive(zs, tmp_path):
    """A whole import (runner.finish): world Gaussians in front of level 0's plane are covered
    where level 0's camera sees them; those behind it (hidden from that camera, a dolly could
    uncover them) get cover 0 and so keep their opacity after the world's fade."""
    scene = bpy.context.scene
    cam = source_camera(32)
    out_dir = str(tmp_path / "results")
    write_world(zs, out_dir, cam, ANCHOR, "coverjob")
    # levels lifted about one Gaussian per pixel of their camera, as the backend lifts them
    dense = str(tmp_path / "dense")
    write_dive(zs, dense, cam, ANCHOR, 4.0, 2, side=42, job_id="coverjob")
    for name in ("level_00.ply", "level_01.ply"):
        os.replace(os.path.join(dense, name), os.path.join(out_dir, name))
    wm = zs.wire.manifest
    m = wm.read_manifest(out_dir)
    wm.write_manifest(out_dir, dataclasses.replace(
        m, zoom=dataclasses.replace(m.zoom, mode="dolly"),
        levels=[dataclasses.replace(lv, count=42 * 42) for lv in m.levels]))
    # a second wall of world Gaussians 1 m behind the levels' plane, hidden from level 0's camera
    g = zs.wire.splats.read_splat_ply(os.path.join(out_dir, "world.ply"))
    n = len(g.means)
    back = g.means + np.array([0.0, 1.5, 0.0], np.float32)  # the front wall is 0.5 m before the anchor
    both = g.map(lambda a: np.concatenate([a, a]))
    both.means[n:] = back
    zs.wire.splats.write_splat_ply(os.path.join(out_dir, "world.ply"), both)
    props = scene.zoomscape
    props.job_id, props.frames_per_level, props.fade_width = "coverjob", 8, 1.0
    zs.runner.finish(scene, out_dir)
    splats = zs.world.world_objects("coverjob")["GAUSSIANS"]
    assert zs.level_rig.painted_mode("coverjob") == "DOLLY"
    cover = zs.zoom_path.point_attribute(splats.data, zs.splat_import.COVER_ATTR, 1)[:, 0]
    assert len(cover) == 2 * n
    front, behind = cover[:n], cover[n:]
    assert (front == 1).sum() > 0.2 * n  # level 0 sees the front wall: it takes over there
    # level 0's plane hides the wall behind it from its camera: it stays (cover 0), except where
    # it is off level 0's plane on screen (level 0 spans 1.3 of its view)
    assert (behind[front == 1] == 0).mean() > 0.95, (behind[front == 1] == 0).mean()
    scene.frame_set(scene.frame_end)
    fade, fade_next = zs.splat_import.fade_values(splats)
    assert (fade, fade_next) == (1.0, 1.0)  # a Gaussian keeps 1 − cover of its opacity
