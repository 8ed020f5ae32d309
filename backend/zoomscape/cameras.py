"""The one place that converts between Blender's camera convention and OpenCV's.

Wire (Blender): world Z-up, metres; ``matrix_world`` is camera-to-world with the camera looking
down −Z and +Y up. Intrinsics are pixels (fx, fy, cx, cy, width, height).

Inside the backend (OpenCV): camera x right, y down, z forward. Pixel coordinates are continuous:
pixel (row i, column j) covers [j, j+1) × [i, i+1), so its centre is (j + 0.5, i + 0.5) and the
image spans u ∈ [0, W), v ∈ [0, H). Depth is z-depth along the camera axis, never ray length.

Blender's intrinsics formula, the zoom-level camera and level frames live in the wire module
(``zoomscape.wire``), which the extension ships too; this module builds Cameras from them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .wire.cameras import (ZOOM_MODES, Intrinsics, blender_intrinsics, level_pose,  # noqa: F401 (re-export)
                           zoom_level_intrinsics)
from .wire.cameras import dolly_level_matrix
from .wire.manifest import LevelFrame

# Blender camera axes (x right, y up, z back) → OpenCV camera axes (x right, y down, z forward).
BLENDER_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Camera:
    """A pinhole camera in OpenCV convention.

    K: [3, 3] intrinsics in pixels; c2w: [4, 4] camera-to-world (OpenCV axes), float64.
    """

    name: str
    K: np.ndarray
    c2w: np.ndarray
    width: int
    height: int

    @property
    def w2c(self) -> np.ndarray:
        """World-to-camera [4, 4] (the rigid inverse of c2w)."""
        return rigid_inverse(self.c2w)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates: [3]."""
        return self.c2w[:3, 3].copy()

    @property
    def matrix_world(self) -> np.ndarray:
        """Blender ``matrix_world`` (camera looks down −Z, +Y up): [4, 4]."""
        return self.c2w @ BLENDER_TO_OPENCV

    def scaled(self, width: int, height: int) -> "Camera":
        """The same camera rendered at another resolution (same field of view)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[0] *= sx
        K[1] *= sy
        return Camera(self.name, K, self.c2w.copy(), int(width), int(height))

    @property
    def intrinsics(self) -> Intrinsics:
        """fx, fy, cx, cy (pixels) and the image size."""
        return Intrinsics(float(self.K[0, 0]), float(self.K[1, 1]), float(self.K[0, 2]),
                          float(self.K[1, 2]), int(self.width), int(self.height))

    def to_wire(self) -> dict:
        """The request's camera dict (Blender convention)."""
        return {"name": self.name, "matrix_world": self.matrix_world.tolist(), **self.intrinsics.to_dict()}


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """K: [3, 3] from pixel focal lengths and principal point."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def rigid_inverse(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid [4, 4] transform without a general matrix inverse."""
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


def from_wire(cam) -> Camera:
    """Camera from a request camera (a dict or an object with the same attributes).

    c2w_cv = matrix_world · diag(1, −1, −1, 1): flip the camera's y and z axes.
    """
    get = cam.get if isinstance(cam, dict) else (lambda k: getattr(cam, k))
    M = np.asarray(get("matrix_world"), dtype=np.float64).reshape(4, 4)
    K = intrinsics_matrix(get("fx"), get("fy"), get("cx"), get("cy"))
    return Camera(str(get("name")), K, M @ BLENDER_TO_OPENCV, int(get("width")), int(get("height")))


