"""Zoom levels in Blender: a 4^10 dive stays sub-pixel exact in Blender's float32, level hand-overs
render without a pop in Cycles, and the rig survives save/reload with nothing external.

The level files are written here with numpy exactly as docs/API.md "Zoom levels" specifies
(Inria-layout PLYs in each level's local frame, float64 frames in manifest.json)."""
import json
import os

import numpy as np
import pytest

import bpy

from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

from conftest import add_camera, render_rgb
from test_splats import C0, write_inria_ply

LENS, SENSOR = 35.0, 36.0


def source_camera(res=48):
    """The zoom camera at (0, −5, 1) looking along +Y; the anchor (0, 0, 1) is on its axis."""
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = res
    cam = add_camera("Cam.000", (0.0, -5.0, 1.0), lens=LENS)
    cam.data.sensor_width = SENSOR
    scene.camera = cam
    bpy.context.view_layer.update()
    return cam


def level_pattern(xy, period):
    """A colour pattern over level-local coordinates: [N, 2] → rgb [N, 3] in [0.15, 0.85]."""
    a, b = np.sin(2 * np.pi * xy[:, 0] / period), np.cos(2 * np.pi * xy[:, 1] / period)
    return np.column_stack([0.5 + 0.35 * a, 0.5 + 0.35 * b, 0.5 - 0.175 * (a + b)])


def write_dive(zs, out_dir, cam, anchor, factor, n_levels, side, job_id="dive"):
    """Results of a job with n_levels zoom levels of side² flat Gaussians each → the manifest.

    Level i covers (with a margin) what the zoom camera sees at magnification p^i: a plane through
    the anchor facing the camera; in its local frame (unit p^−i) every level spans the same W0.
    """
    os.makedirs(out_dir, exist_ok=True)
    M = np.array(cam.matrix_world, dtype=np.float64)
    res = bpy.context.scene.render.resolution_x
    f_px = LENS / SENSOR * res
    R = M[:3, :3]
    W0 = np.linalg.norm(np.asarray(anchor) - M[:3, 3]) * SENSOR / LENS  # view width at the anchor
    g = (np.arange(side) + 0.5) / side * 1.3 * W0 - 0.65 * W0
    X, Y = np.meshgrid(g, g)
    xy = np.column_stack([X.ravel(), Y.ravel()])
    n = len(xy)
    sigma = 0.75 * (g[1] - g[0])
    levels = []
    for i in range(n_levels):
        means = np.column_stack([xy, np.zeros(n)]).astype(np.float32)  # local z = toward the camera
        rgb = level_pattern(xy, W0 / 3.0)  # 3 periods per level view: each level adds detail
        f_dc = ((rgb - 0.5) / C0).astype(np.float32)
        log_scales = np.log(np.tile([[sigma, sigma, 1e-4 * sigma]], (n, 1))).astype(np.float32)
        quats = np.tile([[1.0, 0.0, 0.0, 0.0]], (n, 1)).astype(np.float32)
        write_inria_ply(os.path.join(out_dir, f"level_{i:02d}.ply"), means, f_dc,
                        np.full(n, 3.0, np.float32), log_scales, quats)
        levels.append({"index": i, "prompt": f"level {i}", "image": f"level_{i:02d}.png",
                       "gaussians": f"level_{i:02d}.ply", "count": n,
                       "frame": {"origin": [float(v) for v in anchor], "rotation": R.tolist(),
                                 "unit": float(factor) ** -i},
                       "zoom_range": [float(factor) ** i, float(factor) ** (i + 1)]})
    pts = np.asarray(anchor, dtype=np.float32)[None, :] + np.zeros((4, 3), np.float32)
    write_points(zs, os.path.join(out_dir, "pointcloud.ply"), pts, np.zeros((4, 3), np.uint8),
                 np.full(4, 0.01, np.float32))
    manifest = {"format": "zoomscape-results", "version": 1, "job_id": job_id, "engine": "procedural",
                "seed": 0, "scene_prompt": "x", "pointcloud": {"file": "pointcloud.ply", "points": 4},
                "views": [], "zoom": {"camera": cam.name, "matrix_world": M.tolist(), "factor": factor,
                                      "fx": f_px, "fy": f_px, "cx": res / 2, "cy": res / 2,
                                      "width": res, "height": res,
                                      "levels": [{"prompt": lv["prompt"]} for lv in levels],
                                      "anchor": [float(v) for v in anchor], "anchor_source": "surface"},
                "levels": levels}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return manifest


