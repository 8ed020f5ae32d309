"""Find Zoomscape backends on the network with zeroconf (``_zoomscape._tcp.local.``).

zeroconf calls back on its own thread, so the browser only puts plain dicts on a queue; the
discover operator drains it on the main thread. Nothing here touches bpy.
"""
from __future__ import annotations

import ipaddress
import queue

from .wire.names import SERVICE_TYPE


class DiscoveryError(RuntimeError):
    """zeroconf is missing or could not start."""


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def pick_address(addresses: list[str]) -> str | None:
    """The address to use: 127.0.0.1 when offered, else the first IPv4, else the first one."""
    if "127.0.0.1" in addresses:
        return "127.0.0.1"
    for a in addresses:
        try:
            if ipaddress.ip_address(a).version == 4:
                return a
        except ValueError:
            continue
    return addresses[0] if addresses else None


def service_to_backend(name: str, info) -> dict | None:
    """A zeroconf ServiceInfo → {name, host, port, engine, device, version, auth} (None if no address)."""
    addresses = info.parsed_addresses() if info is not None else []
    host = pick_address(addresses)
    if host is None:
        return None
    props = {_text(k): _text(v) for k, v in (info.properties or {}).items()}
    short = name[: -len("." + SERVICE_TYPE)] if name.endswith("." + SERVICE_TYPE) else name
    return {"name": short, "host": host, "port": int(info.port), "engine": props.get("engine", ""),
            "device": props.get("device", ""), "version": props.get("version", ""),
            "auth": props.get("auth", "0") == "1"}


class Browser:
    """Browse for backends; found ones arrive on ``self.queue`` as backend dicts."""

    def __init__(self):
        try:
            from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf
        except ImportError as e:
            raise DiscoveryError(f"zeroconf is not available ({e}); reinstall the Zoomscape "
                                 "extension or type the backend's host and port") from None
        self.queue: queue.Queue = queue.Queue()
        self._added = ServiceStateChange.Added
        self._updated = ServiceStateChange.Updated
        try:
            self.zeroconf = Zeroconf()
        except OSError as e:
            raise DiscoveryError(f"cannot start zeroconf ({e}); type the backend's host and port") from None
        self.browser = ServiceBrowser(self.zeroconf, SERVICE_TYPE, handlers=[self._on_change])

    def _on_change(self, zeroconf, service_type, name, state_change):
        """zeroconf's thread: resolve the service and queue it. Never touches bpy."""
        if state_change not in (self._added, self._updated):
            return
        try:
            info = zeroconf.get_service_info(service_type, name, timeout=2000)
            backend = service_to_backend(name, info)
        except Exception as e:
            self.queue.put({"error": f"{name}: {e}"})
            return
        if backend is not None:
            self.queue.put(backend)

    def drain(self) -> list[dict]:
        """Everything found since the last drain (main thread)."""
        out = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        """Stop browsing (safe to call twice)."""
        if self.zeroconf is None:
            return
        try:
            self.browser.cancel()
        finally:
            self.zeroconf.close()
            self.zeroconf = None
