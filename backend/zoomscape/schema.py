"""The wire format: pydantic models of docs/API.md and the error messages that name the field.

This module is the authority on what a job request may contain. Every limit of the API table is a
rule here, and every rule turns into an error of the form ``"cameras[0].width: must be at most 2048"``:
the field path first, then what is wrong and the limit. The HTTP server (422) and ``zoomscape generate``
(exit code 2) both report errors through :func:`field_errors`.

Types are strict: a JSON string, boolean or float is never turned into an integer ("7", true, 7.0),
nor a string or boolean into a number; an integer is fine where a number is expected. Echoed values
are cut to :data:`MAX_SHOWN_CHARS` characters. The limits shared with the extension come from
``wire.names``; the numeric ranges the pipeline can run (focal length, principal point, coordinates)
are defined here.

Requests: :class:`JobRequest` (:class:`CameraIn`, :class:`Zoom`, :class:`ZoomLevel`, :class:`InitRGBD`,
:class:`ModelChoice`).
Responses: :class:`JobStatus`, :class:`JobList`, :class:`Health`, :class:`FileList` (:class:`FileEntry`),
:class:`ErrorBody`.
"""
from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal, Optional

import numpy as np
from pydantic import (BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError,
                      field_validator, model_serializer, model_validator)
from pydantic_core import PydanticCustomError

from .wire.cameras import ZOOM_MODES
from .init_view import InitRGBDError, decode_base64, decode_depth, decode_rgb_png
from .wire.names import (ENGINE_NAMES, MAX_CAMERAS, MAX_EXTRA_VIEWS, MAX_LEVELS, MAX_MODEL_CHARS,  # noqa: F401
                         MAX_NAME_CHARS, MAX_PROMPT_CHARS, MAX_RESOLUTION, MIN_RESOLUTION, MODEL_ROLES,
                         SEED_LIMIT, ZOOM_FACTOR_RANGE)

RIGID_TOLERANCE = 1e-4
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
# Ranges the pipeline can compute with (docs/API.md). Focal lengths: a factor of max(width, height),
# 1e-3 (a field of view of ~180°) to 1e6 (~0.0001°). The principal point: within
# PRINCIPAL_POINT_RANGE × max(width, height) pixels of the image centre (Blender's lens shift reaches
# ±10 image sizes). Translations and the zoom anchor: |v| ≤ MAX_COORDINATE metres.
FOCAL_RANGE = (1e-3, 1e6)
PRINCIPAL_POINT_RANGE = 16
MAX_COORDINATE = 1e6
MAX_SHOWN_CHARS = 80  # an echoed value is cut to this many characters ("…" at the end)
# extra_views: views the dream plans and dreams beyond the user's cameras (dream.py, extra_views.py),
# 0..MAX_EXTRA_VIEWS. The default fits the demo's time budget: its job (4 cameras at 320 × 240) with
# the extra views takes about 1.5 × the job without them (each costs about one camera's dream).
DEFAULT_EXTRA_VIEWS = 4
MAX_PROBLEMS = 50     # problems listed in one error answer; the rest are counted


def _base64_chars(n_bytes: int) -> int:
    return 4 * math.ceil(n_bytes / 3)


