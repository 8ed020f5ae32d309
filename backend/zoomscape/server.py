"""The HTTP API (FastAPI) of docs/API.md, versioned under /v1.

``create_app(store, engine_name, token=None)`` builds the app around a :class:`jobs.JobStore`. Every
error is JSON ``{"error": "<field path>: <what is wrong>", "detail": [...]}``: 422 for a bad request
body (the message names the field), 404 for an unknown job or file, 401 for a missing or wrong
token, 409 for cancelling a finished job. With a token set, every endpoint but /v1/health needs
``Authorization: Bearer <token>``. Failed requests never write to the store.
"""
from __future__ import annotations

import hmac
import logging
from contextlib import asynccontextmanager
from typing import Callable, Iterable, Optional

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from zoomscape import __version__
from zoomscape.jobs import JobFinished, JobNotFound, JobStore
from zoomscape.schema import (MAX_REQUEST_BYTES, FileList, Health, JobList, JobRequest, JobStatus,
                              field_errors)

log = logging.getLogger("zoomscape.server")

MEDIA_TYPES = {".json": "application/json", ".ply": "application/octet-stream", ".txt": "text/plain"}


class ApiError(Exception):
    """An error answer: HTTP status and the message of the "error" field."""

    def __init__(self, status: int, error: str, detail: Optional[list] = None, headers: Optional[dict] = None):
        super().__init__(error)
        self.status, self.error, self.detail, self.headers = status, error, detail or [], headers


def error_response(status: int, error: str, detail: Optional[list] = None,
                   headers: Optional[dict] = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail or []}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: refuse request bodies over max_bytes with 413, before the app parses them.

    Checks Content-Length up front; a body sent without one (chunked) is read up to the limit
    first and then handed to the app as it came.
    """

    def __init__(self, app, max_bytes: int = MAX_REQUEST_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def _too_large(self, scope, receive, send):
        mib = self.max_bytes / 2 ** 20
        response = error_response(413, f"body: the request is larger than the limit of {mib:g} MiB "
                                       "(an init_rgbd render counts: send a smaller resolution)")
        await response(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                return await self._too_large(scope, receive, send)
            return await self.app(scope, receive, send)
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                return await self._too_large(scope, receive, send)
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed():
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


def engine_names() -> list[str]:
    """Names of all engines this version knows (available or not)."""
    from zoomscape import engines

    return [e if isinstance(e, str) else getattr(e, "name", str(e)) for e in engines.ENGINES]


def bearer_checker(token: Optional[str]) -> Callable[[Request], None]:
    """A dependency that demands "Authorization: Bearer <token>" (constant-time compare) when token is set."""
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
    app.add_middleware(BodyLimit)

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
        return {"status": "ok", "version": __version__, "engine": engine.name, "engines": engine_names(),
                "device": str(engine.device), "models": list(engine.models), "auth_required": token is not None}

    api = APIRouter(prefix="/v1", dependencies=[Depends(bearer_checker(token))])

    def _job(job_id: str) -> dict:
        try:
            return store.get(job_id)
        except JobNotFound as exc:
            raise ApiError(404, f"job_id: {exc}") from None

    @api.post("/jobs", status_code=201, response_model=JobStatus)
    def submit(job: JobRequest) -> dict:
        from zoomscape.engines import EngineUnavailable

        from zoomscape.engines import check_engine

        models = {k: v for k, v in (job.model_dump().get("models") or {}).items() if v}
        try:
            check_engine(job.engine, models=models or None)  # files only; the worker loads weights
        except EngineUnavailable as exc:
            raise ApiError(422, f"engine: {job.engine!r} is not available on this server: {exc}",
                           [{"field": "engine", "message": str(exc)}]) from None
        return store.submit(job.model_dump(mode="json"))

    @api.get("/jobs", response_model=JobList)
    def list_jobs() -> dict:
        return {"jobs": store.list()}

    @api.get("/jobs/{job_id}", response_model=JobStatus)
    def status(job_id: str) -> dict:
        return _job(job_id)

    @api.post("/jobs/{job_id}/cancel", response_model=JobStatus)
    def cancel(job_id: str) -> dict:
        try:
            return store.cancel(job_id)
        except JobNotFound as exc:
            raise ApiError(404, f"job_id: {exc}") from None
        except JobFinished as exc:
            raise ApiError(409, f"job_id: {exc}") from None

    @api.get("/jobs/{job_id}/files", response_model=FileList)
    def files(job_id: str) -> dict:
        _job(job_id)
        return {"files": store.files(job_id)}

    @api.get("/jobs/{job_id}/files/{name}")
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
