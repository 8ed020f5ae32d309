"""The wire module both sides share: numpy and stdlib only, one PLY header parser, the manifest's
dataclasses round-trip and name the field of every problem."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zoomscape.wire import manifest as wm
from zoomscape.wire.cameras import Intrinsics, blender_intrinsics, project_blender, zoom_level_intrinsics
from zoomscape.wire.ply import PLYError, PointCloud, read_header, read_point_ply, write_point_ply

WIRE = Path(__file__).resolve().parents[2] / "backend" / "zoomscape" / "wire"
ALLOWED = {"__future__", "numpy", "os", "re", "json", "math", "uuid", "contextlib", "pathlib",
           "typing", "dataclasses"}


def test_wire_imports_only_numpy_and_the_stdlib_relatively():
    for path in WIRE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:          # relative: inside the wire package
                    continue
                names = [node.module.split(".")[0]]
            else:
                continue
            assert set(names) <= ALLOWED, (path.name, names)
    # and importing it pulls in neither torch nor pydantic (the extension has neither)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import wire.manifest, wire.ply, wire.splats, "
            "wire.cameras, wire.names, wire.atomic; "
            "print(sorted(m for m in ('torch', 'pydantic', 'zoomscape', 'bpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(WIRE.parent)], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def level(i, frame=None, **kw):
    frame = frame or wm.LevelFrame.for_level(np.eye(4), [1.0, 2.0, 3.0], 4.0, i)
    return wm.Level(index=i, gaussians=f"level_{i:02d}.ply", frame=frame, zoom_range=(4.0 ** i, 4.0 ** (i + 1)),
                    prompt=f"p{i}", image=f"level_{i:02d}.png", count=10 + i, **kw)


def manifest(levels=2):
    zoom = wm.ZoomInfo("Cam", np.eye(4), Intrinsics(50.0, 50.0, 32.0, 24.0, 64, 48), 4.0,
                       [f"p{i}" for i in range(levels)], np.array([1.0, 2.0, 3.0]), "surface")
    return wm.Manifest(job_id="abc", pointcloud_file="pointcloud.ply", points=99, engine="procedural",
                       seed=7, scene_prompt="s",
                       views=[wm.ViewSummary("Cam", 99, 1.0, 0.0)],
                       consensus=wm.ConsensusSummary(5, 0.01, 0.009, 0.02), zoom=zoom,
                       levels=[level(i) for i in range(levels)])


def test_manifest_round_trips_through_json():
    m = manifest()
    d = json.loads(json.dumps(m.to_dict()))
    assert d["format"] == "zoomscape-results" and d["version"] == 1
    assert d["levels"][1]["frame"]["unit"] == 4.0 ** -1 and d["zoom"]["fx"] == 50.0
    back = wm.Manifest.from_dict(d)
    assert back.to_dict() == m.to_dict()
    assert back.image_files() == [(0, "p0", "level_00.png"), (1, "p1", "level_01.png"),
                                  (-1, "Zoom stack", "zoom_stack.png")]


def test_older_manifests_default_what_they_lack():
    d = manifest().to_dict()
    for key in ("consensus", "levels", "zoom", "views", "engine", "seed", "version"):
        d.pop(key)
    m = wm.Manifest.from_dict(d)
    assert (m.levels, m.zoom, m.consensus, m.views, m.version) == ([], None, None, [], 1)
    d = manifest().to_dict()
    del d["levels"][0]["image"]
    del d["zoom"]["stack_image"]
    m = wm.Manifest.from_dict(d)
    assert m.image_files() == [(1, "p1", "level_01.png"), (-1, "Zoom stack", "zoom_stack.png")]


@pytest.mark.parametrize("change, field", [
    (lambda d: d.update(format="other"), "format"),
    (lambda d: d.update(version=2), "version"),
    (lambda d: d["pointcloud"].update(file="../x.ply"), "pointcloud.file"),
    (lambda d: d["levels"][1].update(image="../../etc/passwd"), r"levels\[1\].image"),
    (lambda d: d["levels"][0].update(gaussians="sub/level.ply"), r"levels\[0\].gaussians"),
    (lambda d: d["levels"][0]["frame"].update(unit=0), r"levels\[0\].frame.unit"),
    (lambda d: d["levels"][0]["frame"].update(rotation=[[1, 0, 0], [0, 1, 0], [0, 0, 2]]),
     r"levels\[0\].frame.rotation: not a rotation"),
    (lambda d: d["levels"][1].update(zoom_range=[4, 1]), r"levels\[1\].zoom_range"),
    (lambda d: d["levels"][1].update(index=5), "levels: indices"),
    (lambda d: d["levels"].append("junk"), r"levels\[2\]: must be an object"),
    (lambda d: d["zoom"].pop("matrix_world"), "zoom.matrix_world: missing"),
    (lambda d: d["zoom"].update(fx="a"), "zoom.fx"),
    (lambda d: d.update(zoom=None), "zoom: missing"),
])
def test_bad_manifests_name_the_field(change, field):
    d = manifest().to_dict()
    change(d)
    with pytest.raises(wm.ManifestError, match=field):
        wm.Manifest.from_dict(d)


def test_read_manifest_names_the_file(tmp_path):
    wm.write_manifest(tmp_path, manifest())
    assert wm.read_manifest(tmp_path).to_dict() == manifest().to_dict()
    (tmp_path / "manifest.json").write_text('{"format": "x"}')
    with pytest.raises(wm.ManifestError, match=r"manifest.json: format"):
        wm.read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(wm.ManifestError, match="not JSON"):
        wm.read_manifest(tmp_path)


def test_level_frame_maps_both_ways_in_float64():
    M = np.eye(4)
    M[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    f = wm.LevelFrame.for_level(M, [10.0, 2.0, -3.0], 4.0, 10)
    x = np.random.default_rng(0).normal(size=(20, 3))
    np.testing.assert_allclose(f.to_local(f.to_world(x)), x, rtol=0, atol=1e-8)  # world float64 at 10 m / 4^-10
    np.testing.assert_allclose(f.to_world(x), [10.0, 2.0, -3.0] + 4.0 ** -10 * x @ M[:3, :3].T)


def test_zoom_level_intrinsics_and_projection():
    k = blender_intrinsics(50.0, 36.0, 24.0, "AUTO", 0.1, 0.0, 64, 48)
    assert {**k} == k.to_dict() and k["width"] == 64          # spreads like the request's fields
    k2 = zoom_level_intrinsics(k, 4.0, 2)
    assert k2.fx == pytest.approx(16 * k.fx) and k2.cx == pytest.approx(32 + 16 * (k.cx - 32))
    # a point on level 2's image border sits 1/16 of the way from the centre on level 0
    X = np.array([[0.3, -0.2, -5.0]])
    uv0, z = project_blender(np.eye(4), k, X)
    uv2, _ = project_blender(np.eye(4), k2, X)
    c = np.array([32.0, 24.0])
    np.testing.assert_allclose(uv2 - c, 16 * (uv0 - c), rtol=1e-12)
    assert z[0] == 5.0


def test_one_header_parser_for_both_byte_orders_and_leading_elements(tmp_path):
    plyfile = pytest.importorskip("plyfile")
    data = np.zeros(3, [("x", ">f4"), ("y", ">f4"), ("z", ">f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    data["y"], data["green"] = [1, 2, 3], 255
    first = np.array([(1.0,)], dtype=[("a", ">f8")])
    plyfile.PlyData([plyfile.PlyElement.describe(first, "camera"), plyfile.PlyElement.describe(data, "vertex")],
                    byte_order=">").write(str(tmp_path / "be.ply"))
    h = read_header(tmp_path / "be.ply")
    assert h.byte_order == ">" and h.vertex_count == 3 and h.names[:3] == ["x", "y", "z"]
    cloud = read_point_ply(tmp_path / "be.ply")
    np.testing.assert_array_equal(cloud.xyz[:, 1], [1, 2, 3])
    np.testing.assert_array_equal(cloud.rgb[:, 1], 1.0)
    assert cloud.radius is None
    write_point_ply(tmp_path / "ours.ply", PointCloud(cloud.xyz, cloud.rgb, None))
    assert "radius" not in read_header(tmp_path / "ours.ply").names
    (tmp_path / "bad.ply").write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n")
    with pytest.raises(PLYError, match="format is 'ascii'"):
        read_header(tmp_path / "bad.ply")


def test_zoom_substeps_round_trip_and_default_for_older_manifests():
    """ZoomInfo.substeps (the levels painted per step of the user's factor) survives to_dict /
    from_dict; a manifest without it (before substeps) reads as 1; it must be an integer ≥ 1.
    frames_per_level turns the user's frames per step into frames per painted level."""
    intr = Intrinsics(fx=100.0, fy=100.0, cx=32.0, cy=24.0, width=64, height=48)
    z = wm.ZoomInfo("Cam", np.eye(4), intr, 2.0, ["a", "a", "b"], np.zeros(3), mode="dolly", substeps=2)
    d = z.to_dict()
    assert d["substeps"] == 2
    back = wm.ZoomInfo.from_dict(json.loads(json.dumps(d)))
    assert back.substeps == 2 and back.factor == 2.0 and back.user_factor == 4.0
    assert back.frames_per_level(24) == 12.0 and back.frames_per_level(5) == 2.5
    old = dict(d)
    del old["substeps"]
    assert wm.ZoomInfo.from_dict(old).substeps == 1 and wm.ZoomInfo.from_dict(old).frames_per_level(24) == 24
    for bad in (0, 1.5, "2", True):
        with pytest.raises(wm.ManifestError, match="zoom.substeps"):
            wm.ZoomInfo.from_dict(dict(d, substeps=bad))
