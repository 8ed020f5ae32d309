"""A done job's level images (level_NN.png, zoom_stack.png) become packed bpy images with the
right sizes and pixels; imports without them still work; the Import levels toggle and the Fade
width reach the level import and the zoom path; the open-image operator is a no-op without a window.

The PNGs are written here with zlib (a peer writer, not Blender), rows top to bottom as PNG stores them."""
import json
import os
import struct
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

import blender_ext
import bpy

from test_deep_zoom import source_camera, write_dive

LEVEL_W, LEVEL_H = 12, 8  # not square: a transposed or flipped image cannot pass


def write_png(path, rgb):
    """rgb: [H, W, 3] uint8 → an 8-bit RGB PNG at path (first row = top of the image)."""
    h, w, _ = rgb.shape
    rows = np.hstack([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)])  # filter byte 0 per row

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(rows.tobytes())) + chunk(b"IEND", b""))


def level_rgb(i, w=LEVEL_W, h=LEVEL_H):
    """A distinct [h, w, 3] uint8 picture per level: ramps in x and y, level number in blue."""
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[..., 0] = (np.arange(w) * 255 // (w - 1))[None, :]
    rgb[..., 1] = (np.arange(h) * 255 // (h - 1))[:, None]
    rgb[..., 2] = 30 * i + 10
    return rgb


def write_level_results(zs, out_dir, n_levels=3, job_id="thumbs", pngs=True, stack=True):
    """A results folder with n_levels tiny levels (PLYs + manifest) and, optionally, their PNGs and
    the blended stack → (manifest, {level index or -1: rgb written})."""
    cam = source_camera(32)
    manifest = write_dive(zs, out_dir, cam, np.array([0.0, 0.0, 1.0]), 4.0, n_levels, side=2,
                          job_id=job_id)
    written = {}
    if pngs:
        for lv in manifest["levels"]:
            written[lv["index"]] = level_rgb(lv["index"])
            write_png(os.path.join(out_dir, lv["image"]), written[lv["index"]])
    if stack:  # the strip of the levels side by side, named as the backend names it
        written[-1] = level_rgb(7, w=n_levels * LEVEL_W, h=LEVEL_H)
        manifest["zoom"]["stack_image"] = "stack_strip.png"
        write_png(os.path.join(out_dir, "stack_strip.png"), written[-1])
        with open(os.path.join(out_dir, "manifest.json"), "w") as f:
            json.dump(manifest, f)
    props = bpy.context.scene.zoomscape
    props.job_id, props.frames_per_level = job_id, 4
    props.last_output_dir = out_dir
    return manifest, written


def pixels_top_down(image):
    """image.pixels (Blender: bottom row first) → [H, W, 4] float32, top row first."""
    w, h = image.size
    px = np.empty(w * h * 4, np.float32)
    image.pixels.foreach_get(px)
    return px.reshape(h, w, 4)[::-1]


def assert_images_match(zs, job_id, written, prompts):
    levels, stack = zs.thumbnails.job_images(job_id)
    assert [im["zoomscape_level"] for im in levels] == sorted(k for k in written if k >= 0)
    for im in levels + ([stack] if stack is not None else []):
        rgb = written[im["zoomscape_level"]]
        assert tuple(im.size) == (rgb.shape[1], rgb.shape[0]), im.name
        np.testing.assert_allclose(pixels_top_down(im)[..., :3], rgb / 255.0, atol=1e-6, err_msg=im.name)
        assert im.packed_file is not None and im.filepath == ""
    assert [im["zoomscape_prompt"] for im in levels] == prompts
    return levels, stack


def test_level_images_load_packed_with_sizes_pixels_and_prompts_and_survive_reload(zs, tmp_path):
    scene = bpy.context.scene
    out_dir = str(tmp_path / "results")
    manifest, written = write_level_results(zs, out_dir)
    zs.runner.finish(scene, out_dir)
    prompts = [lv["prompt"] for lv in manifest["levels"]]
    levels, stack = assert_images_match(zs, "thumbs", written, prompts)
    assert len(levels) == 3 and stack is not None and stack["zoomscape_kind"] == "zoom_stack"
    assert len(zs.level_rig.rig_of("thumbs")[1]) == 3  # the levels themselves were imported too
    assert bpy.utils.blend_paths(absolute=True) == []  # packed: nothing outside the .blend

    # importing again replaces the job's images instead of adding copies
    zs.runner.import_results(scene, out_dir)
    assert len([im for im in bpy.data.images if im.get("zoomscape_job") == "thumbs"]) == 4

    blend = str(tmp_path / "moved" / "thumbs.blend")
    os.makedirs(os.path.dirname(blend))
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    for name in os.listdir(out_dir):
        os.remove(os.path.join(out_dir, name))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    blender_ext.enable(os.path.dirname(os.path.dirname(zs.__file__)))  # factory settings disabled it
    bpy.ops.wm.open_mainfile(filepath=blend)
    assert bpy.context.scene.zoomscape.job_id == "thumbs"
    assert_images_match(zs, "thumbs", written, prompts)


def test_import_without_level_images_still_works(zs, tmp_path):
    scene = bpy.context.scene
    out_dir = str(tmp_path / "results")
    manifest, _ = write_level_results(zs, out_dir, pngs=False, stack=False)
    with open(os.path.join(out_dir, "level_01.png"), "wb") as f:  # and one that is not a PNG
        f.write(b"\x89PNG\r\n\x1a\n truncated")
    zs.runner.finish(scene, out_dir)
    assert scene.zoomscape.job_state == "done" and scene.zoomscape.error == ""
    assert len(zs.level_rig.rig_of("thumbs")[1]) == 3
    assert zs.thumbnails.job_images("thumbs") == ([], None)
    assert not [im for im in bpy.data.images if im.size[0] == 0]  # the unreadable one is not kept

    # a manifest from before the zoom levels: no "levels", no images at all
    del manifest["levels"]
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    assert bpy.ops.zoomscape.import_results() == {"FINISHED"}
    assert zs.thumbnails.job_images("thumbs") == ([], None)


def test_import_levels_off_imports_only_the_point_cloud(zs, tmp_path):
    scene = bpy.context.scene
    props = scene.zoomscape
    out_dir = str(tmp_path / "results")
    _, written = write_level_results(zs, out_dir, n_levels=2)
    assert props.import_levels is True  # the default
    zs.runner.finish(scene, out_dir)
    assert zs.level_rig.rig_of("thumbs")[0] is not None

    props.import_levels = False
    assert bpy.ops.zoomscape.import_results() == {"FINISHED"}  # re-import drops the earlier rig
    kinds = [o.get("zoomscape_kind") for o in bpy.data.objects]
    assert "level" not in kinds and "level_root" not in kinds
    pts = [o for o in bpy.data.objects if o.get("zoomscape_kind") == "points"]
    assert len(pts) == 1 and pts[0].parent is None
    assert bpy.ops.zoomscape.build_zoom_path() == {"FINISHED"}  # the plain camera path
    cam = scene.camera
    assert cam.get("zoomscape_kind") == "zoom_camera" and cam.animation_data is not None
    assert scene.frame_end - scene.frame_start == 1 * props.frames_per_level  # 2 levels: to level 1
    assert len(zs.thumbnails.job_images("thumbs")[0]) == 2  # the images are not level objects


@pytest.mark.parametrize("width", [0.5, 1.0])
def test_fade_width_reaches_the_level_fades(zs, tmp_path, width):
    scene = bpy.context.scene
    props = scene.zoomscape
    props.fade_width = width
    out_dir = str(tmp_path / "results")
    write_level_results(zs, out_dir, n_levels=2, pngs=False, stack=False)
    zs.runner.finish(scene, out_dir)
    _, objs = zs.level_rig.rig_of("thumbs")
    owner, path, _ = zs.splat_import.fade_channel(objs[1])  # quads' material or native modifier
    fc = zs.zoom_path.channel_fcurves(owner, "unused").find(path)
    fpl = props.frames_per_level
    for tau in (0.25, 0.75):  # level 1 fades in over τ ∈ [1 − width, 1]
        expected = min(max((tau - (1 - width)) / width, 0.0), 1.0)
        assert fc.evaluate(scene.frame_start + tau * fpl) == pytest.approx(expected, abs=1e-5), tau


def test_fade_width_is_limited(zs):
    props = bpy.context.scene.zoomscape
    props.fade_width = 0.0
    assert props.fade_width == pytest.approx(0.05)  # never 0: fade_weights divides by it
    props.fade_width = 9.0
    assert props.fade_width == pytest.approx(2.0)


def test_open_image_without_a_window_is_a_no_op(zs, tmp_path):
    out_dir = str(tmp_path / "results")
    write_level_results(zs, out_dir, n_levels=1)
    zs.runner.import_results(bpy.context.scene, out_dir)
    image = zs.thumbnails.job_images("thumbs")[0][0]
    assert bpy.app.background
    assert bpy.ops.zoomscape.open_image(image=image.name) == {"CANCELLED"}
    with pytest.raises(RuntimeError, match="image: 'no such image' is not in this file"):
        bpy.ops.zoomscape.open_image(image="no such image")


def test_show_in_image_editor_picks_the_first_image_editor(zs):
    image = bpy.data.images.new("x", 2, 2)

    def area(kind):
        return SimpleNamespace(type=kind, spaces=SimpleNamespace(active=SimpleNamespace(image=None)),
                               tag_redraw=lambda: None)

    view, editor, other = area("VIEW_3D"), area("IMAGE_EDITOR"), area("IMAGE_EDITOR")
    windows = [SimpleNamespace(screen=SimpleNamespace(areas=[view])),
               SimpleNamespace(screen=SimpleNamespace(areas=[editor, other]))]
    assert zs.thumbnails.show_in_image_editor(windows, image)
    assert editor.spaces.active.image == image and other.spaces.active.image is None
    assert not hasattr(view.spaces.active, "image") or view.spaces.active.image is None
    assert not zs.thumbnails.show_in_image_editor(windows[:1], image)


def manifest_with(levels, **zoom):
    """A results manifest dict with these level entries (filled in to be valid where a test does not
    set a field) and zoom fields."""
    frame = {"origin": [0.0, 0.0, 1.0], "rotation": np.eye(3).tolist(), "unit": 1.0}
    full = [dict({"gaussians": f"level_{j:02d}.ply", "frame": frame, "zoom_range": [4.0 ** j, 4.0 ** (j + 1)]},
                 **lv) if isinstance(lv, dict) else lv for j, lv in enumerate(levels)]
    return {"format": "zoomscape-results", "version": 1, "job_id": "thumbs",
            "pointcloud": {"file": "pointcloud.ply", "points": 1}, "levels": full,
            "zoom": {"camera": "Cam.000", "matrix_world": np.eye(4).tolist(), "fx": 40.0, "fy": 40.0,
                     "cx": 16.0, "cy": 16.0, "width": 32, "height": 32, "factor": 4.0,
                     "anchor": [0.0, 0.0, 1.0], **zoom}}


def test_image_files_reads_the_manifest_and_refuses_what_is_unsafe(zs):
    """The one manifest reader (the extension's wire copy) lists the level images by index and the
    stack; levels without an image are left out; an unsafe or malformed entry is an error naming it."""
    Manifest, ManifestError = zs.wire.manifest.Manifest, zs.wire.manifest.ManifestError
    levels = [{"index": 2, "prompt": "c", "image": "level_02.png"},
              {"index": 0, "prompt": "a", "image": "level_00.png"},
              {"index": 1, "prompt": "b"},  # an older job: no image
              {"index": 3, "image": None}]
    files = Manifest.from_dict(manifest_with(levels)).image_files()
    assert files == [(0, "a", "level_00.png"), (2, "c", "level_02.png"), (-1, "Zoom stack", "zoom_stack.png")]
    assert Manifest.from_dict(manifest_with([], stack_image="stack.png")).image_files() == [
        (-1, "Zoom stack", "stack.png")]
    assert Manifest.from_dict(manifest_with([], stack_image=None)).image_files() == []
    unsafe = levels[:3] + [{"index": 3, "image": "../../etc/passwd"}]
    with pytest.raises(ManifestError, match=r"levels\[3\]\.image: '\.\./\.\./etc/passwd' must be a plain file name"):
        Manifest.from_dict(manifest_with(unsafe))
    with pytest.raises(ManifestError, match=r"levels\[3\]\.image: 'sub\\\\x\.png' must be a plain file name"):
        Manifest.from_dict(manifest_with(levels[:3] + [{"index": 3, "image": "sub\\x.png"}]))
    with pytest.raises(ManifestError, match=r"levels\[4\]: must be an object, got str"):
        Manifest.from_dict(manifest_with(levels + ["junk"]))
    with pytest.raises(ManifestError, match=r"zoom\.stack_image: 'sub/stack\.png' must be a plain file name"):
        Manifest.from_dict(manifest_with([], stack_image="sub/stack.png"))


def test_an_unsafe_image_name_fails_the_import_and_loads_nothing(zs, tmp_path):
    scene = bpy.context.scene
    out_dir = str(tmp_path / "results")
    manifest, _ = write_level_results(zs, out_dir, n_levels=2)
    manifest["levels"][1]["image"] = "../../etc/passwd"
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    with pytest.raises(zs.wire.manifest.ManifestError,
                       match=r"manifest\.json: levels\[1\]\.image: '\.\./\.\./etc/passwd' must be a plain file name"):
        zs.runner.import_results(scene, out_dir)
    assert zs.thumbnails.job_images("thumbs") == ([], None)
    assert not [o for o in bpy.data.objects if o.get("zoomscape_job") == "thumbs"]
