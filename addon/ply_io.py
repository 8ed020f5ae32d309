"""Read the backend's binary point cloud PLY into numpy arrays (numpy only, no bpy).

The results PLY (docs/API.md) is binary little-endian with ``element vertex N`` and the
properties x, y, z (float), red, green, blue (uchar) and optionally radius (float); extra
properties and extra elements after the vertices are tolerated. The vertex block is read with
one ``np.fromfile`` into a structured array: no per-point Python.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# PLY scalar type names → numpy little-endian dtypes.
PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "<i2", "int16": "<i2", "ushort": "<u2", "uint16": "<u2",
    "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
    "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8",
}

MAX_HEADER_BYTES = 64 * 1024


class PLYError(ValueError):
    """The file is not a PLY point cloud this reader understands."""


@dataclass
class PointCloud:
    """A coloured point cloud.

    xyz: [N, 3] float32 world coordinates; rgb: [N, 3] uint8 sRGB colours;
    radius: [N] float32 or None.
    """

    xyz: np.ndarray
    rgb: np.ndarray
    radius: np.ndarray | None

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


POINT_PROPERTIES = ("x", "y", "z", "red", "green", "blue")


def parse_header(head: bytes, path: str = "PLY",
                 required: tuple[str, ...] = POINT_PROPERTIES) -> tuple[int, np.dtype, int]:
    """Parse a binary little-endian PLY header whose vertex element has the `required` properties
    → (vertex count, vertex dtype, header length in bytes). Elements after the vertices are ignored."""
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise PLYError(f"{path}: not a PLY file (no 'ply' magic or 'end_header')")
    header_len = head.find(b"\n", end) + 1
    fmt, count, fields, in_vertex = None, None, [], False
    for line in head[:end].decode("ascii", "replace").splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            in_vertex = words[1] == "vertex"
            if in_vertex:
                if count is not None:
                    raise PLYError(f"{path}: more than one vertex element")
                count = int(words[2])
            elif count is None:
                raise PLYError(f"{path}: element '{words[1]}' comes before 'vertex' (unsupported)")
        elif words[0] == "property" and in_vertex:
            if words[1] == "list":
                raise PLYError(f"{path}: list property '{words[-1]}' in vertex element (unsupported)")
            if words[1] not in PLY_TYPES:
                raise PLYError(f"{path}: unknown property type '{words[1]}'")
            fields.append((words[2], PLY_TYPES[words[1]]))
    if fmt != "binary_little_endian":
        raise PLYError(f"{path}: format is '{fmt}', expected binary_little_endian")
    if count is None:
        raise PLYError(f"{path}: no 'element vertex'")
    names = [f[0] for f in fields]
    for need in required:
        if need not in names:
            raise PLYError(f"{path}: vertex property '{need}' is missing (have {', '.join(names)})")
    return count, np.dtype(fields), header_len


def read_vertices(path: str | os.PathLike, required: tuple[str, ...] = POINT_PROPERTIES) -> np.ndarray:
    """The vertex element of a PLY as one structured array (one ``np.fromfile``)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        count, dtype, header_len = parse_header(f.read(MAX_HEADER_BYTES), path, required)
        f.seek(header_len)
        data = np.fromfile(f, dtype=dtype, count=count)
    if data.shape[0] != count:
        raise PLYError(f"{path}: truncated: header says {count} vertices, file holds {data.shape[0]}")
    return data


def read_ply(path: str | os.PathLike) -> PointCloud:
    """Read a results PLY → PointCloud (xyz [N, 3] float32, rgb [N, 3] uint8, radius [N] or None)."""
    data = read_vertices(path)
    count, dtype = data.shape[0], data.dtype
    xyz = np.empty((count, 3), dtype=np.float32)
    xyz[:, 0], xyz[:, 1], xyz[:, 2] = data["x"], data["y"], data["z"]
    rgb = np.empty((count, 3), dtype=np.uint8)
    rgb[:, 0], rgb[:, 1], rgb[:, 2] = data["red"], data["green"], data["blue"]
    radius = data["radius"].astype(np.float32) if "radius" in dtype.names else None
    return PointCloud(xyz, rgb, radius)


def write_ply(path: str | os.PathLike, xyz: np.ndarray, rgb: np.ndarray,
              radius: np.ndarray | None = None) -> None:
    """Write the results layout (x y z red green blue [radius]) with one ``tofile``.

    xyz: [N, 3]; rgb: [N, 3] uint8; radius: [N] or None. Used by tests and the benchmark.
    """
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if radius is not None:
        fields.append(("radius", "<f4"))
    data = np.empty(len(xyz), dtype=fields)
    data["x"], data["y"], data["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    data["red"], data["green"], data["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    if radius is not None:
        data["radius"] = radius
    types = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(xyz)}"]
    header += [f"property {types[t]} {n}" for n, t in fields] + ["end_header"]
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        data.tofile(f)
