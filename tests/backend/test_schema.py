"""schema.py: every rule of docs/API.md's request table, and messages that name the field and limit."""
import base64
import copy
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

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


# ------------------------------------------------------------------------ init_rgbd and models

from zoomscape.init_view import decode_init_rgbd, encode_init_rgbd  # noqa: E402
from zoomscape.schema import (  # noqa: E402
    MAX_DEPTH_CHARS, MAX_MODEL_CHARS, MAX_REQUEST_BYTES, MAX_RGB_PNG_CHARS)


def with_init(n_cameras=2, size=96, camera_index=0):
    """A valid request whose init_rgbd renders cameras[camera_index]: a wall 4 m away, sky on top."""
    req = job_request(n_cameras, size=size)
    rng = np.random.default_rng(size)
    rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    depth = np.full((size, size), 4.0, np.float32)
    depth[: size // 3] = np.inf
    req["init_rgbd"] = encode_init_rgbd(req["cameras"][camera_index]["name"], rgb, depth)
    return req, rgb, depth


def test_init_rgbd_is_accepted_and_decodes_as_sent():
    req, rgb, depth = with_init()
    model = validate_request(json.loads(json.dumps(req)))
    assert model.model_dump(mode="json") == req  # stored as sent (no "models" key added)
    I_0, D_0, M_0 = decode_init_rgbd(model.model_dump(mode="json")["init_rgbd"], cameras.from_wire(req["cameras"][0]))
    np.testing.assert_array_equal(np.round(I_0 * 255).astype(np.uint8), rgb)
    np.testing.assert_array_equal(M_0, np.isfinite(depth))
    assert np.all(D_0[M_0] == 4.0) and np.all(np.isposinf(D_0[~M_0]))


def _init_case(case):
    req, rgb, depth = with_init()
    init = req["init_rgbd"]
    if case == "not the first camera":
        init["camera"] = req["cameras"][1]["name"]
        return req, "init_rgbd.camera", "must be the first camera (cameras[0].name = 'Cam.000')"
    if case == "width differs from the camera":
        req["cameras"][0]["width"] = 128
        return req, "init_rgbd.width", "96 must equal cameras[0].width = 128"
    if case == "height differs from the camera":
        req["cameras"][0]["height"] = 80
        return req, "init_rgbd.height", "96 must equal cameras[0].height = 80"
    if case == "png is not base64":
        init["rgb_png"] = "not base64 at all!"
        return req, "init_rgbd.rgb_png", "not valid base64"
    if case == "png does not decode":
        init["rgb_png"] = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()
        return req, "init_rgbd.rgb_png", "damaged PNG"
    if case == "png of another size":
        init["width"] = req["cameras"][0]["width"] = 100
        return req, "init_rgbd.rgb_png", "is 96×96 pixels; must be 100×96"
    if case == "depth length":
        init["depth"] = base64.b64encode(b"\0" * 12).decode()
        return req, "init_rgbd.depth", "9216 little-endian float32 values (36864 bytes); got 12 bytes"
    if case == "depth NaN":
        d = depth.copy()
        d[50, 60] = np.nan
        init["depth"] = base64.b64encode(d.astype("<f4").tobytes()).decode()
        return req, "init_rgbd.depth", "NaN at row 50, column 60"
    if case == "no known depth":
        init["depth"] = base64.b64encode(np.zeros(96 * 96, "<f4").tobytes()).decode()
        return req, "init_rgbd.depth", "only 0 pixels have a depth"
    if case == "too small":
        init["width"] = 32
        return req, "init_rgbd.width", "at least 64"
    if case == "unknown key":
        init["rgb"] = []
        return req, "init_rgbd.rgb", "unknown field"
    if case == "missing png":
        init.pop("rgb_png")
        return req, "init_rgbd.rgb_png", "required"
    if case == "png too long":
        init["rgb_png"] = "A" * (MAX_RGB_PNG_CHARS + 4)
        return req, "init_rgbd.rgb_png", f"at most {MAX_RGB_PNG_CHARS} characters"
    if case == "depth too long":
        init["depth"] = "A" * (MAX_DEPTH_CHARS + 4)
        return req, "init_rgbd.depth", f"at most {MAX_DEPTH_CHARS} characters"
    if case == "not an object":
        req["init_rgbd"] = "Cam.000.png"
        return req, "init_rgbd", "JSON object"
    raise AssertionError(case)


INIT_CASES = ["not the first camera", "width differs from the camera", "height differs from the camera",
              "png is not base64", "png does not decode", "png of another size", "depth length", "depth NaN",
              "no known depth", "too small", "unknown key", "missing png", "png too long", "depth too long",
              "not an object"]


@pytest.mark.parametrize("case", INIT_CASES)
def test_bad_init_rgbd_names_its_field_and_limit(case):
    req, field, words = _init_case(case)
    with pytest.raises(RequestError) as info:
        validate_request(req)
    err = info.value
    assert err.field == field, f"{case}: {err}"
    assert words in err.message, f"{case}: {err}"


def test_limits_fit_a_full_size_rgbd():
    """The string limits hold a worst-case 2048² view: every depth value, an incompressible PNG."""
    assert MAX_DEPTH_CHARS == len(base64.b64encode(b"\0" * (4 * 2048 * 2048)))
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (2048, 2048, 4), dtype=np.uint8)  # RGBA noise: PNG cannot shrink it
    buf = io.BytesIO()
    Image.fromarray(noise, "RGBA").save(buf, format="PNG", compress_level=0)
    assert len(base64.b64encode(buf.getvalue())) <= MAX_RGB_PNG_CHARS


