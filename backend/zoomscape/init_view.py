"""The user's own first view: ``init_rgbd`` of a request → (I_0, D_0, M_0) for dream(..., init=...).

LucidDreamer can start from an RGB-D image instead of a generated one; Zoomscape's extension renders
the first camera's colour and Z pass in Blender and sends them (docs/API.md, ``init_rgbd``):

    {"camera": "Cam.000", "width": W, "height": H,
     "rgb_png": base64 of an 8-bit PNG (sRGB, display-referred: what Blender's render shows),
     "depth":   base64 of W·H little-endian float32 z-depths in metres, row-major from the top row,
                +inf or 0 where nothing was hit (background)}

Conventions of the result (the backend's, see DESIGN.md):
- I_0: [H, W, 3] float32 in [0, 1], **display-referred sRGB** exactly as stored in the PNG
  (value / 255, no linearisation): the same space as every engine image and as Stable Diffusion's
  inputs. The background pixels keep the colour Blender rendered there (the world).
- D_0: [H, W] float32 z-depth along the camera axis in metres (never ray length), +inf where
  nothing is known.
- M_0: [H, W] bool, True where D_0 is known (finite and > 0).

Every problem raises :class:`InitRGBDError`, whose ``field`` is relative to ``init_rgbd``
("rgb_png", "depth", …) and whose ``str()`` is "init_rgbd.<field>: <what is wrong and the limit>".
schema.py runs the same decoders, so a request that validates always decodes here.
"""
from __future__ import annotations

import base64
import binascii
import io
import struct
from typing import Any, Mapping

import numpy as np

from .wire.names import MIN_KNOWN_PIXELS  # fewer known depths cannot anchor a world (nor fit a scale)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_MODES = ("RGB", "RGBA", "L", "LA", "P")  # 8-bit modes; converted to RGB (alpha ignored)


