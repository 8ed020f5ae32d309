"""zeroconf: a running backend is found from ANOTHER process, with the right port and TXT, and it
says goodbye when it stops."""
import json
import subprocess
import threading
import time

from zeroconf import IPVersion, ServiceBrowser, Zeroconf

from tests.helpers.backend_process import backend_python, backend_server, http_json

SERVICE = "_zoomscape._tcp.local."


def discover_in_subprocess(timeout=3.0) -> list[dict]:
    """Run `zoomscape discover --json` as its own process (like the Blender extension would browse)."""
    out = subprocess.run([backend_python(), "-m", "zoomscape.cli", "discover", "--timeout", str(timeout), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_server_is_found_from_another_process_with_port_and_txt(server):
    health = http_json("GET", server.url + "/v1/health")[1]
    found = [b for b in discover_in_subprocess() if b["port"] == server.port]
    assert len(found) == 1, f"port {server.port} not among {discover_in_subprocess(1)}"
    entry = found[0]
    assert entry["name"].startswith("Zoomscape on ")
    assert entry["host"] == "127.0.0.1"
    assert entry["properties"] == {"version": health["version"], "engine": "procedural",
                                   "device": health["device"], "auth": "0", "path": "/v1"}
    # the advertised address and port really reach this server
    status, body = http_json("GET", f"http://{entry['host']}:{entry['port']}{entry['properties']['path']}/health")
    assert status == 200 and body == health


def test_service_is_unregistered_when_the_server_stops(tmp_path):
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    def on_change(zeroconf, service_type, name, state_change):
        with lock:
            events.append((state_change.name, name))

    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        browser = ServiceBrowser(zc, SERVICE, handlers=[on_change])
        with backend_server(tmp_path / "data", token="tok-123") as srv:
            name = None
            deadline = time.monotonic() + 10
            while name is None and time.monotonic() < deadline:
                for kind, n in list(events):
                    info = zc.get_service_info(SERVICE, n, timeout=500) if kind == "Added" else None
                    if info is not None and info.port == srv.port:
                        name = n
                        assert info.properties[b"auth"] == b"1"  # --token: clients must send it
                time.sleep(0.1)
            assert name, f"browser in the test process never saw port {srv.port}: {events}"
        # goodbye packets: the browser hears the removal long before the 75-120 s record TTLs expire
        deadline = time.monotonic() + 5
        while ("Removed", name) not in events and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ("Removed", name) in events, events
        browser.cancel()
    finally:
        zc.close()
    assert all(b["port"] != srv.port for b in discover_in_subprocess(1.5))
