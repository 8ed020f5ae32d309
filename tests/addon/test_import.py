"""PLY reading (the wire.ply copy the extension ships) and the point object import: exact counts,
positions, colours; re-import replaces."""
import os

import numpy as np
import pytest

import blender_ext
import bpy


def random_cloud(n, seed=0):
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(n, 3)).astype(np.float32) * [3, 2, 1]
    rgb = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    radius = rng.uniform(0.01, 0.05, n).astype(np.float32)
    return xyz.astype(np.float32), rgb, radius


def write_extra_ply(path, xyz, rgb, radius):
    """A PLY with extra vertex properties and a trailing face element (must be tolerated)."""
    dt = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("red", "u1"), ("green", "u1"),
          ("blue", "u1"), ("alpha", "u1"), ("radius", "<f4"), ("confidence", "<f8")]
    data = np.zeros(len(xyz), dtype=dt)
    data["x"], data["y"], data["z"] = xyz.T
    data["red"], data["green"], data["blue"] = rgb.T
    data["radius"] = radius
    types = {"<f4": "float", "u1": "uchar", "<f8": "double"}
    head = ["ply", "format binary_little_endian 1.0", "comment extra", f"element vertex {len(xyz)}"]
    head += [f"property {types[t]} {n}" for n, t in dt]
    head += ["element face 0", "property list uchar int vertex_indices", "end_header"]
    with open(path, "wb") as f:
        f.write(("\n".join(head) + "\n").encode())
        data.tofile(f)


def write_ply(zs, path, xyz, rgb, radius=None):
    """The results layout through the extension's wire copy (rgb: [N, 3] uint8)."""
    zs.wire.ply.write_point_ply(path, zs.wire.ply.PointCloud(xyz, rgb, radius))


def test_the_extension_imports_its_own_copy_of_the_wire_package(zs):
    wire_dir = os.path.join(os.path.dirname(zs.__file__), "wire")
    assert zs.wire.__name__ == zs.__name__ + ".wire" and os.path.dirname(zs.wire.__file__) == wire_dir
    assert zs.importers.PointCloud is zs.wire.ply.PointCloud  # the importer takes the wire's cloud
    source = os.path.join(blender_ext.REPO_ROOT, "backend", "zoomscape", "wire")
    names = sorted(n for n in os.listdir(source) if n.endswith(".py"))
    assert sorted(n for n in os.listdir(wire_dir) if n.endswith(".py")) == names
    for name in names:  # byte for byte the backend's package
        with open(os.path.join(source, name), "rb") as a, open(os.path.join(wire_dir, name), "rb") as b:
            assert a.read() == b.read(), name
    assert not os.path.exists(os.path.join(blender_ext.REPO_ROOT, "addon", "wire"))


def test_read_ply_tolerates_extra_properties(zs, tmp_path):
    xyz, rgb, radius = random_cloud(1000, 1)
    write_extra_ply(tmp_path / "x.ply", xyz, rgb, radius)
    cloud = zs.wire.ply.read_point_ply(tmp_path / "x.ply")
    np.testing.assert_array_equal(cloud.xyz, xyz)
    assert cloud.rgb.dtype == np.float32
    np.testing.assert_array_equal(np.round(cloud.rgb * 255), rgb)
    np.testing.assert_array_equal(cloud.rgb8(), rgb)
    np.testing.assert_array_equal(cloud.radius, radius)


def test_read_ply_errors(zs, tmp_path):
    xyz, rgb, radius = random_cloud(10)
    write_ply(zs, tmp_path / "a.ply", xyz, rgb, radius)
    raw = (tmp_path / "a.ply").read_bytes()
    ply = zs.wire.ply
    (tmp_path / "t.ply").write_bytes(raw[:-5])
    with pytest.raises(ply.PLYError, match="truncated: header says 10 vertices, file holds 9"):
        ply.read_point_ply(tmp_path / "t.ply")
    (tmp_path / "b.ply").write_bytes(raw.replace(b"property uchar green\n", b""))
    with pytest.raises(ply.PLYError, match="'green' is missing"):
        ply.read_point_ply(tmp_path / "b.ply")
    (tmp_path / "c.ply").write_bytes(raw.replace(b"binary_little_endian", b"ascii"))
    with pytest.raises(ply.PLYError, match="format is 'ascii'"):
        ply.read_point_ply(tmp_path / "c.ply")


def test_import_points_exact(zs, tmp_path):
    n = 5000
    xyz, rgb, radius = random_cloud(n, 2)
    write_ply(zs, tmp_path / "p.ply", xyz, rgb, radius)
    scene = bpy.context.scene
    obj = zs.importers.import_points(scene, zs.wire.ply.read_point_ply(tmp_path / "p.ply"), "Pts", "job1")
    mesh = obj.data
    assert len(mesh.vertices) == n and len(mesh.edges) == 0 and len(mesh.polygons) == 0
    co = np.empty(n * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", co)
    np.testing.assert_array_equal(co.reshape(n, 3), xyz)
    col = mesh.attributes[zs.importers.COLOR_ATTR]
    assert (col.data_type, col.domain) == ("FLOAT_COLOR", "POINT")
    rgba = np.empty(n * 4, dtype=np.float32)
    col.data.foreach_get("color", rgba)
    rgba = rgba.reshape(n, 4)
    srgb = rgb / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    np.testing.assert_allclose(rgba[:, :3], linear, atol=1e-6)
    np.testing.assert_array_equal(rgba[:, 3], 1.0)
    rad = np.empty(n, dtype=np.float32)
    mesh.attributes[zs.importers.RADIUS_ATTR].data.foreach_get("value", rad)
    np.testing.assert_array_equal(rad, radius)  # the PLY's radius as it is (see importers)
    assert obj.name in bpy.data.collections["Zoomscape"].objects

    # the geometry nodes modifier turns the vertices into n points with the material
    mod = obj.modifiers[0]
    assert mod.type == "NODES"
    kinds = {n.bl_idname for n in mod.node_group.nodes}
    assert {"GeometryNodeMeshToPoints", "GeometryNodeSetMaterial"} <= kinds
    mat = mesh.materials[0]
    attr = next(n for n in mat.node_tree.nodes if n.bl_idname == "ShaderNodeAttribute")
    assert attr.attribute_name == zs.importers.COLOR_ATTR and attr.outputs["Color"].is_linked
    depsgraph = bpy.context.evaluated_depsgraph_get()
    counts = [len(inst.object.data.points) for inst in depsgraph.object_instances
              if inst.object.type == "POINTCLOUD"]
    assert counts == [n]


def test_reimport_replaces_the_job_objects(zs, tmp_path):
    scene = bpy.context.scene
    xyz, rgb, radius = random_cloud(100, 3)
    cloud = zs.wire.ply.PointCloud(xyz, rgb, radius)
    zs.importers.import_points(scene, cloud, "Pts", "jobA")
    other = zs.importers.import_points(scene, cloud, "Other", "jobB")
    meshes_before = len(bpy.data.meshes)
    again = zs.importers.import_points(scene, zs.wire.ply.PointCloud(xyz[:40], rgb[:40], None), "Pts", "jobA")
    job_a = [o for o in bpy.data.objects if o.get("zoomscape_job") == "jobA"]
    assert job_a == [again] and len(again.data.vertices) == 40
    assert other.name in bpy.data.objects and len(bpy.data.meshes) == meshes_before
