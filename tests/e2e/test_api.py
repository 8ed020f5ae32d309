"""The /v1 API against a real `zoomscape serve` process on loopback, as the Blender extension sees it."""
import io
import json
import math
import uuid

import numpy as np
import pytest
from plyfile import PlyData

from tests.helpers import BAD_REQUESTS, bad_request, job_request, user_views
from tests.helpers.backend_process import backend_server, http_json, http_request, wait_for_job
from zoomscape.zoom import painted_levels

PLY_PROPERTIES = ["x", "y", "z", "red", "green", "blue", "radius"]


def submit(srv, request, token=None):
    status, body = http_json("POST", srv.url + "/v1/jobs", request, token=token or srv.token)
    assert status == 201, body
    return body


def wait_running(srv, job_id):
    final, seen = wait_for_job(srv.url, job_id, token=srv.token, states=("running", "done", "failed", "cancelled"),
                               poll=0.01)
    assert final["state"] == "running", f"job was {final['state']} before the test could see it running"
    return final


def long_request():
    """A job that takes a while on the procedural engine (many views), for queue and cancel tests."""
    return job_request(20, size=128, step=0.3, prompt="a long job")


def test_health_needs_no_token_and_describes_the_backend(server):
    status, body = http_json("GET", server.url + "/v1/health")
    assert status == 200
    assert body["status"] == "ok" and body["engine"] == "procedural"
    assert {"procedural", "diffusers"} <= set(body["engines"])
    assert body["device"] and isinstance(body["models"], list)
    assert body["auth_required"] is False
    assert body["level_refine_seconds"] == 0.0 and body["world_refine_seconds"] == 0.0   # CPU: off
    import zoomscape
    assert body["version"] == zoomscape.__version__


def test_job_runs_queued_running_done_and_results_download(idle):
    srv = idle
    req = job_request(3, size=96)
    created = submit(srv, req)
    assert created["state"] == "queued" and created["progress"] == 0.0
    final, seen = wait_for_job(srv.url, created["id"], poll=0.01, timeout=180)
    assert final["state"] == "done", final
    states = [s["state"] for s in [created] + seen]
    assert states == sorted(states, key=["queued", "running", "done"].index), states
    assert "running" in states, "never saw the job running"
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0 and 0.0 <= progress[0] < 1.0
    # per view: the user's 3, a DOLLY zoom's dive views and the default extra views the dream
    # plans (total N + dive + M)
    from zoomscape.pipeline import DIVE_VIEWS
    from zoomscape.schema import DEFAULT_EXTRA_VIEWS
    dive = len(DIVE_VIEWS) if req["zoom"].get("mode", "dolly") == "dolly" else 0
    assert any(s["stage"] == "dream" and s["total"] == 3 + dive + DEFAULT_EXTRA_VIEWS
               for s in seen), \
        "no per-view dream progress seen"

    status, listing = http_json("GET", f"{srv.url}/v1/jobs/{created['id']}/files")
    assert status == 200
    files = {f["name"]: f["size"] for f in listing["files"]}
    assert {"pointcloud.ply", "manifest.json"} <= set(files)
    blobs = {}
    for name, size in files.items():
        status, raw, _ = http_request("GET", f"{srv.url}/v1/jobs/{created['id']}/files/{name}")
        assert status == 200 and len(raw) == size
        blobs[name] = raw

    manifest = json.loads(blobs["manifest.json"])
    ply = PlyData.read(io.BytesIO(blobs["pointcloud.ply"]))
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == PLY_PROPERTIES
    assert ply.text is False and ply.byte_order == "<"
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
    assert len(xyz) == manifest["pointcloud"]["points"] > 1000
    assert np.isfinite(xyz).all() and (vertex["radius"] > 0).all()

    assert (manifest["format"], manifest["version"]) == ("zoomscape-results", 1)
    assert manifest["job_id"] == created["id"]
    assert (manifest["engine"], manifest["seed"], manifest["scene_prompt"]) == ("procedural", 7, req["scene_prompt"])
    assert manifest["pointcloud"]["file"] == "pointcloud.ply"
    user_views(manifest, req)
    assert len(manifest["views"]) > len(req["cameras"])  # extra views are on by default
    assert sum(v["new_points"] for v in manifest["views"]) == manifest["pointcloud"]["points"]
    zoom, cam0 = manifest["zoom"], req["cameras"][0]
    # the levels as painted: the request's p = 4 in steps of 2 (zoom.painted_levels)
    painted = painted_levels([lv["prompt"] for lv in req["zoom"]["levels"]], req["zoom"]["factor"])
    assert zoom["camera"] == cam0["name"] and (zoom["factor"], zoom["substeps"]) == (2.0, 2) == (painted.factor, painted.substeps)
    assert zoom["levels"] == [{"prompt": p} for p in painted.prompts] and len(manifest["levels"]) == len(painted)
    np.testing.assert_allclose(zoom["matrix_world"], cam0["matrix_world"], atol=1e-9)
    assert (zoom["width"], zoom["height"]) == (cam0["width"], cam0["height"])
    assert zoom["anchor_source"] == "surface" and all(math.isfinite(a) for a in zoom["anchor"])


