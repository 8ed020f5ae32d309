"""Discovery helpers: address choice, and a clear error when zeroconf is missing."""
import sys

import pytest

import bpy


def test_pick_address_prefers_loopback_then_ipv4(zs):
    pick = zs.discovery.pick_address
    assert pick(["192.168.1.5", "127.0.0.1"]) == "127.0.0.1"
    assert pick(["fe80::1", "10.0.0.2"]) == "10.0.0.2"
    assert pick(["fe80::1"]) == "fe80::1" and pick([]) is None


def test_missing_zeroconf_is_a_clear_error(zs, monkeypatch):
    monkeypatch.setitem(sys.modules, "zeroconf", None)  # import zeroconf → ImportError
    with pytest.raises(RuntimeError, match="zeroconf is not available"):
        bpy.ops.zoomscape.discover(seconds=0.1)
    assert "type the backend's host and port" in bpy.context.scene.zoomscape.error
