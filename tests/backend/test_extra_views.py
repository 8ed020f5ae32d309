"""Extra views (issue 10 e): the dream plans views between, ahead of and around the user's
cameras, never inside or behind a surface, and dreams them so the world is complete where a
user would fly. Checked against the procedural world's truth at small sizes.

Rigs: the demo's (scripts/demo_blender.py RIG) and a forward walk; the novel cameras are the
benchmark's kind (scripts/fidelity_blender.py): midpoints of neighbours (position lerp,
rotation slerp) and each camera moved forward and up by 0.3 of the rig's spacing."""
import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from zoomscape.cameras import Camera, from_wire, look_at, world_to_pixels
from zoomscape.dream import dream
from zoomscape.engines.procedural import ProceduralEngine, World
from zoomscape.extra_views import (ExtraViewPlanner, candidates, hole_depth, rig_pairs,
                                   sample_projection)
from zoomscape.pointcloud import project
from zoomscape.schema import MAX_EXTRA_VIEWS, RequestError, validate_request
from zoomscape.wire.manifest import Manifest, ManifestError, ViewSummary
from tests.helpers.demo_rig import RIG, intrinsics as demo_intrinsics, wire_cam

PROMPT = "a misty harbour town at dawn"
SEED = 7
W, H = 128, 96
DEMO = RIG
WORLD = World(PROMPT, SEED)


def intrinsics(w=W, h=H):
    return demo_intrinsics(w, h)


def blender_cam(name, loc, pitch, yaw, w=W, h=H):
    return from_wire(wire_cam(name, loc, pitch, yaw, w, h))


def ground(x, y):
    return float(WORLD.height(np.array([x]), np.array([y]), np.array([0.05]))[0][0])


def walk_cams(n=5, step=1.0, height=1.6, pitch=-10.0, w=W, h=H):
    """The benchmark's forward walk: n cameras along +Y, step apart, pitched down."""
    cams = []
    for i in range(n):
        y = -2.0 + step * i
        eye = np.array([0.0, y, ground(0.0, y) + height])
        target = eye + np.array([0.0, 10.0, 10.0 * math.tan(math.radians(pitch))])
        cams.append(from_wire(dict(name=f"Cam.{i:03d}", matrix_world=look_at(eye, target).tolist(),
                                   **intrinsics(w, h))))
    return cams


DEMO_CAMS = [blender_cam(n, loc, *angles) for n, loc, angles in DEMO]
WALK_CAMS = walk_cams()


def novel_cameras(cams, move=0.3, up=0.3):
    """Midpoints of neighbours (lerp, slerp) and every camera moved forward by move·spacing along
    its view and up by up·spacing (spacing: the mean distance between neighbours)."""
    pairs = list(zip(range(len(cams) - 1), range(1, len(cams))))
    C = [c.center for c in cams]
    spacing = float(np.mean([np.linalg.norm(C[i] - C[j]) for i, j in pairs]))
    out = []
    for i, j in pairs:
        R = Slerp([0, 1], Rotation.from_matrix([cams[i].c2w[:3, :3], cams[j].c2w[:3, :3]]))(
            [0.5]).as_matrix()[0]
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = R, 0.5 * (C[i] + C[j])
        out.append(Camera(f"Mid.{i}-{j}", cams[i].K.copy(), c2w, cams[i].width, cams[i].height))
    for i, c in enumerate(cams):
        c2w = c.c2w.copy()
        c2w[:3, 3] = C[i] + c.c2w[:3, 2] * move * spacing + np.array([0.0, 0.0, up * spacing])
        out.append(Camera(f"Fwd.{i}", c.K.copy(), c2w, c.width, c.height))
    return out


def no_geometry(cloud, cams):
    """Per camera the fraction of pixels pointcloud.project leaves empty."""
    return np.array([1.0 - project(cloud, c).mask.mean() for c in cams])


def inside_an_object(p, margin=0.0):
    """Whether the world point p: [3] lies inside (or within margin of) one of WORLD's objects."""
    for o in WORLD.objects:
        if o["type"] == "sphere":
            if np.linalg.norm(p - o["center"]) < o["size"] + margin:
                return True
        else:
            local = o["R"].T @ (p - o["center"])
            if np.all(np.abs(local) < o["half"] + margin):
                return True
    return False


