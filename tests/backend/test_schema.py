"""schema.py: every rule of docs/API.md's request table, and messages that name the field and limit."""
import copy
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers import BAD_REQUESTS, bad_request, camera, job_request  # noqa: E402

from zoomscape import cameras  # noqa: E402
from zoomscape.schema import (  # noqa: E402
    JobRequest, RequestError, field_errors, field_path, rigidity_problem, validate_request)


def test_valid_request_round_trips_through_json():
    req = job_request(3)
    model = validate_request(json.loads(json.dumps(req)))
    assert isinstance(model, JobRequest)
    assert [c.name for c in model.cameras] == ["Cam.000", "Cam.001", "Cam.002"]
    assert model.model_dump(mode="json") == req


def test_defaults_for_optional_fields():
    req = job_request(1)
    for key in ("engine", "seed", "init_rgbd"):
        req.pop(key)
    req["zoom"].pop("anchor")
    model = validate_request(req)
    assert (model.engine, model.seed, model.init_rgbd, model.zoom.anchor) == ("procedural", 0, None, None)


def test_limits_themselves_are_accepted():
    req = job_request(2)
    req["cameras"][0].update(width=64, height=2048)
    req["scene_prompt"] = "p" * 1999
    req["zoom"].update(factor=8.0, levels=[{"prompt": "l"}] * 16, anchor=[0.0, 4.2, 1.1])
    req["seed"] = 2**32 - 1
    validate_request(req)
    req["zoom"]["factor"] = 1.5
    req["zoom"]["levels"] = [{"prompt": "only"}]
    validate_request(req)


def test_sixty_four_cameras_are_accepted():
    req = job_request(1)
    req["cameras"] = [camera(f"C{i:02d}", x=0.1 * i) for i in range(64)]
    req["zoom"]["camera"] = "C63"
    assert len(validate_request(req).cameras) == 64


@pytest.mark.parametrize("label, mutate, field, words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_every_bad_request_names_its_field(label, mutate, field, words):
    with pytest.raises(RequestError) as info:
        validate_request(bad_request(mutate))
    err = info.value
    assert err.field == field, f"{label}: {err}"
    assert words in err.message, f"{label}: {err}"
    assert str(err).startswith(f"{field}: ")


def test_all_problems_are_reported_not_just_the_first():
    req = job_request(2)
    req["cameras"][0]["width"] = 5000
    req["cameras"][1]["height"] = 10
    req["zoom"]["factor"] = 100
    with pytest.raises(RequestError) as info:
        validate_request(req)
    fields = {p["field"] for p in info.value.problems}
    assert fields == {"cameras[0].width", "cameras[1].height", "zoom.factor"}
    assert "must be at most 2048 (got 5000)" in {p["message"] for p in info.value.problems}


def test_non_object_body_is_rejected():
    with pytest.raises(RequestError) as info:
        validate_request([1, 2])
    assert info.value.field == "body"


def _rotation(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


@pytest.mark.parametrize("seed", range(5))
def test_rigid_matrices_pass_and_tolerance_is_1e4(seed):
    rng = np.random.default_rng(seed)
    M = np.eye(4)
    M[:3, :3] = _rotation(rng.normal(size=3), rng.uniform(-np.pi, np.pi))
    M[:3, 3] = rng.normal(size=3) * 10
    assert rigidity_problem(M) is None
    # a scale of 1 + 3e-5 is within 1e-4 of orthonormal (|RᵀR − I| ≈ 6e-5); 1 + 1e-4 is not (≈ 2e-4)
    small, large = M.copy(), M.copy()
    small[:3, :3] *= 1 + 3e-5
    large[:3, :3] *= 1 + 1e-4
    assert rigidity_problem(small) is None
    assert "orthonormal" in rigidity_problem(large)
    mirrored = M.copy()
    mirrored[:3, 0] *= -1
    assert "determinant" in rigidity_problem(mirrored)


def test_look_at_cameras_from_cameras_module_are_valid():
    req = job_request(1)
    req["cameras"][0]["matrix_world"] = cameras.look_at((3, -4, 2), (0, 0, 0.5)).tolist()
    validate_request(req)


def test_field_path_and_fastapi_prefix():
    assert field_path(("cameras", 0, "matrix_world", 1, 2)) == "cameras[0].matrix_world[1][2]"
    errors = [{"type": "less_than_equal", "loc": ("body", "cameras", 3, "width"), "msg": "x",
               "input": 9999, "ctx": {"le": 2048}}]
    assert field_errors(errors, drop_prefix=("body",)) == [
        {"field": "cameras[3].width", "message": "must be at most 2048 (got 9999)"}]


def test_request_dump_is_plain_json():
    """What the server stores (model_dump(mode='json')) is what the pipeline reads: no numpy, no models."""
    dumped = validate_request(copy.deepcopy(job_request(2))).model_dump(mode="json")
    assert json.loads(json.dumps(dumped, allow_nan=False)) == dumped
