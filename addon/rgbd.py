"""Start from the user's scene: render a camera's colour and Z pass → the request's ``init_rgbd``.

The render runs through Blender's own renderer (Cycles, EEVEE or Workbench: whichever the scene
uses) with the view layer's Z pass on, then saves the Render Result twice:

- as an 8-bit RGB PNG with the scene's colour management (the display-referred image the user
  sees in F12) → ``rgb_png``, sent as is;
- as a 32-bit uncompressed multilayer OpenEXR, whose ``<view layer>.Depth.Z`` channel this module
  reads with numpy (:func:`read_exr`: scanline EXR, single- or multi-part as Blender 4.2 and 5.x
  write it) → ``depth``.

Blender's Z pass is the z-depth along the camera axis for perspective cameras in Cycles, EEVEE and
Workbench (measured in 4.2 and 5.2: a plane facing the camera reads the same Z in every pixel,
not the longer ray length toward the corners), so no conversion is needed; tests guard it.
Background pixels come out as 1e10 (Cycles, Workbench, EEVEE 5.x) or just beyond clip_end
(EEVEE 4.2): everything at or beyond the camera's clip_end becomes +inf (nothing).

The user's settings are restored afterwards (scene camera, Z pass, output format, compositing and
sequencer switches); only the Render Result image holds the new render, as after F12.
No per-pixel Python: the EXR is gathered with one fancy index per part.
"""
from __future__ import annotations

import base64
import os
import shutil
import struct
import tempfile

import numpy as np

from .wire.names import MIN_KNOWN_PIXELS

EXR_MAGIC = b"v/1\x01"
EXR_MULTIPART = 0x1000
_PIXEL_BYTES = {0: 4, 1: 2, 2: 4}  # EXR pixel types: UINT, HALF, FLOAT
_PIXEL_DTYPES = {0: "<u4", 1: "<f2", 2: "<f4"}


class RgbdError(ValueError):
    """The scene's view cannot be rendered or read; the message says what to change."""


# ------------------------------------------------------------------------- EXR (numpy, no bpy)

def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode("utf-8"), end + 1


def _exr_header(buf: bytes, pos: int) -> tuple[dict, int]:
    """One header's attributes {name: (type, raw bytes)} and the position after its terminator."""
    attrs = {}
    while buf[pos] != 0:
        name, pos = _cstring(buf, pos)
        kind, pos = _cstring(buf, pos)
        (size,) = struct.unpack_from("<i", buf, pos)
        attrs[name] = (kind, buf[pos + 4:pos + 4 + size])
        pos += 4 + size
    return attrs, pos + 1


def _exr_channels(raw: bytes) -> list[tuple[str, int]]:
    """chlist attribute → [(channel name, pixel type)] in file order (sorted by name)."""
    out, pos = [], 0
    while raw[pos] != 0:
        name, pos = _cstring(raw, pos)
        (kind,) = struct.unpack_from("<i", raw, pos)
        out.append((name, kind))
        pos += 16  # pixel type, pLinear + reserved, xSampling, ySampling
    return out


