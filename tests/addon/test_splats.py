"""3DGS PLY files → splat objects: the reader (the wire.splats copy the extension ships) against an
independent writer, the activated attributes read back with foreach_get, the instancing geometry,
and renders in Cycles and EEVEE."""
import numpy as np
import pytest

import bpy

from conftest import add_camera, render_rgb, use_engine

C0 = 0.28209479177387814
# Blender 5.3+ renders Gaussians natively (PointCloud GAUSSIAN_SPLAT); older lines use the quads.
NATIVE = bpy.app.version >= (5, 3, 0)
needs_native = pytest.mark.skipif(not NATIVE, reason=f"native Gaussian splats need Blender 5.3+, "
                                                     f"this is {bpy.app.version_string}")
# Both render paths where this Blender has both: the quads everywhere, the native splats on 5.3+.
PATHS = [pytest.param(False, id="quads"), pytest.param(True, id="native", marks=needs_native)]
INRIA = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
         + [f"f_rest_{i}" for i in range(45)]
         + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_inria_ply(path, means, f_dc, opacity, log_scales, quats, names=INRIA, extra_element=False):
    """The Inria layout written straight from docs/API.md (independent of the extension's writer)."""
    n = len(means)
    data = np.zeros(n, dtype=[(name, "<f4") for name in names])
    cols = {"x": means[:, 0], "y": means[:, 1], "z": means[:, 2], "opacity": opacity}
    cols.update({f"f_dc_{j}": f_dc[:, j] for j in range(3)})
    cols.update({f"scale_{j}": log_scales[:, j] for j in range(3)})
    cols.update({f"rot_{j}": quats[:, j] for j in range(4)})
    for name, col in cols.items():
        if name in names:
            data[name] = col
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names]
    if extra_element:
        header += ["element face 1", "property list uchar int vertex_indices"]
    with open(path, "wb") as f:
        f.write(("\n".join(header + ["end_header"]) + "\n").encode("ascii"))
        data.tofile(f)
        if extra_element:
            f.write(bytes([3]) + np.arange(3, dtype="<i4").tobytes())


def random_gaussians(n, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n, 3)).astype(np.float32)
    f_dc = rng.normal(scale=1.2, size=(n, 3)).astype(np.float32)  # some rgb fall outside [0, 1]
    opacity = rng.normal(scale=3.0, size=n).astype(np.float32)
    log_scales = rng.uniform(-6, -1, (n, 3)).astype(np.float32)
    quats = rng.normal(size=(n, 4)).astype(np.float32) * rng.uniform(0.5, 2, (n, 1)).astype(np.float32)
    return means, f_dc, opacity, log_scales, quats


def quat_to_matrix(q):
    """[N, 4] wxyz (normalised here) → [N, 3, 3] float64."""
    q = np.asarray(q, dtype=np.float64)
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], 1).reshape(-1, 3, 3)


def activated(zs, means, f_dc, opacity, log_scales, quats):
    """Raw 3DGS parameters → wire.splats.Gaussians, activated here from the formulas (float64)."""
    q = quats.astype(np.float64)
    return zs.wire.splats.Gaussians(
        means=means, quats=(q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32),
        scales=np.exp(log_scales.astype(np.float64)).astype(np.float32),
        opacities=(1 / (1 + np.exp(-opacity.astype(np.float64)))).astype(np.float32),
        colors=(0.5 + C0 * f_dc.astype(np.float64)).astype(np.float32))


def read_attr(mesh, name, prop, width):
    out = np.empty(len(mesh.vertices) * width, dtype=np.float32)
    mesh.attributes[name].data.foreach_get(prop, out)
    return out.reshape(len(mesh.vertices), width) if width > 1 else out