def write_points(zs, path, xyz, rgb, radius):
    """The results' point cloud (rgb: [N, 3] uint8) through the extension's wire copy."""
    zs.wire.ply.write_point_ply(path, zs.wire.ply.PointCloud(xyz, rgb, radius))


def typed(zs, manifest):
    """A manifest dict → the extension's wire Manifest (what read_manifest gives)."""
    return zs.wire.manifest.Manifest.from_dict(manifest)


def project(Xc, f_px, res):
    """Camera-space points [N, 3] (Blender: looking down −Z) → pixels [N, 2] (x right, y up)."""
    return Xc[:, :2] / -Xc[:, 2:3] * f_px + res / 2.0


@pytest.mark.parametrize("mode,p", [("DOLLY", 4.0), ("DOLLY", 2.0), ("LENS", 4.0), ("LENS", 2.0)])
def test_a_10_level_dive_stays_within_half_a_pixel_in_float32(zs, tmp_path, mode, p):
    res, n_levels, fpl = 512, 10, 4
    scene = bpy.context.scene
    cam = source_camera(res)
    anchor = np.array([0.0, 0.0, 1.0])
    manifest = write_dive(zs, str(tmp_path), cam, anchor, p, n_levels, side=2)
    root, objs = zs.level_rig.import_levels(scene, typed(zs, manifest), str(tmp_path), "dive")
    zoom = zs.zoom_path.build_level_zoom(scene, cam, root, objs, p, fpl, mode, "dive")
    deepest = objs[-1]
    assert deepest["zoomscape_level"] == n_levels - 1 and len(objs) == n_levels
    # a Gaussian of the deepest level, away from the anchor: where is it in float64?
    x_l = np.array([0.08, -0.05, 0.005]) * 5.0 * SENSOR / LENS  # on screen at p^10 (level 9 ×4)
    R = np.array(manifest["levels"][-1]["frame"]["rotation"])
    X = anchor + p ** -(n_levels - 1) * R @ x_l
    c0 = np.array(cam.matrix_world.translation, dtype=np.float64)
    f_px = LENS / SENSOR * res
    errs, naive_errs, last = [], [], None
    for k, frame in enumerate(range(scene.frame_start, scene.frame_end + 1)):
        scene.frame_set(frame)
        tau = k / fpl
        if mode == "DOLLY":  # truth: the camera at distance d0·p^−τ, same lens
            truth = project((R.T @ (X - (anchor + (c0 - anchor) * p ** -tau)))[None], f_px, res)
        else:  # truth: the camera stays and the image is magnified p^τ about the anchor's pixel
            u_a = project((R.T @ (anchor - c0))[None], f_px, res)  # (a lens p^τ longer whose axis
            truth = u_a + p ** tau * (project((R.T @ (X - c0))[None], f_px, res) - u_a)  # hits a)
        dg = bpy.context.evaluated_depsgraph_get()
        Mo = np.array(deepest.evaluated_get(dg).matrix_world, dtype=np.float32)
        Mc = np.array(zoom.evaluated_get(dg).matrix_world, dtype=np.float32)
        lens = zoom.data.lens  # not keyed: the rig zooms, not the lens
        xw = Mo[:3, :3] @ x_l.astype(np.float32) + Mo[:3, 3]  # float32 throughout, as Blender holds it
        Xc = Mc[:3, :3].T @ (xw - Mc[:3, 3])
        errs.append(np.abs(project(Xc[None], np.float32(lens / SENSOR * res), res) - truth).max())
        # the same shot with plain world coordinates in float32 (a camera dollying 4^10 closer)
        Xn, cn = X.astype(np.float32), (anchor + (c0 - anchor) * p ** -tau).astype(np.float32)
        if mode == "DOLLY":
            naive_errs.append(np.abs(project((R.T.astype(np.float32) @ (Xn - cn))[None], f_px, res) - truth).max())
        last = truth
    assert len(errs) == (n_levels - 1) * fpl + 1  # to the deepest level, at its own resolution
    assert np.all(np.abs(last - res / 2) < res / 2), "the Gaussian must be on screen at the end"
    assert max(errs) < 0.5, f"max error {max(errs):.3g} px (per frame: {np.round(errs, 3).tolist()})"
    if mode == "DOLLY" and p == 4.0:
        assert max(naive_errs) > 0.5  # float32 world coordinates could not do it: the test can fail