# init_rgbd sizes at the largest view (2048 × 2048). The depth is exactly W·H float32. The PNG's bound
# is an incompressible 8-bit RGBA image stored without compression (filter byte per row, zlib's 5-byte
# header per 64 KiB block, chunk headers) plus 1 MiB of slack for ancillary chunks.
MAX_DEPTH_CHARS = _base64_chars(4 * MAX_RESOLUTION * MAX_RESOLUTION)
MAX_RGB_PNG_CHARS = _base64_chars(MAX_RESOLUTION * (1 + 4 * MAX_RESOLUTION) * 65541 // 65536 + (1 << 20))
# The largest request body the API has to accept: a full-size init_rgbd (~45 MB of base64 in the worst
# case; a typical 2048² render is ~25 MB) plus 64 cameras and 17 prompts of 1999 characters each
# JSON-escaped (≤ 12 bytes a character). A server should refuse longer bodies with 413 before reading.
MAX_REQUEST_BYTES = 64 * 1024 * 1024

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Coordinate = Annotated[float, Field(ge=-MAX_COORDINATE, le=MAX_COORDINATE, allow_inf_nan=False)]
Row4 = Annotated[list[Coordinate], Field(min_length=4, max_length=4)]
Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
Resolution = Annotated[int, Field(ge=MIN_RESOLUTION, le=MAX_RESOLUTION)]


def _field_error(relative: str, message: str) -> PydanticCustomError:
    """An error whose field path is the validator's location + ``relative`` (e.g. "[2].name")."""
    return PydanticCustomError("zoomscape", "{message}", {"message": message, "field": relative})


def _not_blank(value: str) -> str:
    if not value.strip():
        raise _field_error("", "must not be blank (only whitespace)")
    return value


def rigidity_problem(M: np.ndarray, tol: float = RIGID_TOLERANCE) -> Optional[str]:
    """Why a camera-to-world M: [4, 4] is not a rigid transform, or None if it is.

    Rigid means: last row (0, 0, 0, 1); R = M[:3, :3] orthonormal, max |RᵀR − I| ≤ tol; det R = +1.
    """
    last = M[3]
    if np.max(np.abs(last - np.array([0.0, 0.0, 0.0, 1.0]))) > tol:
        return f"last row must be 0, 0, 0, 1 (got {', '.join(f'{v:g}' for v in last)})"
    R = M[:3, :3]
    err = float(np.max(np.abs(R.T @ R - np.eye(3))))
    if err > tol:
        return (f"rotation must be orthonormal to {tol:g} (max |RᵀR − I| = {err:.3g}): "
                "scale or shear is not allowed, apply it to the camera object")
    det = float(np.linalg.det(R))
    if det < 0:
        return f"rotation determinant must be +1 (got {det:.3g}): mirrored matrices are not allowed"
    return None


class _Strict(BaseModel):
    """No unknown fields, no type coercion (an int still passes where a float is expected)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CameraIn(_Strict):
    """One Blender camera: matrix_world (camera-to-world, looks down −Z) and pixel intrinsics.

    fx, fy ∈ FOCAL_RANGE · max(width, height); |cx − width/2|, |cy − height/2| ≤
    PRINCIPAL_POINT_RANGE · max(width, height); every matrix entry |v| ≤ MAX_COORDINATE.
    """

    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
    matrix_world: Annotated[list[Row4], Field(min_length=4, max_length=4)]
    fx: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    fy: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    cx: FiniteFloat
    cy: FiniteFloat
    width: Resolution
    height: Resolution

    _blank_name = field_validator("name")(_not_blank)

    @field_validator("matrix_world")
    @classmethod
    def _rigid(cls, rows: list[list[float]]) -> list[list[float]]:
        problem = rigidity_problem(np.asarray(rows, dtype=np.float64))
        if problem:
            raise _field_error("", problem)
        return rows

    @model_validator(mode="after")
    def _intrinsics_in_range(self) -> "CameraIn":
        size = max(self.width, self.height)
        lo, hi = FOCAL_RANGE[0] * size, FOCAL_RANGE[1] * size
        for axis in ("fx", "fy"):
            f = getattr(self, axis)
            if not lo <= f <= hi:
                raise _field_error(axis, f"must be between {lo:g} and {hi:g} pixels ({FOCAL_RANGE[0]:g} to "
                                   f"{FOCAL_RANGE[1]:g} × max(width, height) = {size}; got {f:g})")
        reach = PRINCIPAL_POINT_RANGE * size
        for axis, extent in (("cx", self.width), ("cy", self.height)):
            c, centre = getattr(self, axis), extent / 2
            if abs(c - centre) > reach:
                raise _field_error(axis, f"must be between {centre - reach:g} and {centre + reach:g} pixels "
                                   f"(within {PRINCIPAL_POINT_RANGE} × max(width, height) = {reach} of the "
                                   f"image centre {centre:g}; got {c:g})")
        return self


class ZoomLevel(_Strict):
    """One zoom level: the prompt of what appears when zooming in by one more factor."""

    prompt: Prompt

    _blank = field_validator("prompt")(_not_blank)


class Zoom(_Strict):
    """The zoom: which camera zooms, by how much per level, through which levels, toward what."""

    camera: Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
    factor: Annotated[float, Field(ge=ZOOM_FACTOR_RANGE[0], le=ZOOM_FACTOR_RANGE[1], allow_inf_nan=False)]
    levels: Annotated[list[ZoomLevel], Field(min_length=1, max_length=MAX_LEVELS)]
    anchor: Optional[Annotated[list[Coordinate], Field(min_length=3, max_length=3)]] = None
    # "dolly" (default): level i is painted from the camera moved p^i times closer to the anchor,
    # as the dive's camera moves (real parallax; the diffusers engine samples it as zoom3d's 3D
    # stack); "lens": from the zoom camera with a p^i longer lens (the 2D stack)
    mode: Literal[ZOOM_MODES] = "dolly"


class InitRGBD(_Strict):
    """The user's own render of the first camera (LucidDreamer's RGB-D input), see init_view.py.

    rgb_png: base64 8-bit PNG (sRGB, display-referred), width × height pixels;
    depth: base64 of width·height little-endian float32 z-depths in metres, row-major from the top
    row, +inf or 0 where nothing (background); at least init_view.MIN_KNOWN_PIXELS known.
    """

    camera: Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
    width: Resolution
    height: Resolution
    rgb_png: Annotated[str, Field(min_length=1, max_length=MAX_RGB_PNG_CHARS)]
    depth: Annotated[str, Field(min_length=1, max_length=MAX_DEPTH_CHARS)]

    @model_validator(mode="after")
    def _decodes(self) -> "InitRGBD":
        try:
            decode_rgb_png(decode_base64(self.rgb_png, "rgb_png"), self.width, self.height)
            decode_depth(decode_base64(self.depth, "depth"), self.width, self.height)
        except InitRGBDError as exc:
            raise _field_error(exc.field, exc.message) from None
        return self


ModelId = Annotated[Optional[str], Field(max_length=MAX_MODEL_CHARS)]


class ModelChoice(_Strict):
    """Which weights the diffusers engine uses per role: a Hub model id or a folder on the server.
    None or blank = the server's default (models.py: settings > environment > defaults)."""

    text2img: ModelId = None
    inpaint: ModelId = None
    depth: ModelId = None


