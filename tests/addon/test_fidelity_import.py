"""What Blender renders of an import is what the backend generated (issue 10, causes a and b).

a. Size: a view's own points, unprojected by the backend (its φ2→3 and its radius rule
   r = z·FOOTPRINT_PX/f) from the procedural world's depth, written and read as pointcloud.ply and
   imported by the extension, cover Blender's Cycles render from that camera (alpha over a
   transparent film). At 0.6 of that radius (the old importer) they cover about 65 %.
b. Colour: the import sets the Standard view transform (look None), so emitted sRGB colours render
   back as generated; the preference "Keep my view transform" leaves the scene as it was, and the
   panel and the report say which.
"""
import math
import os

import numpy as np
import pytest

import bpy

from conftest import add_camera, import_backend
from test_panel import draw
from test_results import write_results

W, H = 96, 72  # the smallest size a request allows is 64 px
PROMPT, SEED = "a quiet valley of mossy boulders under a pale sky", 7
# The demo's rig: a camera over the valley (boxes, spheres, ground to the horizon, sky 200 m away),
# and one looking down the slope so the ground is seen at a grazing angle.
VIEWS = {"demo Cam.001": ((-0.7, -0.5, 1.8), (-14.0, 8.0)),
         "grazing": ((1.5, -3.0, 0.6), (-4.0, -30.0))}


@pytest.fixture(scope="module")
def backend():
    """The backend's numpy-only modules: cameras, pointcloud, the procedural world."""
    return (import_backend("zoomscape.cameras"), import_backend("zoomscape.pointcloud"),
            import_backend("zoomscape.engines.procedural"))


def read_png(path: str) -> np.ndarray:
    """A rendered PNG's stored values [H, W, 4] float32 (rows top to bottom), not linearised."""
    img = bpy.data.images.load(path)
    img.colorspace_settings.name = "Non-Color"  # the file's own (display) values, as written
    px = np.empty(img.size[0] * img.size[1] * img.channels, dtype=np.float32)
    img.pixels.foreach_get(px)
    out = px.reshape(img.size[1], img.size[0], img.channels)[::-1]
    bpy.data.images.remove(img)
    return out


def render_png(scene, path: str, samples: int) -> np.ndarray:
    """Cycles (CPU) render of scene's camera over a transparent film → RGBA [H, W, 4] (16-bit PNG,
    no dither)."""
    r = scene.render
    scene.render.engine = "CYCLES"
    scene.cycles.device, scene.cycles.samples, scene.cycles.use_denoising = "CPU", samples, False
    r.film_transparent = True
    r.dither_intensity = 0.0
    settings = r.image_settings
    settings.file_format, settings.color_mode, settings.color_depth = "PNG", "RGBA", "16"
    r.filepath = path
    bpy.ops.render.render(write_still=True)
    return read_png(path)


def view_camera(name: str, scene):
    (x, y, z), (pitch, yaw) = VIEWS[name]
    cam = add_camera(name, (x, y, z), (math.radians(90.0 + pitch), 0.0, math.radians(yaw)), lens=30.0)
    cam.data.sensor_width, cam.data.clip_end = 36.0, 1000.0  # the sky dome is 200 m away
    scene.camera = cam
    bpy.context.view_layer.update()
    return cam


@pytest.mark.parametrize("view", sorted(VIEWS))
def test_a_views_own_points_cover_its_render(zs, backend, tmp_path, view):
    cameras, pointcloud, procedural = backend
    scene = bpy.context.scene
    scene.world = None  # nothing behind the points: the film's alpha is their coverage
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = W, H, 100
    cam = view_camera(view, scene)
    bcam = cameras.from_wire(zs.scene_io.camera_to_wire(cam, scene))
    rgb, depth = procedural.World(PROMPT, SEED).render(bcam)
    assert np.isfinite(depth).all() and depth.max() > 100.0  # sky, ground and objects in view
    pointcloud.write_ply(str(tmp_path / "pointcloud.ply"), pointcloud.unproject(bcam, rgb, depth))
    cloud = zs.wire.ply.read_point_ply(str(tmp_path / "pointcloud.ply"))
    f = math.sqrt(bcam.K[0, 0] * bcam.K[1, 1])
    np.testing.assert_allclose(cloud.radius, depth.ravel() * pointcloud.FOOTPRINT_PX / f, rtol=1e-6)

    obj = zs.importers.import_points(scene, cloud, "View", "cover-test")
    alpha = render_png(scene, str(tmp_path / "cover.png"), samples=16)[..., 3]
    # Cycles' pixel filter (Blackman-Harris, 1.5 px) reaches past the image border, where nothing
    # was unprojected: the outermost pixels keep ~0.9-0.97 alpha. Inside, nothing shows through.
    assert alpha.mean() >= 0.995, f"the view's own points cover {alpha.mean():.2%} of its render"
    assert alpha[1:-1, 1:-1].min() > 0.999

    radius = np.empty(len(cloud), np.float32)
    obj.data.attributes[zs.importers.RADIUS_ATTR].data.foreach_get("value", radius)
    np.testing.assert_array_equal(radius, cloud.radius)  # the backend's radius, unscaled