@pytest.mark.parametrize("mode", ["DOLLY", "LENS"])
def test_the_far_world_stays_inside_the_far_clip_through_the_dive(zs, tmp_path, mode):
    """The rig scales the world about the anchor; in DOLLY depths grow with it, so the zoom
    camera's clip_end is keyed to keep what the user's camera saw (up to its clip_end) in view:
    the sky of a 4^3 dive is 64× farther in the render than at its first frame."""
    scene = bpy.context.scene
    cam = source_camera(32)
    cam.data.clip_end = 300.0
    anchor = np.array([0.0, 0.0, 1.0])
    manifest = write_dive(zs, str(tmp_path), cam, anchor, 4.0, 3, side=2)
    root, objs = zs.level_rig.import_levels(scene, typed(zs, manifest), str(tmp_path), "clip")
    zoom = zs.zoom_path.build_level_zoom(scene, cam, root, objs, 4.0, 4, mode, "clip")
    M = np.array(cam.matrix_world, dtype=np.float64)
    far = M[:3, 3] - 0.9 * 300.0 * M[:3, 2]  # 270 m ahead (level-0 metres), on the view axis
    scene.frame_set(scene.frame_start)
    rest_inv = np.linalg.inv(np.array(root.matrix_world, dtype=np.float64))
    depths, clips = [], []
    for f in range(scene.frame_start, scene.frame_end + 1):
        scene.frame_set(f)
        x = np.array(root.matrix_world, dtype=np.float64) @ rest_inv @ np.append(far, 1.0)
        Mc = np.array(zoom.matrix_world, dtype=np.float64)
        depths.append(float((x[:3] - Mc[:3, 3]) @ -Mc[:3, 2]))
        clips.append(zoom.data.clip_end)
    depths, clips = np.array(depths), np.array(clips)
    assert (depths < clips).all(), np.column_stack([depths, clips])[depths >= clips][:3]
    if mode == "DOLLY":
        assert depths[-1] > 300.0 * 10  # a constant clip_end would have cut it: the test can fail
        np.testing.assert_allclose(clips[0], 300.0, rtol=1e-6)
    else:
        np.testing.assert_allclose(clips, 300.0, rtol=1e-6)
        np.testing.assert_allclose(depths, 270.0, rtol=1e-6)


