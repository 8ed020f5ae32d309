"""`zoomscape serve` flags through the real command line: --lan and --host conflict is refused."""
import subprocess

from tests.helpers.backend_process import backend_python, backend_server, free_port, http_json


def serve(tmp_path, *flags, timeout=60):
    args = [backend_python(), "-m", "zoomscape.cli", "serve", "--port", str(free_port()),
            "--data-dir", str(tmp_path / "data"), "--no-zeroconf", *flags]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, cwd=tmp_path)


def test_lan_with_another_host_is_refused_before_anything_starts(tmp_path):
    for host in ("10.1.2.3", "127.0.0.1", "::1"):
        res = serve(tmp_path, "--lan", "--host", host)
        assert res.returncode == 2, (host, res.stdout, res.stderr)
        assert f"--lan binds all interfaces (0.0.0.0) and cannot be combined with --host {host}" in res.stderr
        assert "--token" in res.stderr and "url:" not in res.stdout
        assert not (tmp_path / "data").exists(), "a refused server must not create its data dir"


def test_lan_with_host_0000_and_host_alone_still_serve(tmp_path):
    with backend_server(tmp_path / "lan", lan=True, zeroconf=False, extra_args=["--host", "0.0.0.0"]) as srv:
        assert http_json("GET", srv.url + "/v1/health")[1]["auth_required"] is True
        assert "listening on all interfaces" in srv.stdout
    with backend_server(tmp_path / "loop", zeroconf=False, extra_args=["--host", "127.0.0.1"]) as srv:
        assert http_json("GET", srv.url + "/v1/health")[1]["auth_required"] is False
        assert "listening on all interfaces" not in srv.stdout
