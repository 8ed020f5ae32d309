"""The imported point object renders in Cycles and EEVEE with the colours of the PLY (no backend)."""
import numpy as np
import pytest

import bpy

from conftest import add_camera, render_rgb, use_engine


@pytest.mark.parametrize("engine", ["CYCLES", "EEVEE"])
def test_points_render_with_their_colours(zs, tmp_path, engine):
    scene = bpy.context.scene
    cam = add_camera("Cam", (0.0, -4.0, 0.0), (1.5707963, 0.0, 0.0), lens=35.0)
    scene.camera = cam
    # a 5 m × 5 m wall of points at y = 0 filling the view; left half red, right half blue
    g = np.linspace(-2.5, 2.5, 200, dtype=np.float32)
    X, Z = np.meshgrid(g, g)
    xyz = np.column_stack([X.ravel(), np.zeros(X.size, np.float32), Z.ravel()])
    rgb = np.where((xyz[:, :1] < 0), [[220, 20, 20]], [[20, 20, 220]]).astype(np.uint8)
    cloud = zs.wire.ply.PointCloud(xyz, rgb, np.full(len(xyz), 0.03, np.float32))
    zs.importers.import_points(scene, cloud, "Wall", "render-test")

    r = scene.render
    use_engine(scene, engine, 4)
    r.resolution_x = r.resolution_y = 64
    r.image_settings.file_format = "PNG"
    scene.view_settings.view_transform = "Standard"  # PNG = sRGB of the emitted linear colour
    rgb_px = render_rgb(scene, str(tmp_path / "wall.png"))
    left, right = rgb_px[16:48, 4:28], rgb_px[16:48, 36:60]
    tol = 0.03 if engine == "CYCLES" else 0.06  # EEVEE's point coverage darkens by about 5 %
    np.testing.assert_allclose(np.median(left.reshape(-1, 3), axis=0), np.array([220, 20, 20]) / 255, atol=tol)
    np.testing.assert_allclose(np.median(right.reshape(-1, 3), axis=0), np.array([20, 20, 220]) / 255, atol=tol)
    assert (np.abs(left - [220 / 255, 20 / 255, 20 / 255]).max(axis=2) < 2 * tol + 0.04).mean() > 0.95
