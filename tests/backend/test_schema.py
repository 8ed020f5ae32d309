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
    req["zoom"].pop("mode")
    model = validate_request(req)
    assert (model.engine, model.seed, model.init_rgbd, model.zoom.anchor, model.zoom.mode) == \
        ("procedural", 0, None, None, "dolly")


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


# ------------------------------------------------------------------ strict types, ranges, echoes, bodies

from zoomscape.schema import (  # noqa: E402
    FOCAL_RANGE, MAX_COORDINATE, MAX_PROBLEMS, MAX_SHOWN_CHARS, PRINCIPAL_POINT_RANGE, shown, validate_request_json)
from zoomscape.wire import names  # noqa: E402


def _problem(req, *, as_json=False):
    with pytest.raises(RequestError) as info:
        if as_json:
            validate_request_json(json.dumps(req).encode())
        else:
            validate_request(req)
    return info.value


# (label, mutate, field, words): JSON values of the wrong type are never coerced
WRONG_TYPES = [
    ("seed as a string", lambda r: r.update(seed="7"), "seed", "must be an integer (got a string '7')"),
    ("seed true", lambda r: r.update(seed=True), "seed", "must be an integer (got a boolean true)"),
    ("seed 7.0", lambda r: r.update(seed=7.0), "seed", "must be an integer"),
    ("width as a string", lambda r: r["cameras"][0].update(width="64"), "cameras[0].width", "an integer"),
    ("width true", lambda r: r["cameras"][1].update(width=True), "cameras[1].width", "an integer"),
    ("fx true", lambda r: r["cameras"][0].update(fx=True), "cameras[0].fx", "must be a number (got a boolean"),
    ("fx as a string", lambda r: r["cameras"][0].update(fx="711"), "cameras[0].fx", "must be a number"),
    ("factor as a string", lambda r: r["zoom"].update(factor="4"), "zoom.factor", "must be a number"),
    ("matrix entry as a string", lambda r: r["cameras"][0]["matrix_world"][0].__setitem__(3, "0"),
     "cameras[0].matrix_world[0][3]", "must be a number"),
    ("prompt as a number", lambda r: r.update(scene_prompt=5), "scene_prompt", "must be a string (got an integer 5)"),
    ("name as a number", lambda r: r["cameras"][0].update(name=0), "cameras[0].name", "must be a string"),
    ("anchor entry true", lambda r: r["zoom"].update(anchor=[True, 0.0, 0.0]), "zoom.anchor[0]", "a number"),
]


@pytest.mark.parametrize("as_json", [False, True], ids=["dict", "json"])
@pytest.mark.parametrize("label, mutate, field, words", WRONG_TYPES, ids=[w[0] for w in WRONG_TYPES])
def test_wrong_json_types_are_not_coerced(label, mutate, field, words, as_json):
    req = job_request(2)
    mutate(req)
    err = _problem(req, as_json=as_json)
    assert err.field == field and words in err.message, f"{label}: {err}"


def test_an_integer_is_a_number():
    req = job_request(1)
    req["cameras"][0].update(fx=711, fy=711, cx=48, cy=48)
    req["zoom"].update(factor=4, anchor=[0, 4, 1])
    req["cameras"][0]["matrix_world"][3] = [0, 0, 0, 1]
    for model in (validate_request(req), validate_request_json(json.dumps(req).encode())):
        assert model.cameras[0].fx == 711.0 and isinstance(model.cameras[0].fx, float)
        assert model.zoom.anchor == [0.0, 4.0, 1.0]


def _size(r, i=0):
    return max(r["cameras"][i]["width"], r["cameras"][i]["height"])


# (label, mutate, field, words): values the pipeline cannot compute with
OUT_OF_RANGE = [
    ("fx 1e308", lambda r: r["cameras"][0].update(fx=1e308), "cameras[0].fx", "must be between 0.096 and 9.6e+07"),
    ("fx 5e-324", lambda r: r["cameras"][1].update(fx=5e-324), "cameras[1].fx", "got 4.94066e-324"),
    ("fy 1e-5", lambda r: r["cameras"][0].update(fy=1e-5), "cameras[0].fy", "0.001 to 1e+06 × max(width, height) = 96"),
    ("cx 1e308", lambda r: r["cameras"][0].update(cx=1e308), "cameras[0].cx", "within 16 × max(width, height)"),
    ("cx -1e308", lambda r: r["cameras"][2].update(cx=-1e308), "cameras[2].cx", "between -1488 and 1584"),
    ("cy 1e9", lambda r: r["cameras"][0].update(cy=1e9), "cameras[0].cy", "image centre 48"),
    ("translation 1e300", lambda r: r["cameras"][0]["matrix_world"][0].__setitem__(3, 1e300),
     "cameras[0].matrix_world[0][3]", "must be at most 1e+06 (got 1e+300)"),
    ("translation -1e300", lambda r: r["cameras"][1]["matrix_world"][2].__setitem__(3, -1e300),
     "cameras[1].matrix_world[2][3]", "must be at least -1e+06"),
    ("anchor 1e308", lambda r: r["zoom"].update(anchor=[0.0, 1e308, 0.0]), "zoom.anchor[1]", "at most 1e+06"),
    ("rotation 1e300", lambda r: r["cameras"][0]["matrix_world"][1].__setitem__(1, 1e300),
     "cameras[0].matrix_world[1][1]", "at most 1e+06"),
]