def test_cover_weights_are_blenders_view_of_the_next_level(zs):
    """cover.cover_weights' frustum term in LENS (wire.cameras.level_pose + project_blender)
    against Blender's own world_to_camera_view of level i+1's camera: the zoom camera with lens
    and shift × p^(i+1) (a lens m times longer magnifies m× about the image centre; the shift, a
    fraction of the image, must grow m× to keep the principal point's offset m× larger). The
    finer level has no Gaussians here, so it claims no occlusion (test_cover: with occlusion)."""
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 96, 64
    cam = add_camera("Cam.000", (0.3, -5.0, 1.2), (1.5, 0.05, 0.1), lens=LENS)
    cam.data.sensor_width, cam.data.shift_x, cam.data.shift_y = SENSOR, 0.03, -0.02
    bpy.context.view_layer.update()
    wm, p, i = zs.wire.manifest, 4.0, 1
    wire = zs.scene_io.camera_to_wire(cam, scene)
    M = np.array(wire["matrix_world"])
    anchor = M[:3, 3] - 5.0 * M[:3, 2]  # 5 m in front of the camera, on its axis
    zoom = wm.ZoomInfo(cam.name, M, zs.wire.cameras.Intrinsics.from_dict(wire), p, ["a", "b", "c"], anchor,
                       mode="lens")
    level = wm.Level(i, "level_01.ply", wm.LevelFrame.for_level(M, anchor, p, i), (p, p * p))
    rng = np.random.default_rng(4)
    W0 = 5.0 * SENSOR / LENS  # level 0's view width at the anchor = level i's in its local units·p^i
    means = np.column_stack([rng.uniform(-0.25, 0.25, (400, 2)) * W0 * p ** i / p, rng.normal(0, 0.05, 400)])
    means[:20, 2] = 6.0 * p ** i  # behind the camera: not covered
    cover = zs.cover.cover_weights(level.frame.to_world(means), np.zeros((0, 3)), zoom, i + 1)

    nxt = cam.copy()
    nxt.data = cam.data.copy()
    m = p ** (i + 1)
    nxt.data.lens, nxt.data.shift_x, nxt.data.shift_y = LENS * m, 0.03 * m, -0.02 * m
    scene.collection.objects.link(nxt)
    bpy.context.view_layer.update()
    W, H = 96, 64
    expected = []
    for x in level.frame.to_world(means):
        v = world_to_camera_view(scene, nxt, Vector(x))
        u, w = v.x * W, (1.0 - v.y) * H
        inside = min(u, W - u, w, H - w)
        expected.append(np.clip(inside / (zs.cover.FEATHER * min(W, H)), 0, 1) if v.z > 0 else 0.0)
    expected = np.array(expected)
    np.testing.assert_allclose(cover, expected, atol=1e-4)
    assert (cover[:20] == 0).all() and (cover == 1).sum() > 20 and (cover == 0).sum() > 40
    assert ((cover > 0) & (cover < 1)).sum() > 20  # the feathered border was exercised


def render_frames(scene, frames, path):
    """Render frames with Cycles (small, few samples) → [F, H, W, 3] float32."""
    images = []
    for f in frames:
        scene.frame_set(f)
        images.append(render_rgb(scene, os.path.join(path, f"f{f:03d}.png")))
    return np.array(images)


# Blender 5.3's native splats are sampled stochastically in Cycles: two seeds of a dive frame
# differ by 0.041 (mean |Δ|) at 16 samples and 0.021 at 64, the quads by 0.002 and 0.0005.
NATIVE_SAMPLES = 4  # so the native path renders these tests at 4× the samples


def setup_cycles(scene, res=40, samples=16):
    r = scene.render
    r.engine = "CYCLES"
    if bpy.app.version >= (5, 3, 0):  # the native splats (splat_import.native_splats)
        samples *= NATIVE_SAMPLES
    scene.cycles.device, scene.cycles.samples = "CPU", samples
    scene.cycles.use_denoising = False
    r.resolution_x = r.resolution_y = res
    r.image_settings.file_format = "PNG"
    scene.view_settings.view_transform = "Standard"


# Mean |Δ| per channel (0..1) between neighbouring frames at a hand-over. With 16 frames per level
# this scene measures about 0.054 there (zoom motion, the cross-fade and sampling noise all
# included) and 0.133 with a hard switch.
POP_TOL = 0.08


def rendered_dive(zs, tmp_path, side, fpl, job_id, p=4.0, n_levels=3):
    """A 40-pixel Cycles scene with a dollying dive over n_levels levels of side² Gaussians,
    fpl frames per level → (scene, the level objects)."""
    scene = bpy.context.scene
    cam = source_camera(40)
    setup_cycles(scene)
    manifest = write_dive(zs, str(tmp_path), cam, np.array([0.0, 0.0, 1.0]), p, n_levels, side=side)
    root, objs = zs.level_rig.import_levels(scene, typed(zs, manifest), str(tmp_path), job_id)
    zs.zoom_path.build_level_zoom(scene, cam, root, objs, p, fpl, "DOLLY", job_id)
    return scene, objs


