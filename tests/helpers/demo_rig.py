"""The demo's camera rig (scripts/demo_blender.py RIG) as backend wire cameras, for the backend
tests that measure on it (numpy and the backend: not for the Blender tests)."""
from __future__ import annotations

import math

import numpy as np

from zoomscape.cameras import blender_intrinsics

RIG = [("Cam.000", (-2.0, -1.0, 1.7), (-12.0, 25.0)),      # the demo's: name, location,
       ("Cam.001", (-0.7, -0.5, 1.8), (-14.0, 8.0)),       # (pitch, yaw) in degrees
       ("Cam.002", (0.7, -0.5, 1.8), (-14.0, -8.0)),
       ("Cam.003", (2.0, -1.0, 1.7), (-12.0, -25.0))]


def intrinsics(w: int, h: int) -> dict:
    """The demo camera's pixel intrinsics (30 mm lens, 36×24 mm sensor, fit AUTO) at w×h."""
    return blender_intrinsics(30.0, 36.0, 24.0, "AUTO", 0.0, 0.0, w, h)


def wire_cam(name: str, loc, pitch: float, yaw: float, w: int, h: int) -> dict:
    """A Blender camera at loc with rotation_euler (90° + pitch, 0, yaw), as the demo builds it:
    its wire dict (name, matrix_world, intrinsics at w×h)."""
    ax, az = math.radians(90.0 + pitch), math.radians(yaw)
    Rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    Rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    M = np.eye(4)
    M[:3, :3], M[:3, 3] = Rz @ Rx, loc
    return dict(name=name, matrix_world=M.tolist(), **intrinsics(w, h))
