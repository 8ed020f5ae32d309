"""zeroconf (mDNS/DNS-SD) advertising of a running backend, and browsing for backends.

Service type ``_zoomscape._tcp.local.``, instance "Zoomscape on <hostname>" (with " (port N)" when not
on the default port 8765; zeroconf renames further if another backend still uses the name), TXT properties version, engine,
device, auth ("1" when a token is required) and path ("/v1").

Addresses follow the bind address: a loopback bind (127.0.0.1, the default) answers on the loopback
interface only and advertises 127.0.0.1, so the Blender extension on the same machine finds it and
nothing leaks onto the LAN; 0.0.0.0 (``--lan``) answers on every interface and advertises the
machine's non-loopback IPv4 addresses; any other address is used as is.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import Optional

from zeroconf import InterfaceChoice, IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

from .wire.names import API_PATH, DEFAULT_PORT, SERVICE_TYPE  # noqa: F401 (re-exported)

log = logging.getLogger("zoomscape.discovery")


def instance_name(port: int = DEFAULT_PORT, hostname: Optional[str] = None) -> str:
    """Human-readable instance name: "Zoomscape on studio-pc", plus " (port N)" off the default port so
    that several backends on one machine (tests, a second GPU) never share a name."""
    host = (hostname or socket.gethostname()).split(".")[0] or "localhost"
    return f"Zoomscape on {host}" + ("" if int(port) == DEFAULT_PORT else f" (port {port})")


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses outside loopback and link-local (for --lan)."""
    import ifaddr  # a dependency of zeroconf

    out = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                addr = ipaddress.IPv4Address(ip.ip)
                if not (addr.is_loopback or addr.is_link_local) and ip.ip not in out:
                    out.append(ip.ip)
    return out


def advertised_addresses(host: str) -> tuple[list[str], object]:
    """(addresses to advertise, zeroconf interfaces to answer on) for a bind address."""
    if host in ("", "0.0.0.0", "::"):
        return (lan_addresses() or ["127.0.0.1"]), InterfaceChoice.All
    addr = ipaddress.ip_address(socket.gethostbyname(host))
    if addr.is_loopback:
        return ["127.0.0.1"], ["127.0.0.1"]
    return [str(addr)], [str(addr)]


def service_properties(version: str, engine: str, device: str, auth: bool) -> dict[str, str]:
    """TXT record of the service."""
    return {"version": version, "engine": engine, "device": device, "auth": "1" if auth else "0",
            "path": API_PATH}


class Advertiser:
    """Registers the service on start() and unregisters it on close() (idempotent, thread-safe)."""

    def __init__(self, host: str, port: int, properties: dict[str, str], name: Optional[str] = None):
        self.host, self.port, self.properties = host, int(port), dict(properties)
        self.name = name or instance_name(self.port)
        self._zc: Optional[Zeroconf] = None
        self._info: Optional[ServiceInfo] = None
        self._lock = threading.Lock()

    def start(self) -> "Advertiser":
        addresses, interfaces = advertised_addresses(self.host)
        hostname = socket.gethostname().split(".")[0] or "zoomscape"
        info = ServiceInfo(
            SERVICE_TYPE, f"{self.name}.{SERVICE_TYPE}", port=self.port, properties=self.properties,
            server=f"{hostname}.local.", addresses=[socket.inet_aton(a) for a in addresses])
        zc = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
        try:
            zc.register_service(info, allow_name_change=True)
        except Exception:
            zc.close()
            raise
        with self._lock:
            self._zc, self._info = zc, info
        self.registered_name = info.name[: -len(SERVICE_TYPE) - 1]
        log.info("zeroconf: advertising %r on %s port %d", info.name, ", ".join(addresses), self.port)
        return self

    def close(self) -> None:
        with self._lock:
            zc, info, self._zc, self._info = self._zc, self._info, None, None
        if zc is None:
            return
        try:
            zc.unregister_service(info)
        finally:
            zc.close()
        log.info("zeroconf: unregistered %r", info.name)


def _decode(value) -> Optional[str]:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def browse(timeout: float = 3.0) -> list[dict]:
    """Backends found on the local network (and this machine) within timeout seconds.

    Returns [{"name", "host", "port", "addresses", "server", "properties": {str: str}}], sorted by name.
    """
    zc = Zeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
    names: set[str] = set()
    lock = threading.Lock()

    def on_change(zeroconf, service_type, name, state_change):
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            with lock:
                names.add(name)

    try:
        browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
        time.sleep(timeout)
        browser.cancel()
        found = []
        with lock:
            pending = sorted(names)
        for name in pending:
            info = zc.get_service_info(SERVICE_TYPE, name, timeout=2000)
            if info is None or not info.parsed_addresses(IPVersion.V4Only):
                continue
            addresses = info.parsed_addresses(IPVersion.V4Only)
            found.append({
                "name": name[: -len(SERVICE_TYPE) - 1] if name.endswith("." + SERVICE_TYPE) else name,
                "host": addresses[0], "port": info.port, "addresses": addresses, "server": info.server,
                "properties": {_decode(k): _decode(v) for k, v in info.properties.items()},
            })
        return found
    finally:
        zc.close()