class InitRGBDError(ValueError):
    """A broken init_rgbd. field: path relative to init_rgbd ("" = the object itself)."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        path = f"init_rgbd.{field}" if field else "init_rgbd"
        super().__init__(f"{path}: {message}")


def decode_base64(text: str, field: str) -> bytes:
    """Strict standard base64 (no line breaks, '=' padding) → bytes; InitRGBDError naming field."""
    if not isinstance(text, str):
        raise InitRGBDError(field, f"must be a base64 string (got {type(text).__name__})")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InitRGBDError(field, f"is not valid base64 ({exc})") from None


def decode_rgb_png(data: bytes, width: int, height: int) -> np.ndarray:
    """PNG bytes → [H, W, 3] uint8 sRGB. 8-bit RGB, RGBA (alpha dropped), grey or palette PNGs only.

    The size is checked from the header before any pixel is decompressed (no decompression bombs).
    """
    if not data.startswith(PNG_SIGNATURE):
        raise InitRGBDError("rgb_png", "is not a PNG image (the data does not start with the PNG signature)")
    if data[12:16] != b"IHDR" or len(data) < 33:
        raise InitRGBDError("rgb_png", "is a damaged PNG (no IHDR header chunk)")
    size = struct.unpack(">II", data[16:24])
    if size != (width, height):
        raise InitRGBDError("rgb_png", f"is {size[0]}×{size[1]} pixels; must be "
                                       f"{width}×{height} (init_rgbd.width × init_rgbd.height)")
    bit_depth = data[24]
    if bit_depth > 8:
        raise InitRGBDError("rgb_png", f"has {bit_depth} bits per channel; must be an 8-bit PNG (sRGB)")
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency of the backend
        raise InitRGBDError("rgb_png", "cannot be decoded: the backend needs pillow "
                                       "(pip install pillow)") from None
    try:
        img = Image.open(io.BytesIO(data), formats=["PNG"])
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds
        raise InitRGBDError("rgb_png", f"is not a readable PNG ({exc})") from None
    if img.size != (width, height):
        raise InitRGBDError("rgb_png", f"is {img.size[0]}×{img.size[1]} pixels; must be "
                                       f"{width}×{height} (init_rgbd.width × init_rgbd.height)")
    if img.mode not in _PNG_MODES:
        raise InitRGBDError("rgb_png", f"has pixel mode {img.mode!r}; must be an 8-bit PNG "
                                       "(RGB, RGBA, grey or palette)")
    try:
        rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pixel data
        raise InitRGBDError("rgb_png", f"is a damaged PNG ({exc})") from None
    return rgb


def decode_depth(data: bytes, width: int, height: int) -> np.ndarray:
    """W·H little-endian float32 → D: [H, W] float32 z-depth, +inf where nothing (0 or +inf sent).

    Rejects a wrong length, NaN, negative values and −inf, and fewer than MIN_KNOWN_PIXELS known.
    """
    n = width * height
    if len(data) != 4 * n:
        raise InitRGBDError("depth", f"must hold width·height = {width}·{height} = {n} little-endian "
                                     f"float32 values ({4 * n} bytes); got {len(data)} bytes")
    D = np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(height, width)
    nan = np.isnan(D)
    if nan.any():
        i = int(np.flatnonzero(nan)[0])
        raise InitRGBDError("depth", f"NaN at row {i // width}, column {i % width} ({int(nan.sum())} "
                                     "NaNs); use +inf or 0 for background")
    neg = D < 0
    if neg.any():
        i = int(np.flatnonzero(neg)[0])
        raise InitRGBDError("depth", f"must be finite and > 0 where set, +inf or 0 where nothing; got "
                                     f"{float(D.flat[i]):g} at row {i // width}, column {i % width} "
                                     f"({int(neg.sum())} negative values)")
    known = np.isfinite(D) & (D > 0)
    if int(known.sum()) < MIN_KNOWN_PIXELS:
        raise InitRGBDError("depth", f"only {int(known.sum())} pixels have a depth; need at least "
                                     f"{MIN_KNOWN_PIXELS} (is the camera looking at the scene?)")
    return np.where(known, D, np.float32(np.inf)).astype(np.float32)


def _get(init: Any, key: str):
    if isinstance(init, Mapping):
        if key not in init:
            raise InitRGBDError(key, "is required")
        return init[key]
    return getattr(init, key)


def decode_init_rgbd(init, cam) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """init_rgbd (the request's dict, or schema.InitRGBD) for camera cam → (I_0, D_0, M_0).

    cam: cameras.Camera (or anything with name, width, height) — the first camera of the request.
    I_0: [H, W, 3] float32 in [0, 1], display-referred sRGB (PNG value / 255);
    D_0: [H, W] float32 z-depth in metres, +inf where unknown; M_0: [H, W] bool, D_0 known.
    """
    name, width, height = _get(init, "camera"), _get(init, "width"), _get(init, "height")
    if name != cam.name:
        raise InitRGBDError("camera", f"is {name!r}; it must be the first camera {cam.name!r}")
    if (width, height) != (cam.width, cam.height):
        raise InitRGBDError("width" if width != cam.width else "height",
                            f"{width}×{height} must equal camera {cam.name!r}'s {cam.width}×{cam.height}")
    rgb = decode_rgb_png(decode_base64(_get(init, "rgb_png"), "rgb_png"), width, height)
    D_0 = decode_depth(decode_base64(_get(init, "depth"), "depth"), width, height)
    I_0 = rgb.astype(np.float32) / np.float32(255.0)
    return I_0, D_0, np.isfinite(D_0)


def encode_init_rgbd(camera: str, rgb: np.ndarray, depth: np.ndarray) -> dict:
    """The inverse, for tests and scripts: rgb [H, W, 3] uint8 or float in [0, 1], depth [H, W]
    (inf/0/NaN = nothing) → the init_rgbd dict of the wire format."""
    from PIL import Image

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        rgb = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    depth = np.asarray(depth, dtype=np.float32)
    depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.float32(np.inf)).astype("<f4")
    H, W = depth.shape
    if rgb.shape != (H, W, 3):
        raise ValueError(f"rgb: shape {rgb.shape} must be (H, W, 3) = ({H}, {W}, 3) like depth")
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG")
    return {"camera": camera, "width": W, "height": H,
            "rgb_png": base64.b64encode(buf.getvalue()).decode("ascii"),
            "depth": base64.b64encode(depth.tobytes()).decode("ascii")}