def check_inside_the_world(cam, user_cams, margin):
    """The truth about one camera centre: above the terrain and outside every object by margin,
    and in front of the true surface of every user camera that sees it. → list of problems."""
    c = cam.center
    problems = []
    if c[2] - ground(c[0], c[1]) < margin:
        problems.append(f"{cam.name}: {c[2] - ground(c[0], c[1]):.3f} m above the terrain")
    if inside_an_object(c, margin):
        problems.append(f"{cam.name}: inside an object")
    for u in user_cams:
        uv, z = world_to_pixels(u, c[None])
        if z[0] > 0 and 0 <= uv[0, 0] < u.width and 0 <= uv[0, 1] < u.height:
            T = WORLD.depth(u)[int(uv[0, 1]), int(uv[0, 0])]
            if not z[0] < T:
                problems.append(f"{cam.name}: behind the surface {u.name} sees ({z[0]:.2f} ≥ {T:.2f})")
    return problems


@pytest.fixture(scope="module")
def demo_runs():
    without = dream(DEMO_CAMS, PROMPT, ProceduralEngine(), SEED)
    with_extra = dream(DEMO_CAMS, PROMPT, ProceduralEngine(), SEED, extra_views=4)
    return without, with_extra


# ---------------------------------------------------------------------------------------------
# never inside or behind a surface

@pytest.mark.parametrize("rig", ["demo", "walk"])
def test_planned_views_are_inside_the_world(rig, demo_runs):
    """Every candidate the planner allows, and every view it plans and dreams, is above the true
    terrain, outside every object and in front of the true surface each user camera sees."""
    cams = DEMO_CAMS if rig == "demo" else WALK_CAMS
    res = demo_runs[1] if rig == "demo" else dream(cams, PROMPT, ProceduralEngine(), SEED,
                                                    extra_views=3)
    assert len(res.planned) == (4 if rig == "demo" else 3)
    planner = ExtraViewPlanner(cams, res.observed[:len(cams)])
    problems = []
    for view in res.planned:
        problems += check_inside_the_world(view.camera, cams, planner.clearance)
    base = dream(cams, PROMPT, ProceduralEngine(), SEED, refine=False)
    planner.update(base.cloud, cams, base.observed)
    for k in np.flatnonzero(planner.alive):
        problems += check_inside_the_world(planner.cams[k], cams, planner.clearance)
    assert planner.alive.sum() > 20
    assert not problems, problems


def test_candidates_behind_or_inside_a_surface_are_rejected():
    """Two cameras 2 m apart looking at a box from 1.5 m beyond its reach: a spacing ahead of
    them lies inside the box, behind the face they see. The rules reject every candidate the
    truth puts inside or behind a surface (the free-space rule first), and keep the others."""
    box = max((o for o in WORLD.objects if o["type"] == "box"), key=lambda o: o["size"])
    centre = box["center"]
    away = centre[:2] / np.linalg.norm(centre[:2])             # from the world origin to the box
    side = np.array([-away[1], away[0]])
    eye_h = centre[2] + 0.3
    cams = []
    for k, off in enumerate((-1.0, 1.0)):
        eye = np.array([*(centre[:2] - (box["size"] + 1.5) * away + off * side), eye_h])
        cams.append(from_wire(dict(name=f"Near.{k}", matrix_world=look_at(eye, centre).tolist(),
                                   **intrinsics())))
    res = dream(cams, PROMPT, ProceduralEngine(), SEED, refine=False)
    planner = ExtraViewPlanner(cams, res.observed)
    planner.update(res.cloud, cams, res.observed)
    bad = [k for k, c in enumerate(planner.cams) if check_inside_the_world(c, cams, 0.0)]
    print(f"\ncandidates: {len(planner.cams)}, inside or behind a surface by the truth: {len(bad)}, "
          f"rejected {planner.rejected}")
    assert len(bad) >= 2                                        # the case the rig builds
    assert not planner.alive[bad].any() and planner.rejected["free_space"] >= len(bad)
    assert planner.alive.sum() >= 4
    ok = [k for k in np.flatnonzero(planner.alive)
          if not check_inside_the_world(planner.cams[k], cams, planner.clearance)]
    assert len(ok) == planner.alive.sum()