def read_exr(path: str) -> dict[str, np.ndarray]:
    """An uncompressed scanline OpenEXR (single- or multi-part) → {channel name: [H, W] float32}.

    Row 0 is the top row. Only what Blender writes with codec NONE is supported (RgbdError else).
    """
    with open(path, "rb") as f:
        buf = f.read()
    if not buf.startswith(EXR_MAGIC):
        raise RgbdError(f"{path}: not an OpenEXR file")
    (flags,) = struct.unpack_from("<I", buf, 4)
    multipart = bool(flags & EXR_MULTIPART)
    if flags & 0x200:
        raise RgbdError(f"{path}: tiled OpenEXR is not supported")
    pos, parts = 8, []
    while True:
        attrs, pos = _exr_header(buf, pos)
        parts.append(attrs)
        if not multipart or buf[pos] == 0:
            break
    pos += 1 if multipart else 0
    data = np.frombuffer(buf, dtype=np.uint8)
    chunk_head = 12 if multipart else 8  # [part number,] y, byte count
    out = {}
    for attrs in parts:
        if attrs.get("compression", ("", b"\0"))[1] != b"\0":
            raise RgbdError(f"{path}: compressed OpenEXR is not supported (write it with codec NONE)")
        x0, y0, x1, y1 = struct.unpack("<4i", attrs["dataWindow"][1])
        W, H = x1 - x0 + 1, y1 - y0 + 1
        n = struct.unpack("<i", attrs["chunkCount"][1])[0] if "chunkCount" in attrs else H
        if n != H:
            raise RgbdError(f"{path}: expected one scanline per chunk ({H}), found {n} chunks")
        offsets = np.frombuffer(buf, dtype="<u8", count=n, offset=pos).astype(np.int64)
        pos += 8 * n
        channels = _exr_channels(attrs["channels"][1])
        line = W * sum(_PIXEL_BYTES[k] for _, k in channels)
        ys = data[(offsets + chunk_head - 8)[:, None] + np.arange(4)].copy().view("<i4")[:, 0]
        rows = data[(offsets + chunk_head)[:, None] + np.arange(line)][np.argsort(ys, kind="stable")]
        start = 0
        for name, kind in channels:  # each scanline holds channel after channel
            nbytes = W * _PIXEL_BYTES[kind]
            block = np.ascontiguousarray(rows[:, start:start + nbytes])
            out[name] = block.view(_PIXEL_DTYPES[kind]).reshape(H, W).astype(np.float32)
            start += nbytes
    return out


def far_slack(clip_start: float, clip_end: float) -> float:
    """How far below clip_end a rasterised background may read, in metres.

    EEVEE reconstructs z from a float32 depth buffer value d ∈ [0, 1]; at the far plane
    dz/dd ≈ clip_end² / clip_start, and d is stored to 2^-24: 4 such steps, plus 1e-6 relative.
    (Measured: 199.976 for clip 0.1..200, 1001.03 for 0.1..1000.)
    """
    return 4.0 * clip_end * clip_end / max(clip_start, 1e-6) * 2.0 ** -24 + 1e-6 * clip_end


def depth_from_z(Z: np.ndarray, clip_start: float, clip_end: float) -> np.ndarray:
    """Blender's Z pass Z: [H, W] (z-depth) → D: [H, W] float32, +inf where nothing was hit.

    Nothing = not finite, ≤ 0, or within far_slack of clip_end or beyond (background reads 1e10 in
    Cycles, Workbench and EEVEE 5.x, and the far plane ± a few depth-buffer steps in EEVEE 4.2).
    """
    Z = np.asarray(Z, dtype=np.float32)
    known = np.isfinite(Z) & (Z > 0) & (Z < np.float32(clip_end - far_slack(clip_start, clip_end)))
    return np.where(known, Z, np.float32(np.inf)).astype(np.float32)


def init_rgbd(camera: str, png: bytes, depth: np.ndarray) -> dict:
    """The wire object: PNG bytes and D: [H, W] z-depth (+inf = nothing) → init_rgbd (docs/API.md)."""
    H, W = depth.shape
    return {"camera": camera, "width": int(W), "height": int(H),
            "rgb_png": base64.b64encode(png).decode("ascii"),
            "depth": base64.b64encode(np.ascontiguousarray(depth, dtype="<f4").tobytes()).decode("ascii")}


# ------------------------------------------------------------------------------ Blender side

# Output settings touched while saving, in the order they are set and restored (a format first:
# it decides which depths and codecs are valid).
_FORMAT_KEYS = ("media_type", "file_format", "color_mode", "color_depth", "exr_codec", "compression")


def _snapshot(struct_, keys) -> list:
    return [(k, getattr(struct_, k)) for k in keys if hasattr(struct_, k)]


def _restore(struct_, saved) -> None:
    for key, value in saved:
        try:
            setattr(struct_, key, value)
        except (TypeError, ValueError, AttributeError):  # e.g. a depth the restored format no longer offers
            pass


def _set_format(settings, exr: bool) -> None:
    if exr:
        if hasattr(settings, "media_type"):  # Blender 5.x: multilayer is a media type
            settings.media_type = "MULTI_LAYER_IMAGE"
        settings.file_format = "OPEN_EXR_MULTILAYER"
        settings.color_depth, settings.exr_codec = "32", "NONE"
    else:
        if hasattr(settings, "media_type"):
            settings.media_type = "IMAGE"
        settings.file_format = "PNG"
        settings.color_mode, settings.color_depth, settings.compression = "RGB", "8", 15


