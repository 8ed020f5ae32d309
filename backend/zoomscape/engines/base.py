"""The small protocols the algorithms (dream.py, later zoom.py) speak to an engine.

An engine paints and measures; it never knows the algorithm that drives it:

    Inpainter.inpaint(image, hole, prompt, cam, seed) -> image      S(Î_i, M_i) in LucidDreamer
    DepthEstimator.estimate_depth(image, cam) -> depth              D(I_i), monocular

A full hole (every pixel True) asks for text-to-image: the first view of a world. Depth is z-depth
along the camera axis with an unknown scale and shift, as a monocular model gives it; dream.py
fits both against the point cloud. Images are float32 [H, W, 3] in [0, 1]; cameras are
``zoomscape.cameras.Camera`` (OpenCV inside). numpy only.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..cameras import Camera


@runtime_checkable
class Inpainter(Protocol):
    def inpaint(self, image: np.ndarray, hole: np.ndarray, prompt: str, cam: Camera,
                seed: int) -> np.ndarray:
        """image: [H, W, 3] float32 in [0, 1]; hole: [H, W] bool (True = paint here) → [H, W, 3].

        Pixels outside the hole come back unchanged.
        """


@runtime_checkable
class DepthEstimator(Protocol):
    def estimate_depth(self, image: np.ndarray, cam: Camera) -> np.ndarray:
        """image: [H, W, 3] → z-depth [H, W] float32, > 0, up to an unknown scale and shift."""


@runtime_checkable
class Engine(Inpainter, DepthEstimator, Protocol):
    """An inpainter and a depth estimator that belong together, with what /v1/health reports.

    name: the request's engine name; device: e.g. "cpu", "cuda:0";
    models: one dict per model, e.g. {"name", "role", "status"}.
    """

    name: str
    device: str
    models: list[dict]


def check_image(image, cam: Camera, field: str = "image") -> np.ndarray:
    """image as float32 [H, W, 3] matching cam, or ValueError naming the field and the limit."""
    a = np.asarray(image)
    want = (cam.height, cam.width, 3)
    if a.shape != want:
        raise ValueError(f"{field}: shape {a.shape} does not match camera '{cam.name}', "
                         f"expected {want}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{field}: has non-finite values; colours must be finite in [0, 1]")
    return a


def check_hole(hole, cam: Camera, field: str = "hole") -> np.ndarray:
    """hole as bool [H, W] matching cam, or ValueError naming the field."""
    h = np.asarray(hole)
    want = (cam.height, cam.width)
    if h.shape != want:
        raise ValueError(f"{field}: shape {h.shape} does not match camera '{cam.name}', "
                         f"expected {want}")
    if h.dtype != bool:
        raise ValueError(f"{field}: must be a boolean mask (True = paint here), got {h.dtype}")
    return h