def colour_wall(zs, scene, tmp_path):
    """Emitting points of 8 known display-sRGB colours (2 rows × 4 columns of patches, 16×16 px
    each) filling a 64×32 camera's view, written as a job's results (pointcloud.ply + manifest) and
    imported through the runner as a finished job is → the colours [8, 3] uint8."""
    cam = add_camera("Cam.000", (0.0, -4.0, 0.0), (math.pi / 2, 0.0, 0.0), lens=35.0)
    scene.camera = cam
    r = scene.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = 64, 32, 100
    half = 4.0 * (cam.data.sensor_width / 2) / cam.data.lens  # half the view's width on the wall (m)
    colours = np.array([[230, 40, 30], [40, 200, 60], [30, 60, 220], [128, 128, 128],
                        [250, 220, 120], [90, 40, 140], [20, 20, 20], [200, 120, 160]], np.uint8)
    X, Z = np.meshgrid(np.arange(-2.5, 2.5, 0.025), np.arange(-1.5, 1.5, 0.025))  # 2.5 cm apart
    xyz = np.column_stack([X.ravel(), np.zeros(X.size), Z.ravel()]).astype(np.float32)
    column = np.clip(np.floor((xyz[:, 0] + half) / (2 * half) * 4), 0, 3).astype(int)
    out_dir = str(tmp_path / "results")
    os.makedirs(out_dir)
    ply, wm = zs.wire.ply, zs.wire.manifest
    ply.write_point_ply(os.path.join(out_dir, "pointcloud.ply"), ply.PointCloud(
        xyz, colours[column + 4 * (xyz[:, 2] < 0)], np.full(len(xyz), 0.03, np.float32)))
    wm.write_manifest(out_dir, wm.Manifest("colour-job", "pointcloud.ply", len(xyz), engine="procedural"))
    scene.zoomscape.job_id, scene.zoomscape.last_output_dir = "colour-job", out_dir
    zs.runner.import_results(scene, out_dir)
    return colours


def patch_medians(px: np.ndarray) -> np.ndarray:
    """Median colour of the centre of each of the 2×4 patches of a 64×32 render → [8, 3] in 0..255."""
    out = []
    for row in (0, 1):  # top row first: z > 0 is colours 0..3
        for c in range(4):
            patch = px[4 + 16 * row:12 + 16 * row, 4 + 16 * c:12 + 16 * c, :3].reshape(-1, 3)
            out.append(np.median(patch, axis=0))
    return np.array(out) * 255.0


def test_the_generated_colours_render_back_with_the_view_transform_set_on_import(zs, tmp_path):
    scene = bpy.context.scene
    scene.world = None
    default = scene.view_settings.view_transform
    assert default == "AgX"  # Blender's factory default in 4.2 and 5.2
    colours = colour_wall(zs, scene, tmp_path)
    assert (scene.view_settings.view_transform, scene.view_settings.look) == ("Standard", "None")
    err = np.abs(patch_medians(render_png(scene, str(tmp_path / "standard.png"), 8)) - colours)
    assert err.max() <= 1.0, f"Standard: off by up to {err.max():.2f}/255"  # measured 0.00

    for tone in ("AgX", "Filmic"):  # what the import replaced (Filmic: new scenes in 4.x)
        scene.view_settings.view_transform = tone
        err = np.abs(patch_medians(render_png(scene, str(tmp_path / f"{tone}.png"), 8)) - colours)
        assert err.max() > 20.0, f"{tone}: off by up to {err.max():.1f}/255 only"


