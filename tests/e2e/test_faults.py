"""Fault and hostile-input tests against a real `zoomscape serve` process on loopback (issue 9, point 5):
kills after the results were complete, temp files of interrupted writes, the token checked before the
body is read, strict types, bodies that do not parse, capped echoes, planted symlinks, value ranges."""
import http.client
import json
import os
import socket
import time
import urllib.parse

import pytest

from tests.helpers import job_request
from tests.helpers.backend_process import backend_server, http_json, http_request, wait_for_job


def post_job(srv, body, token=None):
    """(status, JSON body, raw length) of POST /v1/jobs with body (a dict, or bytes as they are)."""
    status, raw, _ = http_request("POST", srv.url + "/v1/jobs", body, token=token,
                                  headers={"Content-Type": "application/json"})
    return status, json.loads(raw), len(raw)


def assert_names_field(status, body, field, words=""):
    assert status == 422, body
    assert body["error"].startswith(f"{field}: ") and words in body["error"], body["error"]
    assert any(d["field"] == field for d in body["detail"]), body["detail"]


# ------------------------------------------------------------------ restart after a kill


def _status_file(data, job_id):
    return data / "jobs" / job_id / "status.json"


def test_restart_after_a_kill_keeps_complete_results_and_removes_temp_files(tmp_path):
    data = tmp_path / "data"
    with backend_server(data, zeroconf=False) as srv:
        jobs = [http_json("POST", srv.url + "/v1/jobs", job_request(2, size=64, prompt=p))[1] for p in "AB"]
        for job in jobs:
            assert wait_for_job(srv.url, job["id"])[0]["state"] == "done"
        complete, cut = (job["id"] for job in jobs)
        files = {f["name"]: http_request("GET", f"{srv.url}/v1/jobs/{complete}/files/{f['name']}")[1]
                 for f in http_json("GET", f"{srv.url}/v1/jobs/{complete}/files")[1]["files"]}
        srv.process.kill()  # SIGKILL: no clean shutdown
        srv.process.wait(10)

    # What the disk holds when the kill comes after manifest.json was written but before status.json
    # said done: the job is still "running"; writes that were under way left their temp files.
    for job_id in (complete, cut):
        path = _status_file(data, job_id)
        status = json.loads(path.read_text())
        status.update(state="running", stage="write", progress=0.97, message="writing results")
        path.write_text(json.dumps(status))
    (data / "jobs" / cut / "results" / "manifest.json").write_text('{"format": "zoomscape-results", "ver')
    leftovers = [data / "jobs" / complete / "results" / ".pointcloud.ply.1a2b3c4d.tmp",
                 data / "jobs" / complete / "results" / "level_01.ply.tmp",
                 data / "jobs" / complete / ".status.json.0badcafe.tmp",
                 data / "jobs" / cut / "results" / ".manifest.json.deadbeef.tmp"]
    for p in leftovers:
        p.write_bytes(b"\0" * 4096)

    with backend_server(data, zeroconf=False) as srv:
        by_id = {j["id"]: j for j in http_json("GET", srv.url + "/v1/jobs")[1]["jobs"]}
        assert (by_id[complete]["state"], by_id[complete]["error"]) == ("done", None), by_id[complete]
        assert by_id[complete]["progress"] == 1.0 and by_id[complete]["message"].startswith("done")
        assert (by_id[cut]["state"], by_id[cut]["error"]) == ("failed", "interrupted: the server stopped while it ran")
        listing = http_json("GET", f"{srv.url}/v1/jobs/{complete}/files")[1]["files"]
        assert {f["name"] for f in listing} == set(files)
        for name, raw in files.items():
            assert http_request("GET", f"{srv.url}/v1/jobs/{complete}/files/{name}")[1] == raw
        assert http_json("GET", f"{srv.url}/v1/jobs/{cut}/files")[1] == {"files": []}
        assert [p.name for p in leftovers if p.exists()] == []
        assert json.loads(_status_file(data, complete).read_text())["state"] == "done"


# ------------------------------------------------------------------ --lan: the token before the body


