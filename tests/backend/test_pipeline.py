"""run_job: request → dream → anchor → pointcloud.ply + manifest.json (docs/API.md)."""
import json
import threading

import numpy as np
import pytest

from zoomscape.cameras import blender_intrinsics, from_wire, look_at, pixels_to_world
from zoomscape.engines.procedural import ProceduralEngine, World
from zoomscape.errors import JobCancelled
from zoomscape import pipeline
from zoomscape.pipeline import run_job, surface_anchor
from zoomscape.schema import validate_request
from zoomscape.pointcloud import read_ply
from tests.helpers import user_views

PROMPT = "a misty harbour town at dawn"


def wire_cam(name, eye, target, W=128, H=96, lens=30.0):
    return dict(name=name, matrix_world=look_at(eye, target).tolist(),
                **blender_intrinsics(lens, 36.0, 24.0, "AUTO", 0.0, 0.0, W, H))


def request(anchor=None):
    return {"engine": "procedural", "seed": 7, "scene_prompt": PROMPT,
            "cameras": [wire_cam("Cam.000", (0, -16, 2.5), (0, 0, 0.5)),
                        wire_cam("Cam.001", (5, -14, 3.0), (1, 2, 0.5)),
                        wire_cam("Cam.002", (-6, -13, 2.0), (-2, 3, 0.8))],
            "zoom": {"camera": "Cam.001", "factor": 4, "levels": [{"prompt": "a lit window"},
                                                                  {"prompt": "a cat"}],
                     "anchor": anchor},
            "init_rgbd": None}


def run(req: dict, out, **kw) -> dict:
    """run_job on the validated request → the manifest it returns, as JSON."""
    return run_job(validate_request(req), out, **kw).to_dict()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("jobs") / "0123abcd" / "results"
    # Scale/shift lies only (no smooth warp): view 0 sets the world's shape, and the anchor test
    # below checks the anchor picking against the true surface.
    engine = ProceduralEngine(depth_lies={"Cam.000": (1.0, 0.0), "Cam.001": (1.7, 0.02),
                                          "Cam.002": (0.6, 0.01)}, depth_warp=0.0)
    steps = []
    manifest = run(request(), out, progress=lambda *a: steps.append(a), engine=engine)
    return out, manifest, engine, steps


def test_manifest_matches_the_api(job):
    out, manifest, engine, steps = job
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert set(manifest) == {"format", "version", "job_id", "engine", "seed", "scene_prompt",
                             "pointcloud", "views", "consensus", "zoom", "levels", "world"}
    assert (manifest["format"], manifest["version"], manifest["job_id"]) == ("zoomscape-results", 1, "0123abcd")
    assert (manifest["engine"], manifest["seed"], manifest["scene_prompt"]) == ("procedural", 7, PROMPT)
    views = manifest["views"]
    assert [set(v) for v in views] == [{"camera", "new_points", "scale", "overlap", "extra"}] * len(views)
    assert user_views(manifest, request()) == ["Cam.000", "Cam.001", "Cam.002"] and len(views) > 3
    assert manifest["world"] == {"file": "world.ply", "gaussians": manifest["pointcloud"]["points"]}
    c = manifest["consensus"]
    assert c["samples"] > 1000 and 0 < c["disagreement_after"] < 0.05 and 0 < c["largest_move"] < 0.2
    z = manifest["zoom"]
    req = request()["cameras"][1]
    assert set(z) == {"camera", "matrix_world", "fx", "fy", "cx", "cy", "width", "height",
                      "factor", "levels", "anchor", "anchor_source", "stack_image", "mode", "substeps"}
    # The zoom camera is turned (by at most half a pixel's angle here) so the anchor is centred.
    assert z["camera"] == "Cam.001" and np.allclose(z["matrix_world"], req["matrix_world"], atol=1e-2)
    # the request's 2 levels at p = 4 are painted as 3 at q = 2 (zoom.painted_levels): the step of
    # 4 in two, the level between with the coarser level's prompt
    assert (z["fx"], z["width"], z["height"], z["factor"], z["substeps"]) == (req["fx"], 128, 96, 2.0, 2)
    assert z["levels"] == [{"prompt": "a lit window"}, {"prompt": "a lit window"}, {"prompt": "a cat"}]
    assert [lv["index"] for lv in manifest["levels"]] == [0, 1, 2]
    assert z["anchor_source"] == "surface" and len(z["anchor"]) == 3
    assert z["mode"] == "dolly"     # the request's default
    stages = [s[0] for s in steps]
    assert stages[:3] == ["dream"] * 3 and stages[-2:] == ["write"] * 2
    assert stages.index("zoom") < stages.index("lift") < stages.index("world")
    assert set(stages) == {"dream", "zoom", "lift", "world", "write"}
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_pointcloud_is_readable(job):
    out, manifest, engine, _ = job
    cloud = read_ply(out / "pointcloud.ply")
    assert len(cloud) == manifest["pointcloud"]["points"] == sum(v["new_points"] for v in manifest["views"])
    assert manifest["pointcloud"]["file"] == "pointcloud.ply"
    assert np.isfinite(cloud.xyz).all() and (cloud.radius > 0).all()
    assert 0.0 <= cloud.rgb.min() and cloud.rgb.max() <= 1.0 and cloud.rgb.std() > 0.02


