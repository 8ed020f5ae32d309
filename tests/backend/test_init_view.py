"""init_view.py: the wire init_rgbd → (I_0, D_0, M_0); every broken part named with its limit."""
import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from zoomscape.cameras import Camera, from_wire
from zoomscape.init_view import (MIN_KNOWN_PIXELS, InitRGBDError, decode_init_rgbd, decode_rgb_png,
                                 encode_init_rgbd)

W, H = 80, 64


def cam(name="Cam.000", width=W, height=H) -> Camera:
    M = np.eye(4).tolist()
    return from_wire({"name": name, "matrix_world": M, "fx": 70.0, "fy": 70.0, "cx": width / 2,
                      "cy": height / 2, "width": width, "height": height})


def scene(seed=0):
    """rgb: [H, W, 3] uint8; depth: [H, W] with +inf sky on top rows, 0 holes, a ramp elsewhere."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = (1.5 + np.arange(H)[:, None] * 0.25 + np.arange(W)[None] * 0.01).astype(np.float32)
    depth[:10] = np.inf
    depth[30:33, 40:50] = 0.0
    return rgb, depth


def png_bytes(array, mode, **save):
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG", **save)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_round_trip_keeps_colours_exactly_and_marks_background():
    rgb, depth = scene()
    init = encode_init_rgbd("Cam.000", rgb, depth)
    I_0, D_0, M_0 = decode_init_rgbd(init, cam())
    assert I_0.dtype == np.float32 and I_0.shape == (H, W, 3)
    assert D_0.dtype == np.float32 and D_0.shape == (H, W) and M_0.dtype == bool
    np.testing.assert_array_equal(np.round(I_0 * 255).astype(np.uint8), rgb)  # display-referred: v / 255
    assert I_0.min() >= 0.0 and I_0.max() <= 1.0
    known = np.isfinite(depth) & (depth > 0)
    np.testing.assert_array_equal(M_0, known)
    np.testing.assert_array_equal(D_0[known], depth[known])
    assert np.all(np.isposinf(D_0[~known]))
    assert M_0.sum() == H * W - 10 * W - 30


def test_rows_run_from_the_top():
    """Row 0 of the wire depth is the image's top row, like the PNG's first row."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[0] = 255  # top row white
    depth = np.full((H, W), 5.0, np.float32)
    depth[0] = 1.0
    raw = depth.astype("<f4").tobytes()
    init = {"camera": "Cam.000", "width": W, "height": H,
            "rgb_png": b64(png_bytes(rgb, "RGB")), "depth": b64(raw)}
    I_0, D_0, _ = decode_init_rgbd(init, cam())
    assert np.all(D_0[0] == 1.0) and np.all(D_0[1:] == 5.0)
    assert np.all(I_0[0] == 1.0) and np.all(I_0[1:] == 0.0)
    # big-endian bytes are not what the wire carries: the same values decode differently
    init["depth"] = b64(depth.astype(">f4").tobytes())
    D = decode_init_rgbd(init, cam())[1]  # 5.0 big-endian read little-endian: a tiny denormal
    assert D[1, 0] < 1e-30


@pytest.mark.parametrize("mode", ["RGBA", "L", "P"])
def test_other_8bit_png_modes_become_rgb(mode):
    rgb, depth = scene(1)
    if mode == "RGBA":
        arr = np.concatenate([rgb, np.full((H, W, 1), 7, np.uint8)], axis=2)
        expect = rgb
    elif mode == "L":
        arr = rgb[..., 0]
        expect = np.repeat(arr[..., None], 3, axis=2)
    else:
        arr = (rgb[..., 0] // 64).astype(np.uint8)  # 4 palette entries
        img = Image.fromarray(arr, "P")
        img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (768 - 12))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
        got = decode_rgb_png(buf.getvalue(), W, H)
        np.testing.assert_array_equal(got, palette[arr])
        return
    got = decode_rgb_png(png_bytes(arr, mode), W, H)
    np.testing.assert_array_equal(got, expect)


