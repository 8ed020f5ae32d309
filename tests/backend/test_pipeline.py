"""run_job: request → dream → anchor → pointcloud.ply + manifest.json (docs/API.md)."""
import json

import numpy as np
import pytest

from zoomscape.cameras import blender_intrinsics, from_wire, look_at, pixels_to_world
from zoomscape.engines.procedural import ProceduralEngine
from zoomscape.pipeline import JobCancelled, run_job, surface_anchor
from zoomscape.pointcloud import read_ply

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


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    out = tmp_path_factory.mktemp("jobs") / "0123abcd" / "results"
    engine = ProceduralEngine(depth_lies=[(1.0, 0.0), (1.7, 0.02), (0.6, 0.01)])
    steps = []
    manifest = run_job(request(), out, progress=lambda *a: steps.append(a), engine=engine)
    return out, manifest, engine, steps


def test_manifest_matches_the_api(job):
    out, manifest, engine, steps = job
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert set(manifest) == {"format", "version", "job_id", "engine", "seed", "scene_prompt",
                             "pointcloud", "views", "zoom"}
    assert (manifest["format"], manifest["version"], manifest["job_id"]) == ("zoomscape-results", 1, "0123abcd")
    assert (manifest["engine"], manifest["seed"], manifest["scene_prompt"]) == ("procedural", 7, PROMPT)
    assert [set(v) for v in manifest["views"]] == [{"camera", "new_points", "scale", "overlap"}] * 3
    assert [v["camera"] for v in manifest["views"]] == ["Cam.000", "Cam.001", "Cam.002"]
    z = manifest["zoom"]
    req = request()["cameras"][1]
    assert set(z) == {"camera", "matrix_world", "fx", "fy", "cx", "cy", "width", "height",
                      "factor", "levels", "anchor", "anchor_source"}
    assert z["camera"] == "Cam.001" and np.allclose(z["matrix_world"], req["matrix_world"])
    assert (z["fx"], z["width"], z["height"], z["factor"]) == (req["fx"], 128, 96, 4.0)
    assert z["levels"] == [{"prompt": "a lit window"}, {"prompt": "a cat"}]
    assert z["anchor_source"] == "surface" and len(z["anchor"]) == 3
    assert [s[0] for s in steps] == ["dream"] * 3 + ["write"] * 2
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
    true_z = engine.world.trace(cam, centre).t[0]
    truth = pixels_to_world(cam, centre, np.array([true_z]))[0]
    print(f"\nanchor {anchor.round(3)} vs true surface {truth.round(3)}: "
          f"{np.linalg.norm(anchor - truth):.3f} m at {true_z:.2f} m")
    assert np.linalg.norm(anchor - truth) < 0.02 * true_z


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
    m = run_job(request(anchor=[0.5, 1.5, 0.25]), tmp_path / "r", engine=ProceduralEngine(),
                job_id="abc")
    assert m["zoom"]["anchor"] == [0.5, 1.5, 0.25] and m["zoom"]["anchor_source"] == "request"
    assert m["job_id"] == "abc"


def test_cancel_leaves_no_manifest(tmp_path):
    steps = []
    out = tmp_path / "results"
    with pytest.raises(JobCancelled):
        run_job(request(), out, progress=lambda *a: steps.append(a),
                should_cancel=lambda: len(steps) >= 2, engine=ProceduralEngine())
    assert len(steps) == 2
    assert not (out / "manifest.json").exists()
    # cancelled while writing: the point cloud may exist, the manifest never does
    steps.clear()
    with pytest.raises(JobCancelled):
        run_job(request(), out, progress=lambda *a: steps.append(a),
                should_cancel=lambda: any(s[0] == "write" for s in steps), engine=ProceduralEngine())
    assert not (out / "manifest.json").exists()


def test_bad_zoom_camera_is_named(tmp_path):
    req = request()
    req["zoom"]["camera"] = "Nope"
    with pytest.raises(ValueError, match="zoom.camera: 'Nope' names none of the cameras"):
        run_job(req, tmp_path, engine=ProceduralEngine())
