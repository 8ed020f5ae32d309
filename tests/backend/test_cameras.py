"""Camera conventions: wire (Blender) ⇄ OpenCV, rigid inverse, pixel ⇄ world identities, and
Blender's lens/sensor/shift/aspect intrinsics checked against Blender's view-plane definition."""
import numpy as np
import pytest

from zoomscape.cameras import (BLENDER_TO_OPENCV, Camera, blender_intrinsics, from_wire,
                               intrinsics_matrix, look_at, pixel_grid, pixels_to_world,
                               rigid_inverse, world_to_pixels)


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def random_pose(rng):
    T = np.eye(4)
    T[:3, :3] = random_rotation(rng)
    T[:3, 3] = rng.normal(scale=5.0, size=3)
    return T


def wire_camera(matrix_world, fx=500.0, fy=500.0, cx=160.0, cy=120.0, width=320, height=240):
    return {"name": "Cam", "matrix_world": np.asarray(matrix_world).tolist(),
            "fx": fx, "fy": fy, "cx": cx, "cy": cy, "width": width, "height": height}


def test_from_wire_to_wire_round_trip():
    rng = np.random.default_rng(1)
    M = random_pose(rng)
    wire = wire_camera(M, fx=612.5, fy=598.0, cx=171.2, cy=99.9, width=333, height=211)
    cam = from_wire(wire)
    np.testing.assert_allclose(cam.matrix_world, M, atol=1e-12)
    np.testing.assert_allclose(cam.c2w[:3, 1], -M[:3, 1], atol=1e-12)  # OpenCV y = −Blender y
    np.testing.assert_allclose(cam.c2w[:3, 2], -M[:3, 2], atol=1e-12)  # OpenCV z = −Blender z
    back = cam.to_wire()
    assert back["name"] == "Cam" and back["width"] == 333 and back["height"] == 211
    np.testing.assert_allclose(back["matrix_world"], M, atol=1e-12)
    assert (back["fx"], back["fy"], back["cx"], back["cy"]) == (612.5, 598.0, 171.2, 99.9)
    again = from_wire(back)
    np.testing.assert_allclose(again.c2w, cam.c2w, atol=1e-12)
    np.testing.assert_array_equal(again.K, cam.K)


def test_from_wire_accepts_objects_with_attributes():
    class Obj:
        pass
    o = Obj()
    for k, v in wire_camera(np.eye(4)).items():
        setattr(o, k, v)
    cam = from_wire(o)
    np.testing.assert_array_equal(cam.K, intrinsics_matrix(500.0, 500.0, 160.0, 120.0))


def test_rigid_inverse_matches_general_inverse():
    rng = np.random.default_rng(2)
    for _ in range(5):
        T = random_pose(rng)
        Ti = rigid_inverse(T)
        np.testing.assert_allclose(Ti, np.linalg.inv(T), atol=1e-12)
        np.testing.assert_allclose(Ti @ T, np.eye(4), atol=1e-12)


def test_blender_axes_identity_camera_looks_down_minus_z():
    cam = from_wire(wire_camera(np.eye(4)))
    pts = np.array([[0.0, 0.0, -5.0], [1.0, 0.0, -5.0], [0.0, 1.0, -5.0], [0.0, 0.0, 5.0]])
    uv, z = world_to_pixels(cam, pts)
    np.testing.assert_allclose(uv[0], [160.0, 120.0])
    assert z[0] == pytest.approx(5.0)                  # in front: positive z-depth
    assert uv[1, 0] == pytest.approx(160.0 + 500.0 / 5.0) and uv[1, 1] == pytest.approx(120.0)
    assert uv[2, 1] == pytest.approx(120.0 - 500.0 / 5.0)  # Blender +Y (up) is towards row 0
    assert z[3] == pytest.approx(-5.0)                 # behind the camera


def test_depth_is_z_depth_not_ray_length():
    cam = from_wire(wire_camera(np.eye(4)))
    uv = np.array([[0.5, 0.5], [319.5, 239.5]])
    X = pixels_to_world(cam, uv, np.array([3.0, 7.0]))
    np.testing.assert_allclose(-X[:, 2], [3.0, 7.0])  # distance along the optical axis


