"""HTTP client for the backend (stdlib urllib) and the background thread that follows one job.

Nothing here touches bpy: the job thread puts messages on a ``queue.Queue`` that the main
thread drains (runner.py). Messages are ``(kind, payload)`` tuples:
  ("status", JobStatus dict)   after submit and every poll
  ("downloaded", {"dir", "files"})   the results are on disk
  ("error", message)           the job failed, was cancelled or the backend could not be reached
"""
from __future__ import annotations

import json
import os
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from .wire.atomic import atomic_open
from .wire.names import API_PATH

POLL_SECONDS = 0.5


class ClientError(RuntimeError):
    """A request to the backend failed; str() says what happened and what to do."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def base_url(host: str, port: int) -> str:
    """http://host:port (IPv6 literals bracketed)."""
    host = host.strip()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{int(port)}"


class Client:
    """A thin client of the v1 API at ``url`` (e.g. http://127.0.0.1:8765)."""

    def __init__(self, url: str, token: str = "", timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _open(self, method: str, path: str, body=None, timeout: float | None = None):
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url + API_PATH + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            raise ClientError(self._http_message(e), e.code) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ClientError(f"cannot reach the Zoomscape backend at {self.url} ({reason}); "
                              "start it with 'zoomscape serve' or press Discover") from None

    def _http_message(self, e) -> str:
        try:
            payload = json.loads(e.read().decode("utf-8"))
            detail = payload.get("error") or payload.get("detail")
        except Exception:
            detail = None
        detail = detail or e.reason
        if e.code == 401:
            return f"backend refused the token ({detail}); paste the token 'zoomscape serve --lan' printed"
        if e.code == 422:
            return f"backend rejected the request: {detail}"
        return f"backend error {e.code}: {detail}"

    def json(self, method: str, path: str, body=None, timeout: float | None = None):
        with self._open(method, path, body, timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def health(self, timeout: float = 3.0) -> dict:
        return self.json("GET", "/health", timeout=timeout)

    def submit(self, request: dict) -> dict:
        # An init_rgbd render can be tens of MB: allow ~1 MB/s on top of the usual timeout.
        body = json.dumps(request).encode("utf-8")
        return self.json("POST", "/jobs", body, timeout=self.timeout + len(body) / 1e6)

    def status(self, job_id: str) -> dict:
        return self.json("GET", f"/jobs/{urllib.parse.quote(job_id)}")

    def cancel(self, job_id: str) -> dict:
        return self.json("POST", f"/jobs/{urllib.parse.quote(job_id)}/cancel")

    def files(self, job_id: str) -> list:
        return self.json("GET", f"/jobs/{urllib.parse.quote(job_id)}/files")["files"]

    def download(self, job_id: str, name: str, path: str) -> None:
        """Stream one result file to path atomically (wire.atomic: a temp file beside it, renamed
        when complete, removed on error)."""
        with self._open("GET", f"/jobs/{urllib.parse.quote(job_id)}/files/{urllib.parse.quote(name)}",
                        timeout=60.0) as resp, atomic_open(path) as f:
            while chunk := resp.read(1 << 20):
                f.write(chunk)


def download_results(client: Client, job_id: str, out_dir: str) -> list:
    """Download every result file of a done job into out_dir → the list of file names."""
    os.makedirs(out_dir, exist_ok=True)
    names = []
    for entry in client.files(job_id):
        name = os.path.basename(entry["name"])
        client.download(job_id, entry["name"], os.path.join(out_dir, name))
        names.append(name)
    return names


class JobThread(threading.Thread):
    """Submit a request (or follow an existing job), poll it, download the results.

    Results go to ``self.queue`` only; ``cancel()`` asks the backend to stop the job.
    """

    def __init__(self, client: Client, out_dir_for, request: dict | None = None,
                 job_id: str | None = None, poll: float = POLL_SECONDS):
        super().__init__(daemon=True, name="zoomscape-job")
        self.client, self.request, self.job_id = client, request, job_id
        self.out_dir_for = out_dir_for  # job_id → directory (computed on the main thread)
        self.poll = poll
        self.queue: queue.Queue = queue.Queue()
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def run(self) -> None:
        try:
            self._follow()
        except ClientError as e:
            self.queue.put(("error", str(e)))
        except Exception as e:  # never let the thread die silently
            self.queue.put(("error", f"unexpected error in the job thread: {e!r}"))

    def _follow(self) -> None:
        if self.job_id is None:
            st = self.client.submit(self.request)
            self.job_id = st["id"]
            self.queue.put(("status", st))
        cancel_sent = False
        while True:
            if self._cancel.is_set() and not cancel_sent:
                cancel_sent = True
                try:
                    self.queue.put(("status", self.client.cancel(self.job_id)))
                except ClientError as e:
                    if e.status != 409:  # 409: already finished
                        raise
            st = self.client.status(self.job_id)
            self.queue.put(("status", st))
            state = st.get("state")
            if state == "done":
                out_dir = self.out_dir_for(self.job_id)
                names = download_results(self.client, self.job_id, out_dir)
                self.queue.put(("downloaded", {"dir": out_dir, "files": names}))
                return
            if state == "failed":
                self.queue.put(("error", f"job {self.job_id} failed: {st.get('error') or st.get('message')}"))
                return
            if state == "cancelled":
                self.queue.put(("error", f"job {self.job_id} was cancelled"))
                return
            time.sleep(self.poll)
