"""A per-pixel Gaussian in front of a depth edge keeps to its side of the edge (gaussians.EDGE_SHRINK):
seen from another camera the foreground neither spills over the background nor swells, and its
own view reproduces the image better too."""
import numpy as np
import pytest

from zoomscape import gaussians
from zoomscape.cameras import Camera, intrinsics_matrix, pixel_grid, pixel_rays
from zoomscape.gaussians import edge_toward, fit_colors, pixel_gaussians, psnr, render_level, torch_threads
from zoomscape.world import WORLD_FRAME

N, F = 64, 64.0
NEAR, FAR, HALF = 2.0, 10.0, 0.4     # a red square (half-width HALF m) at NEAR m before a blue wall at FAR m
RED, BLUE = np.array([1.0, 0.1, 0.1]), np.array([0.1, 0.2, 1.0])


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def camera(z: float) -> Camera:
    """Looking down +z (OpenCV axes) from (0, 0, z)."""
    c2w = np.eye(4)
    c2w[2, 3] = z
    return Camera(f"at {z}", intrinsics_matrix(F, F, N / 2, N / 2), c2w, N, N)


def scene(cam: Camera) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image [N, N, 3], z-depth [N, N], square [N, N] bool) at the pixel centres of cam."""
    r = pixel_rays(cam, pixel_grid(N, N))                     # z-component 1: x, y per metre of depth
    dz = NEAR - cam.c2w[2, 3]
    hit = (np.abs(r[:, 0] * dz) <= HALF) & (np.abs(r[:, 1] * dz) <= HALF)
    depth = np.where(hit, dz, FAR - cam.c2w[2, 3]).reshape(N, N)
    image = np.where(hit[:, None], RED, BLUE).reshape(N, N, 3).astype(np.float32)
    return image, depth, hit.reshape(N, N)


def lifted(shrink: float, monkeypatch):
    monkeypatch.setattr(gaussians, "EDGE_SHRINK", shrink)
    cam = camera(0.0)
    image, depth, _ = scene(cam)
    g = pixel_gaussians(cam, image, depth, WORLD_FRAME)
    return g.replace(colors=fit_colors(g, image, cam, WORLD_FRAME)), image


def test_edge_toward_points_at_the_farther_side():
    z = np.full((5, 6), 10.0)
    z[:, :3] = 2.0                                            # near on the left, far on the right
    g = edge_toward(z)
    assert np.allclose(g[1:-1, 2], [1.0, 0.0])                # the near column next to the edge
    assert abs(g[0, 2, 0] - 3 / 10 ** 0.5) < 1e-9             # on the border: the neighbours there are
    assert np.allclose(g[:, 3], 0.0) and np.allclose(g[:, :2], 0.0)   # the far side and the interior
    z[2, 1] = np.inf                                          # no depth: no neighbour, not an edge
    assert np.allclose(edge_toward(z)[2, 0], 0.0)


def test_the_foreground_keeps_to_its_silhouette_from_a_closer_camera(monkeypatch):
    """A camera 0.5 m closer (the square 1.33× larger, as a dive between levels sees it): with the
    footprint of every pixel (shrink 1) the square's red spills about a pixel over the wall all
    round it; with the edge footprint it stays inside, but for the square's corners (a corner
    pixel shrinks toward the corner's diagonal only)."""
    near_cam = camera(0.5)
    truth, _, square = scene(near_cam)
    out = {}
    for shrink in (1.0, gaussians.EDGE_SHRINK):
        g, image = lifted(shrink, monkeypatch)
        own = psnr(render_level(g, camera(0.0), WORLD_FRAME)[0], image)
        rgb = render_level(g, near_cam, WORLD_FRAME)[0].numpy()
        redness = rgb[..., 0] - rgb[..., 2]                   # +0.9 red, −0.9 blue
        spill = (~square) & (redness > -0.5)                  # wall pixels showing much of the square
        rows, cols = np.nonzero(square)
        corner = np.zeros_like(square)
        for r in (rows.min(), rows.max()):
            for c in (cols.min(), cols.max()):
                corner[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3] = True
        out[shrink] = dict(own=own, spill=int(spill.sum()), psnr=psnr(rgb, truth),
                           off_corner=int((spill & ~corner).sum()))
    old, new = out[1.0], out[gaussians.EDGE_SHRINK]
    ring = 4 * 2 * HALF / (NEAR - 0.5) * F                    # the silhouette's length in pixels
    assert old["spill"] > 0.5 * ring, out                     # the flaw this fixes is real
    assert new["off_corner"] == 0 and new["spill"] < 0.15 * old["spill"], out
    assert new["psnr"] > old["psnr"] + 3.0, out
    assert new["own"] >= old["own"] - 0.1, out