def _render_result():
    import bpy

    for img in bpy.data.images:
        if img.type == "RENDER_RESULT":
            return img
    raise RgbdError("the render produced no Render Result image")


def render_rgbd(scene, camera_obj, view_layer=None) -> tuple[bytes, np.ndarray]:
    """Render camera_obj at the scene's output resolution → (PNG bytes, D: [H, W] float32 z-depth).

    D is +inf where nothing was hit. Every setting changed here is restored, also on errors.
    """
    import bpy

    if camera_obj is None or camera_obj.type != "CAMERA":
        raise RgbdError("start from my scene: no camera to render (set the Zoom camera)")
    if view_layer is None:  # the active view layer, as F12 renders it
        ctx_layer = getattr(bpy.context, "view_layer", None)
        view_layer = (scene.view_layers.get(ctx_layer.name) if ctx_layer is not None else None) \
            or scene.view_layers[0]
    render, settings = scene.render, scene.render.image_settings
    saved_scene = [("camera", scene.camera)]
    saved_render = _snapshot(render, ("use_compositing", "use_sequencer"))
    saved_layer = _snapshot(view_layer, ("use_pass_z",))
    saved_format = _snapshot(settings, _FORMAT_KEYS)
    tmp = tempfile.mkdtemp(prefix="zoomscape_rgbd_")
    try:
        scene.camera = camera_obj
        render.use_compositing = render.use_sequencer = False  # the camera's own view, unprocessed
        view_layer.use_pass_z = True
        try:
            bpy.ops.render.render(write_still=False, layer=view_layer.name, scene=scene.name)
        except RuntimeError as e:
            raise RgbdError(f"camera '{camera_obj.name}': rendering for 'Start from my scene' "
                            f"failed ({str(e).strip()})") from None
        result = _render_result()
        png_path, exr_path = os.path.join(tmp, "rgb.png"), os.path.join(tmp, "z.exr")
        _set_format(settings, exr=False)
        result.save_render(png_path, scene=scene)
        _set_format(settings, exr=True)
        result.save_render(exr_path, scene=scene)
        with open(png_path, "rb") as f:
            png = f.read()
        channels = read_exr(exr_path)
    finally:
        _restore(settings, saved_format)
        _restore(view_layer, saved_layer)
        _restore(render, saved_render)
        _restore(scene, saved_scene)
        shutil.rmtree(tmp, ignore_errors=True)
    key = f"{view_layer.name}.Depth.Z"
    if key not in channels:
        depth_keys = [k for k in channels if k.endswith(".Depth.Z") or k == "Depth.Z"]
        if not depth_keys:
            raise RgbdError(f"the {render.engine} render has no Z pass (channels: "
                            f"{', '.join(sorted(channels)) or 'none'}); use Cycles or EEVEE")
        key = depth_keys[0]
    return png, depth_from_z(channels[key], camera_obj.data.clip_start, camera_obj.data.clip_end)


def render_init_rgbd(scene, camera_obj, wire_camera: dict, view_layer=None) -> dict:
    """The request's init_rgbd for camera_obj, whose wire camera (scene_io.camera_to_wire) is given."""
    png, depth = render_rgbd(scene, camera_obj, view_layer)
    H, W = depth.shape
    if (W, H) != (wire_camera["width"], wire_camera["height"]):
        raise RgbdError(f"camera '{camera_obj.name}': rendered {W}×{H} px but the request says "
                        f"{wire_camera['width']}×{wire_camera['height']}")
    known = int(np.isfinite(depth).sum())
    if known < MIN_KNOWN_PIXELS:
        raise RgbdError(f"camera '{camera_obj.name}' sees almost nothing of the scene ({known} pixels "
                        f"with a depth within its clip end {camera_obj.data.clip_end:g} m, need "
                        f"{MIN_KNOWN_PIXELS}); aim it at your set or turn off 'Start from my scene'")
    return init_rgbd(wire_camera["name"], png, depth)
