"""The on-disk job store and its single worker thread.

Layout (every file written atomically: a temp file in the same folder, then ``os.replace``)::

    data_dir/jobs/<id>/request.json   the validated request, never changed
    data_dir/jobs/<id>/status.json    state, stage, step, total, progress, message, error, times
    data_dir/jobs/<id>/results/       written by pipeline.run_job (manifest.json last)

A new job folder is assembled under a hidden temp name and renamed into place, so a job either
exists completely or not at all. Ids are uuid4 hex. One worker runs jobs first in, first out, so one
GPU is never shared. Cancelling a queued job is immediate; a running job stops at its next progress
step. Queue positions are computed when a status is read, never stored (status.json has none).

On restart queued jobs are queued again (in creation order); a job that was running is done if its
results are complete (results/manifest.json, written last, is there and parses) and failed
("interrupted") otherwise; the temp files of interrupted writes (wire.atomic's
``.<name>.<8 hex>.tmp`` and the legacy ``<name>.ply.tmp``) are removed from every job folder and its
results. Result files are served only if they are regular files inside the job's folder (no symlinks).
"""
from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import stat
import threading
import traceback
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from .errors import JobCancelled
from .settings import Settings, resolve
from .wire.atomic import is_temp_name, write_json_atomic, write_text_atomic
from .wire.manifest import Manifest, ManifestError, read_manifest
from .wire.names import MANIFEST_FILE

log = logging.getLogger("zoomscape.jobs")

FINISHED = ("done", "failed", "cancelled")
INTERRUPTED = "interrupted: the server stopped while it ran"
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
JOB_ID = re.compile(r"^[0-9a-f]{32}$")

# Share of the whole job each pipeline stage takes, in order: progress = done stages + share · step/total.
STAGE_SHARES = (("dream", 0.4), ("zoom", 0.25), ("lift", 0.15), ("world", 0.15), ("write", 0.05))

Progress = Callable[[str, int, int, str], None]
Runner = Callable[[dict, Path, Progress, Callable[[], bool]], dict]


class JobNotFound(KeyError):
    """No job with that id (or no such result file)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class JobFinished(RuntimeError):
    """The job already finished; it cannot be cancelled."""


# errors.JobCancelled (imported above, the one type the pipeline raises too) is raised inside a
# running job from its progress callback once a cancel was requested.


class _Shutdown(Exception):
    """Raised inside a running job when the store stops."""


def is_leftover_temp(name: str) -> bool:
    """A file an interrupted write left: wire.atomic's .<name>.<8 hex>.tmp or the legacy <name>.ply.tmp."""
    return is_temp_name(name) or name.endswith(".ply.tmp")