def colour_lines(zs):
    """The panel's text about colour (joined) and whether it draws the preference."""
    log = draw(zs)
    at = [i for i, (name, a, kw) in enumerate(log)
          if name == "label" and kw.get("text", "").startswith("Colour:")]
    assert len(at) == 1
    text = []
    for name, a, kw in log[at[0]:]:
        if name != "label" or (text and kw.get("icon") != "BLANK1"):
            break
        text.append(kw["text"])
    drawn = [a[0] for name, a, kw in log if name == "prop"]
    return " ".join(text), "keep_view_transform" in drawn


def results_to_import(zs, scene, tmp_path, capfd, job_id: str) -> str:
    """A scene camera and a job's results on disk, set as the panel's last job (output so far
    cleared) → the results folder."""
    cam = add_camera("Cam.000", (0.0, -6.0, 1.0))
    scene.camera = cam
    out_dir = str(tmp_path / "results")
    write_results(zs, out_dir, job_id, cam)
    props = scene.zoomscape
    props.job_id, props.last_output_dir = job_id, out_dir
    capfd.readouterr()
    return out_dir


@pytest.mark.parametrize("start", ["AgX", "Filmic"])
def test_import_sets_standard_and_says_so(zs, tmp_path, capfd, start):
    scene = bpy.context.scene
    scene.view_settings.view_transform = start
    looks = [i.identifier for i in scene.view_settings.bl_rna.properties["look"].enum_items_static]
    scene.view_settings.look = next((lk for lk in looks if lk.startswith(start) and "Punchy" in lk), "None")
    out_dir = results_to_import(zs, scene, tmp_path, capfd, "job-colour")
    assert bpy.ops.zoomscape.import_results() == {"FINISHED"}
    assert (scene.view_settings.view_transform, scene.view_settings.look) == ("Standard", "None")
    assert (scene.view_settings.exposure, scene.view_settings.gamma) == (0.0, 1.0)
    note = (f"Colour: view transform set to Standard (was {start}) so the generated colours render "
            "as generated")
    assert zs.runner.colour_note(scene) == note
    assert note in capfd.readouterr().out + capfd.readouterr().err  # the operator's report
    text, pref_drawn = colour_lines(zs)
    assert text == "Colour: Standard view transform, so the generated colours render as generated"
    assert pref_drawn

    # importing again changes nothing and says the colours are as generated
    assert bpy.ops.zoomscape.import_results() == {"FINISHED"}
    assert zs.runner.colour_note(scene) == ("Colour: Standard view transform, so the generated "
                                            "colours render as generated")
    # a user's own exposure is kept, and named
    scene.view_settings.exposure = 0.5
    zs.runner.import_results(scene, out_dir)
    assert scene.view_settings.exposure == 0.5
    assert zs.runner.colour_note(scene).endswith("; exposure +0.5 still alter them")
    assert colour_lines(zs)[0] == ("Colour: Standard view transform; the generated colours are "
                                   "altered by exposure +0.5")
    # a user who picks AgX again without the preference is told so
    scene.view_settings.exposure = 0.0
    scene.view_settings.view_transform = "AgX"
    assert colour_lines(zs)[0] == ("Colour: the generated colours are tone-mapped by the AgX view "
                                   "transform; Import results sets Standard")


def test_keep_my_view_transform_leaves_the_scene_as_it_was(zs, tmp_path, capfd):
    scene = bpy.context.scene
    prefs = zs.preferences.get()
    assert prefs.keep_view_transform is False  # off by default: the import sets Standard
    prefs.keep_view_transform = True
    scene.view_settings.view_transform = "AgX"
    scene.view_settings.look = "AgX - Punchy"
    out_dir = results_to_import(zs, scene, tmp_path, capfd, "job-keep")
    assert bpy.ops.zoomscape.import_results() == {"FINISHED"}
    assert (scene.view_settings.view_transform, scene.view_settings.look) == ("AgX", "AgX - Punchy")
    note = zs.runner.colour_note(scene)
    assert note.startswith("Colour: kept your view settings (the AgX view transform, the look "
                           "'AgX - Punchy'), so the generated colours are tone-mapped")
    assert note in capfd.readouterr().out + capfd.readouterr().err
    text, _ = colour_lines(zs)
    assert text == ("Colour: the generated colours are tone-mapped by the AgX view transform, the "
                    "look 'AgX - Punchy' (Keep my view transform)")

    # off again: the next import sets Standard
    prefs.keep_view_transform = False
    zs.runner.finish(scene, out_dir)
    assert (scene.view_settings.view_transform, scene.view_settings.look) == ("Standard", "None")
