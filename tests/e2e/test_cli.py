"""The `zoomscape` console script: generate (valid and bad requests), models."""
import json
import subprocess
from pathlib import Path

import numpy as np
from plyfile import PlyData

from tests.helpers import bad_request, job_request, user_views
from tests.helpers.backend_process import backend_python

ZOOMSCAPE = str(Path(backend_python()).parent / "zoomscape")


def run(*args, timeout=180, env=None):
    return subprocess.run([ZOOMSCAPE, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", **(env or {})})


def test_generate_writes_results(tmp_path):
    req = job_request(3, size=64)
    (tmp_path / "request.json").write_text(json.dumps(req))
    out = tmp_path / "out"
    res = run("generate", tmp_path / "request.json", "--out", out)
    assert res.returncode == 0, res.stderr
    views = len(json.loads((out / "manifest.json").read_text())["views"])  # the user's 3 + extra
    assert views > 3 and f"[dream 1/{views}]" in res.stderr and f"[dream {views}/{views}]" in res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    vertex = PlyData.read(str(out / "pointcloud.ply"))["vertex"]
    assert len(vertex) == manifest["pointcloud"]["points"] > 0
    assert np.isfinite(vertex["x"]).all()
    user_views(manifest, req)
    assert f"({manifest['pointcloud']['points']} points)" in res.stdout


def test_generate_bad_request_exits_2_naming_the_field(tmp_path):
    def width(r):
        r["cameras"][1]["width"] = 4096

    (tmp_path / "bad.json").write_text(json.dumps(bad_request(width)))
    res = run("generate", tmp_path / "bad.json", "--out", tmp_path / "out")
    assert res.returncode == 2
    assert "cameras[1].width: must be at most 2048 (got 4096)" in res.stderr
    assert not (tmp_path / "out").exists(), "a rejected request must not create output"

    (tmp_path / "broken.json").write_text('{"cameras": [')
    res = run("generate", tmp_path / "broken.json", "--out", tmp_path / "out")
    assert res.returncode == 2 and "not valid JSON" in res.stderr

    res = run("generate", tmp_path / "missing.json", "--out", tmp_path / "out")
    assert res.returncode == 2 and "missing.json" in res.stderr


def test_bad_settings_exit_2_naming_the_flag_or_variable(tmp_path):
    (tmp_path / "request.json").write_text(json.dumps(job_request(2, size=64)))
    res = run("generate", tmp_path / "request.json", "--out", tmp_path / "out", "--steps", "0")
    assert res.returncode == 2 and "zoomscape: steps: 0 must be within 1..1000" in res.stderr, res.stderr
    res = run("generate", tmp_path / "request.json", "--out", tmp_path / "out",
              env={"ZOOMSCAPE_CPU_OFFLOAD": "sometimes"})
    assert res.returncode == 2 and "ZOOMSCAPE_CPU_OFFLOAD: 'sometimes' is not one of" in res.stderr, res.stderr
    res = run("serve", "--no-zeroconf", "--data-dir", tmp_path / "data", env={"ZOOMSCAPE_STEPS": "many"})
    assert res.returncode == 2 and "ZOOMSCAPE_STEPS: 'many' is not an integer" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()


def test_models_list_and_pull():
    res = run("models", "list")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert any(l.startswith("procedural: available") for l in lines), res.stdout
    assert any(l.startswith("diffusers: not available") for l in lines), res.stdout
    pull = run("models", "pull")
    assert pull.returncode == 0 and "nothing to download" in pull.stdout
    pull = run("models", "pull", "diffusers")
    assert pull.returncode == 1 and "diffusers" in pull.stderr and "not available" in pull.stderr
    assert run("models", "pull", "magic").returncode == 2