def test_second_job_queues_and_both_can_be_cancelled(idle):
    srv = idle
    first = submit(srv, long_request())
    wait_running(srv, first["id"])
    second = submit(srv, job_request(3, prompt="waits its turn"))
    assert second["state"] == "queued" and second["queue_position"] == 1
    status, body = http_json("GET", f"{srv.url}/v1/jobs/{second['id']}")
    assert (status, body["queue_position"]) == (200, 1)
    status, body = http_json("GET", f"{srv.url}/v1/jobs")
    assert [j["id"] for j in body["jobs"][:2]] == [second["id"], first["id"]]  # newest first

    status, body = http_json("POST", f"{srv.url}/v1/jobs/{second['id']}/cancel")
    assert status == 200 and body["state"] == "cancelled"  # queued: at once

    status, body = http_json("POST", f"{srv.url}/v1/jobs/{first['id']}/cancel")
    assert status == 200 and body["state"] in ("running", "cancelled")
    final, _ = wait_for_job(srv.url, first["id"], timeout=60)
    assert final["state"] == "cancelled", final
    assert final["progress"] < 1.0
    assert not (srv.data_dir / "jobs" / first["id"] / "results" / "manifest.json").exists()
    assert http_json("GET", f"{srv.url}/v1/jobs/{first['id']}/files")[1] == {"files": []}

    status, body = http_json("POST", f"{srv.url}/v1/jobs/{first['id']}/cancel")
    assert status == 409 and body["error"].startswith("job_id: ") and "cancelled" in body["error"]


