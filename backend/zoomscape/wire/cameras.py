"""Camera formulas both sides need: Blender's pixel intrinsics, and the zoom-level camera.

Pixels are continuous with v growing downwards (the OpenCV image convention the backend uses); a
pose is Blender's camera-to-world ``matrix_world`` (camera looks down −Z, +Y up). numpy only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Pixel intrinsics: focal lengths fx, fy and principal point cx, cy in pixels, image size."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def to_dict(self) -> dict:
        """{fx, fy, cx, cy, width, height}: the request's and the manifest's camera fields."""
        return asdict(self)

    # A read-only mapping too, so a camera's fields spread into a request: {"name": …, **k}.
    def keys(self) -> tuple[str, ...]:
        return ("fx", "fy", "cx", "cy", "width", "height")

    def __getitem__(self, key: str):
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    @staticmethod
    def from_dict(d) -> "Intrinsics":
        return Intrinsics(float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]),
                          int(d["width"]), int(d["height"]))


def blender_intrinsics(lens: float, sensor_width: float, sensor_height: float, sensor_fit: str,
                       shift_x: float, shift_y: float, res_x: int, res_y: int,
                       pixel_aspect_x: float = 1.0, pixel_aspect_y: float = 1.0) -> Intrinsics:
    """Pixel intrinsics of a Blender perspective camera.

    fit = AUTO → the larger pixel-aspect-corrected image side; the fitted side spans view_px
    pixels (res_x, or res_y·a with a = pixel_aspect_y / pixel_aspect_x), then
        fx = lens / sensor · view_px,  fy = fx / a,
        cx = res_x/2 − shift_x · view_px,  cy = res_y/2 + shift_y · view_px / a.
    HORIZONTAL fits sensor_width to the width, VERTICAL sensor_height to the height; AUTO uses
    sensor_width. Shifts are fractions of the fitted image side.
    """
    a = pixel_aspect_y / pixel_aspect_x
    fit = sensor_fit.upper()
    if fit == "AUTO":
        fit = "HORIZONTAL" if pixel_aspect_x * res_x >= pixel_aspect_y * res_y else "VERTICAL"
        sensor = sensor_width
    else:
        sensor = sensor_width if fit == "HORIZONTAL" else sensor_height
    view_px = res_x if fit == "HORIZONTAL" else a * res_y
    fx = lens / sensor * view_px
    return Intrinsics(float(fx), float(fx / a), float(res_x / 2.0 - shift_x * view_px),
                      float(res_y / 2.0 + shift_y * view_px / a), int(res_x), int(res_y))


def zoom_level_intrinsics(k: Intrinsics, factor: float, i: int) -> Intrinsics:
    """The camera of zoom level i: the same pose, zoomed by m = p^i about the image centre.

    Level i shows the centre 1/p^i of level 0: a level-i pixel u maps to the level-0 pixel
    u_0 = c + (u − c)/m with c = (W/2, H/2), so f_i = m·f and c_i = c + m·(c_0 − c), where c_0
    is the principal point of level 0 (≠ c under lens shift).
    """
    m = float(factor) ** i
    W2, H2 = k.width / 2.0, k.height / 2.0
    return Intrinsics(k.fx * m, k.fy * m, W2 + m * (k.cx - W2), H2 + m * (k.cy - H2), k.width, k.height)


ZOOM_MODES = ("dolly", "lens")


def dolly_level_matrix(matrix_world, anchor, factor: float, i: float) -> np.ndarray:
    """The pose of DOLLY zoom level i: [4, 4] float64 Blender matrix_world (i may be any zoom
    τ ≥ 0 between levels too: the dive's camera there).

    Level 0's camera (matrix_world, aimed so the anchor is at the image centre) moved along the
    line from its centre C_0 to the anchor a, to C_i = a + (C_0 − a)·p^−i: p^i times closer, with
    the same orientation and lens (the level's intrinsics are level 0's). The anchor stays on the
    centre pixel, and everything at the anchor's distance is magnified by p^i as in LENS; what is
    nearer is magnified more, what is farther less (the parallax LENS lacks).
    """
    M = np.array(matrix_world, dtype=np.float64).reshape(4, 4)
    a = np.asarray(anchor, dtype=np.float64).reshape(3)
    scale = float(factor) ** (-float(i))
    if scale != 1.0:                 # level 0 keeps its pose exactly (not a + (C_0 − a) rounded)
        M[:3, 3] = a + (M[:3, 3] - a) * scale
    return M


def level_pose(mode: str, matrix_world, k: "Intrinsics", anchor, factor: float,
               i: int) -> tuple[np.ndarray, "Intrinsics"]:
    """(matrix_world [4, 4], intrinsics) of zoom level i in mode "dolly" (dolly_level_matrix,
    level 0's lens) or "lens" (level 0's pose, zoom_level_intrinsics)."""
    if mode == "dolly":
        return dolly_level_matrix(matrix_world, anchor, factor, i), k
    if mode == "lens":
        return np.array(matrix_world, dtype=np.float64).reshape(4, 4), zoom_level_intrinsics(k, factor, i)
    raise ValueError(f"zoom.mode: must be one of {', '.join(ZOOM_MODES)}, got {mode!r}")


def project_blender(matrix_world, k: Intrinsics, points) -> tuple[np.ndarray, np.ndarray]:
    """World points [N, 3] → (pixels [N, 2], z-depth [N]) in the camera at matrix_world (Blender
    camera-to-world 4×4) with intrinsics k; float64. z ≤ 0 is behind the camera (pixels there
    are not meaningful)."""
    M = np.asarray(matrix_world, dtype=np.float64).reshape(4, 4)
    Xc = (np.asarray(points, dtype=np.float64) - M[:3, 3]) @ M[:3, :3]  # Blender camera axes
    z = -Xc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = k.fx * Xc[:, 0] / z + k.cx
        v = -k.fy * Xc[:, 1] / z + k.cy
    return np.stack([u, v], axis=1), z
