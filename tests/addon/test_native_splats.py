"""Blender 5.3's native Gaussian splats (issue 12): on 5.3 and later the Gaussians import as
PointCloud objects of type GAUSSIAN_SPLAT with the attributes Blender's own PLY importer writes,
their cross-fade and cover are the splat's own opacity, and they survive save and reopen. Older
lines keep the instanced quads (test_splats); the tests that need 5.3 skip there with a reason.

The files are written here with numpy exactly as docs/API.md specifies (test_splats.write_inria_ply)."""
import os

import numpy as np
import pytest

import bpy

from conftest import add_camera, render_rgb, use_engine
from test_panel import draw
from test_splats import C0, NATIVE, needs_native, random_gaussians, write_inria_ply

BLENDER_ATTRS = ("position", "radiance:base", "scale", "rotation")  # what wm.ply_import creates


def attr(data, name):
    """A point attribute of a mesh or point cloud as float32 [N, width] (any data type)."""
    a = data.attributes[name]
    prop, width = {"FLOAT": ("value", 1), "FLOAT_VECTOR": ("vector", 3), "FLOAT4": ("vector", 4),
                   "QUATERNION": ("value", 4), "FLOAT_COLOR": ("color", 4)}[a.data_type]
    out = np.empty(len(a.data) * width, dtype=np.float32)
    a.data.foreach_get(prop, out)
    return out.reshape(-1, width)


def unit(q):
    q = np.asarray(q, dtype=np.float64)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_the_path_is_chosen_by_the_blender_version_and_shown_in_the_panel(zs):
    si = zs.splat_import
    assert si.native_splats() == (bpy.app.version >= (5, 3, 0)) == NATIVE
    props = bpy.context.scene.zoomscape
    props.job_id, props.job_state = "abc", "done"
    labels = [kw.get("text", "") for name, a, kw in draw(zs) if name == "label"]
    want = (f"Splats: native (Blender {bpy.app.version[0]}.{bpy.app.version[1]})" if NATIVE
            else "Splats: instanced quads")
    assert want in labels, labels
    means, f_dc, opacity, log_scales, quats = random_gaussians(10)
    g = zs.wire.splats.Gaussians(means, unit(quats).astype(np.float32), np.exp(log_scales),
                                 1 / (1 + np.exp(-opacity)), 0.5 + C0 * f_dc)
    obj = si.import_splats(bpy.context.scene, g, "G", "job")
    assert (obj.type, obj["zoomscape_splats"]) == (("POINTCLOUD", "native") if NATIVE else ("MESH", "quads"))
    assert si.splat_count(obj) == 10


@pytest.mark.skipif(NATIVE, reason="Blender 5.3+ has native splats; this checks the refusal before 5.3")
def test_native_splats_are_refused_before_5_3(zs):
    g = zs.wire.splats.Gaussians(np.zeros((1, 3)), np.array([[1.0, 0, 0, 0]]), np.ones((1, 3)),
                                 np.ones(1) * 0.5, np.ones((1, 3)) * 0.5)
    with pytest.raises(ValueError, match=r"native splats: need Blender 5\.3\.0 or later"):
        zs.splat_import.import_splats(bpy.context.scene, g, "G", "job", native=True)


def test_bad_gaussians_are_named(zs):
    si = zs.splat_import
    good = dict(means=np.zeros((3, 3)), quats=np.tile([1.0, 0, 0, 0], (3, 1)), scales=np.ones((3, 3)),
                opacities=np.full(3, 0.5), colors=np.full((3, 3), 0.5))
    for field, bad, message in (("colors", np.full((3, 4), 0.5), r"gaussians\.colors: shape \(3, 4\)"),
                                ("opacities", np.array([0.5, np.nan, 0.5]), r"gaussians\.opacities: has non-finite"),
                                ("quats", np.ones((2, 4)), r"gaussians\.quats: shape \(2, 4\), expected \(3, 4\)")):
        with pytest.raises(ValueError, match=message):
            si.checked_gaussians(zs.wire.splats.Gaussians(**{**good, field: bad}))
    if NATIVE:
        with pytest.raises(ValueError, match=r"extra\['zs_cover'\]: shape \(2,\), expected \(3,\)"):
            si.import_splats(bpy.context.scene, zs.wire.splats.Gaussians(**good), "G", "job",
                             extra={si.COVER_ATTR: np.zeros(2)})