@pytest.mark.parametrize("label, mutate, field, words", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_every_bad_request_is_422_naming_the_field_and_touches_nothing(idle, disk_snapshot, label, mutate, field,
                                                                       words):
    before = disk_snapshot(idle.data_dir)
    status, body = http_json("POST", idle.url + "/v1/jobs", bad_request(mutate))
    assert status == 422, body
    assert body["error"].startswith(f"{field}: ") and words in body["error"], body["error"]
    assert any(d["field"] == field for d in body["detail"])
    assert disk_snapshot(idle.data_dir) == before


@pytest.mark.parametrize("raw, words", [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"),
                                        (b"", "required"), ("\"text\"", "JSON object")])
def test_malformed_bodies_are_422(idle, disk_snapshot, raw, words):
    before = disk_snapshot(idle.data_dir)
    status, raw_body, _ = http_request("POST", idle.url + "/v1/jobs", raw, headers={"Content-Type": "application/json"})
    body = json.loads(raw_body)
    assert status == 422 and body["error"].startswith("body: ") and words in body["error"], body
    assert disk_snapshot(idle.data_dir) == before


def _post_streamed(url: str, chunks, length=None) -> tuple[int, dict]:
    """POST chunks to url with http.client (Content-Length if given, else chunked) → (status, JSON).

    The server may answer before it has read everything: a broken pipe while sending is fine."""
    import http.client
    import urllib.parse

    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.putrequest("POST", u.path)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length" if length is not None else "Transfer-Encoding",
                   str(length) if length is not None else "chunked")
    conn.endheaders()
    try:
        for chunk in chunks:
            conn.send(chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if length is None:
            conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    resp = conn.getresponse()
    try:
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_oversized_bodies_are_413_naming_the_limit(idle, disk_snapshot, declared):
    from zoomscape.schema import MAX_REQUEST_BYTES

    before = disk_snapshot(idle.data_dir)
    chunk = b" " * (1 << 20)
    n = MAX_REQUEST_BYTES // len(chunk) + 2
    status, body = _post_streamed(idle.url + "/v1/jobs", (chunk for _ in range(n)),
                                  length=n * len(chunk) if declared else None)
    assert status == 413, body
    assert body["error"].startswith("body: ") and f"{MAX_REQUEST_BYTES / 2 ** 20:g} MiB" in body["error"]
    assert disk_snapshot(idle.data_dir) == before
    assert http_json("GET", idle.url + "/v1/health")[0] == 200


def test_unknown_jobs_and_files_are_404(idle, disk_snapshot):
    srv = idle
    done = submit(srv, job_request(3, size=64))
    assert wait_for_job(srv.url, done["id"])[0]["state"] == "done"
    before = disk_snapshot(srv.data_dir)
    ghost = uuid.uuid4().hex
    for method, path in [("GET", f"/v1/jobs/{ghost}"), ("POST", f"/v1/jobs/{ghost}/cancel"),
                         ("GET", f"/v1/jobs/{ghost}/files"), ("GET", f"/v1/jobs/{ghost}/files/manifest.json"),
                         ("GET", "/v1/jobs/..%2F..%2Fetc"), ("GET", "/v1/nothing-here")]:
        status, body = http_json(method, srv.url + path)
        assert status == 404 and body["error"], (path, body)
    assert "job_id" in http_json("GET", f"{srv.url}/v1/jobs/{ghost}")[1]["error"]
    job = f"{srv.url}/v1/jobs/{done['id']}/files"
    for name in ["nope.ply", "request.json", "status.json", "..%2Frequest.json", "%2E%2E%2Fstatus.json",
                 "..%2F..%2F..%2Fjobs", ".."]:
        status, raw, _ = http_request("GET", f"{job}/{name}")
        assert status == 404, (name, raw[:200])
        assert b'"scene_prompt"' not in raw and b'"state"' not in raw
    assert disk_snapshot(srv.data_dir) == before


def test_lan_mode_requires_the_token(tmp_path, disk_snapshot):
    with backend_server(tmp_path / "data", lan=True, zeroconf=False) as srv:
        assert srv.token and len(srv.token) >= 20  # generated and printed by the server
        status, body = http_json("GET", srv.url + "/v1/health")
        assert status == 200 and body["auth_required"] is True
        before = disk_snapshot(srv.data_dir)
        for token in (None, "wrong-" + srv.token, ""):
            for method, path, payload in [("GET", "/v1/jobs", None), ("POST", "/v1/jobs", job_request(3)),
                                          ("GET", f"/v1/jobs/{uuid.uuid4().hex}", None)]:
                status, raw, headers = http_request(method, srv.url + path, payload, token=token)
                body = json.loads(raw)
                assert status == 401, (token, path, body)
                assert body["error"].startswith("authorization: ")
        status, raw, _ = http_request("GET", srv.url + "/v1/jobs", headers={"Authorization": srv.token})
        assert status == 401  # the token without "Bearer"
        assert disk_snapshot(srv.data_dir) == before
        status, body = http_json("GET", srv.url + "/v1/jobs", token=srv.token)
        assert status == 200 and body == {"jobs": []}
        created = submit(srv, job_request(3, size=64), token=srv.token)
        assert wait_for_job(srv.url, created["id"], token=srv.token)[0]["state"] == "done"
        assert "listening on all interfaces" in srv.stdout


def test_restart_keeps_finished_jobs_and_fails_interrupted_ones(tmp_path):
    data = tmp_path / "data"
    with backend_server(data, zeroconf=False) as srv:
        done = submit(srv, job_request(3, size=64))
        assert wait_for_job(srv.url, done["id"])[0]["state"] == "done"
        files = {f["name"]: http_request("GET", f"{srv.url}/v1/jobs/{done['id']}/files/{f['name']}")[1]
                 for f in http_json("GET", f"{srv.url}/v1/jobs/{done['id']}/files")[1]["files"]}
        running = submit(srv, long_request())
        wait_running(srv, running["id"])
        queued = submit(srv, job_request(3, size=64, prompt="queued across a restart"))
        process = srv.process
    assert process.returncode == 0, "SIGTERM should shut the server down cleanly"

    with backend_server(data, zeroconf=False) as srv:
        status, body = http_json("GET", srv.url + "/v1/jobs")
        by_id = {j["id"]: j for j in body["jobs"]}
        assert by_id[done["id"]]["state"] == "done"
        assert by_id[running["id"]]["state"] == "failed"
        assert by_id[running["id"]]["error"] == "interrupted: the server stopped while it ran"
        listing = http_json("GET", f"{srv.url}/v1/jobs/{done['id']}/files")[1]["files"]
        assert {f["name"] for f in listing} == set(files)
        for name, raw in files.items():
            assert http_request("GET", f"{srv.url}/v1/jobs/{done['id']}/files/{name}")[1] == raw
        assert wait_for_job(srv.url, queued["id"])[0]["state"] == "done"  # re-queued and run