# One small valid request (the OpenAPI document's example): a 64 × 64 camera 6 m south, looking north.
EXAMPLE_REQUEST = {
    "engine": "procedural", "seed": 7, "scene_prompt": "a misty harbour town at dawn",
    "cameras": [{"name": "Cam.000", "matrix_world": [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, -6.0],
                                                     [0.0, 1.0, 0.0, 1.6], [0.0, 0.0, 0.0, 1.0]],
                 "fx": 55.4, "fy": 55.4, "cx": 32.0, "cy": 32.0, "width": 64, "height": 64}],
    "zoom": {"camera": "Cam.000", "factor": 4.0, "levels": [{"prompt": "a lit window"}], "anchor": None,
             "mode": "dolly"},
}


class JobRequest(_Strict):
    """A whole job: everything the backend needs, nothing it has to ask back for."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [EXAMPLE_REQUEST]})

    engine: Literal[ENGINE_NAMES] = "procedural"
    seed: Annotated[int, Field(ge=0, lt=SEED_LIMIT)] = 0
    scene_prompt: Prompt
    cameras: Annotated[list[CameraIn], Field(min_length=1, max_length=MAX_CAMERAS)]
    zoom: Zoom
    init_rgbd: Optional[InitRGBD] = None
    models: Optional[ModelChoice] = None
    extra_views: Annotated[int, Field(ge=0, le=MAX_EXTRA_VIEWS)] = DEFAULT_EXTRA_VIEWS

    _blank = field_validator("scene_prompt")(_not_blank)

    @field_validator("cameras")
    @classmethod
    def _unique_names(cls, cameras: list[CameraIn]) -> list[CameraIn]:
        first: dict[str, int] = {}
        for i, cam in enumerate(cameras):
            if cam.name in first:
                raise _field_error(f"[{i}].name", f"duplicate camera name {cam.name!r} "
                                   f"(also cameras[{first[cam.name]}].name); names must be unique")
            first[cam.name] = i
        return cameras

    @model_validator(mode="after")
    def _zoom_camera_exists(self) -> "JobRequest":
        names = [c.name for c in self.cameras]
        if self.zoom.camera not in names:
            shown = ", ".join(repr(n) for n in names[:8]) + (", …" if len(names) > 8 else "")
            raise _field_error("zoom.camera", f"{self.zoom.camera!r} is not one of the cameras ({shown})")
        return self

    @model_validator(mode="after")
    def _init_rgbd_is_the_first_view(self) -> "JobRequest":
        init, first = self.init_rgbd, self.cameras[0]
        if init is None:
            return self
        if init.camera != first.name:
            raise _field_error("init_rgbd.camera", f"{init.camera!r} must be the first camera "
                               f"(cameras[0].name = {first.name!r}): the render is the first view")
        for axis in ("width", "height"):
            if getattr(init, axis) != getattr(first, axis):
                raise _field_error(f"init_rgbd.{axis}", f"{getattr(init, axis)} must equal cameras[0].{axis} "
                                   f"= {getattr(first, axis)} (render at the camera's resolution)")
        return self

    @model_serializer(mode="wrap")
    def _omit_unset_models(self, handler: SerializerFunctionWrapHandler) -> dict:
        """Requests without "models" or "extra_views" dump without them (stored jobs stay as they
        were sent)."""
        data = handler(self)
        if data.get("models") is None:
            data.pop("models", None)
        if "extra_views" not in self.model_fields_set:
            data.pop("extra_views", None)
        return data


# ----------------------------------------------------------------------------------- responses

class JobStatus(BaseModel):
    """The state of one job as the API reports it (queue_position 0 = running or not queued)."""

    id: str
    state: Literal[JOB_STATES]
    stage: str = ""
    step: int = 0
    total: int = 0
    progress: float = 0.0
    message: str = ""
    queue_position: int = 0
    error: Optional[str] = None
    created: str
    updated: str


class JobList(BaseModel):
    jobs: list[JobStatus]


class FileEntry(BaseModel):
    name: str
    size: int


class FileList(BaseModel):
    files: list[FileEntry]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str
    engine: str
    engines: list[str]
    device: str
    models: list[Any]
    auth_required: bool
    level_refine_seconds: float = Field(ge=0, description=(
        "seconds each zoom level's Gaussians are refined for on this server's device "
        "(settings.level_refine_budget; 0: not refined)"))
    world_refine_seconds: float = Field(ge=0, description=(
        "seconds the world's Gaussians are refined for on this server's device "
        "(settings.world_refine_budget; 0: not refined)"))


class FieldProblem(BaseModel):
    """One problem: the field path ("cameras[0].width", "body" for the body as a whole) and what is wrong."""

    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer (4xx): ``error`` = "<field>: <what is wrong>" (the first problem), ``detail``
    = every problem found (422; empty for the other statuses)."""

    error: str
    detail: list[FieldProblem] = []


