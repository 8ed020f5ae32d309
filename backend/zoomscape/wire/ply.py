"""Binary PLY files: the one header parser, and the wire's point-cloud layout (docs/API.md).

A PLY is read as its vertex element, one structured array (one ``np.fromfile``; no per-point
Python). Both binary byte orders are read; elements before the vertices are skipped when their
rows have a fixed size, elements after them are ignored; ascii files and list properties in or
before the vertex element are refused with a message naming what is unsupported.

The point cloud of the results (pointcloud.ply) is binary little-endian with the vertex properties
x, y, z (float), red, green, blue (uchar) and radius (float): the world-space radius of the disc
each point stands for, in metres (half the pixel diagonal it came from, at its depth). Files from
other tools may have float or 16-bit colours (read as fractions of the type's maximum), no colours
(grey) or no radius.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .atomic import atomic_open

# PLY scalar type names → numpy type codes (byte order added per file).
PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
PLY_NAMES = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint",
             "f4": "float", "f8": "double"}
BYTE_ORDERS = {"binary_little_endian": "<", "binary_big_endian": ">"}
MAX_HEADER_BYTES = 64 * 1024


class PLYError(ValueError):
    """The file is not a PLY this reader understands; the message says what and where."""


@dataclass(frozen=True)
class PlyHeader:
    """The vertex element of a binary PLY: count, row dtype (with byte order) and where it starts."""

    vertex_count: int
    vertex_dtype: np.dtype
    vertex_offset: int
    byte_order: str

    @property
    def names(self) -> list[str]:
        return list(self.vertex_dtype.names or ())


def read_header(path) -> PlyHeader:
    """Parse the header of the PLY at path → PlyHeader; PLYError naming what is unsupported."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    if not head.startswith(b"ply\n") and not head.startswith(b"ply\r\n"):
        raise PLYError(f"{path}: not a PLY file (first line is not 'ply')")
    end = head.find(b"end_header")
    if end < 0:
        raise PLYError(f"{path}: PLY header has no end_header within {MAX_HEADER_BYTES} bytes")
    header_len = head.find(b"\n", end) + 1
    if header_len == 0:
        raise PLYError(f"{path}: PLY header has no end_header line")
    fmt, elements = None, []  # [(name, count, [(property, type code or None for lists)])]
    for line in head[:end].decode("ascii", "replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) == 3:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements and len(words) >= 3:
            if words[1] == "list":
                elements[-1][2].append((words[-1], None))
            elif len(words) == 3 and words[1] in PLY_TYPES:
                elements[-1][2].append((words[2], PLY_TYPES[words[1]]))
            else:
                raise PLYError(f"{path}: unsupported PLY property {line.strip()!r}")
        else:
            raise PLYError(f"{path}: malformed PLY header line {line.strip()!r}")
    if fmt not in BYTE_ORDERS:
        raise PLYError(f"{path}: format is '{fmt}': not supported "
                       "(binary_little_endian and binary_big_endian only)")
    order, offset = BYTE_ORDERS[fmt], header_len
    for name, count, props in elements:
        if any(t is None for _, t in props):
            raise PLYError(f"{path}: element '{name}' has list properties in or before the vertex "
                           "element; not supported")
        dtype = np.dtype([(p, order + t) for p, t in props])
        if name == "vertex":
            return PlyHeader(count, dtype, offset, order)
        offset += count * dtype.itemsize
    raise PLYError(f"{path}: PLY file has no 'vertex' element")


def read_vertices(path, required: tuple[str, ...] = ("x", "y", "z"), *, what: str = "") -> np.ndarray:
    """The vertex element of the PLY at path as one structured array [N] (one ``np.fromfile``).

    required: properties that must be there, else PLYError "vertex element lacks properties
    [...]" (what: words that say which layout needed them, e.g. "the 3DGS layout").
    """
    path = os.fspath(path)
    h = read_header(path)
    missing = [p for p in required if p not in h.names]
    if missing:
        need = f" ({what} needs {', '.join(required)})" if what else ""
        raise PLYError(f"{path}: vertex element lacks properties {missing}: property '{missing[0]}' "
                       f"is missing{need}; it has {', '.join(h.names) or 'none'}")
    size = os.path.getsize(path)
    held = max(size - h.vertex_offset, 0) // max(h.vertex_dtype.itemsize, 1)
    if held < h.vertex_count:
        raise PLYError(f"{path}: truncated: header says {h.vertex_count} vertices, file holds {held}")
    return np.fromfile(path, dtype=h.vertex_dtype, count=h.vertex_count, offset=h.vertex_offset)


def write_vertices(path, data: np.ndarray, comment: str = "") -> None:
    """Write a structured array [N] as a binary little-endian PLY vertex element, atomically
    (one ``tofile``; the file appears complete or not at all)."""
    data = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<"))
    lines = ["ply", "format binary_little_endian 1.0"] + ([f"comment {comment}"] if comment else [])
    lines.append(f"element vertex {len(data)}")
    for name in data.dtype.names:
        code = data.dtype[name].str[1:]
        if code not in PLY_NAMES:
            raise ValueError(f"write_vertices: property '{name}' has dtype {data.dtype[name]}, "
                             "which PLY cannot store")
        lines.append(f"property {PLY_NAMES[code]} {name}")
    lines.append("end_header")
    with atomic_open(path) as f:
        f.write(("\n".join(lines) + "\n").encode("ascii"))
        data.tofile(f)


def columns(data: np.ndarray, names, dtype=np.float32) -> np.ndarray:
    """Fields of a structured array [N] as one [N, len(names)] array."""
    out = np.empty((data.shape[0], len(names)), dtype=dtype)
    for j, name in enumerate(names):
        out[:, j] = data[name]
    return out


# ---------------------------------------------------------------------------------------------
# The point cloud

POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                        ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("radius", "<f4")])
RGB = ("red", "green", "blue")


