"""The world as Gaussians in Blender (issue 10 f): world.ply becomes a splat object that renders
instead of the point object (the fallback, one click away in the panel), joins the level rig and
fades out where level 0 takes over; the panel says how many of the views were the user's.

The files are written here with numpy as docs/API.md specifies (test_deep_zoom.write_dive for the
levels, the Inria layout for world.ply)."""
import dataclasses
import math
import os

import numpy as np
import pytest

import bpy

from test_deep_zoom import render_frames, setup_cycles, source_camera, write_dive, write_points
from test_panel import draw
from test_splats import C0, write_inria_ply

GREEN, RED = np.array([0.1, 0.8, 0.1]), np.array([200, 30, 30], np.uint8)


def wall(cam, anchor, side: int, ahead: float):
    """A grid of side² points on the plane facing cam, `ahead` metres in front of the anchor and
    wider than the view → (points [N, 3] float32, spacing)."""
    M = np.array(cam.matrix_world, dtype=np.float64)
    c = np.asarray(anchor, np.float64) + ahead * (M[:3, 3] - anchor) / np.linalg.norm(M[:3, 3] - anchor)
    width = 1.6 * np.linalg.norm(c - M[:3, 3]) * 36.0 / 35.0
    g = (np.arange(side) + 0.5) / side * width - width / 2
    X, Y = np.meshgrid(g, g)
    pts = c + X.reshape(-1, 1) * M[:3, 0] + Y.reshape(-1, 1) * M[:3, 1]
    return pts.astype(np.float32), float(g[1] - g[0])


def write_world(zs, out_dir, cam, anchor, job_id: str):
    """Results with 2 levels, a red point cloud and green world Gaussians on the same wall in
    front of the levels, and two views (the user's and an extra one) → the number of Gaussians."""
    manifest = write_dive(zs, out_dir, cam, anchor, 4.0, 2, side=12, job_id=job_id)
    pts, step = wall(cam, np.asarray(anchor, np.float64), 24, 0.5)
    n = len(pts)
    write_points(zs, os.path.join(out_dir, "pointcloud.ply"), pts, np.tile(RED, (n, 1)),
                 np.full(n, step, np.float32))
    # world Gaussians flat on the wall (local z = the wall's normal = the camera's z axis)
    q = np.array(cam.matrix_world.to_quaternion(), np.float32)
    write_inria_ply(os.path.join(out_dir, "world.ply"), pts, np.tile(((GREEN - 0.5) / C0).astype(np.float32), (n, 1)),
                    np.full(n, 4.0, np.float32), np.log(np.tile([[step, step, 1e-3 * step]], (n, 1))).astype(np.float32),
                    np.tile(q, (n, 1)))
    wm = zs.wire.manifest
    m = wm.Manifest.from_dict(manifest)
    views = [wm.ViewSummary("Cam.000", n, 1.0, 0.0), dataclasses.replace(wm.ViewSummary("Extra.000", 0, 1.0, 0.4), extra=True)]
    wm.write_manifest(out_dir, dataclasses.replace(m, views=views, world_file="world.ply", world_gaussians=n))
    return n


def mean_colour(im) -> np.ndarray:
    return im.reshape(-1, 3).mean(axis=0)


def test_the_world_renders_as_gaussians_and_points_are_the_fallback(zs, tmp_path):
    scene = bpy.context.scene
    cam = source_camera(32)
    setup_cycles(scene, res=32, samples=8)
    scene.world = None
    out_dir = str(tmp_path / "results")
    n = write_world(zs, out_dir, cam, np.array([0.0, 0.0, 1.0]), "worldjob")
    props = scene.zoomscape
    props.job_id, props.frames_per_level, props.fade_width = "worldjob", 8, 1.0
    zs.runner.finish(scene, out_dir)

    objs = zs.world.world_objects("worldjob")
    splats, points = objs["GAUSSIANS"], objs["POINTS"]
    assert splats is not None and zs.splat_import.splat_count(splats) == n
    assert splats.parent is not None and splats.parent == points.parent  # both in the level rig
    assert not splats.hide_render and points.hide_render  # one world renders: the Gaussians
    assert zs.runner.view_counts("worldjob") == (1, 1)
    labels = " ".join(kw.get("text", "") for name, a, kw in draw(zs) if name == "label")
    assert "1 of your views + 1 extra views" in labels
    assert "world_display" in [a[0] for name, a, kw in draw(zs) if name == "prop"]

    s0 = scene.frame_start
    gaussians = mean_colour(render_frames(scene, [s0], str(tmp_path))[0])
    assert gaussians[1] > 0.5 and gaussians[0] < 0.3, gaussians  # green: the world's Gaussians

    props.world_display = "POINTS"  # the fallback, from the panel
    assert splats.hide_render and not points.hide_render
    pts = mean_colour(render_frames(scene, [s0], str(tmp_path))[0])
    assert pts[0] > 0.5 and pts[1] < 0.3, pts  # red: the point cloud
    props.world_display = "GAUSSIANS"

    # in the dive the world fades out over τ ∈ [1/8, 5/8] once level 0 is in, where level 0
    # covers it (the wall is wider than the view: its border stays until it leaves the screen),
    # then is dropped from renders
    cover = zs.zoom_path.point_attribute(splats.data, zs.splat_import.COVER_ATTR, 1)[:, 0]
    assert (cover == 1).sum() > 0.2 * n and (cover == 0).sum() > 0.2 * n  # inside / outside level 0's view
    mod = splats.modifiers[0]
    gone = zs.splat_import.modifier_input(mod, mod.node_group.interface.items_tree["Hidden from"].identifier)
    assert math.ceil(s0 + 8 * 5 / 8) <= gone < scene.frame_end, (gone, scene.frame_end)
    seen = []
    for f in (s0, s0 + 1, s0 + 3, s0 + 5, s0 + 6):
        scene.frame_set(f)
        seen.append(tuple(round(v, 3) for v in zs.splat_import.fade_values(splats)))
    assert seen == [(1.0, 0.0), (1.0, 0.0), (1.0, 0.5), (1.0, 1.0), (1.0, 1.0)], seen
    late = mean_colour(render_frames(scene, [s0 + 6], str(tmp_path))[0])
    assert late[1] < 0.5 or late[0] > 0.3, late  # the levels' pattern, not the green wall


def test_a_job_without_world_gaussians_renders_its_points(zs, tmp_path):
    scene = bpy.context.scene
    cam = source_camera(32)
    out_dir = str(tmp_path / "results")
    write_dive(zs, out_dir, cam, np.array([0.0, 0.0, 1.0]), 4.0, 1, side=8, job_id="old")
    props = scene.zoomscape
    props.job_id = "old"
    zs.runner.finish(scene, out_dir)
    objs = zs.world.world_objects("old")
    assert objs["GAUSSIANS"] is None and not objs["POINTS"].hide_render
    labels = " ".join(kw.get("text", "") for name, a, kw in draw(zs) if name == "label")
    assert "renders as points" in labels


def test_a_missing_world_file_is_named(zs, tmp_path):
    scene = bpy.context.scene
    cam = source_camera(32)
    out_dir = str(tmp_path / "results")
    write_world(zs, out_dir, cam, np.array([0.0, 0.0, 1.0]), "gone")
    os.remove(os.path.join(out_dir, "world.ply"))
    scene.zoomscape.job_id, scene.zoomscape.host = "gone", ""  # no backend to fetch it again from
    with pytest.raises(zs.world.WorldError, match="world_file: .*world.ply is missing"):
        zs.runner.import_results(scene, out_dir)
