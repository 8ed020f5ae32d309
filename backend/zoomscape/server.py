"""The HTTP API (FastAPI) of docs/API.md, versioned under /v1.

``create_app(store, engine_name, token=None)`` builds the app around a :class:`jobs.JobStore`. Every
error is JSON :class:`schema.ErrorBody` ``{"error": "<field path>: <what is wrong>", "detail": [{"field",
"message"}, ...]}``: 422 for a bad request body (the message names the field), 413 for a body over
``schema.MAX_REQUEST_BYTES``, 404 for an unknown job or file, 401 for a missing or wrong token, 409 for
cancelling a finished job; the OpenAPI document (/openapi.json) describes exactly that body.

With a token set, every endpoint but /v1/health needs ``Authorization: Bearer <token>``, and it is
checked before anything of the request body is read. ``POST /v1/jobs`` reads its body itself (at most
MAX_REQUEST_BYTES) and parses and validates it in one strict pass (schema.validate_request_json).
Failed requests never write to the store.
"""
from __future__ import annotations

import hmac
import logging
from contextlib import asynccontextmanager
from typing import Callable, Iterable, Optional

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from zoomscape import __version__
from zoomscape.jobs import JobFinished, JobNotFound, JobStore
from zoomscape.schema import (MAX_REQUEST_BYTES, ErrorBody, FileList, Health, JobList, JobRequest, JobStatus,
                              RequestError, field_errors, validate_request_json)

log = logging.getLogger("zoomscape.server")

MEDIA_TYPES = {".json": "application/json", ".ply": "application/octet-stream", ".txt": "text/plain"}
ERROR_WHY = {401: "missing or wrong token (servers started with --lan or --token)",
             404: "unknown job or result file", 409: "the job already finished",
             413: f"the body is larger than {MAX_REQUEST_BYTES / 2 ** 20:g} MiB",
             422: "the request breaks a rule; `error` and every `detail` entry name the field"}


def errors_doc(*statuses: int) -> dict:
    """FastAPI `responses` for these error statuses, each with the body schema.ErrorBody."""
    return {status: {"model": ErrorBody, "description": ERROR_WHY[status]} for status in statuses}


class ApiError(Exception):
    """An error answer: HTTP status and the message of the "error" field."""

    def __init__(self, status: int, error: str, detail: Optional[list] = None, headers: Optional[dict] = None):
        super().__init__(error)
        self.status, self.error, self.detail, self.headers = status, error, detail or [], headers


def error_response(status: int, error: str, detail: Optional[list] = None,
                   headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail or []}, status_code=status, headers=headers)


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"body: the request is larger than the limit of {max_bytes / 2 ** 20:g} MiB "
                         "(an init_rgbd render counts: send a smaller resolution)")


async def read_body(request: Request, max_bytes: int = MAX_REQUEST_BYTES) -> bytes:
    """The request body, refused with 413 past max_bytes: up front by Content-Length, else (chunked)
    as soon as more than max_bytes arrived."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise _too_large(max_bytes)
    chunks, seen = [], 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def engine_names() -> list[str]:
    """Names of all engines this version knows (available or not)."""
    from zoomscape import engines

    return [e if isinstance(e, str) else getattr(e, "name", str(e)) for e in engines.ENGINES]


def bearer_checker(token: Optional[str]) -> Callable[[Request], None]:
    """A dependency that demands "Authorization: Bearer <token>" (constant-time compare) when token is set.

    It looks at headers only, so a stranger is refused before any of the body is read."""
    expected = token.encode() if token else None

    def check(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization")
        challenge = {"WWW-Authenticate": "Bearer"}
        if not header:
            raise ApiError(401, "authorization: missing token; this server requires "
                                "'Authorization: Bearer <token>' (the token is printed by `zoomscape serve`)",
                           headers=challenge)
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "authorization: expected 'Bearer <token>'", headers=challenge)
        if not hmac.compare_digest(given.strip().encode(), expected):
            raise ApiError(401, "authorization: wrong token", headers=challenge)

    return check


def parse_job(raw: bytes) -> JobRequest:
    """A request body → JobRequest, or ApiError 422 naming the field of every problem."""
    try:
        return validate_request_json(raw)
    except RequestError as exc:
        raise ApiError(422, str(exc), exc.problems) from None


def openapi_document(app: FastAPI) -> dict:
    """FastAPI's document plus JobRequest (POST /v1/jobs parses its body itself, see submit)."""
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    request_schema = JobRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(request_schema.pop("$defs", {}))
    schemas["JobRequest"] = request_schema
    return doc


