"""A full multi-camera job through the diffusers engine (tiny random-weight models) in a real
`zoomscape serve` process over loopback; and a server without weights refusing clearly."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

pytest.importorskip("diffusers")
plyfile = pytest.importorskip("plyfile")

from tests.helpers import job_request, user_views  # noqa: E402
from tests.helpers.backend_process import (backend_python, backend_server, free_port,  # noqa: E402
                                           http_json, http_request, wait_for_job)
from tests.helpers.tiny_models import model_env  # noqa: E402
from zoomscape.zoom import painted_levels  # noqa: E402

STEPS = 2


@pytest.fixture(scope="module")
def tiny_env(tmp_path_factory):
    """Environment pointing the engine at tiny models; one torch thread (a shared 2-core machine)."""
    root = tmp_path_factory.getbasetemp() / "tiny-models"
    return {**model_env(root), "ZOOMSCAPE_STEPS": str(STEPS), "OMP_NUM_THREADS": "1"}


def run_job(srv, request) -> tuple[dict, list, bytes, dict]:
    status, body = http_json("POST", srv.url + "/v1/jobs", request)
    assert status == 201, body
    final, seen = wait_for_job(srv.url, body["id"], timeout=180)
    assert final["state"] == "done", final
    _, ply, _ = http_request("GET", f"{srv.url}/v1/jobs/{body['id']}/files/pointcloud.ply")
    _, manifest = http_json("GET", f"{srv.url}/v1/jobs/{body['id']}/files/manifest.json")
    final["id"] = body["id"]
    return final, seen, ply, manifest


def test_three_translating_cameras_end_to_end(tmp_path, tiny_env):
    request = job_request(3, size=64, step=0.5, seed=7)
    request["engine"] = "diffusers"
    with backend_server(tmp_path / "data", engine="diffusers", zeroconf=False, env=tiny_env) as srv:
        status, health = http_json("GET", srv.url + "/v1/health")
        assert status == 200 and health["engine"] == "diffusers" and health["device"] == "cpu"
        by_role = {m["role"]: m for m in health["models"]}
        assert {r: by_role[r]["name"] for r in ("text2img", "inpaint", "depth")} == {
            "text2img": tiny_env["ZOOMSCAPE_TEXT2IMG_MODEL"], "inpaint": tiny_env["ZOOMSCAPE_INPAINT_MODEL"],
            "depth": tiny_env["ZOOMSCAPE_DEPTH_MODEL"]}

        final, seen, ply, manifest = run_job(srv, request)
        # (Which stages a poll catches depends on timing; per-step progress is tested in tests/backend.)
        progress = [s["progress"] for s in seen]
        assert progress == sorted(progress) and final["progress"] == 1.0
        assert manifest["engine"] == "diffusers" and manifest["seed"] == 7
        user_views(manifest, request)
        assert manifest["views"][0]["new_points"] > 0
        (tmp_path / "a.ply").write_bytes(ply)
        vertex = plyfile.PlyData.read(str(tmp_path / "a.ply"))["vertex"]
        assert len(vertex) == manifest["pointcloud"]["points"] >= 64 * 64 * 0.5
        xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
        assert np.isfinite(xyz).all()
        rgb = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1)
        assert rgb.std() > 1.0  # painted colours, not a constant

        # The zoom stack was jointly sampled and lifted: a PNG + 3DGS PLY per level, and consistent
        # levels (level i−1's centre 1/p, averaged down, equals level i averaged down). (The stages'
        # progress is checked in tests/backend; polling here may miss a stage that takes 0.1 s.)
        levels = manifest["levels"]
        painted = painted_levels([lv["prompt"] for lv in request["zoom"]["levels"]], request["zoom"]["factor"])
        assert [lv["prompt"] for lv in levels] == painted.prompts            # the levels as painted
        assert manifest["zoom"]["factor"] == pytest.approx(painted.factor)
        from PIL import Image
        import io
        images = []
        for lv in levels:
            status, png, _ = http_request("GET", f"{srv.url}/v1/jobs/{final['id']}/files/{lv['image']}")
            assert status == 200
            images.append(np.asarray(Image.open(io.BytesIO(png)), dtype=np.float64) / 255.0)
            status, gs, _ = http_request("GET", f"{srv.url}/v1/jobs/{final['id']}/files/{lv['gaussians']}")
            (tmp_path / "g.ply").write_bytes(gs)
            assert status == 200 and len(plyfile.PlyData.read(str(tmp_path / "g.ply"))["vertex"]) == lv["count"]
        p = int(round(painted.factor))
        assert p == painted.factor     # an integer step: the crop below is exact
        for coarse, fine in zip(images, images[1:]):
            H, W = coarse.shape[:2]
            crop = coarse[H // 2 - H // (2 * p):H // 2 + H // (2 * p), W // 2 - W // (2 * p):W // 2 + W // (2 * p)]
            a = crop.reshape(crop.shape[0] // 4, 4, crop.shape[1] // 4, 4, 3).mean(axis=(1, 3))
            b = fine.reshape(a.shape[0], fine.shape[0] // a.shape[0], a.shape[1], fine.shape[1] // a.shape[1], 3).mean(axis=(1, 3))
            assert np.abs(a - b).mean() < 2.0 / 255.0, np.abs(a - b).mean()

        _, _, again, _ = run_job(srv, request)
        assert again == ply  # same seed, same models → the same cloud, byte for byte
        _, _, other, _ = run_job(srv, {**request, "seed": 8})
        assert other != ply


def test_models_and_steps_given_as_flags_reach_submit_and_the_engine(tmp_path, tiny_env):
    """The server is configured by flags alone (no ZOOMSCAPE_* variables, which it never writes):
    /v1/health shows the flag's models, and a diffusers job on a procedural server passes the
    submit check with them (the Settings the server built, not the environment) and runs."""
    models = {role: tiny_env[f"ZOOMSCAPE_{role.upper()}_MODEL"] for role in ("text2img", "inpaint", "depth")}
    bare = {var: "" for var in ("ZOOMSCAPE_TEXT2IMG_MODEL", "ZOOMSCAPE_INPAINT_MODEL", "ZOOMSCAPE_DEPTH_MODEL",
                                "ZOOMSCAPE_MODEL_DIR", "ZOOMSCAPE_STEPS", "ZOOMSCAPE_DEVICE")}  # blank = unset
    flags = ["--steps", str(STEPS), "--device", "cpu"] + [
        a for role, path in models.items() for a in (f"--{role}-model", path)]
    with backend_server(tmp_path / "data", engine="diffusers", zeroconf=False, extra_args=flags,
                        env={**bare, "OMP_NUM_THREADS": "1"}) as srv:
        _, health = http_json("GET", srv.url + "/v1/health")
        assert {m["role"]: m["name"] for m in health["models"]} == models
    with backend_server(tmp_path / "data2", zeroconf=False, extra_args=flags,
                        env={**bare, "OMP_NUM_THREADS": "1"}) as srv:
        request = job_request(2, size=64, step=0.5, seed=3)
        request["engine"] = "diffusers"
        status, body = http_json("POST", srv.url + "/v1/jobs", request)
        assert status == 201, body
        final, _ = wait_for_job(srv.url, body["id"], timeout=180)
        assert final["state"] == "done", final


def test_server_without_weights_refuses_clearly(tmp_path):
    empty = {"HF_HUB_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
             "ZOOMSCAPE_TEXT2IMG_MODEL": "", "ZOOMSCAPE_INPAINT_MODEL": "", "ZOOMSCAPE_DEPTH_MODEL": "",
             "ZOOMSCAPE_MODEL_DIR": ""}
    # --engine diffusers: the process exits 1 at start, naming the model and the pull command
    res = subprocess.run([backend_python(), "-m", "zoomscape.cli", "serve", "--engine", "diffusers",
                          "--port", str(free_port()), "--data-dir", str(tmp_path / "d1"), "--no-zeroconf",
                          "--depth-model", "zoomscape-tests/no-such-depth"],
                         capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
                         env={**os.environ, **empty})
    assert res.returncode == 1
    assert "zoomscape-tests/no-such-depth" in res.stderr and "zoomscape models pull" in res.stderr
    assert "Traceback" not in res.stderr
    # a procedural server rejects a diffusers job at submit (422), naming what is missing
    with backend_server(tmp_path / "d2", zeroconf=False, env=empty) as srv:
        request = job_request(2, size=64)
        request["engine"] = "diffusers"
        status, body = http_json("POST", srv.url + "/v1/jobs", request)
        assert status == 422 and body["error"].startswith("engine:"), body
        assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in body["error"]
        assert "zoomscape models pull" in body["error"]
        _, jobs = http_json("GET", srv.url + "/v1/jobs")
        assert jobs["jobs"] == []