def test_candidates_of_a_rig():
    """Between (slerp) each neighbouring pair, the loop closed when last and first are about
    the spacing apart; ahead along the view and raised; around: the same centre turned."""
    pairs = rig_pairs(DEMO_CAMS)
    assert pairs == [(0, 1), (1, 2), (2, 3)]                     # an open rig
    ring = [from_wire(dict(name=f"R{i}", matrix_world=look_at(
        (3 * math.cos(a), 3 * math.sin(a), 1.6), (0, 0, 0)).tolist(), **intrinsics()))
        for i, a in enumerate(np.linspace(0, 2 * math.pi, 8, endpoint=False))]
    assert rig_pairs(ring)[-1] == (7, 0)                         # a loop
    s = float(np.mean([np.linalg.norm(DEMO_CAMS[j].center - DEMO_CAMS[i].center) for i, j in pairs]))
    cand = candidates(DEMO_CAMS, s)
    mid = [c for c in cand if c.kind == "between" and c.source == ("Cam.001", "Cam.002")][1]
    np.testing.assert_allclose(mid.center, 0.5 * (DEMO_CAMS[1].center + DEMO_CAMS[2].center))
    fwd = mid.c2w[:3, 2]
    np.testing.assert_allclose(np.linalg.norm(fwd), 1.0)
    yaw = np.degrees(np.arctan2(fwd[0], fwd[1]))                 # Cam.001 yaw 8°, Cam.002 −8°
    assert abs(yaw) < 1e-6
    ahead = [c for c in cand if c.kind == "ahead" and c.source == ("Cam.001",)]
    for c in ahead:
        d = c.center - DEMO_CAMS[1].center
        assert d @ DEMO_CAMS[1].c2w[:3, 2] > 0 and d[2] > 0    # forward and up
        np.testing.assert_allclose(c.c2w[:3, :3], DEMO_CAMS[1].c2w[:3, :3])
    around = [c for c in cand if c.kind == "around" and c.source == ("Cam.001",)]
    assert len(around) == 4
    for c in around:
        np.testing.assert_allclose(c.center, DEMO_CAMS[1].center)
        assert 0.1 < np.degrees(np.arccos(np.clip(c.c2w[:3, 2] @ DEMO_CAMS[1].c2w[:3, 2], -1, 1))) < 20


# ---------------------------------------------------------------------------------------------
# the world is complete where a user would fly

def test_extra_views_fill_the_novel_views(demo_runs):
    """No geometry at the benchmark's novel cameras (midpoints, forward + up 0.3·spacing), in the
    final cloud's projection: the extra views more than halve its mean and cut its worst view."""
    without, with_extra = demo_runs
    novel = novel_cameras(DEMO_CAMS)
    before, after = no_geometry(without.cloud, novel), no_geometry(with_extra.cloud, novel)
    print(f"\nno geometry at the novel views without extra views: {np.round(100 * before, 2)} %,"
          f"\n                               with 4 extra views: {np.round(100 * after, 2)} %"
          f"\nplanned: {[(v.kind, v.source, round(v.empty, 3)) for v in with_extra.planned]}")
    assert after.mean() < 0.5 * before.mean()
    assert after.max() < 0.6 * before.max()
    # and the user's own views keep as much of the world as they had
    assert (no_geometry(with_extra.cloud, DEMO_CAMS) <= no_geometry(without.cloud, DEMO_CAMS)
            + 1e-3).all()


def test_walk_ahead_is_filled():
    """The forward walk: ahead of the last camera lies ground and box nobody saw; the extra
    views make the view forward and up of it nearly complete."""
    without = dream(WALK_CAMS, PROMPT, ProceduralEngine(), SEED)
    with_extra = dream(WALK_CAMS, PROMPT, ProceduralEngine(), SEED, extra_views=3)
    novel = novel_cameras(WALK_CAMS)
    before, after = no_geometry(without.cloud, novel), no_geometry(with_extra.cloud, novel)
    print(f"\nwalk, no geometry without: {np.round(100 * before, 2)} %, "
          f"with 3 extra views: {np.round(100 * after, 2)} %")
    assert after[-1] < 0.5 * before[-1]
    assert after.mean() < 0.7 * before.mean()