def _send_unfinished(url, headers: dict, first: bytes, token=None, timeout=10.0) -> tuple[int, dict]:
    """Send a request's headers and the first bytes of its body, never the rest; the answer."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    conn.putrequest("POST", u.path)
    for key, value in {"Content-Type": "application/json", **headers}.items():
        conn.putheader(key, value)
    if token:
        conn.putheader("Authorization", f"Bearer {token}")
    conn.endheaders()
    conn.send(first)
    try:
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    except (socket.timeout, TimeoutError):
        return 0, {"error": f"no answer in {timeout:g} s: the server waited for the body"}
    finally:
        conn.close()


def test_lan_checks_the_token_before_reading_the_body(tmp_path):
    from zoomscape.schema import MAX_REQUEST_BYTES

    with backend_server(tmp_path / "data", lan=True, zeroconf=False) as srv:
        for raw in (b"{not json", b'{"seed": "7"}', b"[" * 100_000):
            for token in (None, "wrong"):
                status, body, _ = post_job(srv, raw, token=token)
                assert status == 401 and body["error"].startswith("authorization: "), (raw[:20], token, body)
                assert body["detail"] == []
        # a stranger declaring the largest body the server takes, or streaming one, is refused at once
        started = time.monotonic()
        for token in (None, "wrong"):
            for headers in ({"Content-Length": str(MAX_REQUEST_BYTES)}, {"Transfer-Encoding": "chunked"}):
                first = b"400\r\n" + b" " * 1024 + b"\r\n" if "Transfer-Encoding" in headers else b" " * 1024
                status, body = _send_unfinished(srv.url + "/v1/jobs", headers, first, token=token)
                assert status == 401, (headers, body)
        assert time.monotonic() - started < 10
        # with the token, the same bodies are read and reported
        status, body, _ = post_job(srv, b"{not json", token=srv.token)
        assert_names_field(status, body, "body", "not valid JSON")
        status, body, _ = post_job(srv, {**job_request(1), "seed": "7"}, token=srv.token)
        assert_names_field(status, body, "seed", "must be an integer")
        status, body = _send_unfinished(srv.url + "/v1/jobs", {"Content-Length": str(MAX_REQUEST_BYTES + 1)}, b"{",
                                        token=srv.token)
        assert status == 413 and body["error"].startswith("body: "), body
        assert http_json("GET", srv.url + "/v1/jobs", token=srv.token)[1] == {"jobs": []}


# ------------------------------------------------------------------ strict types, bodies, echoes, ranges


def _with(mutate):
    req = job_request(2, size=64)
    mutate(req)
    return req


@pytest.mark.parametrize("mutate, field, words", [
    (lambda r: r.update(seed="7"), "seed", "must be an integer (got a string '7')"),
    (lambda r: r.update(seed=True), "seed", "must be an integer (got a boolean true)"),
    (lambda r: r["cameras"][0].update(width="64"), "cameras[0].width", "must be an integer (got a string '64')"),
    (lambda r: r["cameras"][1].update(fx=True), "cameras[1].fx", "must be a number (got a boolean true)"),
    (lambda r: r["zoom"].update(factor="4"), "zoom.factor", "must be a number"),
], ids=["seed string", "seed true", "width string", "fx true", "factor string"])
def test_wrong_json_types_are_422_naming_the_field(idle, disk_snapshot, mutate, field, words):
    before = disk_snapshot(idle.data_dir)
    status, body, _ = post_job(idle, _with(mutate))
    assert_names_field(status, body, field, words)
    assert disk_snapshot(idle.data_dir) == before


def test_an_integer_focal_length_is_accepted(idle):
    req = _with(lambda r: r["cameras"][0].update(fx=711, fy=711))
    req["cameras"] = req["cameras"][:1]
    status, body, _ = post_job(idle, req)
    assert status == 201, body
    assert wait_for_job(idle.url, body["id"])[0]["state"] == "done"


@pytest.mark.parametrize("raw, words", [
    (b'{"seed": ' + b"9" * 5001 + b"}", "a number has too many digits"),
    (b'{"scene_prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (b'{"scene_prompt": "caf\xe9 au lait"}', "not valid UTF-8"),
    (b"\xff\xfe{}", "is not valid JSON"),
], ids=["5001 digits", "100000 deep", "invalid UTF-8", "UTF-16 BOM"])
def test_bodies_that_do_not_parse_are_422_on_the_body(idle, disk_snapshot, raw, words):
    before = disk_snapshot(idle.data_dir)
    status, body, size = post_job(idle, raw)
    assert_names_field(status, body, "body", words)
    assert size < 1000
    assert disk_snapshot(idle.data_dir) == before


def test_rejected_values_are_echoed_cut_short(idle):
    big = "e" * 10_000_000
    status, body, size = post_job(idle, {**job_request(1), "engine": big, "scene_prompt": "p" * 5000,
                                         **{f"unknown_{i}": i for i in range(5000)}})
    assert_names_field(status, body, "engine", "…")
    assert size < 20_000, size
    assert any(d["field"] == "scene_prompt" and "(got 5000)" in d["message"] for d in body["detail"])
    assert body["detail"][-1]["message"].endswith("more problems")


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["cameras"][0].update(fx=1e308), "cameras[0].fx"),
    (lambda r: r["cameras"][0].update(fy=5e-324), "cameras[0].fy"),
    (lambda r: r["cameras"][1].update(cx=1e308), "cameras[1].cx"),
    (lambda r: r["cameras"][1].update(cy=-1e308), "cameras[1].cy"),
    (lambda r: r["cameras"][0]["matrix_world"][1].__setitem__(3, 1e300), "cameras[0].matrix_world[1][3]"),
    (lambda r: r["zoom"].update(anchor=[1e308, 0.0, 0.0]), "zoom.anchor[0]"),
], ids=["fx 1e308", "fy 5e-324", "cx 1e308", "cy -1e308", "translation 1e300", "anchor 1e308"])
def test_values_the_pipeline_cannot_run_are_422_naming_the_field(idle, disk_snapshot, mutate, field):
    before = disk_snapshot(idle.data_dir)
    status, body, _ = post_job(idle, _with(mutate))
    assert_names_field(status, body, field, "must be")
    assert disk_snapshot(idle.data_dir) == before


# ------------------------------------------------------------------ symlinks in results


def test_planted_symlinks_in_results_are_not_listed_or_served(idle, tmp_path):
    srv = idle
    job = http_json("POST", srv.url + "/v1/jobs", job_request(1, size=64))[1]
    assert wait_for_job(srv.url, job["id"])[0]["state"] == "done"
    files_url = f"{srv.url}/v1/jobs/{job['id']}/files"
    listed = {f["name"] for f in http_json("GET", files_url)[1]["files"]}
    results = srv.data_dir / "jobs" / job["id"] / "results"
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    planted = {"passwd.txt": "/etc/passwd", "secret.json": str(secret),
               "request.json": str(results.parent / "request.json"), "loop.ply": str(results / "loop.ply")}
    for name, target in planted.items():
        os.symlink(target, results / name)
    assert {f["name"] for f in http_json("GET", files_url)[1]["files"]} == listed
    for name in planted:
        status, raw, _ = http_request("GET", f"{files_url}/{name}")
        assert status == 404, (name, raw[:100])
        assert b"root:" not in raw and b"top secret" not in raw and b"scene_prompt" not in raw
        assert json.loads(raw)["error"].startswith("name: ")