def test_anchor_is_on_the_surface_at_the_image_centre(job):
    out, manifest, engine, _ = job
    cam = from_wire(request()["cameras"][1])
    anchor = np.array(manifest["zoom"]["anchor"])
    centre = np.array([[cam.width / 2, cam.height / 2]])
    true_z = World(PROMPT, 7).trace(cam, centre).t[0]
    truth = pixels_to_world(cam, centre, np.array([true_z]))[0]
    print(f"\nanchor {anchor.round(3)} vs true surface {truth.round(3)}: "
          f"{np.linalg.norm(anchor - truth):.3f} m at {true_z:.2f} m")
    assert np.linalg.norm(anchor - truth) < 0.02 * true_z


def test_same_job_on_a_used_and_a_fresh_engine_writes_the_same_files(job, tmp_path):
    """Engines are pooled: the fixture's engine has run a job already; the same request again,
    on it and on a fresh engine, writes byte-identical results, and the engine holds no state
    that grows or changes with the jobs it ran."""
    out, manifest, engine, _ = job
    before = dict(vars(engine))
    again = run(request(), tmp_path / "used" / "0123abcd" / "results", engine=engine)
    fresh_engine = ProceduralEngine(depth_lies=engine.depth_lies, depth_warp=0.0)
    fresh = run(request(), tmp_path / "fresh" / "0123abcd" / "results", engine=fresh_engine)
    assert again == manifest and fresh == manifest
    names = ["pointcloud.ply", "manifest.json", "zoom_stack.png"] + [
        name for lv in manifest["levels"] for name in (lv["image"], lv["gaussians"])]
    for where in ("used", "fresh"):
        for name in names:
            got = (tmp_path / where / "0123abcd" / "results" / name).read_bytes()
            assert got == (out / name).read_bytes(), (where, name)
    assert vars(engine) == before


def test_the_anchor_lies_on_a_slanted_surface_at_the_centre_ray(monkeypatch):
    """Ground seen at a grazing angle, sampled by two views' points (not on the zoom camera's
    pixel centres): the anchor is on the ground where the centre ray meets it, within 2·10⁻⁴ of
    its distance. The median of the window's z-buffer (the nearest point per pixel) lies toward
    the camera by more than that: the test can fail."""
    from zoomscape.pointcloud import PointCloud
    cam = from_wire(wire_cam("Zoom", (0.0, -6.0, 1.6), (0.0, 2.0, 0.0), W=96, H=64))
    rng = np.random.default_rng(3)
    centre = np.array([[cam.width / 2, cam.height / 2]])
    ray = pixels_to_world(cam, centre, np.array([1.0]))[0] - cam.center
    hit = cam.center + ray * (-cam.center[2] / ray[2])       # the ground z = 0 on the centre ray
    xy = hit[:2] + rng.uniform(-0.6, 0.6, (6000, 2))          # two views' worth of ground points
    pts = np.c_[xy, np.zeros(len(xy))]
    cloud = PointCloud(pts, np.full((len(pts), 3), 0.5), np.full(len(pts), 0.004))
    d0 = float(np.linalg.norm(hit - cam.center))
    a = surface_anchor(cloud, cam)
    assert np.linalg.norm(a - hit) / d0 < 2e-4, np.linalg.norm(a - hit) / d0
    monkeypatch.setattr(pipeline, "ANCHOR_RADII", ())        # the window's median alone
    old = surface_anchor(cloud, cam)
    assert np.linalg.norm(old - hit) / d0 > 1e-3, np.linalg.norm(old - hit) / d0