def _png_16bit(width, height):
    """A 16-bit RGB PNG written by hand (IHDR bit depth 16, colour type 2)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + b"\x12\x34" * 3 * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _jpeg(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="JPEG")
    return buf.getvalue()


def _broken(case):
    """(init dict with one broken part, field, words the message must contain)."""
    rgb, depth = scene(2)
    init = encode_init_rgbd("Cam.000", rgb, depth)
    good_png = base64.b64decode(init["rgb_png"])
    raw = depth.astype("<f4")
    if case == "base64":
        init["rgb_png"] = init["rgb_png"][:-3] + "!=="
        return init, "rgb_png", "base64"
    if case == "base64 depth":
        init["depth"] = "abc"
        return init, "depth", "base64"
    if case == "jpeg":
        init["rgb_png"] = b64(_jpeg(rgb))
        return init, "rgb_png", "not a PNG"
    if case == "png size":
        init["rgb_png"] = b64(png_bytes(rgb[:, :-1].copy(), "RGB"))
        return init, "rgb_png", f"{W - 1}×{H} pixels; must be {W}×{H}"
    if case == "png 16 bit":
        init["rgb_png"] = b64(_png_16bit(W, H))
        return init, "rgb_png", "16 bits"
    if case == "png truncated":
        init["rgb_png"] = b64(good_png[: len(good_png) // 2])
        return init, "rgb_png", "PNG"
    if case == "depth short":
        init["depth"] = b64(raw.tobytes()[:-4])
        return init, "depth", f"{W * H} little-endian float32 values ({4 * W * H} bytes); got {4 * W * H - 4}"
    if case == "depth nan":
        raw = raw.copy()
        raw[20, 7] = np.nan
        init["depth"] = b64(raw.tobytes())
        return init, "depth", "NaN at row 20, column 7"
    if case == "depth negative":
        raw = raw.copy()
        raw[40, 3] = -2.0
        init["depth"] = b64(raw.tobytes())
        return init, "depth", "-2 at row 40, column 3"
    if case == "depth -inf":
        raw = raw.copy()
        raw[12, 0] = -np.inf
        init["depth"] = b64(raw.tobytes())
        return init, "depth", "finite and > 0"
    if case == "too few known":
        few = np.full((H, W), np.inf, np.float32)
        few[0, :MIN_KNOWN_PIXELS - 1] = 3.0
        init["depth"] = b64(few.astype("<f4").tobytes())
        return init, "depth", f"only {MIN_KNOWN_PIXELS - 1} pixels have a depth; need at least {MIN_KNOWN_PIXELS}"
    if case == "camera":
        init["camera"] = "Cam.007"
        return init, "camera", "first camera 'Cam.000'"
    if case == "width":
        init["width"] = W + 16
        return init, "width", "must equal camera 'Cam.000'"
    if case == "missing depth":
        init.pop("depth")
        return init, "depth", "required"
    raise AssertionError(case)


CASES = ["base64", "base64 depth", "jpeg", "png size", "png 16 bit", "png truncated", "depth short",
         "depth nan", "depth negative", "depth -inf", "too few known", "camera", "width", "missing depth"]


@pytest.mark.parametrize("case", CASES)
def test_broken_init_names_the_part(case):
    init, field, words = _broken(case)
    with pytest.raises(InitRGBDError) as info:
        decode_init_rgbd(init, cam())
    err = info.value
    assert err.field == field, str(err)
    assert words in err.message, str(err)
    assert str(err).startswith(f"init_rgbd.{field}: ")


def test_exactly_min_known_pixels_is_enough():
    _, depth = scene(3)
    few = np.full((H, W), 0.0, np.float32)
    few[5, 10:10 + MIN_KNOWN_PIXELS] = 2.5
    init = encode_init_rgbd("Cam.000", np.zeros((H, W, 3), np.uint8), few)
    _, D_0, M_0 = decode_init_rgbd(init, cam())
    assert M_0.sum() == MIN_KNOWN_PIXELS and np.all(D_0[M_0] == 2.5)


def test_png_size_is_checked_before_pixels_are_decompressed():
    """A huge declared size is rejected from the header (no 2 GB allocation)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    with pytest.raises(InitRGBDError, match="40000×40000 pixels; must be 80×64"):
        decode_rgb_png(bomb, W, H)