@dataclass
class PointCloud:
    """A coloured point cloud.

    xyz: [N, 3] float64 world coordinates (metres); rgb: [N, 3] float32 display sRGB in [0, 1]
    (uint8 input is divided by 255); radius: [N] float32, the world-space radius of each point's
    disc in metres, or None where the file has none.
    """

    xyz: np.ndarray
    rgb: np.ndarray
    radius: Optional[np.ndarray]

    def __post_init__(self):
        self.xyz = np.ascontiguousarray(self.xyz, dtype=np.float64).reshape(-1, 3)
        rgb = np.asarray(self.rgb)
        if rgb.dtype == np.uint8:
            rgb = rgb.astype(np.float32) / np.float32(255)
        self.rgb = np.ascontiguousarray(rgb, dtype=np.float32).reshape(-1, 3)
        if self.radius is not None:
            self.radius = np.ascontiguousarray(self.radius, dtype=np.float32).reshape(-1)
        n = len(self.xyz)
        if len(self.rgb) != n or (self.radius is not None and len(self.radius) != n):
            raise ValueError(f"PointCloud: xyz has {n} points but rgb has {len(self.rgb)} and "
                             f"radius has {len(self.radius) if self.radius is not None else 'none'}; "
                             "all three must have the same length")

    def __len__(self) -> int:
        return len(self.xyz)

    @staticmethod
    def empty() -> "PointCloud":
        """A cloud with no points."""
        return PointCloud(np.zeros((0, 3)), np.zeros((0, 3), np.float32), np.zeros(0, np.float32))

    def select(self, mask_or_index) -> "PointCloud":
        """The points picked by a boolean mask [N] or an integer index array [M]."""
        sel = np.asarray(mask_or_index)
        if sel.dtype == bool and sel.shape != (len(self),):
            raise ValueError(f"PointCloud.select: boolean mask has shape {sel.shape}, "
                             f"expected ({len(self)},)")
        return PointCloud(self.xyz[sel], self.rgb[sel], None if self.radius is None else self.radius[sel])

    def rgb8(self) -> np.ndarray:
        """rgb rounded to uint8: [N, 3] (clipped to [0, 1]; NaN as 0)."""
        return np.round(np.clip(np.nan_to_num(self.rgb), 0.0, 1.0) * 255.0).astype(np.uint8)


def _fractions(data: np.ndarray) -> np.ndarray:
    """The red, green, blue columns → [N, 3] float32 in [0, 1] (integers are divided by their
    type's maximum), filled in place."""
    rgb = columns(data, RGB)
    kind = data.dtype[RGB[0]]
    if kind.kind in "ui":
        rgb /= np.float32(np.iinfo(kind).max)
    return rgb


def read_point_ply(path) -> PointCloud:
    """Read a binary PLY point cloud → PointCloud (the layout in the module docstring, or another
    tool's: extra properties ignored, colours grey when absent, radius None when absent)."""
    data = read_vertices(path, ("x", "y", "z"))
    names = data.dtype.names
    present = [c for c in RGB if c in names]
    if present and len(present) < 3:
        missing = [c for c in RGB if c not in names]
        raise PLYError(f"{os.fspath(path)}: colour property '{missing[0]}' is missing "
                       "(colours need red, green and blue)")
    xyz = columns(data, "xyz", np.float64)
    rgb = _fractions(data) if present else np.full((len(data), 3), 0.5, np.float32)
    radius = data["radius"] if "radius" in names else None
    return PointCloud(xyz, rgb, radius)


def write_point_ply(path, cloud: PointCloud) -> None:
    """Write the results' point-cloud layout (x y z float, red green blue uchar, radius float;
    no radius property when cloud.radius is None), atomically with one ``tofile``."""
    dtype = POINT_DTYPE if cloud.radius is not None else np.dtype(POINT_DTYPE.descr[:6])
    data = np.empty(len(cloud), dtype)
    for a, name in enumerate("xyz"):
        data[name] = cloud.xyz[:, a]
    rgb8 = cloud.rgb8()
    for a, name in enumerate(RGB):
        data[name] = rgb8[:, a]
    if cloud.radius is not None:
        data["radius"] = cloud.radius
    write_vertices(path, data, "zoomscape point cloud")
