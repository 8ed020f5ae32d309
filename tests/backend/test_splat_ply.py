"""3DGS PLY (wire.splats): exact Inria layout (names, order, float32 LE, activations), round trip, peer reader."""
import numpy as np
import pytest
from plyfile import PlyData

from zoomscape.wire.splats import PROPERTIES, Gaussians, read_splat_ply
from zoomscape.wire.splats import SH_C0 as C0
from zoomscape.wire.splats import write_splat_ply as write_gaussians


def write_splat_ply(path, **arrays):
    write_gaussians(path, Gaussians(**arrays))


def random_splats(n, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return dict(means=rng.normal(size=(n, 3)) * 5, quats=q.astype(np.float32),
                scales=np.exp(rng.uniform(-8, 0, (n, 3))), opacities=rng.uniform(0.01, 0.99, n),
                colors=rng.uniform(0, 1, (n, 3)))


def test_layout_names_order_and_count():
    assert PROPERTIES[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert PROPERTIES[9:54] == [f"f_rest_{k}" for k in range(45)]
    assert PROPERTIES[54:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def test_round_trip(tmp_path):
    s = random_splats(1000)
    write_splat_ply(tmp_path / "a.ply", **s)
    r = read_splat_ply(tmp_path / "a.ply")
    assert len(r) == 1000
    np.testing.assert_array_equal(r.means, s["means"].astype(np.float32))
    np.testing.assert_allclose(r.scales, s["scales"], rtol=1e-5)
    np.testing.assert_allclose(r.opacities, s["opacities"], rtol=1e-5)
    np.testing.assert_allclose(r.colors, s["colors"], atol=1e-6)
    np.testing.assert_allclose(r.quats, s["quats"], atol=1e-6)


def test_peer_reader_sees_every_property_with_inria_activations(tmp_path):
    s = random_splats(257, seed=1)
    path = tmp_path / "b.ply"
    write_splat_ply(path, **s)
    ply = PlyData.read(str(path))
    assert ply.header.count("binary_little_endian") == 1
    v = ply["vertex"]
    assert [p.name for p in v.properties] == PROPERTIES
    assert all(v.data.dtype[p] == np.dtype("<f4") for p in PROPERTIES)
    assert v.count == 257
    np.testing.assert_allclose(v["opacity"], np.log(s["opacities"] / (1 - s["opacities"])), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(v["scale_1"], np.log(s["scales"][:, 1]), rtol=1e-5)
    np.testing.assert_allclose(v["f_dc_2"], (s["colors"][:, 2] - 0.5) / C0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(v["rot_0"], s["quats"][:, 0], atol=1e-7)
    assert not np.any(v["f_rest_44"]) and not np.any(v["nx"])
    assert path.stat().st_size == len(ply.header) + 1 + 257 * 62 * 4


def test_bad_input_is_named_and_leaves_no_file(tmp_path):
    s = random_splats(10)
    bad = dict(s, scales=-s["scales"])
    with pytest.raises(ValueError, match="scales"):
        write_splat_ply(tmp_path / "c.ply", **bad)
    with pytest.raises(ValueError, match="colors: shape"):
        write_splat_ply(tmp_path / "c.ply", **dict(s, colors=s["colors"][:5]))
    assert list(tmp_path.iterdir()) == []


def test_reader_rejects_other_layouts_and_truncation(tmp_path):
    from zoomscape.pointcloud import PointCloud, write_ply
    write_ply(tmp_path / "pc.ply", PointCloud(np.zeros((3, 3)), np.zeros((3, 3)), np.zeros(3)))
    with pytest.raises(ValueError, match="float|3DGS"):
        read_splat_ply(tmp_path / "pc.ply")
    write_splat_ply(tmp_path / "d.ply", **random_splats(20))
    data = (tmp_path / "d.ply").read_bytes()
    (tmp_path / "d.ply").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_splat_ply(tmp_path / "d.ply")
