"""Start the real backend (`python -m zoomscape.cli serve`) as a separate process, and talk to it.

Standard library only: Blender's Python imports this too (add the repo root to sys.path), while the
backend itself runs in its own environment (backend_python()).

    with backend_server(tmp_path / "data") as srv:
        status, body = http_json("GET", srv.url + "/v1/health")
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
# a backend process is up in a few seconds; a first import of torch + diffusers + transformers from
# a fresh venv (no bytecode yet) on a loaded 2-core machine once took longer than 30 s
STARTUP_TIMEOUT = 90.0


def backend_python() -> str:
    """The backend's interpreter: $ZOOMSCAPE_BACKEND_PYTHON or <repo>/.venv/backend/bin/python."""
    env = os.environ.get("ZOOMSCAPE_BACKEND_PYTHON")
    if env:
        return env
    unix = REPO / ".venv" / "backend" / "bin" / "python"
    windows = REPO / ".venv" / "backend" / "Scripts" / "python.exe"
    return str(windows if os.name == "nt" and windows.exists() else unix)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_request(method: str, url: str, body=None, token: Optional[str] = None,
                 headers: Optional[dict] = None, timeout: float = 30.0) -> tuple[int, bytes, dict]:
    """(status, raw bytes, headers) of one HTTP request; HTTP errors are returned, not raised.

    body: None, bytes/str (sent as is) or anything else (sent as JSON; NaN/Infinity allowed so tests
    can send them).
    """
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        if isinstance(body, (bytes, str)):
            data = body.encode() if isinstance(body, str) else body
        else:
            data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read(), dict(err.headers)


def http_json(method: str, url: str, body=None, token: Optional[str] = None,
              timeout: float = 30.0) -> tuple[int, object]:
    """(status, decoded JSON body or None) of one HTTP request."""
    status, raw, _ = http_request(method, url, body, token, timeout=timeout)
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, {"raw": raw.decode("utf-8", "replace")}


@dataclass
class BackendServer:
    """A running backend process."""

    url: str
    port: int
    token: Optional[str]
    process: subprocess.Popen
    data_dir: Path
    log_dir: Path
    args: list = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return _read(self.log_dir / "stdout.txt")

    @property
    def stderr(self) -> str:
        return _read(self.log_dir / "stderr.txt")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _stop(process: subprocess.Popen, timeout: float = 15.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM if os.name != "nt" else signal.CTRL_BREAK_EVENT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@contextmanager
def backend_server(data_dir, *, lan: bool = False, token: Optional[str] = None, engine: str = "procedural",
                   zeroconf: bool = True, extra_args=(), port: Optional[int] = None,
                   env: Optional[dict] = None):
    """Run `zoomscape serve` in a subprocess on a free port until the with-block ends.

    Yields a BackendServer (.url "http://127.0.0.1:PORT", .port, .token, .process, .data_dir). Waits
    for /v1/health (about 30 s at most; the process's stderr is in the error if it dies). With lan=True
    and no token, the token the server generates is read from its output. Stops with SIGTERM, then kill.
    """
    data_dir = Path(data_dir)
    port = port or free_port()
    args = [backend_python(), "-m", "zoomscape.cli", "serve", "--port", str(port), "--data-dir", str(data_dir),
            "--engine", engine]
    if lan:
        args.append("--lan")
    if token is not None:
        args += ["--token", token]
    if not zeroconf:
        args.append("--no-zeroconf")
    args += [str(a) for a in extra_args]
    log_dir = Path(tempfile.mkdtemp(prefix="zoomscape-server-log-"))
    penv = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    with open(log_dir / "stdout.txt", "wb") as out, open(log_dir / "stderr.txt", "wb") as err:
        process = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=penv,
                                   cwd=str(log_dir))  # a clean cwd: `-m` puts it first on sys.path
    url = f"http://127.0.0.1:{port}"
    server = BackendServer(url, port, token, process, data_dir, log_dir, args)
    try:
        _wait_healthy(server)
        if server.token is None and lan:
            match = re.search(r"^token: (\S+)$", server.stdout, re.MULTILINE)
            if not match:
                raise RuntimeError(f"backend started with --lan but printed no token:\n{server.stdout}")
            server.token = match.group(1)
        yield server
    finally:
        _stop(process)
        shutil.rmtree(log_dir, ignore_errors=True)


def _wait_healthy(server: BackendServer, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"backend exited with code {server.process.returncode} before it was healthy\n"
                               f"command: {' '.join(server.args)}\nstdout:\n{server.stdout}\nstderr:\n{server.stderr}")
        try:
            status, body = http_json("GET", server.url + "/v1/health", timeout=2.0)
            if status == 200:
                return
            last = f"HTTP {status}: {body}"
        except (OSError, urllib.error.URLError) as exc:
            last = repr(exc)
        time.sleep(0.2)
    _stop(server.process)
    raise RuntimeError(f"backend not healthy after {timeout:g} s (last: {last})\nstdout:\n{server.stdout}\n"
                       f"stderr:\n{server.stderr}")


def wait_for_job(url: str, job_id: str, token: Optional[str] = None, timeout: float = 120.0,
                 states=("done", "failed", "cancelled"), poll: float = 0.1) -> tuple[dict, list[dict]]:
    """Poll a job until its state is one of states; returns (final status, every status seen)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = http_json("GET", f"{url}/v1/jobs/{job_id}", token=token)
        if status != 200:
            raise RuntimeError(f"GET job {job_id}: HTTP {status}: {body}")
        seen.append(body)
        if body["state"] in states:
            return body, seen
        time.sleep(poll)
    raise TimeoutError(f"job {job_id} still {seen[-1]['state'] if seen else '?'} after {timeout:g} s: {seen[-1:]}")