def test_anchor_falls_back_to_the_nearest_covered_pixel():
    from zoomscape.pointcloud import PointCloud
    cam = from_wire(request()["cameras"][0])
    # one point seen at pixel (10, 10), far from the centre
    p = pixels_to_world(cam, np.array([[10.5, 10.5]]), np.array([7.0]))
    a = surface_anchor(PointCloud(p, np.ones((1, 3)), np.full(1, 0.01)), cam)
    assert np.allclose(a, p[0], atol=0.05)
    with pytest.raises(ValueError, match="zoom.camera: camera 'Cam.000' sees none"):
        surface_anchor(PointCloud(p + 100 * (cam.c2w[:3, 2]) * -1, np.ones((1, 3)), np.full(1, 0.01)), cam)


def test_requested_anchor_is_kept(tmp_path):
    m = run(request(anchor=[0.5, 1.5, 0.25]), tmp_path / "r", engine=ProceduralEngine(),
                job_id="abc")
    assert m["zoom"]["anchor"] == [0.5, 1.5, 0.25] and m["zoom"]["anchor_source"] == "request"
    assert m["job_id"] == "abc"


def test_cancel_leaves_no_manifest(tmp_path):
    steps = []
    out = tmp_path / "results"
    with pytest.raises(JobCancelled):
        run(request(), out, progress=lambda *a: steps.append(a),
                should_cancel=lambda: len(steps) >= 2, engine=ProceduralEngine())
    assert len(steps) == 2
    assert not (out / "manifest.json").exists()
    # cancelled while writing: the point cloud may exist, the manifest never does
    steps.clear()
    with pytest.raises(JobCancelled):
        run(request(), out, progress=lambda *a: steps.append(a),
                should_cancel=lambda: any(s[0] == "write" for s in steps), engine=ProceduralEngine())
    assert not (out / "manifest.json").exists()


def test_the_world_is_made_beside_the_zoom_levels_and_reported_after_them(tmp_path, monkeypatch):
    """write_world runs in its own thread while the levels are painted and lifted; its progress
    comes after the last "lift" report, before "write"."""
    seen, started = {}, threading.Event()
    write_world, lift_levels = pipeline.write_world, pipeline.lift_levels

    def world(*a, **k):
        seen["world thread"] = threading.current_thread().name
        started.set()
        return write_world(*a, **k)

    def lift(*a, **k):
        seen["world started before the lift"] = started.wait(10)
        seen["lift thread"] = threading.current_thread().name
        return lift_levels(*a, **k)

    monkeypatch.setattr(pipeline, "write_world", world)
    monkeypatch.setattr(pipeline, "lift_levels", lift)
    steps = []
    manifest = run(request(), tmp_path / "results", progress=lambda *a: steps.append(a),
                   engine=ProceduralEngine())
    assert seen == {"world thread": "zoomscape-world", "world started before the lift": True,
                    "lift thread": threading.current_thread().name}
    order = [s[0] for s in steps]
    firsts = sorted(set(order), key=order.index)
    assert firsts == ["dream", "zoom", "lift", "world", "write"]
    last = {st: max(i for i, s in enumerate(order) if s == st) for st in firsts}
    first = {st: order.index(st) for st in firsts}
    assert last["lift"] < first["world"] and last["world"] < first["write"]
    assert manifest["world"]["gaussians"] == manifest["pointcloud"]["points"] > 0
    assert (tmp_path / "results" / "world.ply").exists()


def test_a_failing_world_fails_the_job_and_writes_no_manifest(tmp_path, monkeypatch):
    def world(*a, **k):
        raise RuntimeError("world: out of memory")

    monkeypatch.setattr(pipeline, "write_world", world)
    with pytest.raises(RuntimeError, match="world: out of memory"):
        run(request(), tmp_path / "results", engine=ProceduralEngine())
    assert not (tmp_path / "results" / "manifest.json").exists()