@pytest.mark.parametrize("p,n_levels", [(4.0, 3), (2.0, 10), (4.0, 10)])
def test_level_handover_renders_without_a_pop(zs, tmp_path, p, n_levels):
    fpl = 16
    scene, objs = rendered_dive(zs, tmp_path, 24, fpl, "pop", p, n_levels)
    # this Blender's path: native splat point clouds on 5.3+, instanced quads before
    native = zs.splat_import.native_splats()
    assert [(o.type, o.get("zoomscape_splats")) for o in objs] == \
        [("POINTCLOUD", "native") if native else ("MESH", "quads")] * n_levels
    s0 = scene.frame_start
    diffs = {}
    # level k is fully in and level k+1 starts to fade in at τ = k (deep dives: early, middle, last);
    # the dive ends as the deepest level is fully in (τ = N − 1: no frame after it)
    assert scene.frame_end == s0 + (n_levels - 1) * fpl
    for k in ((1, 2) if n_levels == 3 else (1, n_levels // 2, n_levels - 2, n_levels - 1)):
        h = s0 + k * fpl
        im = render_frames(scene, [h - 1, h] + ([h + 1] if h < scene.frame_end else []), str(tmp_path))
        assert im[1].mean() > 0.2, "the levels must cover the view"
        diffs[k] = tuple(np.abs(b - a).mean() for a, b in zip(im, im[1:]))
    assert max(max(d) for d in diffs.values()) < POP_TOL, diffs
    if n_levels != 3:
        return
    # the same hand-over with a hard switch (fades 1/100 level wide) does pop: the test can fail
    zs.zoom_path.key_fades(objs, s0, fpl, fade_width=0.01)
    h = s0 + 2 * fpl
    im = render_frames(scene, [h - 1, h], str(tmp_path))
    assert np.abs(im[1] - im[0]).mean() > POP_TOL, (np.abs(im[1] - im[0]).mean(), diffs)


def test_the_rig_survives_save_and_reload_with_nothing_external(zs, tmp_path):
    scene = bpy.context.scene
    cam = source_camera(32)
    setup_cycles(scene, res=32, samples=4)
    out_dir = str(tmp_path / "results")
    write_dive(zs, out_dir, cam, np.array([0.0, 0.0, 1.0]), 4.0, 3, side=10, job_id="save")
    props = scene.zoomscape
    props.job_id, props.frames_per_level, props.zoom_mode = "save", 6, "DOLLY"
    zs.runner.finish(scene, out_dir)  # what the extension does when a job is done
    root, objs = zs.level_rig.rig_of("save")
    assert root is not None and [o["zoomscape_level"] for o in objs] == [0, 1, 2]
    pts = next(o for o in bpy.data.objects if o.get("zoomscape_kind") == "points")
    assert pts.parent == root  # the point cloud zooms with the levels
    assert scene.camera.get("zoomscape_kind") == "zoom_camera" and scene.frame_end - scene.frame_start == 12
    frame = scene.frame_start + 10
    before = render_frames(scene, [frame], str(tmp_path))[0]
    assert before.mean() > 0.1
    blend = str(tmp_path / "moved" / "dive.blend")
    os.makedirs(os.path.dirname(blend))
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    for name in os.listdir(out_dir):  # nothing outside the .blend is needed any more
        os.remove(os.path.join(out_dir, name))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=blend)
    scene = bpy.context.scene
    assert bpy.utils.blend_paths(absolute=True) == []  # no images, caches or libraries to ship
    root = next(o for o in bpy.data.objects if o.get("zoomscape_kind") == "level_root")
    levels = sorted((o for o in root.children if o.get("zoomscape_kind") == "level"),
                    key=lambda o: o["zoomscape_level"])
    assert len(levels) == 3 and all(zs.splat_import.splat_count(o) == 100 for o in levels)
    dg = bpy.context.evaluated_depsgraph_get()
    if levels[0].type == "POINTCLOUD":  # native splats (5.3+): the evaluated clouds stay splats
        ev = [o.evaluated_get(dg).data for o in levels]
        assert [(d.type, len(d.points)) for d in ev] == [("GAUSSIAN_SPLAT", 100)] * 3
    else:  # instanced quads
        instances = sum(1 for i in dg.object_instances if i.is_instance and i.parent
                        and i.parent.original in levels)
        assert instances == 300
    after = render_frames(scene, [frame], str(tmp_path))[0]
    np.testing.assert_allclose(after, before, atol=1e-6)


def all_shown(zs, objs):
    """Undo the render-only savings: every level in renders, no Gaussian culled."""
    si = zs.splat_import
    for obj in objs:
        if obj.animation_data and obj.animation_data.action:
            curves = zs.zoom_path.channel_fcurves(obj, "unused")
            zs.zoom_path.remove_fcurve(curves, "hide_render")
        obj.hide_render = False
        zs.zoom_path.set_cover_frames(obj, si.NEVER, 1.0)
        zs.zoom_path.set_hidden_from(obj, si.NEVER)


def hidden_from(zs, obj):
    """The frame from which renders drop all of a splat object (the node group input)."""
    mod = obj.modifiers[0]
    return zs.splat_import.modifier_input(mod, mod.node_group.interface.items_tree[zs.splat_import.HIDDEN_FROM].identifier)


def test_deep_frames_render_only_what_shows_and_look_the_same(zs, tmp_path):
    fpl = 8
    scene, objs = rendered_dive(zs, tmp_path, 64, fpl, "cull")
    s0 = scene.frame_start
    frames = [s0 + 12, s0 + 20]  # τ = 1.5 (level 2 fading in over level 1) and 2.5 (level 2 alone)
    hidden = {}
    for f in [s0, s0 + 4, *frames]:
        scene.frame_set(f)
        hidden[f] = [o.hide_render for o in objs]
    assert hidden[s0] == [False, True, True]  # a level costs nothing before its fade starts
    assert hidden[s0 + 4] == [False, False, True]
    assert hidden[s0 + 12] == hidden[s0 + 20] == [False, False, False]
    gone = [hidden_from(zs, o) for o in objs]  # level 0 is covered on screen by τ = 2.5: it leaves
    assert s0 + 8 < gone[0] <= s0 + 20 and gone[2] > 1e8, gone
    fast = render_frames(scene, frames, str(tmp_path))
    all_shown(zs, objs)
    full = render_frames(scene, frames, str(tmp_path))
    scene.cycles.seed = 1  # the same full render with other random numbers: the noise level
    other = render_frames(scene, frames, str(tmp_path))
    assert fast.mean() > 0.2

    def blocks(im):  # [F, 40, 40, 3] → 8×8 means of 5×5 pixel blocks: the image without its noise
        return im.reshape(len(im), 8, 5, 8, 5, 3).mean(axis=(2, 4))

    # Cycles' path termination is random, so dropping invisible quads only re-rolls the noise
    noise = np.abs(full - other).mean(axis=(1, 2, 3))
    diff = np.abs(fast - full).mean(axis=(1, 2, 3))
    assert np.all(diff < 1.5 * noise + 1e-3), (diff, noise)
    bias = np.abs(blocks(fast) - blocks(full)).mean(axis=(1, 2, 3))
    block_noise = np.abs(blocks(other) - blocks(full)).mean(axis=(1, 2, 3))
    assert np.all(bias < 1.5 * block_noise + 1e-3), (bias, block_noise)  # nothing visible changes


def cloud_over_level_0(zs, tmp_path):
    """The demo's hand-over in small: a dive of 2 levels with a red point cloud just in front of
    level 0 over the whole view, imported as the extension does → (scene, the point object)."""
    scene = bpy.context.scene
    cam = source_camera(40)
    setup_cycles(scene)
    out_dir = str(tmp_path / "results")
    write_dive(zs, out_dir, cam, np.array([0.0, 0.0, 1.0]), 4.0, 2, side=24, job_id="fade")
    # a red cloud just in front of level 0 over the whole view, like the demo's coarse cloud
    W0 = 5.0 * SENSOR / LENS
    g = (np.arange(40) + 0.5) / 40 * 1.3 * W0 - 0.65 * W0
    X, Z = np.meshgrid(g, g)
    xyz = np.column_stack([X.ravel(), np.full(X.size, -0.02), 1.0 + Z.ravel()]).astype(np.float32)
    rgb = np.tile(np.array([[200, 40, 40]], np.uint8), (len(xyz), 1))
    # the radius the backend writes for a 40×40 pixel grid of that spacing: half a pixel diagonal
    write_points(zs, os.path.join(out_dir, "pointcloud.ply"), xyz, rgb,
                 np.full(len(xyz), np.sqrt(0.5) * 1.3 * W0 / 40, np.float32))
    props = scene.zoomscape
    fpl = 16  # as in the level hand-over test
    props.job_id, props.frames_per_level, props.zoom_mode, props.fade_width = "fade", fpl, "DOLLY", 1.0
    zs.runner.finish(scene, out_dir)
    return scene, next(o for o in bpy.data.objects if o.get("zoomscape_kind") == "points")


def test_the_point_cloud_fades_out_as_level_0_takes_over_without_a_pop(zs, tmp_path):
    scene, pts = cloud_over_level_0(zs, tmp_path)
    fpl = scene.zoomscape.frames_per_level
    s0 = scene.frame_start
    # level 0 fades in behind the cloud over τ ∈ [0, 1/8] (2 frames), then the cloud fades out
    # over τ ∈ [1/8, 5/8] (frames 2..10)
    frames = list(range(s0, s0 + 12))
    mod = pts.modifiers[0]
    gone = zs.splat_import.modifier_input(mod, mod.node_group.interface.items_tree["Hidden from"].identifier)
    assert gone == s0 + 10  # gone from renders once faded out
    level0 = next(o for o in bpy.data.objects if o.get("zoomscape_level") == 0)
    hidden = []
    for f in (s0, s0 + 1):
        scene.frame_set(f)
        hidden.append(level0.hide_render)
    assert hidden == [True, False]  # at frame_start the world alone: what the user's cameras see
    im = render_frames(scene, frames, str(tmp_path))
    red = im[..., 0].mean(axis=(1, 2)) - im[..., 1:].mean(axis=(1, 2, 3))
    assert red[0] > 0.4, red  # the cloud covers the view at the start
    assert np.all(np.diff(red[:3]) < 0.01), red  # level 0 comes in behind the opaque cloud
    assert red[2] > 0.4, red
    assert np.all(np.diff(red[2:11]) < 0), red  # then the cloud fades, not switching
    assert abs(red[10] - red[11]) < 0.02 and red[10] < 0.15, red  # level 0 alone
    steps = np.abs(np.diff(im, axis=0)).mean(axis=(1, 2, 3))
    assert steps.max() < POP_TOL, steps
    # a cloud switched off at once does pop: the test can fail
    zs.zoom_path.key_points_fade(pts, s0, fpl, fade_width=0.01)
    im = render_frames(scene, [s0, s0 + 1], str(tmp_path))
    assert np.abs(im[1] - im[0]).mean() > POP_TOL


def test_a_faded_cloud_leaves_level_0_as_it_renders_alone(zs, tmp_path):
    """The cause of the native path's pop, and its fix: Cycles 5.3 renders a native splat
    differently when the ray reaches it through a transparent hit inside the splat's reach
    (importers module docstring), and the cloud lies on level 0. The import lifts the cloud toward
    the camera past that reach on the native path (covering the same pixels), so a fully faded
    cloud in front of level 0 changes nothing; unlifted it changed the frame by 0.098 mean |Δ|."""
    scene, pts = cloud_over_level_0(zs, tmp_path)
    si, imp = zs.splat_import, zs.importers
    native = si.native_splats()
    assert (imp.LIFT_ATTR in pts.data.attributes) == native  # 4.2-5.2: the cloud as it was
    s0 = scene.frame_start
    mod = pts.modifiers[0]
    hidden = mod.node_group.interface.items_tree[imp.HIDDEN_FROM].identifier
    frame = s0 + 10  # the cloud has faded out (fade_out 1) and leaves the render here
    alone = render_frames(scene, [frame], str(tmp_path))[0]
    imp.set_modifier_input(mod, hidden, imp.NEVER)  # keep the fully transparent cloud in the render
    through = render_frames(scene, [frame], str(tmp_path))[0]
    assert np.abs(through - alone).mean() < 0.003, np.abs(through - alone).mean()
    if not native:
        return
    # the lift leaves the cloud's pixels as they were: the opaque cloud at the first frame
    lifted = render_frames(scene, [s0], str(tmp_path))[0]
    lift = np.empty(len(pts.data.vertices), np.float32)
    pts.data.attributes[imp.LIFT_ATTR].data.foreach_get("value", lift)
    assert lift.min() > 0.6  # past 3 σ of level 0's Gaussians (σ = 0.21 here), in metres
    pts.data.attributes.remove(pts.data.attributes[imp.LIFT_ATTR])
    pts.data.update()
    unlifted = render_frames(scene, [s0], str(tmp_path))[0]
    assert np.abs(lifted - unlifted).mean() < 0.002, np.abs(lifted - unlifted).mean()
    # and unlifted, the faded cloud does change level 0: the check above can fail
    changed = render_frames(scene, [frame], str(tmp_path))[0]
    assert np.abs(changed - alone).mean() > 0.03, np.abs(changed - alone).mean()


@pytest.mark.parametrize("fpl", [6, 5])
def test_levels_painted_in_substeps_dive_at_the_users_frames_per_level(zs, tmp_path, fpl):
    """The backend paints each step of the user's factor p in substeps levels of q = p^(1/m)
    (zoom.substeps in the manifest). The dive keeps the user's F frames per step of p: F/m frames
    per painted level (F/m may be fractional), the same length and the same zoom per frame as
    levels painted at p, through every painted level (3 user levels at p = 4: 5 levels at q = 2)."""
    scene = bpy.context.scene
    cam = source_camera(32)
    out_dir = str(tmp_path / "results")
    manifest = write_dive(zs, out_dir, cam, np.array([0.0, 0.0, 1.0]), 2.0, 5, side=2, job_id="sub")
    manifest["zoom"]["substeps"] = 2
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    props = scene.zoomscape
    props.job_id, props.frames_per_level, props.zoom_mode = "sub", fpl, "DOLLY"
    zs.runner.finish(scene, out_dir)
    root, objs = zs.level_rig.rig_of("sub")
    assert [o["zoomscape_level"] for o in objs] == [0, 1, 2, 3, 4]
    assert scene.frame_end - scene.frame_start == 2 * fpl          # (N − 1)·F for the user's 3 levels
    rest = None
    for k in range(2 * fpl + 1):
        scene.frame_set(scene.frame_start + k)
        s = float(root.matrix_world.to_scale()[0])
        rest = s if rest is None else rest
        assert s / rest == pytest.approx(4.0 ** (k / fpl), rel=1e-5)   # p^(frame / F), p = 4
    # painted level j fades in over the half step before it fills the screen, τ_user ∈ [(j−1)/2, j/2]
    for obj in objs[1:]:
        j = int(obj["zoomscape_level"])
        owner, path, _ = zs.splat_import.fade_channel(obj)
        for tau_user, want in (((j - 1) / 2.0, 0.0), ((j - 0.5) / 2.0, 0.5), (j / 2.0, 1.0)):
            frame = scene.frame_start + tau_user * fpl
            if frame != int(frame):
                continue
            scene.frame_set(int(frame))
            assert float(owner.path_resolve(path)) == pytest.approx(want, abs=1e-5), (j, tau_user)
    scene.frame_set(scene.frame_start)
    old = zs.wire.manifest.ZoomInfo.from_dict({k: v for k, v in manifest["zoom"].items() if k != "substeps"})
    assert old.substeps == 1 and old.frames_per_level(fpl) == fpl   # a manifest from before: one level a step