def test_extra_views_are_dreamed_like_views(demo_runs):
    """The extra views come after the user's, flagged; each has a camera, an image, an observed
    depth, a mask and points of its own, and the planner saw it emptier than the stop rule."""
    _, res = demo_runs
    N = len(DEMO_CAMS)
    assert res.extra.tolist() == [False] * N + [True] * 4
    assert [c.name for c in res.cameras[:N]] == [c.name for c in DEMO_CAMS]
    assert [c.name for c in res.cameras[N:]] == [v.camera.name for v in res.planned]
    assert [v.camera for v in res.views[N:]] == [v.camera.name for v in res.planned]
    assert len(res.images) == len(res.observed) == len(res.masks) == len(res.views) == N + 4
    counts = np.bincount(res.source, minlength=N + 4)
    assert counts.tolist() == [v.new_points for v in res.views]
    assert (counts[N:] > 0).all()
    for v in res.planned:
        assert v.kind in ("between", "ahead", "around") and v.empty > 0.005
        assert all(s in [c.name for c in DEMO_CAMS] for s in v.source)
    assert [v.summary().extra for v in res.views] == res.extra.tolist()


def test_the_user_views_are_as_without_extra_views():
    """Before the consensus the user's views come out bit for bit as without extra views; with
    extra_views=0 the result is the dream's as it was (the same as not asking)."""
    a = dream(DEMO_CAMS[:3], PROMPT, ProceduralEngine(), SEED, refine=False)
    b = dream(DEMO_CAMS[:3], PROMPT, ProceduralEngine(), SEED, refine=False, extra_views=2)
    assert len(b.views) == 5 and len(a.views) == 3
    user = b.source < 3
    np.testing.assert_array_equal(b.cloud.xyz[user], a.cloud.xyz)
    np.testing.assert_array_equal(b.cloud.rgb[user], a.cloud.rgb)
    for i in range(3):
        np.testing.assert_array_equal(b.images[i], a.images[i])
        np.testing.assert_array_equal(b.observed[i], a.observed[i])
        np.testing.assert_array_equal(b.masks[i], a.masks[i])
        assert b.views[i] == a.views[i]
    c = dream(DEMO_CAMS[:3], PROMPT, ProceduralEngine(), SEED)
    d = dream(DEMO_CAMS[:3], PROMPT, ProceduralEngine(), SEED, extra_views=0)
    np.testing.assert_array_equal(c.cloud.xyz, d.cloud.xyz)
    np.testing.assert_array_equal(c.source, d.source)
    assert c.views == d.views and not d.planned and not d.extra.any()
    assert [x.name for x in d.cameras] == [x.name for x in DEMO_CAMS[:3]]


def test_progress_counts_the_extra_views():
    """progress("dream", step, total, …): total = N + M while the views are planned, and the
    dream ends at step = total."""
    calls = []
    res = dream(DEMO_CAMS[:2], PROMPT, ProceduralEngine(), SEED, extra_views=2,
                progress=lambda *a: calls.append(a))
    assert [c[1] for c in calls] == list(range(1, len(res.views) + 1))
    assert calls[0][2] == 4 and calls[-1][1] == calls[-1][2]
    assert "extra" in calls[-1][3]


def test_the_planner_stops_when_nothing_is_left_empty():
    """With nothing left emptier than min_empty the planner plans nothing more (here: a bar set
    above every candidate's empty fraction)."""
    res = dream(DEMO_CAMS[:2], PROMPT, ProceduralEngine(), SEED, refine=False)
    planner = ExtraViewPlanner(DEMO_CAMS[:2], res.observed, min_empty=0.999)
    assert planner.next(res.cloud, DEMO_CAMS[:2], res.observed) is None
    planner = ExtraViewPlanner(DEMO_CAMS[:2], res.observed)
    view = planner.next(res.cloud, DEMO_CAMS[:2], res.observed)
    assert view is not None and view.empty >= planner.min_empty and view.fills > 0


def test_sample_projection_is_project_at_the_sample_pixels(demo_runs):
    """The planner's coverage: pointcloud.project's mask and depth at every b-th pixel."""
    _, res = demo_runs
    for cam in novel_cameras(DEMO_CAMS)[::2]:
        full = project(res.cloud, cam)
        for b in (2, 3, 4):
            m, d = sample_projection(res.cloud, cam, b)
            o = b // 2
            np.testing.assert_array_equal(m, full.mask[o::b, o::b])
            np.testing.assert_allclose(d[m], full.depth[o::b, o::b][m], rtol=1e-5)