def world_to_pixels(cam: Camera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points.

    points: [N, 3] world → (uv: [N, 2] continuous pixels, z: [N] z-depth; z ≤ 0 is behind).
    """
    w2c = cam.w2c
    Xc = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = Xc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (Xc[:, :2] / z[:, None]) * np.diag(cam.K)[:2] + cam.K[:2, 2]
    return uv, z


def pixel_rays(cam: Camera, uv: np.ndarray) -> np.ndarray:
    """Camera-space directions with z = 1 for pixel positions uv: [N, 2] → [N, 3]."""
    x = (uv[:, 0] - cam.K[0, 2]) / cam.K[0, 0]
    y = (uv[:, 1] - cam.K[1, 2]) / cam.K[1, 1]
    return np.stack([x, y, np.ones_like(x)], axis=1)


def pixels_to_world(cam: Camera, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Unproject pixels uv: [N, 2] at z-depths z: [N] to world points [N, 3]."""
    Xc = pixel_rays(cam, uv) * z[:, None]
    return Xc @ cam.c2w[:3, :3].T + cam.c2w[:3, 3]


def pixel_grid(width: int, height: int) -> np.ndarray:
    """Pixel centres of an H×W image in row-major order: [H*W, 2] (u, v)."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    return np.stack([u.ravel(), v.ravel()], axis=1)


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Blender matrix_world [4, 4] of a camera at eye looking at target, with world up as up."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-9:
        right = np.cross((0.0, 1.0, 0.0), back)
    right /= np.linalg.norm(right)
    cam_up = np.cross(back, right)
    M = np.eye(4)
    M[:3, 0], M[:3, 1], M[:3, 2], M[:3, 3] = right, cam_up, back, eye
    return M


def zoom_level_camera(cam: Camera, factor: float, i: int) -> Camera:
    """The camera of zoom level i: the same pose, zoomed by p^i about the image centre
    (wire.cameras.zoom_level_intrinsics: f_i = p^i·f, c_i = c + p^i·(c_0 − c))."""
    k = zoom_level_intrinsics(cam.intrinsics, factor, i)
    return Camera(f"{cam.name}/level_{i:02d}", intrinsics_matrix(k.fx, k.fy, k.cx, k.cy), cam.c2w.copy(),
                  cam.width, cam.height)


@dataclass(frozen=True)
class LevelCameras:
    """The cameras a zoom's levels are painted and lifted from.

    camera: level 0's camera (the zoom camera aimed at the anchor, at the stack's size); anchor:
    [3] world; factor: p; mode: "dolly" (level i at C_i = a + (C_0 − a)·p^−i, level 0's lens:
    wire.cameras.dolly_level_matrix) or "lens" (level 0's pose, f_i = p^i·f).

    In DOLLY every level camera looks along the same centre ray toward the anchor, so one level's
    pixels map into another's by a radial scaling about the image centre e = (W/2, H/2): a pixel u
    of level j at z-depth z_j is seen by level i < j at
        u_i = e + (u − e)·z_j / (z_j + δ_ij),   z_i = z_j + δ_ij,   δ_ij = z_a·(p^−i − p^−j)
    (z_a: the anchor's z-depth from level 0's camera). On the anchor's fronto-parallel plane
    (z_j = z_a·p^−j) the factor is p^(i−j): LENS's centre crop.
    """

    camera: Camera
    anchor: np.ndarray
    factor: float
    mode: str = "dolly"

    def __post_init__(self):
        if self.mode not in ZOOM_MODES:
            raise ValueError(f"zoom.mode: must be one of {', '.join(ZOOM_MODES)}, got {self.mode!r}")

    def level(self, i: int, width: Optional[int] = None, height: Optional[int] = None) -> Camera:
        """Level i's camera (at width × height; default level 0's size)."""
        cam = self.camera if width is None else self.camera.scaled(width, height)
        if self.mode == "lens":
            return zoom_level_camera(cam, self.factor, i)
        M, _ = level_pose("dolly", cam.matrix_world, cam.intrinsics, self.anchor, self.factor, i)
        return Camera(f"{cam.name}/level_{i:02d}", cam.K.copy(), M @ BLENDER_TO_OPENCV, cam.width, cam.height)

    @property
    def anchor_depth(self) -> float:
        """z_a: the anchor's z-depth from level 0's camera (metres)."""
        return float((self.camera.w2c[:3, :3] @ (np.asarray(self.anchor, np.float64) - self.camera.center))[2])

    def delta(self, i: int, j: int) -> float:
        """δ_ij = z_a·(p^−i − p^−j): how much farther level i's camera is than level j's along the
        optical axis (DOLLY; 0 in LENS, where every level shares level 0's pose)."""
        if self.mode == "lens":
            return 0.0
        p = float(self.factor)
        return self.anchor_depth * (p ** -i - p ** -j)


def level_frame(cam: Camera, anchor, factor: float, i: int) -> LevelFrame:
    """The local frame of zoom level i (manifest.json "frame"): origin = the anchor, axes = cam's
    Blender axes, unit = p^−i metres (wire.manifest.LevelFrame)."""
    return LevelFrame.for_level(cam.matrix_world, anchor, factor, i)


AIM_TOLERANCE = 1e-7   # radians: aim_at leaves a camera aimed this closely as it is


def aim_at(cam: Camera, point) -> Camera:
    """cam turned about its centre (the smallest rotation) so that the world point projects to the
    image centre (W/2, H/2), where zoom levels are centred. Intrinsics are kept. A camera already
    aimed within AIM_TOLERANCE radians (about 1e-4 px) is returned as it is, so a camera aimed at
    its own centre pixel's point stays the same camera (the same frame, not a second trace)."""
    r_now = pixel_rays(cam, np.array([[cam.width / 2.0, cam.height / 2.0]]))[0]
    r_want = cam.w2c[:3, :3] @ (np.asarray(point, dtype=np.float64) - cam.center)
    a, b = r_now / np.linalg.norm(r_now), r_want / np.linalg.norm(r_want)
    v, c = np.cross(a, b), float(a @ b)
    if np.linalg.norm(v) < AIM_TOLERANCE:
        return cam
    V = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    R = np.eye(3) + V + V @ V / (1.0 + c)  # rotates a onto b (Rodrigues)
    c2w = cam.c2w.copy()
    c2w[:3, :3] = cam.c2w[:3, :3] @ R
    return Camera(cam.name, cam.K.copy(), c2w, cam.width, cam.height)


def dolly_camera(cam: Camera, anchor, factor: float, tau: float) -> Camera:
    """The DOLLY dive's camera at zoom τ (any real τ ≥ 0, not only a level): cam (aimed at the
    anchor a) moved to C_τ = a + (C_0 − a)·p^−τ (wire.cameras.dolly_level_matrix), with the same
    orientation, lens and resolution."""
    M = dolly_level_matrix(cam.matrix_world, anchor, factor, tau)
    return Camera(f"{cam.name}/dive_{tau:g}", cam.K.copy(), M @ BLENDER_TO_OPENCV, cam.width, cam.height)