def test_pixels_to_world_then_world_to_pixels_is_identity():
    rng = np.random.default_rng(3)
    cam = from_wire(wire_camera(random_pose(rng), fx=410.0, fy=455.0, cx=150.3, cy=131.7))
    uv = pixel_grid(cam.width, cam.height)
    z = rng.uniform(0.1, 100.0, len(uv))
    X = pixels_to_world(cam, uv, z)
    uv2, z2 = world_to_pixels(cam, X)
    np.testing.assert_allclose(uv2, uv, atol=1e-9, rtol=0)
    np.testing.assert_allclose(z2, z, rtol=1e-12)


def test_pixel_grid_is_row_major_pixel_centres():
    g = pixel_grid(4, 3)
    assert g.shape == (12, 2)
    np.testing.assert_array_equal(g[0], [0.5, 0.5])
    np.testing.assert_array_equal(g[1], [1.5, 0.5])   # next column, same row
    np.testing.assert_array_equal(g[4], [0.5, 1.5])   # next row
    np.testing.assert_array_equal(g[-1], [3.5, 2.5])


def test_look_at_points_the_camera_at_the_target():
    eye, target = np.array([3.0, -7.0, 2.5]), np.array([0.5, 1.0, 0.8])
    M = look_at(eye, target)
    R = M[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    assert R[2, 0] == pytest.approx(0.0, abs=1e-12)    # camera x stays horizontal (no roll)
    cam = from_wire(wire_camera(M))
    uv, z = world_to_pixels(cam, target[None])
    np.testing.assert_allclose(uv[0], [160.0, 120.0], atol=1e-9)
    assert z[0] == pytest.approx(np.linalg.norm(target - eye))
    above = target + np.array([0.0, 0.0, 0.5])         # world up appears higher in the image
    assert world_to_pixels(cam, above[None])[0][0, 1] < 120.0


def test_scaled_camera_keeps_field_of_view():
    rng = np.random.default_rng(4)
    cam = from_wire(wire_camera(random_pose(rng)))
    small = cam.scaled(80, 60)
    X = pixels_to_world(cam, np.array([[10.0, 20.0], [300.0, 200.0]]), np.array([2.0, 4.0]))
    np.testing.assert_allclose(world_to_pixels(small, X)[0],
                               [[10.0 / 4, 20.0 / 4], [300.0 / 4, 200.0 / 4]], atol=1e-9)


# --- Blender intrinsics -----------------------------------------------------------------------

def blender_viewplane_pixels(Xc, lens, sensor_width, sensor_height, sensor_fit, shift_x, shift_y,
                             res_x, res_y, pixel_aspect_x=1.0, pixel_aspect_y=1.0):
    """Pixels of Blender camera-space points Xc [N, 3] (camera looks down −Z) by Blender's own
    construction: the sensor (mm) behind a lens (mm) spans a view plane; the fitted sensor
    dimension maps to the fitted image side (in pixel-aspect corrected units); shifts move the
    plane by fractions of that side; u runs left→right over [0, res_x), v top→bottom."""
    ycor = pixel_aspect_y / pixel_aspect_x
    if sensor_fit == "AUTO":
        horizontal = pixel_aspect_x * res_x >= pixel_aspect_y * res_y
        sensor = sensor_width
    else:
        horizontal = sensor_fit == "HORIZONTAL"
        sensor = sensor_width if horizontal else sensor_height
    side = res_x if horizontal else ycor * res_y            # fitted side, aspect corrected
    mm_per_unit = sensor / side                             # film millimetres per corrected pixel
    # View-plane rectangle on the film (mm), centred on the optical axis, then shifted.
    x0 = (-0.5 * res_x + shift_x * side) * mm_per_unit
    x1 = (0.5 * res_x + shift_x * side) * mm_per_unit
    y0 = (-0.5 * ycor * res_y + shift_y * side) * mm_per_unit
    y1 = (0.5 * ycor * res_y + shift_y * side) * mm_per_unit
    # Pinhole onto the film at distance `lens` (mm).
    film_x = lens * Xc[:, 0] / -Xc[:, 2]
    film_y = lens * Xc[:, 1] / -Xc[:, 2]
    u = (film_x - x0) / (x1 - x0) * res_x
    v = (1.0 - (film_y - y0) / (y1 - y0)) * res_y
    return np.stack([u, v], axis=1)


CASES = [
    # lens, sensor w, sensor h, fit, shift x, shift y, res x, res y, pixel aspect x, y
    (50.0, 36.0, 24.0, "AUTO", 0.0, 0.0, 1920, 1080, 1.0, 1.0),
    (35.0, 36.0, 24.0, "AUTO", 0.0, 0.0, 720, 1280, 1.0, 1.0),      # portrait: AUTO fits height
    (24.0, 23.5, 15.6, "HORIZONTAL", 0.1, -0.05, 640, 480, 1.0, 1.0),
    (85.0, 36.0, 24.0, "VERTICAL", -0.2, 0.15, 500, 700, 1.0, 1.0),
    (18.0, 17.3, 13.0, "VERTICAL", 0.3, 0.0, 1000, 400, 1.0, 1.0),  # wide image, vertical fit
    (40.0, 30.0, 20.0, "AUTO", 0.05, 0.1, 512, 512, 2.0, 1.0),     # anamorphic pixels
    (40.0, 30.0, 20.0, "AUTO", -0.05, 0.2, 400, 500, 1.0, 1.6),    # tall pixels, tall image
    (40.0, 30.0, 20.0, "AUTO", 0.1, -0.1, 400, 500, 1.5, 1.0),     # wide pixels flip AUTO fit
    (60.0, 36.0, 36.0, "HORIZONTAL", 0.0, 0.3, 256, 128, 1.0, 1.3),
]


@pytest.mark.parametrize("case", CASES)
def test_blender_intrinsics_match_blender_view_plane(case):
    lens, sw, sh, fit, sx, sy, rx, ry, ax, ay = case
    intr = blender_intrinsics(lens, sw, sh, fit, sx, sy, rx, ry, ax, ay)
    assert (intr["width"], intr["height"]) == (rx, ry)
    cam = from_wire({"name": "C", "matrix_world": np.eye(4).tolist(), **intr})
    rng = np.random.default_rng(5)
    Xc = np.stack([rng.uniform(-2, 2, 50), rng.uniform(-2, 2, 50), rng.uniform(-9, -1, 50)], 1)
    expected = blender_viewplane_pixels(Xc, lens, sw, sh, fit, sx, sy, rx, ry, ax, ay)
    uv, z = world_to_pixels(cam, Xc)  # identity matrix_world: world = Blender camera space
    np.testing.assert_allclose(uv, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(z, -Xc[:, 2])


def test_blender_intrinsics_known_figures():
    # 50 mm lens on a 36 mm sensor, 1920 px wide: f = 50 / 36 · 1920 px; a point 18 mm off-axis on
    # the film (half the sensor) lands on the right image border.
    intr = blender_intrinsics(50.0, 36.0, 24.0, "HORIZONTAL", 0.0, 0.0, 1920, 1080)
    assert intr["fx"] == pytest.approx(50.0 / 36.0 * 1920.0)
    assert intr["fy"] == pytest.approx(intr["fx"])
    assert (intr["cx"], intr["cy"]) == (960.0, 540.0)
    cam = from_wire({"name": "C", "matrix_world": np.eye(4).tolist(), **intr})
    uv, _ = world_to_pixels(cam, np.array([[18.0 / 50.0 * 4.0, 0.0, -4.0]]))
    assert uv[0, 0] == pytest.approx(1920.0)
    # A shift of 0.5 moves the optical axis by half the larger side (here the width) to the left.
    shifted = blender_intrinsics(50.0, 36.0, 24.0, "AUTO", 0.5, 0.0, 1920, 1080)
    assert shifted["cx"] == pytest.approx(0.0)
    # Vertical fit on a portrait frame: the 24 mm sensor height spans the 1280 px height.
    v = blender_intrinsics(50.0, 36.0, 24.0, "VERTICAL", 0.0, 0.0, 720, 1280)
    assert v["fy"] == pytest.approx(50.0 / 24.0 * 1280.0)


def test_blender_to_opencv_flips_y_and_z():
    np.testing.assert_array_equal(BLENDER_TO_OPENCV, np.diag([1.0, -1.0, -1.0, 1.0]))
    cam = Camera("c", intrinsics_matrix(1, 1, 0, 0), np.eye(4), 64, 64)
    np.testing.assert_array_equal(cam.matrix_world, np.diag([1.0, -1.0, -1.0, 1.0]))