@pytest.mark.parametrize("label, mutate, field, words", OUT_OF_RANGE, ids=[o[0] for o in OUT_OF_RANGE])
def test_values_the_pipeline_cannot_run_name_their_field_and_limit(label, mutate, field, words):
    req = job_request(3)
    mutate(req)
    err = _problem(req)
    assert err.field == field and words in err.message, f"{label}: {err}"


def test_range_limits_themselves_are_accepted():
    req = job_request(2)
    cam = req["cameras"][0]
    size = _size(req)
    cam.update(fx=FOCAL_RANGE[0] * size, fy=FOCAL_RANGE[1] * size,
               cx=cam["width"] / 2 + PRINCIPAL_POINT_RANGE * size, cy=cam["height"] / 2 - PRINCIPAL_POINT_RANGE * size)
    cam["matrix_world"][0][3] = MAX_COORDINATE
    cam["matrix_world"][1][3] = -MAX_COORDINATE
    req["zoom"]["anchor"] = [MAX_COORDINATE, -MAX_COORDINATE, 0.0]
    validate_request(req)
    # Blender's widest shift (±10 image sizes) and lens range (1 mm to 5000 mm on a 36 mm sensor) fit
    cam.update(fx=1 / 36 * size, fy=5000 / 36 * size, cx=cam["width"] / 2 - 10 * size, cy=cam["height"] / 2 + 10 * size)
    validate_request(req)


def test_echoed_values_are_cut_to_80_characters():
    req = job_request(1)
    req["engine"] = "e" * 10_000_000
    err = _problem(req, as_json=True)
    assert err.field == "engine" and len(err.message) < 300 and "…" in err.message, err.message[:400]
    assert len(json.dumps(err.problems)) < 1000
    assert shown("x" * 81).endswith("…") and len(shown("x" * 10**6)) == MAX_SHOWN_CHARS
    assert shown("short") == "'short'" and shown(True) == "true" and shown(None) == "null"
    assert "digits" in shown(10 ** 5000)  # too long for str(); never raises
    req = job_request(1)
    req["seed"] = 10 ** 4000
    assert _problem(req).message.startswith("must be less than 4294967296 (got ")


def test_the_number_of_problems_listed_is_capped():
    req = job_request(1)
    req.update({f"extra_{i}": i for i in range(10_000)})
    err = _problem(req, as_json=True)
    assert len(err.problems) == MAX_PROBLEMS + 1
    assert err.problems[-1] == {"field": "body", "message": f"and {10_000 - MAX_PROBLEMS} more problems"}


@pytest.mark.parametrize("raw, field, words", [
    (b"", "body", "is required"),
    (b"  \n", "body", "is required"),
    (b"{not json", "body", "is not valid JSON"),
    (b"[1, 2]", "body", "must be a JSON object (got a list)"),
    (b'"text"', "body", "must be a JSON object (got a string 'text')"),
    (b'{"seed": ' + b"9" * 5001 + b"}", "body", "a number has too many digits"),
    (b'{"seed": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body", "nested too deeply"),
    (b'{"scene_prompt": "caf\xe9"}', "body", "not valid UTF-8"),
    (b'\xff\xfe{"seed": 1}', "body", "is not valid JSON"),
    (b'{"seed": 1} trailing', "body", "is not valid JSON"),
], ids=["empty", "blank", "syntax", "a list", "a string", "5001 digits", "100000 deep", "latin-1", "BOM", "trailing"])
def test_bodies_that_do_not_parse_are_reported_on_the_body(raw, field, words):
    with pytest.raises(RequestError) as info:
        validate_request_json(raw)
    assert info.value.field == field and words in info.value.message, str(info.value)
    assert len(str(info.value)) < 300


def test_json_bodies_validate_like_dicts():
    req = job_request(3)
    assert validate_request_json(json.dumps(req).encode()).model_dump(mode="json") == req
    for label, mutate, field, words in BAD_REQUESTS:
        err = _problem(bad_request(mutate), as_json=True)
        assert err.field == field and words in err.message, f"{label}: {err}"


def test_shared_limits_come_from_the_wire_names():
    import zoomscape.schema as schema

    for name in ("ENGINE_NAMES", "MODEL_ROLES", "MAX_CAMERAS", "MIN_RESOLUTION", "MAX_RESOLUTION", "MAX_PROMPT_CHARS",
                 "MAX_NAME_CHARS", "MAX_MODEL_CHARS", "ZOOM_FACTOR_RANGE", "MAX_LEVELS", "SEED_LIMIT"):
        assert getattr(schema, name) is getattr(names, name), name
    assert tuple(JobRequest.model_json_schema()["properties"]["engine"]["enum"]) == names.ENGINE_NAMES


def test_the_documented_example_is_a_valid_request():
    from zoomscape.schema import EXAMPLE_REQUEST

    assert JobRequest.model_json_schema()["examples"] == [EXAMPLE_REQUEST]
    assert validate_request_json(json.dumps(EXAMPLE_REQUEST).encode()).model_dump(mode="json") == {
        **EXAMPLE_REQUEST, "init_rgbd": None}