# ------------------------------------------------------------------------------ error messages

class RequestError(ValueError):
    """A request that breaks a rule. ``field`` is the path ("cameras[0].width"), ``message`` what is
    wrong; ``problems`` lists every problem found as {"field", "message"} dicts."""

    def __init__(self, problems: list[dict]):
        self.problems = problems
        self.field = problems[0]["field"]
        self.message = problems[0]["message"]
        super().__init__(f"{self.field}: {self.message}" if self.field else self.message)


def field_path(loc) -> str:
    """("cameras", 0, "width") → "cameras[0].width"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _join(path: str, relative: str) -> str:
    if not relative:
        return path
    if relative.startswith("["):
        return path + relative
    return f"{path}.{relative}" if path else relative


def _plural(n, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def shown(value) -> str:
    """A value as an error message echoes it: repr, cut to MAX_SHOWN_CHARS characters with "…"."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, str) and len(value) > MAX_SHOWN_CHARS:
        value = value[:MAX_SHOWN_CHARS]
    try:
        text = repr(value)
    except ValueError:  # an integer too long for str()
        return f"an integer of about {int(value.bit_length() * math.log10(2))} digits"
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS - 1] + "…"


def _kind(value) -> str:
    """The JSON kind of a parsed value, with the value itself for scalars: "a string '7'"."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "an object", type(None): "null"}
    kind = kinds.get(type(value), type(value).__name__)
    return f"{kind} {shown(value)}" if isinstance(value, (bool, int, float, str)) else kind


def _limit(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


# jiter's words for why a body is not JSON → what a client should do about it
_JSON_REASONS = {"recursion limit exceeded": "nested too deeply, at most 200 levels",
                 "number out of range": "a number has too many digits, at most 4300",
                 "invalid unicode code point": "not valid UTF-8"}


_TYPE_NAMES = {
    "model_type": "a JSON object", "model_attributes_type": "a JSON object", "dict_type": "a JSON object",
    "list_type": "a list", "string_type": "a string", "int_type": "an integer", "int_parsing": "an integer",
    "int_from_float": "a whole number", "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
}


def _describe(err: dict) -> tuple[str, str]:
    """(relative field suffix, message) for one pydantic error dict."""
    kind, ctx, value = err.get("type", ""), err.get("ctx") or {}, err.get("input")
    if kind == "zoomscape":
        return ctx.get("field", ""), ctx.get("message", err.get("msg", ""))
    if kind == "greater_than_equal":
        return "", f"must be at least {_limit(ctx['ge'])} (got {shown(value)})"
    if kind == "greater_than":
        return "", f"must be greater than {_limit(ctx['gt'])} (got {shown(value)})"
    if kind == "less_than_equal":
        return "", f"must be at most {_limit(ctx['le'])} (got {shown(value)})"
    if kind == "less_than":
        return "", f"must be less than {_limit(ctx['lt'])} (got {shown(value)})"
    if kind == "finite_number":
        return "", f"must be a finite number (got {shown(value)})"
    if kind == "string_too_short":
        return "", "must not be empty" if ctx.get("min_length") == 1 else \
            f"must be at least {_plural(ctx['min_length'], 'character')}"
    if kind == "string_too_long":
        got = f" (got {len(value)})" if isinstance(value, str) else ""
        return "", f"must be at most {_plural(ctx['max_length'], 'character')}{got}"
    if kind in ("too_short", "too_long"):
        got = len(value) if hasattr(value, "__len__") else ctx.get("actual_length")
        lo_hi = "at least" if kind == "too_short" else "at most"
        limit = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        return "", f"must have {lo_hi} {_plural(limit, 'item')} (got {got})"
    if kind == "extra_forbidden":
        return "", "unknown field (not part of the request format)"
    if kind == "missing":
        return "", "is required"
    if kind == "literal_error":
        return "", f"must be one of {ctx.get('expected', '')} (got {shown(value)})"
    if kind in _TYPE_NAMES:
        return "", f"must be {_TYPE_NAMES[kind]} (got {_kind(value)})"
    return "", str(err.get("msg", kind))[:4 * MAX_SHOWN_CHARS]


def _not_json(err: dict) -> str:
    """The message for a body that does not parse (pydantic's loc is (), FastAPI's ("body", position))."""
    reason = str((err.get("ctx") or {}).get("error", err.get("msg", "")))
    loc = tuple(err.get("loc", ()))
    where = f", at character {loc[-1]}" if len(loc) > 1 else ""
    meaning = next((m for words, m in _JSON_REASONS.items() if reason.startswith(words)), "")
    return f"is not valid JSON{': ' + meaning if meaning else ''} ({reason}{where})"


def field_errors(errors: list[dict], drop_prefix: tuple = ()) -> list[dict]:
    """Pydantic error dicts → [{"field": "cameras[0].width", "message": "must be at most 2048 (got 4096)"}].

    drop_prefix: leading location parts to strip (FastAPI puts "body" first). At most MAX_PROBLEMS
    problems are listed; one more entry (field "body") counts the rest.
    """
    out = []
    for err in errors[:MAX_PROBLEMS]:
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":
            out.append({"field": "body", "message": _not_json(err)})
            continue
        if drop_prefix and loc[:len(drop_prefix)] == drop_prefix:
            loc = loc[len(drop_prefix):]
        relative, message = _describe(err)
        path = _join(field_path(loc), relative)
        out.append({"field": path or "body", "message": message})
    if len(errors) > MAX_PROBLEMS:
        out.append({"field": "body", "message": f"and {len(errors) - MAX_PROBLEMS} more problems"})
    return out


def validate_request(data: Any) -> JobRequest:
    """Validate a request dict; raises RequestError naming the field of the first problem."""
    if not isinstance(data, dict):
        raise RequestError([{"field": "body", "message": f"must be a JSON object (got {type(data).__name__})"}])
    try:
        return JobRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestError(field_errors(exc.errors())) from None


def validate_request_json(raw: bytes) -> JobRequest:
    """Parse and validate a request body (JSON bytes, UTF-8) in one pass; raises RequestError.

    Bodies that do not parse (bad syntax, invalid UTF-8, nesting deeper than 200 levels, numbers of
    more than 4300 digits) are reported on the field "body".
    """
    if not raw.strip():
        raise RequestError([{"field": "body", "message": "is required: send the job request as a JSON object"}])
    try:
        return JobRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestError(field_errors(exc.errors(include_url=False))) from None