def remove_leftover_temps(folder: Path) -> list[str]:
    """Delete the leftover temp files directly in folder (not in subfolders); returns their names."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if is_leftover_temp(entry.name) and not entry.is_dir(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except OSError as exc:
                log.warning("cannot remove leftover temp file %s (%s)", entry.path, exc)
    return removed


def complete_manifest(results: Path) -> Optional[Manifest]:
    """results/manifest.json when it is a regular file the one manifest reader (wire.manifest)
    accepts — it is written last, so the results are complete — else None."""
    try:
        if not stat.S_ISREG((results / MANIFEST_FILE).lstat().st_mode):
            return None
        return read_manifest(results)
    except (OSError, ManifestError):
        return None


def done_message(manifest) -> str:
    """"done: N points" from what a runner returned (a manifest's JSON; or "done")."""
    pointcloud = manifest.get("pointcloud") if isinstance(manifest, dict) else None
    points = pointcloud.get("points") if isinstance(pointcloud, dict) else None
    return f"done: {points} points" if points is not None else "done"


def now_iso() -> str:
    """UTC time as ISO 8601 with microseconds, e.g. 2025-01-02T03:04:05.123456Z (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def overall_progress(stage: str, step: int, total: int, previous: float) -> float:
    """Whole-job progress in [0, 1] from a stage's step/total, never going backwards."""
    start = 0.0
    for name, share in STAGE_SHARES:
        if name == stage:
            frac = min(max(step / total, 0.0), 1.0) if total > 0 else 0.0
            return max(previous, min(1.0, start + share * frac))
        start += share
    return previous


class EnginePool:
    """Engines by (name, model choices), built once on first use from the server's Settings and
    then shared between jobs (thread-safe).

    settings: the settings.Settings every engine is built with (default Settings.from_env()).
    Only one engine per name is kept: a job asking for other models replaces it, so one GPU never
    holds two sets of diffusion weights. Engines hold no per-job state (engines/base.py): a job's
    hooks and seed are arguments of each engine call.
    """

    def __init__(self, settings: Optional[Settings] = None, **prebuilt):
        self.settings = resolve(settings)
        self._engines = {name: (None, engine) for name, engine in prebuilt.items()}
        self._lock = threading.Lock()

    def get(self, name: str, models: Optional[dict] = None):
        """The engine called name with these model overrides (None = the settings' models);
        raises engines.EngineUnavailable with the engine's own message."""
        key = tuple(sorted((models or {}).items())) or None
        with self._lock:
            held = self._engines.get(name)
            if held is None or (held[0] != key and key is not None):
                from zoomscape import engines  # heavy imports only when an engine is needed

                self._engines.pop(name, None)  # drop the old weights before loading new ones
                options = {"models": dict(models)} if models else {}
                self._engines[name] = (key, engines.get_engine(name, settings=self.settings, **options))
            return self._engines[name][1]

    def check(self, name: str, models: Optional[dict] = None) -> None:
        """Cheap check (files only, nothing loaded) that get(name, models) could build here with
        these settings; raises engines.EngineUnavailable naming what is missing."""
        from zoomscape import engines

        engines.check_engine(name, models=models or None, settings=self.settings)


def default_runner(pool: EnginePool) -> Runner:
    """Runner that calls pipeline.run_job with the request's engine (and models) taken from pool."""

    def run(request: dict, out_dir: Path, progress: Progress, should_cancel: Callable[[], bool]) -> dict:
        from zoomscape import pipeline
        from zoomscape.schema import validate_request

        job = validate_request(request)  # the stored request, as it was accepted
        models = {k: v for k, v in (job.models.model_dump() if job.models else {}).items() if v}
        return pipeline.run_job(job, out_dir, progress=progress, should_cancel=should_cancel,
                                engine=pool.get(job.engine, models or None),
                                settings=pool.settings).to_dict()

    def warm_up() -> None:
        """Import the pipeline (torch and the numerics: ~3 s) before the first job needs it."""
        import zoomscape.pipeline  # noqa: F401

    run.warm_up = warm_up
    return run


class JobStore:
    """Jobs on disk under data_dir/jobs, run one at a time by a worker thread.

    Statuses are dicts shaped like schema.JobStatus. All public methods are thread-safe.
    """

    def __init__(self, data_dir: Path, runner: Optional[Runner] = None, engines: Optional[EnginePool] = None):
        self.data_dir = Path(data_dir)
        self.jobs_dir = self.data_dir / "jobs"
        self.engines = engines or EnginePool()
        self.runner = runner or default_runner(self.engines)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._status: dict[str, dict] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._cancel: set[str] = set()
        self._running: Optional[str] = None
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._load()

    # ------------------------------------------------------------------ loading and saving
    def _job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    def _load(self) -> None:
        """Read every job folder: remove leftover temp files; queue the queued jobs again; a job that
        was running is done if its manifest is complete, else failed (interrupted)."""
        if not self.jobs_dir.is_dir():
            return
        for stale in self.jobs_dir.glob(".*.tmp"):  # a job folder whose creation never finished
            shutil.rmtree(stale, ignore_errors=True)
        queued = []
        for d in self.jobs_dir.iterdir():
            if not (JOB_ID.match(d.name) and d.is_dir() and not d.is_symlink()):
                continue
            for folder in (d, d / "results"):
                removed = remove_leftover_temps(folder)
                if removed:
                    log.info("removed leftover temp files in %s: %s", folder, ", ".join(removed))
            try:
                status = json.loads((d / "status.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("skipping job folder %s: unreadable status.json (%s)", d, exc)
                continue
            status.pop("queue_position", None)  # computed on read (older versions stored it)
            if status.get("state") == "running":
                manifest = complete_manifest(d / "results")
                if manifest is not None:  # stopped after the results were complete
                    status.update(state="done", stage="done", progress=1.0,
                                  message=done_message(manifest.to_dict()), error=None, updated=now_iso())
                else:
                    status.update(state="failed", error=INTERRUPTED, message=INTERRUPTED, updated=now_iso())
                write_json_atomic(d / "status.json", status)
            elif status.get("state") == "queued":
                queued.append(status)
            self._status[d.name] = status
        for status in sorted(queued, key=lambda s: s["created"]):
            self._queue.append(status["id"])

    def _save(self, job_id: str, **changes) -> dict:
        """Apply changes to a job's status and write status.json (call with the lock held)."""
        status = self._status[job_id]
        status.update(changes, updated=now_iso())
        write_json_atomic(self._job_dir(job_id) / "status.json", status)
        return status

    def _public(self, job_id: str) -> dict:
        status = dict(self._status[job_id])
        status["queue_position"] = (self._queue.index(job_id) + 1) if job_id in self._queue else 0
        return status

    # ------------------------------------------------------------------ public API
    def submit(self, request: dict) -> dict:
        """Store a validated request as a new queued job; returns its status."""
        job_id = uuid.uuid4().hex
        t = now_iso()
        status = {"id": job_id, "state": "queued", "stage": "queued", "step": 0, "total": 0,
                  "progress": 0.0, "message": "waiting for the worker", "error": None, "created": t, "updated": t}
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.jobs_dir / f".{job_id}.tmp"
        tmp.mkdir()
        try:
            (tmp / "results").mkdir()
            write_json_atomic(tmp / "request.json", request)
            with self._lock:
                write_json_atomic(tmp / "status.json", status)
                os.replace(tmp, self._job_dir(job_id))
                self._status[job_id] = status
                self._queue.append(job_id)
                self._wake.notify_all()
                return self._public(job_id)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def get(self, job_id: str) -> dict:
        with self._lock:
            if job_id not in self._status:
                raise JobNotFound(f"no job {job_id!r}")
            return self._public(job_id)

    def list(self) -> list[dict]:
        """All jobs, newest first."""
        with self._lock:
            jobs = [self._public(j) for j in self._status]
        return sorted(jobs, key=lambda s: s["created"], reverse=True)

    def request(self, job_id: str) -> dict:
        self.get(job_id)
        return json.loads((self._job_dir(job_id) / "request.json").read_text(encoding="utf-8"))

    def cancel(self, job_id: str) -> dict:
        """Cancel a job: queued → cancelled now; running → cancelled at its next progress step."""
        with self._lock:
            if job_id not in self._status:
                raise JobNotFound(f"no job {job_id!r}")
            state = self._status[job_id]["state"]
            if state in FINISHED:
                raise JobFinished(f"job {job_id!r} is already {state}; nothing to cancel")
            if state == "queued":
                self._queue.remove(job_id)
                self._save(job_id, state="cancelled", stage="cancelled", message="cancelled before it started")
                self._wake.notify_all()
            else:
                self._cancel.add(job_id)
                self._save(job_id, message="cancel requested: stopping at the next step")
            return self._public(job_id)

    def results_dir(self, job_id: str) -> Path:
        return self._job_dir(job_id) / "results"

    def _result_file(self, job_id: str, name: str) -> Optional[os.stat_result]:
        """lstat of results/<name> if it is a result file to serve: a plain name, a regular file (not a
        symlink), resolving inside the job's folder; else None."""
        if not FILE_NAME.match(name) or name.endswith(".tmp"):
            return None
        results = self.results_dir(job_id)
        path = results / name
        try:
            st = path.lstat()
            if results.is_symlink() or not stat.S_ISREG(st.st_mode):
                return None
            if not path.resolve(strict=True).is_relative_to(self._job_dir(job_id).resolve(strict=True)):
                return None
        except OSError:
            return None
        return st

    def files(self, job_id: str) -> list[dict]:
        """Result files of a done job as [{"name", "size"}] (empty until the job is done): regular
        files inside the job's folder only."""
        if self.get(job_id)["state"] != "done":
            return []
        try:
            names = sorted(os.listdir(self.results_dir(job_id)))
        except OSError:
            return []
        out = []
        for name in names:
            st = self._result_file(job_id, name)
            if st is not None:
                out.append({"name": name, "size": st.st_size})
        return out

    def file_path(self, job_id: str, name: str) -> Path:
        """Path of one result file; only plain names listed by files() (no paths, no traversal, no
        symlinks)."""
        if not FILE_NAME.match(name) or name not in {f["name"] for f in self.files(job_id)}:
            raise JobNotFound(f"no result file {name!r} for job {job_id!r}")
        return self.results_dir(job_id) / name

    # ------------------------------------------------------------------ the worker
    def start(self) -> None:
        """Start the worker thread (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._work, name="zoomscape-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker: a running job is interrupted at its next step and marked failed."""
        with self._lock:
            thread, self._stopping = self._thread, True
            self._wake.notify_all()
        if thread is not None:
            thread.join(timeout)
        with self._lock:
            self._thread = None

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until no job is queued or running (for tests and the CLI)."""
        with self._lock:
            return self._wake.wait_for(lambda: not self._queue and self._running is None, timeout)

    def _next(self) -> Optional[str]:
        with self._lock:
            self._wake.wait_for(lambda: self._queue or self._stopping)
            if self._stopping:
                return None
            job_id = self._queue.popleft()
            self._running = job_id
            self._save(job_id, state="running", stage="starting", message="starting")
            return job_id  # the others moved up one place: positions are computed on read

    def _work(self) -> None:
        warm_up = getattr(self.runner, "warm_up", None)
        if warm_up is not None:   # while the server waits for its first job
            try:
                warm_up()
            except Exception as exc:  # noqa: BLE001 - the first job reports it properly
                log.warning("warm-up failed: %s", exc)
        while True:
            job_id = self._next()
            if job_id is None:
                return
            try:
                self._run(job_id)
            finally:
                with self._lock:
                    self._running = None
                    self._cancel.discard(job_id)
                    self._wake.notify_all()

    def _run(self, job_id: str) -> None:
        def should_cancel() -> bool:
            return self._stopping or job_id in self._cancel

        def progress(stage: str, step: int, total: int, message: str = "") -> None:
            with self._lock:
                if self._stopping:
                    raise _Shutdown()
                if job_id in self._cancel:
                    raise JobCancelled(f"job {job_id} cancelled")
                prev = self._status[job_id]["progress"]
                self._save(job_id, stage=str(stage), step=int(step), total=int(total), message=str(message),
                           progress=overall_progress(stage, step, total, prev))

        try:
            request = self.request(job_id)
            manifest = self.runner(request, self.results_dir(job_id), progress, should_cancel)
        except Exception as exc:  # noqa: BLE001 - a failing job must never take the server down
            with self._lock:
                if isinstance(exc, _Shutdown) or self._stopping:
                    self._save(job_id, state="failed", stage="failed", error=INTERRUPTED, message=INTERRUPTED)
                elif job_id in self._cancel:
                    self._save(job_id, state="cancelled", stage="cancelled", message="cancelled while running")
                else:
                    error = f"{type(exc).__name__}: {exc}"
                    log.error("job %s failed: %s", job_id, error)
                    try:
                        write_text_atomic(self._job_dir(job_id) / "error.txt", traceback.format_exc())
                    except OSError:
                        pass
                    self._save(job_id, state="failed", stage="failed", error=error, message=error)
            return
        with self._lock:
            if job_id in self._cancel:
                self._save(job_id, state="cancelled", stage="cancelled", message="cancelled (results complete)")
                return
            self._save(job_id, state="done", stage="done", progress=1.0, message=done_message(manifest))
