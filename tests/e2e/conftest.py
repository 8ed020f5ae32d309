"""End-to-end fixtures: a real `zoomscape serve` process on loopback, shared by the tests of a module."""
import hashlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.helpers.backend_process import backend_server, http_json, wait_for_job  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A backend with zeroconf on, token-free, its own data dir; one per test module."""
    with backend_server(tmp_path_factory.mktemp("data")) as srv:
        yield srv


@pytest.fixture
def idle(server):
    """Wait until the shared server has no queued or running job (cancels leftovers first)."""
    def settle():
        status, body = http_json("GET", server.url + "/v1/jobs", token=server.token)
        assert status == 200, body
        for job in body["jobs"]:
            if job["state"] in ("queued", "running"):
                http_json("POST", f"{server.url}/v1/jobs/{job['id']}/cancel", token=server.token)
                wait_for_job(server.url, job["id"], token=server.token)
    settle()
    yield server
    settle()


def snapshot(root: Path) -> dict:
    """{relative path: (sha1 of contents or "<dir>", mtime_ns)} of everything under root."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = str(p.relative_to(root))
        digest = "<dir>" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
        out[rel] = (digest, p.stat().st_mtime_ns)
    return out


@pytest.fixture
def disk_snapshot():
    """snapshot(root) as a fixture, to compare a data dir before and after a request."""
    return snapshot