@needs_native
def test_native_attributes_are_the_files_gaussians_as_blenders_importer_reads_them(zs, tmp_path):
    si = zs.splat_import
    n = 2000
    means, f_dc, opacity, log_scales, quats = random_gaussians(n, seed=3)
    path = str(tmp_path / "g.ply")
    write_inria_ply(path, means, f_dc, opacity, log_scales, quats)
    cover = np.linspace(0, 1, n, dtype=np.float32)
    obj = si.import_splats(bpy.context.scene, zs.wire.splats.read_splat_ply(path), "G", "job",
                           extra={si.COVER_ATTR: cover})
    pc = obj.data
    assert (obj.type, pc.type, len(pc.points)) == ("POINTCLOUD", "GAUSSIAN_SPLAT", n)
    assert not pc.materials  # Blender's own splat shading: no material in the way
    # the file's Gaussians, activated as the Inria layout says (float64 here)
    np.testing.assert_array_equal(attr(pc, "position"), means)
    base = attr(pc, "radiance:base")
    np.testing.assert_allclose(base[:, :3], f_dc, atol=2e-5)  # the SH0 coefficients, unchanged
    np.testing.assert_allclose(0.5 + C0 * base[:, :3], 0.5 + C0 * f_dc, atol=1e-5)  # the colours
    np.testing.assert_allclose(base[:, 3], 1 / (1 + np.exp(-opacity.astype(np.float64))), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(attr(pc, "scale"), np.exp(log_scales.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(attr(pc, "rotation"), unit(quats), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(attr(pc, si.COVER_ATTR)[:, 0], cover)
    assert sorted(a.name for a in pc.attributes) == sorted((*BLENDER_ATTRS, si.COVER_ATTR))
    # the same attributes, names and types as Blender's own importer of the same file
    bpy.ops.wm.ply_import(filepath=path)
    ref = bpy.context.selected_objects[0].data
    assert ref.type == "GAUSSIAN_SPLAT"
    for name in BLENDER_ATTRS:
        assert pc.attributes[name].data_type == ref.attributes[name].data_type, name
    for name, (mine, theirs) in {k: (attr(pc, k), attr(ref, k)) for k in BLENDER_ATTRS}.items():
        if name == "rotation":  # Blender keeps the file's unnormalised quaternions
            theirs = unit(theirs)
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=2e-5, err_msg=name)


@needs_native
def test_the_cross_fade_and_the_cover_scale_the_splats_own_opacity(zs):
    """radiance:base.w after the modifier = α · clamp(fade · (1 − cover · fade_next)), the quad
    path's opacity law, from the keyed modifier inputs (level_rig/zoom_path key them)."""
    si = zs.splat_import
    n = 500
    means, f_dc, opacity, log_scales, quats = random_gaussians(n, seed=4)
    g = zs.wire.splats.Gaussians(means, unit(quats).astype(np.float32), np.exp(log_scales),
                                 (1 / (1 + np.exp(-opacity))).astype(np.float32), (0.5 + C0 * f_dc).astype(np.float32))
    cover = np.random.default_rng(5).uniform(0, 1, n).astype(np.float32)
    obj = si.import_splats(bpy.context.scene, g, "G", "job", extra={si.COVER_ATTR: cover})
    owner, path, path_next = si.fade_channel(obj)
    assert owner == obj and "properties.inputs" in path  # keyed on the modifier, not a material
    scene = bpy.context.scene
    curves = zs.zoom_path.channel_fcurves(obj, "fade")
    zs.zoom_path.set_keyframes(curves, path, 0, np.array([1.0, 11.0]), np.array([0.0, 1.0]))
    zs.zoom_path.set_keyframes(curves, path_next, 0, np.array([11.0, 21.0]), np.array([0.0, 1.0]))
    alpha = np.asarray(g.opacities, np.float64)
    for frame, fade, fade_next in ((1, 0.0, 0.0), (6, 0.5, 0.0), (11, 1.0, 0.0), (16, 1.0, 0.5), (21, 1.0, 1.0)):
        scene.frame_set(frame)
        assert si.fade_values(obj) == pytest.approx((fade, fade_next))
        ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
        assert ev.type == "GAUSSIAN_SPLAT" and len(ev.points) == n  # the viewport culls nothing
        base = attr(ev, "radiance:base")
        np.testing.assert_allclose(base[:, 3], alpha * np.clip(fade * (1 - cover * fade_next), 0, 1),
                                   atol=1e-6, err_msg=f"frame {frame}")
        np.testing.assert_allclose(base[:, :3], f_dc, atol=2e-5)  # colours untouched
    # positions move by the depth jitter only: at most DEPTH_JITTER·K·σ_max per axis, not all 0
    move = np.abs(attr(ev, "position") - means)
    bound = si.DEPTH_JITTER * si.K_SIGMA * np.exp(log_scales).max(axis=1, keepdims=True)
    assert (move <= bound * 1.0001 + 1e-7).all() and move.max() > 0


@needs_native
def test_a_faded_native_splat_renders_as_one_of_that_opacity(zs, tmp_path):
    """Cycles: a splat at fade 0.4 with cover 0.5 at fade_next 0.5 (factor 0.3) renders as the
    same splat with 0.3 of its opacity, over a white background (a faded splat lets light through)."""
    si = zs.splat_import
    scene = bpy.context.scene
    scene.camera = add_camera("Cam", (0.0, 0.0, 5.0), (0.0, 0.0, 0.0), lens=50.0)
    world = bpy.data.worlds.new("W")
    if world.node_tree is None:
        world.use_nodes = True
    world.node_tree.nodes["Background"].inputs[0].default_value = (1, 1, 1, 1)
    scene.world = world
    use_engine(scene, "CYCLES", 16)
    scene.render.resolution_x = scene.render.resolution_y = 16
    scene.view_settings.view_transform = "Standard"

    def one(opacity, cover):
        g = zs.wire.splats.Gaussians(np.zeros((1, 3), np.float32), np.array([[1.0, 0, 0, 0]], np.float32),
                                     np.array([[3.0, 3.0, 0.01]], np.float32), np.array([opacity], np.float32),
                                     np.array([[0.1, 0.2, 0.9]], np.float32))
        return si.import_splats(scene, g, "S", "job", extra={si.COVER_ATTR: np.array([cover], np.float32)})

    faded = one(0.9, 0.5)
    mod = faded.modifiers[0]
    items = mod.node_group.interface.items_tree
    si.set_modifier_input(mod, items[si.FADE_INPUT].identifier, 0.4)
    si.set_modifier_input(mod, items[si.FADE_NEXT_INPUT].identifier, 0.5)
    a = render_rgb(scene, str(tmp_path / "faded.png"))[4:12, 4:12].mean(axis=(0, 1))
    bpy.data.objects.remove(faded)
    one(0.9 * 0.3, 0.0)
    b = render_rgb(scene, str(tmp_path / "thin.png"))[4:12, 4:12].mean(axis=(0, 1))
    np.testing.assert_allclose(a, b, atol=0.01)
    assert a[0] > 0.7  # the white background shows through 70 % of the splat


@needs_native
def test_native_splats_survive_save_and_reopen_with_nothing_external(zs, tmp_path):
    si = zs.splat_import
    n = 300
    means, f_dc, opacity, log_scales, quats = random_gaussians(n, seed=6)
    path = str(tmp_path / "g.ply")
    write_inria_ply(path, means, f_dc, opacity, log_scales, quats)
    obj = si.import_splats(bpy.context.scene, zs.wire.splats.read_splat_ply(path), "Saved", "job",
                           extra={si.COVER_ATTR: np.full(n, 0.25, np.float32)})
    owner, p_fade, _ = si.fade_channel(obj)
    zs.zoom_path.set_keyframes(zs.zoom_path.channel_fcurves(owner, "fade"), p_fade, 0,
                               np.array([1.0, 5.0]), np.array([0.0, 1.0]))
    names = (*BLENDER_ATTRS, si.COVER_ATTR)
    before = {k: attr(obj.data, k) for k in names}
    blend = str(tmp_path / "native.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    os.remove(path)  # nothing outside the .blend is needed
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=blend)
    assert bpy.utils.blend_paths(absolute=True) == []
    obj = bpy.data.objects["Saved"]
    assert (obj.type, obj.data.type, obj["zoomscape_splats"]) == ("POINTCLOUD", "GAUSSIAN_SPLAT", "native")
    for k in names:
        np.testing.assert_array_equal(attr(obj.data, k), before[k], err_msg=k)
    bpy.context.scene.frame_set(3)
    assert si.fade_values(obj)[0] == pytest.approx(0.5)  # the keyed fade came along
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    np.testing.assert_allclose(attr(ev, "radiance:base")[:, 3], before["radiance:base"][:, 3] * 0.5, atol=1e-6)
