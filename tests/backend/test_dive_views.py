"""Dive views (issue 11): a DOLLY zoom's path passes what stands beside it, seen from angles no
user camera had (the side of a box level 0 saw edge-on, the ground behind it). The dream sees
from the path itself first: the zoom camera at τ = 0.5 and 0.625 (pipeline.DIVE_VIEWS) with a
wider field of view (DIVE_WIDEN), dreamed before the M extra views and on top of them. Checked on the procedural world at small sizes, against the
truth."""
import numpy as np
import pytest

from zoomscape.cameras import aim_at, dolly_camera
from zoomscape.dream import dream
from zoomscape.engines.procedural import ProceduralEngine
from zoomscape.extra_views import DivePath, widened
from zoomscape.pipeline import DIVE_VIEWS, DIVE_WIDEN, run_job, surface_anchor
from zoomscape.pointcloud import project
from zoomscape.schema import validate_request
from zoomscape.wire.manifest import read_manifest
from tests.backend.test_extra_views import DEMO_CAMS, PROMPT, SEED, _request, check_inside_the_world

ZOOM = 1          # the demo's zoom camera, Cam.001
FACTOR = 4.0


def dive_of(found):
    def anchor_of(cloud):
        found["anchor"] = surface_anchor(cloud, DEMO_CAMS[ZOOM])
        return found["anchor"]
    return DivePath(DEMO_CAMS[ZOOM], FACTOR, DIVE_VIEWS, anchor_of, DIVE_WIDEN)


def empty(cloud, cam):
    """The fraction of cam's pixels the cloud leaves empty (pointcloud.project)."""
    return float(1.0 - project(cloud, cam).mask.mean())


@pytest.fixture(scope="module")
def runs():
    found = {}
    plain = dream(DEMO_CAMS, PROMPT, ProceduralEngine(), SEED, extra_views=2)
    dived = dream(DEMO_CAMS, PROMPT, ProceduralEngine(), SEED, extra_views=2, dive=dive_of(found))
    return plain, dived, found["anchor"]


def test_dive_views_are_dreamed_first_and_fill_the_path(runs):
    """The first extra views are the zoom camera at τ = 0.5 and 0.625 on its path, DIVE_WIDEN times
    its field of view at its focal length, the M planned ones follow; at τ = 0.5 the cloud leaves
    under a third of the pixels empty that the plain extra views leave (the ground behind what
    the dive passes), and the user's own views lose nothing."""
    plain, dived, a = runs
    n = len(DIVE_VIEWS)
    assert DIVE_VIEWS[:2] == (0.5, 0.625) and DIVE_WIDEN > 1
    zoom = DEMO_CAMS[ZOOM]
    d0 = float(np.linalg.norm(a - zoom.center))
    for view, tau in zip(dived.planned[:n], DIVE_VIEWS):
        assert view.kind == "dive" and view.source == (zoom.name,)
        want = dolly_camera(aim_at(zoom, a), a, FACTOR, tau)
        np.testing.assert_allclose(view.camera.c2w, want.c2w, atol=1e-9)
        assert np.linalg.norm(a - view.camera.center) == pytest.approx(d0 * FACTOR ** -tau, rel=1e-9)
        cam = view.camera           # wider, at the zoom camera's focal length, centred the same
        assert (cam.width, cam.height) == (round(zoom.width * DIVE_WIDEN / 8) * 8, round(zoom.height * DIVE_WIDEN / 8) * 8)
        assert cam.width % 8 == 0 and cam.height % 8 == 0 and cam.width > zoom.width
        np.testing.assert_allclose(cam.K[[0, 1], [0, 1]], zoom.K[[0, 1], [0, 1]])
        np.testing.assert_allclose(cam.K[:2, 2] - [cam.width / 2, cam.height / 2],
                                   zoom.K[:2, 2] - [zoom.width / 2, zoom.height / 2])
    want = widened(dolly_camera(aim_at(zoom, a), a, FACTOR, 0.5), DIVE_WIDEN)
    assert [v.kind for v in plain.planned].count("dive") == 0
    assert len(dived.planned) == n + 2 and [v.kind for v in dived.planned[n:]].count("dive") == 0
    before, after = empty(plain.cloud, want), empty(dived.cloud, want)
    print(f"\nat τ = 0.5: {before:.2%} empty with the plain extra views, {after:.2%} with the dive view")
    assert after < before / 3.0
    for cam in DEMO_CAMS:
        assert empty(dived.cloud, cam) <= empty(plain.cloud, cam) + 1e-3


def test_a_dive_view_leaves_the_surface_the_zoom_dives_to(runs):
    """A dive view paints its holes only: it sharpens and replaces nothing, so the zoom camera's
    surface anchor stays within a part in a thousand of its distance (at zoom τ an error there is
    p^τ times larger against the distance left)."""
    plain, dived, a = runs
    N = len(DEMO_CAMS)
    assert dived.views[N].extra and dived.views[N].sharpened == 0 and dived.views[N].replaced == 0
    a_plain = surface_anchor(plain.cloud, DEMO_CAMS[ZOOM])
    a_dived = surface_anchor(dived.cloud, DEMO_CAMS[ZOOM])
    d0 = float(np.linalg.norm(a_plain - DEMO_CAMS[ZOOM].center))
    moved = float(np.linalg.norm(a_dived - a_plain)) / d0
    print(f"\nthe surface anchor moved {moved:.2e} of its distance")
    assert moved < 1e-3


def test_dive_views_are_inside_the_world(runs):
    """The dive view stands above the true terrain, outside every object, in front of what every
    user camera sees."""
    _, dived, _ = runs
    assert check_inside_the_world(dived.planned[0].camera, DEMO_CAMS, 0.05) == []


@pytest.mark.parametrize("mode", ["dolly", "lens"])
def test_a_dolly_job_dreams_its_path_and_a_lens_job_does_not(tmp_path, mode):
    """run_job: in DOLLY the first extra views are the zoom camera down its path (DIVE_VIEWS), then
    the two requested; a LENS job stays at its camera and plans no dive view."""
    cams = DEMO_CAMS[:2]
    req = _request(cameras=[c.to_wire() for c in cams], extra_views=2,
                   zoom={"camera": cams[1].name, "factor": FACTOR, "levels": [{"prompt": "a wall"}],
                         "mode": mode})
    run_job(validate_request(req), tmp_path)
    manifest = read_manifest(tmp_path)
    names = [v.camera for v in manifest.views]
    dive = mode == "dolly"
    n = len(DIVE_VIEWS) if dive else 0
    assert [v.extra for v in manifest.views] == [False, False] + [True] * (n + 2)
    assert names[2:] == [f"Dive.{k:03d}" for k in range(n)] + ["Extra.000", "Extra.001"]


def test_no_extra_views_no_dive_view():
    """extra_views = 0 (the panel's Extra Views off): the user's cameras only, no dive view."""
    res = dream(DEMO_CAMS, PROMPT, ProceduralEngine(), SEED, extra_views=0, dive=dive_of({}))
    assert res.planned == [] and len(res.views) == len(DEMO_CAMS)