def test_hole_depth_shows_the_background():
    """A hole beside a depth edge takes the far side's depth; with no row neighbour, the column's."""
    depth = np.full((4, 8), 10.0)
    depth[:, :3] = 2.0                         # a near surface on the left
    covered = np.ones((4, 8), bool)
    covered[:, 3:5] = False                    # a disocclusion beside it
    covered[0, :] = False                      # and a row with nothing
    Z = hole_depth(covered, depth)
    assert np.all(Z[1:, 3:5] == 10.0) and np.isnan(Z[covered]).all()
    assert Z[0, 0] == 2.0 and Z[0, 7] == 10.0


# ---------------------------------------------------------------------------------------------
# the request field and the manifest flag

def _request(**extra):
    req = {"engine": "procedural", "seed": SEED, "scene_prompt": PROMPT,
           "cameras": [c.to_wire() for c in DEMO_CAMS[:2]],
           "zoom": {"camera": "Cam.000", "factor": 4.0, "levels": [{"prompt": "a wall"}]}}
    req.update(extra)
    return req


@pytest.mark.parametrize("value, words", [(-1, "must be at least 0"),
                                          (MAX_EXTRA_VIEWS + 1, f"must be at most {MAX_EXTRA_VIEWS}"),
                                          ("4", "must be an integer"), (4.0, "must be an integer"),
                                          (True, "must be an integer"), (None, "must be an integer")])
def test_bad_extra_views_are_refused_naming_the_field(value, words):
    with pytest.raises(RequestError) as info:
        validate_request(_request(extra_views=value))
    assert info.value.field == "extra_views" and words in info.value.message, str(info.value)


def test_extra_views_default_and_limits():
    from zoomscape.schema import DEFAULT_EXTRA_VIEWS, JobRequest

    assert validate_request(_request()).extra_views == DEFAULT_EXTRA_VIEWS > 0
    assert validate_request(_request(extra_views=0)).extra_views == 0
    assert validate_request(_request(extra_views=MAX_EXTRA_VIEWS)).extra_views == MAX_EXTRA_VIEWS == 16
    # stored as sent: no key added when the request had none, kept when it had one
    assert "extra_views" not in validate_request(_request()).model_dump(mode="json")
    assert validate_request(_request(extra_views=3)).model_dump(mode="json")["extra_views"] == 3
    prop = JobRequest.model_json_schema()["properties"]["extra_views"]
    assert (prop["minimum"], prop["maximum"], prop["default"]) == (0, 16, DEFAULT_EXTRA_VIEWS)


def test_view_summary_carries_extra():
    v = ViewSummary("Extra.000", 10, 1.0, 0.5, extra=True)
    assert v.to_dict()["extra"] is True
    assert ViewSummary.from_dict(json.loads(json.dumps(v.to_dict())), "views[4]") == v
    old = {"camera": "Cam.000", "new_points": 10, "scale": 1.0, "overlap": 0.0}   # older manifests
    assert ViewSummary.from_dict(old, "views[0]").extra is False
    with pytest.raises(ManifestError, match=r"views\[2\]\.extra"):
        ViewSummary.from_dict({**old, "extra": "yes"}, "views[2]")


def test_the_job_manifest_flags_the_extra_views(tmp_path):
    """run_job with extra_views=2 (a DOLLY zoom, the default): the manifest lists the user's
    views, then the two dive views (test_dive_views), then two extra ones."""
    from zoomscape.pipeline import run_job
    from zoomscape.wire.manifest import read_manifest

    cams = [blender_cam(n, loc, *a, w=96, h=72) for n, loc, a in DEMO[:2]]
    req = _request(cameras=[c.to_wire() for c in cams], extra_views=2)
    run_job(validate_request(req), tmp_path)
    manifest = read_manifest(tmp_path)
    assert [v.extra for v in manifest.views] == [False, False, True, True, True, True]
    assert [v.camera for v in manifest.views] == ["Cam.000", "Cam.001", "Dive.000", "Dive.001", "Extra.000", "Extra.001"]
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert [v["extra"] for v in raw["views"]] == [False, False, True, True, True, True]
    assert Manifest.from_dict(raw).views == manifest.views