def test_a_cancel_during_the_levels_stops_the_world_before_it_writes(tmp_path, monkeypatch):
    """Cancelled while the levels lift: the job raises, and the world thread has stopped (it
    wrote no world.ply after the job ended)."""
    steps = []
    out = tmp_path / "results"
    with pytest.raises(JobCancelled):
        run(request(), out, progress=lambda *a: steps.append(a),
            should_cancel=lambda: any(s[0] == "lift" for s in steps), engine=ProceduralEngine())
    assert not any(t.name == "zoomscape-world" for t in threading.enumerate())
    assert not (out / "manifest.json").exists() and not (out / "world.ply").exists()


def test_bad_zoom_camera_is_named(tmp_path):
    req = request()
    req["zoom"]["camera"] = "Nope"
    with pytest.raises(ValueError, match="zoom.camera: 'Nope' is not one of the cameras"):
        run(req, tmp_path, engine=ProceduralEngine())
    assert list(tmp_path.iterdir()) == []


def test_run_job_takes_only_a_validated_request(tmp_path):
    with pytest.raises(TypeError, match="request: must be a validated schema.JobRequest"):
        run_job(request(), tmp_path, engine=ProceduralEngine())
    assert list(tmp_path.iterdir()) == []


def test_zoom_levels_are_written_in_their_local_frames(job):
    """level_NN.png/.ply per level; frames per cameras.level_frame; PLYs in the Inria layout."""
    from plyfile import PlyData
    from PIL import Image

    from zoomscape.cameras import level_frame
    from zoomscape.wire.splats import read_splat_ply

    out, manifest, engine, _ = job
    z, levels = manifest["zoom"], manifest["levels"]
    # the request's p = 4 painted in two steps of q = 2 (test_manifest_matches_the_api)
    assert [lv["prompt"] for lv in levels] == ["a lit window", "a lit window", "a cat"]
    q = z["factor"]
    assert q == 2.0
    cam = from_wire({"name": "z", **{k: z[k] for k in ("matrix_world", "fx", "fy", "cx", "cy", "width", "height")}})
    for i, lv in enumerate(levels):
        assert (lv["index"], lv["image"], lv["gaussians"]) == (i, f"level_{i:02d}.png", f"level_{i:02d}.ply")
        frame = level_frame(cam, z["anchor"], q, i)
        assert np.allclose(lv["frame"]["origin"], frame.origin) and lv["frame"]["unit"] == q ** -i
        assert np.allclose(lv["frame"]["rotation"], frame.rotation)
        assert lv["zoom_range"] == [q ** i, q ** (i + 1)]
        image = np.asarray(Image.open(out / lv["image"]))
        assert image.shape == (z["height"], z["width"], 3) and image.std() > 2
        splats = read_splat_ply(out / lv["gaussians"])
        assert len(splats.means) == lv["count"] == z["width"] * z["height"]
        names = [p.name for p in PlyData.read(str(out / lv["gaussians"]))["vertex"].properties]
        assert names[:6] == ["x", "y", "z", "nx", "ny", "nz"] and names[-4:] == ["rot_0", "rot_1", "rot_2", "rot_3"]
        # Local coordinates: the level's Gaussians sit about one local unit per metre of level-0 depth
        # scaled by p^i, i.e. no coordinate grows with the zoom depth.
        assert np.abs(splats.means).max() < 1e3
    strip = np.asarray(Image.open(out / z["stack_image"]))
    assert strip.shape == (z["height"], z["width"] * len(levels), 3)


@pytest.mark.parametrize("factor, n, painted, step", [(4.0, 9, 17, 2.0), (2.1, 2, 3, 2.1 ** 0.5)])
def test_every_request_the_schema_takes_paints_and_lifts_its_levels(tmp_path, factor, n, painted, step):
    """The painted levels may outnumber the request's limit (9 prompts at p = 4: 17 levels) and
    their step may be below the request's smallest factor (p = 2.1: q = 1.45): the whole job
    paints, lifts and writes them all."""
    req = request()
    req["cameras"] = [wire_cam("Cam.000", (0, -16, 2.5), (0, 0, 0.5), W=64, H=64)]
    req["zoom"] = {"camera": "Cam.000", "factor": factor, "anchor": None,
                   "levels": [{"prompt": f"level {k}"} for k in range(n)]}
    req["extra_views"] = 0
    manifest = run(req, tmp_path / "out")
    z = manifest["zoom"]
    assert len(manifest["levels"]) == len(z["levels"]) == painted and z["substeps"] == 2
    assert z["factor"] == pytest.approx(step)
    assert all((tmp_path / "out" / lv["gaussians"]).is_file() for lv in manifest["levels"])