def assert_activated(g, want):
    """g (read) equals want (activated from the raw parameters in float64), to float32 rounding."""
    np.testing.assert_array_equal(g.means, want.means)
    np.testing.assert_allclose(g.colors, want.colors, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(g.opacities, want.opacities, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g.scales, want.scales, rtol=1e-6)
    np.testing.assert_allclose(g.quats, want.quats, rtol=1e-6, atol=1e-7)


def test_reader_reads_the_inria_layout_and_tolerates_variants(zs, tmp_path):
    sp = zs.wire.splats
    means, f_dc, opacity, log_scales, quats = random_gaussians(257)
    want = activated(zs, means, f_dc, opacity, log_scales, quats)
    write_inria_ply(tmp_path / "a.ply", means, f_dc, opacity, log_scales, quats)
    s = sp.read_splat_ply(tmp_path / "a.ply")
    assert_activated(s, want)
    # our writer produces exactly the Inria property list, in order, and the raw parameters back
    sp.write_splat_ply(tmp_path / "b.ply", s)
    head = (tmp_path / "b.ply").read_bytes()[:4096].split(b"end_header")[0].decode()
    assert [ln.split()[2] for ln in head.splitlines() if ln.startswith("property")] == INRIA
    assert_activated(sp.read_splat_ply(tmp_path / "b.ply"), want)
    raw_b = zs.wire.ply.read_vertices(tmp_path / "b.ply")  # the stored raw parameters
    np.testing.assert_array_equal(zs.wire.ply.columns(raw_b, "xyz"), means)
    np.testing.assert_allclose(zs.wire.ply.columns(raw_b, [f"f_dc_{j}" for j in range(3)]), f_dc, atol=2e-5)
    np.testing.assert_allclose(zs.wire.ply.columns(raw_b, [f"scale_{j}" for j in range(3)]), log_scales, atol=2e-6)
    # logit(sigmoid(x)) in float32: the sigmoid's spacing near 0 and 1 limits it to ~1e-7·e^|x|
    err = np.abs(raw_b["opacity"] - opacity)
    assert (err <= 1e-5 + 2e-7 * np.exp(np.abs(opacity))).all(), err.max()
    np.testing.assert_allclose(zs.wire.ply.columns(raw_b, [f"rot_{j}" for j in range(4)]), want.quats, atol=1e-7)
    # degree-0 file in another order, an extra property and an element after the vertices
    names = ["rot_0", "rot_1", "rot_2", "rot_3", "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2",
             "opacity", "scale_0", "scale_1", "scale_2", "extra"]
    write_inria_ply(tmp_path / "c.ply", means, f_dc, opacity, log_scales, quats, names, extra_element=True)
    c = sp.read_splat_ply(tmp_path / "c.ply")
    np.testing.assert_array_equal(c.means, means)
    np.testing.assert_allclose(c.quats, want.quats, rtol=1e-6, atol=1e-7)
    write_inria_ply(tmp_path / "d.ply", means, f_dc, opacity, log_scales, quats,
                    [n for n in INRIA if n != "scale_1"])
    with pytest.raises(zs.wire.ply.PLYError, match="'scale_1' is missing"):
        sp.read_splat_ply(tmp_path / "d.ply")
    raw = (tmp_path / "a.ply").read_bytes()
    (tmp_path / "e.ply").write_bytes(raw[:-100])
    with pytest.raises(zs.wire.ply.PLYError, match="truncated: header says 257"):
        sp.read_splat_ply(tmp_path / "e.ply")


def test_import_decodes_every_attribute_exactly(zs, tmp_path):
    si = zs.splat_import
    n = 1000
    means, f_dc, opacity, log_scales, quats = random_gaussians(n, seed=1)
    write_inria_ply(tmp_path / "g.ply", means, f_dc, opacity, log_scales, quats)
    obj = si.import_splats(bpy.context.scene, zs.wire.splats.read_splat_ply(tmp_path / "g.ply"), "G", "job",
                           native=False)  # the quad path, which every Blender line keeps
    mesh = obj.data
    assert len(mesh.vertices) == n and obj.name in bpy.data.collections["Zoomscape"].objects
    np.testing.assert_array_equal(read_attr(mesh, "position", "vector", 3), means)
    rgb = np.clip(0.5 + C0 * f_dc.astype(np.float64), 0, 1)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    col = read_attr(mesh, "color", "color", 4)
    np.testing.assert_allclose(col[:, :3], lin, atol=2e-6)
    np.testing.assert_array_equal(col[:, 3], 1.0)
    np.testing.assert_allclose(read_attr(mesh, "opacity", "value", 1), 1 / (1 + np.exp(-opacity.astype(np.float64))),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(read_attr(mesh, "scale", "vector", 3), np.exp(log_scales.astype(np.float64)), rtol=1e-6)
    unit = quats / np.linalg.norm(quats.astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(read_attr(mesh, "rotation", "value", 4), unit, rtol=1e-6, atol=1e-7)  # unit wxyz
    # the instancing frame: same covariance, thinnest axis on local z
    dq, ds = read_attr(mesh, "zs_disc_rotation", "value", 4), read_attr(mesh, "zs_disc_scale", "vector", 3)
    s = np.exp(log_scales.astype(np.float64))
    R, Rd = quat_to_matrix(quats), quat_to_matrix(dq)
    cov = R @ (s[:, :, None] ** 2 * np.eye(3)) @ R.transpose(0, 2, 1)
    cov_d = Rd @ (ds[:, :, None].astype(np.float64) ** 2 * np.eye(3)) @ Rd.transpose(0, 2, 1)
    np.testing.assert_allclose(cov_d, cov, atol=1e-6 * s.max() ** 2)
    np.testing.assert_allclose(ds[:, 2], s.min(axis=1), rtol=1e-6)
    assert (np.argmin(log_scales, axis=1) != 2).sum() > 500  # the relabelling was exercised


def test_every_gaussian_becomes_an_oriented_scaled_quad(zs):
    si = zs.splat_import
    n = 300
    means, f_dc, opacity, log_scales, quats = random_gaussians(n, seed=2)
    obj = si.import_splats(bpy.context.scene, activated(zs, means, f_dc, opacity, log_scales, quats), "G", "job",
                           native=False)
    obj.location = (1.0, 2.0, 3.0)
    dg = bpy.context.evaluated_depsgraph_get()
    mats = np.array([np.array(inst.matrix_world) for inst in dg.object_instances
                     if inst.is_instance and inst.parent and inst.parent.original == obj])
    assert len(mats) == n  # every Gaussian, no subsampling
    dq = read_attr(obj.data, "zs_disc_rotation", "value", 4)
    ds = read_attr(obj.data, "zs_disc_scale", "vector", 3).astype(np.float64)
    # instances come in point order; columns 0, 1 = K·σ·axis, translation = mean + tiny lift on the normal
    Rd = quat_to_matrix(dq)
    K = si.K_SIGMA
    np.testing.assert_allclose(mats[:, :3, 0], Rd[:, :, 0] * K * ds[:, :1], atol=1e-5)
    np.testing.assert_allclose(mats[:, :3, 1], Rd[:, :, 1] * K * ds[:, 1:2], atol=1e-5)
    lift = mats[:, :3, 3] - (means + [1, 2, 3])
    widest = K * ds[:, :2].max(axis=1)
    np.testing.assert_allclose(np.abs(np.cross(lift, Rd[:, :, 2])).max(axis=1), 0, atol=1e-5)
    assert (np.linalg.norm(lift, axis=1) <= si.DEPTH_JITTER * widest * 1.001 + 1e-6).all()
    assert np.linalg.norm(lift, axis=1).max() > 0  # lifted: coplanar quads get distinct depths


@pytest.mark.parametrize("native", PATHS)
@pytest.mark.parametrize("engine", ["CYCLES", "EEVEE"])
def test_a_coplanar_splat_wall_renders_with_its_colours(zs, tmp_path, engine, native):
    """A flat wall of overlapping, exactly coplanar Gaussians covers the view with their colour
    (the files' display sRGB through the Standard view transform), as quads and as native splats."""
    si = zs.splat_import
    scene = bpy.context.scene
    scene.camera = add_camera("Cam", (0.0, -4.0, 0.0), (1.5707963, 0.0, 0.0), lens=35.0)
    g = np.linspace(-2.5, 2.5, 50, dtype=np.float32)
    X, Z = np.meshgrid(g, g)
    means = np.column_stack([X.ravel(), np.zeros(X.size, np.float32), Z.ravel()])
    rgb = np.where(means[:, :1] < 0, [[220, 20, 20]], [[20, 20, 220]]) / 255.0
    spacing = g[1] - g[0]
    log_scales = np.log(np.tile([[0.7 * spacing, 1e-5, 0.7 * spacing]], (len(means), 1))).astype(np.float32)
    quats = np.tile([[1.0, 0, 0, 0]], (len(means), 1)).astype(np.float32)
    splats = activated(zs, means, ((rgb - 0.5) / C0).astype(np.float32),
                       np.full(len(means), 4.6, np.float32), log_scales, quats)
    obj = si.import_splats(scene, splats, "Wall", "render-test", native=native)
    assert obj.type == ("POINTCLOUD" if native else "MESH")
    r = scene.render
    use_engine(scene, engine, 8)
    r.resolution_x = r.resolution_y = 48
    r.image_settings.file_format = "PNG"
    scene.view_settings.view_transform = "Standard"
    px = render_rgb(scene, str(tmp_path / "wall.png"))
    left, right = px[12:36, 4:20].reshape(-1, 3), px[12:36, 28:44].reshape(-1, 3)
    tol = 0.05 if engine == "CYCLES" else 0.08  # EEVEE's dithered transparency is noisier
    np.testing.assert_allclose(np.median(left, axis=0), np.array([220, 20, 20]) / 255, atol=tol)
    np.testing.assert_allclose(np.median(right, axis=0), np.array([20, 20, 220]) / 255, atol=tol)


def test_stacked_splats_composite_without_russian_roulette_noise(zs, tmp_path, native=False):
    """Thirty faint dark splats (α 0.05: like the tails a pixel crosses in a splat world) in front
    of an opaque white one, each far wider than the view (a uniform colour over it): the import
    raises Cycles' Min Transparent Bounces to its Max, so every transparent hit is composited
    exactly and two renders with different seeds agree at 2 samples. With Cycles' default (0) a
    path through the stack is ended by Russian roulette, kept with probability √throughput, and
    the white splat behind shows as speckle (measured here over a transparent film).
    The quad path only: Blender 5.3's native splats sample a stack stochastically whatever these
    settings (measured: 0.015 RMS between two seeds at 2 samples, 0.010 at 16, with or without
    our material)."""
    si = zs.splat_import
    scene = bpy.context.scene
    scene.cycles.min_transparent_bounces, scene.cycles.transparent_max_bounces = 0, 8  # defaults
    scene.camera = add_camera("Cam", (0.0, -4.0, 0.0), (1.5707963, 0.0, 0.0), lens=35.0)
    walls = [([30, 30, 30], -2.9)] * 30 + [([230, 230, 230], 4.6)]   # (colour, logit: α 0.05, 0.99)
    for k, (rgb, logit) in enumerate(walls):
        splat = activated(zs, np.array([[0.0, 0.05 * k, 0.0]], np.float32),
                          ((np.array([rgb], np.float32) / 255.0 - 0.5) / C0).astype(np.float32),
                          np.array([logit], np.float32), np.log(np.array([[10.0, 1e-5, 10.0]], np.float32)),
                          np.array([[1.0, 0, 0, 0]], np.float32))
        si.import_splats(scene, splat, f"Wall {k}", "noise-test", native=native)
    assert scene.cycles.transparent_max_bounces >= 64
    assert scene.cycles.min_transparent_bounces == scene.cycles.transparent_max_bounces
    r = scene.render
    use_engine(scene, "CYCLES", 2)
    r.resolution_x = r.resolution_y = 32
    r.film_transparent = True
    r.image_settings.file_format = "PNG"
    scene.view_settings.view_transform = "Standard"
    renders = []
    for seed in (1, 2):
        scene.cycles.seed = seed
        renders.append(render_rgb(scene, str(tmp_path / f"stack_{seed}.png")))
    rms = float(np.sqrt(np.mean((renders[0] - renders[1]) ** 2)))
    # measured: 0.0005 RMS composited exactly, 0.015 with the roulette
    assert rms < 0.004, f"two seeds differ by {rms:.4f} RMS: the stack is not composited exactly"
    assert renders[0].std(axis=(0, 1)).max() < 0.01   # one uniform mix over the whole view