def create_app(store: JobStore, engine_name: str, token: Optional[str] = None, *,
               on_shutdown: Iterable[Callable[[], None]] = ()) -> FastAPI:
    """The /v1 API around store. The store's worker starts and stops with the app (lifespan);
    on_shutdown callbacks (e.g. unregistering zeroconf) run when the app stops."""
    engine = store.engines.get(engine_name)  # raises EngineUnavailable early, with its own message
    shutdown_hooks = list(on_shutdown)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store.start()
        try:
            yield
        finally:
            for hook in shutdown_hooks:
                try:
                    hook()
                except Exception:  # noqa: BLE001 - shutting down regardless
                    log.exception("shutdown hook failed")
            store.stop()

    app = FastAPI(title="Zoomscape backend", version=__version__, lifespan=lifespan)
    app.state.store, app.state.token = store, token

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app)
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        problems = field_errors(list(exc.errors()), drop_prefix=("body",))
        first = problems[0] if problems else {"field": "body", "message": "invalid request"}
        return error_response(422, f"{first['field']}: {first['message']}", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404:
            message = f"{request.url.path}: not found"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.get("/v1/health", response_model=Health)
    def health() -> dict:
        settings = store.engines.settings
        return {"status": "ok", "version": __version__, "engine": engine.name, "engines": engine_names(),
                "device": str(engine.device), "models": list(engine.models), "auth_required": token is not None,
                "level_refine_seconds": settings.level_refine_budget(engine.device),
                "world_refine_seconds": settings.world_refine_budget(engine.device)}

    api = APIRouter(prefix="/v1", dependencies=[Depends(bearer_checker(token))])

    def _job(job_id: str) -> dict:
        try:
            return store.get(job_id)
        except JobNotFound as exc:
            raise ApiError(404, f"job_id: {exc}") from None

    def _store_job(job: JobRequest) -> dict:
        from zoomscape.engines import EngineUnavailable

        models = {k: v for k, v in (job.model_dump().get("models") or {}).items() if v}
        try:
            store.engines.check(job.engine, models or None)  # files only; the worker loads weights
        except EngineUnavailable as exc:
            raise ApiError(422, f"engine: {job.engine!r} is not available on this server: {exc}",
                           [{"field": "engine", "message": str(exc)}]) from None
        return store.submit(job.model_dump(mode="json"))

    body_doc = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}}}}

    @api.post("/jobs", status_code=201, response_model=JobStatus, openapi_extra=body_doc,
              responses=errors_doc(401, 413, 422))
    async def submit(request: Request) -> dict:
        """Queue a job. The body is schema.JobRequest; it is read only after the token was checked."""
        raw = await read_body(request)
        job = await run_in_threadpool(parse_job, raw)
        return await run_in_threadpool(_store_job, job)

    @api.get("/jobs", response_model=JobList, responses=errors_doc(401))
    def list_jobs() -> dict:
        return {"jobs": store.list()}

    @api.get("/jobs/{job_id}", response_model=JobStatus, responses=errors_doc(401, 404, 422))
    def status(job_id: str) -> dict:
        return _job(job_id)

    @api.post("/jobs/{job_id}/cancel", response_model=JobStatus, responses=errors_doc(401, 404, 409, 422))
    def cancel(job_id: str) -> dict:
        try:
            return store.cancel(job_id)
        except JobNotFound as exc:
            raise ApiError(404, f"job_id: {exc}") from None
        except JobFinished as exc:
            raise ApiError(409, f"job_id: {exc}") from None

    @api.get("/jobs/{job_id}/files", response_model=FileList, responses=errors_doc(401, 404, 422))
    def files(job_id: str) -> dict:
        _job(job_id)
        return {"files": store.files(job_id)}

    binary = {"schema": {"type": "string", "format": "binary"}}
    file_doc = {200: {"description": "the file's bytes",
                      "content": {media: binary for media in sorted(set(MEDIA_TYPES.values()))}},
                **errors_doc(401, 404, 422)}

    @api.get("/jobs/{job_id}/files/{name}", response_class=FileResponse, responses=file_doc)
    def download(job_id: str, name: str):
        _job(job_id)
        try:
            path = store.file_path(job_id, name)
        except JobNotFound as exc:
            raise ApiError(404, f"name: {exc}") from None
        return FileResponse(path, media_type=MEDIA_TYPES.get(path.suffix, "application/octet-stream"),
                            filename=name)

    app.include_router(api)
    return app