def test_request_byte_limit_holds_the_largest_valid_request():
    req = job_request(1)
    req["cameras"] = [camera(f"C{i:02d}" + "x" * 59, x=0.1 * i, size=2048) for i in range(64)]
    req["zoom"]["camera"] = req["cameras"][0]["name"]
    worst_char = "\U0001F600"  # JSON-escaped as two \\uXXXX surrogates: 12 bytes per character
    req["scene_prompt"] = worst_char * 1999
    req["zoom"]["levels"] = [{"prompt": worst_char * 1999}] * 16
    req["init_rgbd"] = {"camera": req["cameras"][0]["name"], "width": 2048, "height": 2048,
                        "rgb_png": "A" * MAX_RGB_PNG_CHARS, "depth": "A" * MAX_DEPTH_CHARS}
    req["models"] = {role: "m" * MAX_MODEL_CHARS for role in ("text2img", "inpaint", "depth")}
    size = len(json.dumps(req).encode("utf-8"))
    assert size <= MAX_REQUEST_BYTES, (size, MAX_REQUEST_BYTES)


def test_models_are_optional_strings_of_at_most_500_characters():
    req = job_request(1)
    req["models"] = {"text2img": "stable-diffusion-v1-5/stable-diffusion-v1-5", "inpaint": "/srv/models/inpaint",
                     "depth": "d" * MAX_MODEL_CHARS}
    model = validate_request(req)
    assert model.models.inpaint == "/srv/models/inpaint"
    assert model.model_dump(mode="json")["models"] == req["models"]
    req["models"] = {"depth": "x"}  # the others fall back to the server's defaults
    assert validate_request(req).model_dump(mode="json")["models"] == {"text2img": None, "inpaint": None,
                                                                       "depth": "x"}
    for models, field, words in [({"inpaint": "i" * (MAX_MODEL_CHARS + 1)}, "models.inpaint", "at most 500 characters"),
                                 ({"unet": "x"}, "models.unet", "unknown field"),
                                 ({"depth": 3}, "models.depth", "a string"),
                                 (["a"], "models", "JSON object")]:
        req["models"] = models
        with pytest.raises(RequestError) as info:
            validate_request(req)
        assert info.value.field == field and words in info.value.message, str(info.value)
