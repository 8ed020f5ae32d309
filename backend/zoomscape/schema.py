"""The wire format: pydantic models of docs/API.md and the error messages that name the field.

This module is the authority on what a job request may contain. Every limit of the API table is a
rule here, and every rule turns into an error of the form ``"cameras[0].width: must be at most 2048"``:
the field path first, then what is wrong and the limit. The HTTP server (422) and ``zoomscape generate``
(exit code 2) both report errors through :func:`field_errors`.

Requests: :class:`JobRequest` (:class:`CameraIn`, :class:`Zoom`, :class:`ZoomLevel`, :class:`InitRGBD`,
:class:`ModelChoice`).
Responses: :class:`JobStatus`, :class:`JobList`, :class:`Health`, :class:`FileList` (:class:`FileEntry`),
:class:`ErrorBody`.
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Optional

import numpy as np
from pydantic import (BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError,
                      field_validator, model_serializer, model_validator)
from pydantic_core import PydanticCustomError

from .init_view import InitRGBDError, decode_base64, decode_depth, decode_rgb_png

ENGINE_NAMES = ("procedural", "diffusers")
MAX_CAMERAS = 64
MIN_RESOLUTION, MAX_RESOLUTION = 64, 2048
MAX_PROMPT_CHARS = 1999
MAX_NAME_CHARS = 63
ZOOM_FACTOR_RANGE = (1.5, 8.0)
MAX_LEVELS = 16
RIGID_TOLERANCE = 1e-4
SEED_LIMIT = 2**32
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
MAX_MODEL_CHARS = 500
MODEL_ROLES = ("text2img", "inpaint", "depth")


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
Row4 = Annotated[list[FiniteFloat], Field(min_length=4, max_length=4)]
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
    model_config = ConfigDict(extra="forbid")


class CameraIn(_Strict):
    """One Blender camera: matrix_world (camera-to-world, looks down −Z) and pixel intrinsics."""

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


class ZoomLevel(_Strict):
    """One zoom level: the prompt of what appears when zooming in by one more factor."""

    prompt: Prompt

    _blank = field_validator("prompt")(_not_blank)


class Zoom(_Strict):
    """The zoom: which camera zooms, by how much per level, through which levels, toward what."""

    camera: Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
    factor: Annotated[float, Field(ge=ZOOM_FACTOR_RANGE[0], le=ZOOM_FACTOR_RANGE[1], allow_inf_nan=False)]
    levels: Annotated[list[ZoomLevel], Field(min_length=1, max_length=MAX_LEVELS)]
    anchor: Optional[Annotated[list[FiniteFloat], Field(min_length=3, max_length=3)]] = None


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


class JobRequest(_Strict):
    """A whole job: everything the backend needs, nothing it has to ask back for."""

    engine: Literal["procedural", "diffusers"] = "procedural"
    seed: Annotated[int, Field(ge=0, lt=SEED_LIMIT)] = 0
    scene_prompt: Prompt
    cameras: Annotated[list[CameraIn], Field(min_length=1, max_length=MAX_CAMERAS)]
    zoom: Zoom
    init_rgbd: Optional[InitRGBD] = None
    models: Optional[ModelChoice] = None

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
        """Requests without "models" dump without it (stored jobs stay as they were sent)."""
        data = handler(self)
        if data.get("models") is None:
            data.pop("models", None)
        return data


# ----------------------------------------------------------------------------------- responses

class JobStatus(BaseModel):
    """The state of one job as the API reports it (queue_position 0 = running or not queued)."""

    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
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


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    error: str
    detail: list[Any] = []


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
        return "", f"must be at least {ctx['ge']} (got {value!r})"
    if kind == "greater_than":
        return "", f"must be greater than {ctx['gt']} (got {value!r})"
    if kind == "less_than_equal":
        return "", f"must be at most {ctx['le']} (got {value!r})"
    if kind == "less_than":
        return "", f"must be less than {ctx['lt']} (got {value!r})"
    if kind == "finite_number":
        return "", f"must be a finite number (got {value!r})"
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
        return "", f"must be one of {ctx.get('expected', '')} (got {value!r})"
    if kind in _TYPE_NAMES:
        return "", f"must be {_TYPE_NAMES[kind]} (got {type(value).__name__})"
    return "", err.get("msg", kind)


def field_errors(errors: list[dict], drop_prefix: tuple = ()) -> list[dict]:
    """Pydantic error dicts → [{"field": "cameras[0].width", "message": "must be at most 2048 (got 4096)"}].

    drop_prefix: leading location parts to strip (FastAPI puts "body" first).
    """
    out = []
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":  # loc is ("body", character position)
            reason = (err.get("ctx") or {}).get("error", err.get("msg", ""))
            out.append({"field": "body", "message": f"is not valid JSON ({reason}, at character {loc[-1]})"})
            continue
        if drop_prefix and loc[:len(drop_prefix)] == drop_prefix:
            loc = loc[len(drop_prefix):]
        relative, message = _describe(err)
        path = _join(field_path(loc), relative)
        out.append({"field": path or "body", "message": message})
    return out


def validate_request(data: Any) -> JobRequest:
    """Validate a request dict; raises RequestError naming the field of the first problem."""
    if not isinstance(data, dict):
        raise RequestError([{"field": "body", "message": f"must be a JSON object (got {type(data).__name__})"}])
    try:
        return JobRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestError(field_errors(exc.errors())) from None
