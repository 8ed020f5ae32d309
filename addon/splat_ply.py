"""3D Gaussian splat PLY files (the Inria 3DGS layout) ↔ numpy arrays; numpy only, no bpy.

The layout (docs/API.md "Zoom levels"): binary little-endian, ``element vertex N`` with float32
properties x, y, z, nx, ny, nz, f_dc_0..2, f_rest_0..44, opacity, scale_0..2, rot_0..3. The stored
values are the optimiser's raw parameters; activations (3DGS, Kerbl et al. 2023):

    rgb = 0.5 + C0 · f_dc          (C0 = 1/(2√π), the degree-0 spherical harmonic)
    α   = sigmoid(opacity)          (opacity is a logit)
    s   = exp(scale_k)              (per-axis standard deviations)
    q   = rot / |rot|               (w, x, y, z)

The vertex block is read with one ``np.fromfile`` into a structured array (no per-point Python);
files with fewer f_rest (lower SH degree), other property orders or extra properties are accepted.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .ply_io import PLYError, read_vertices

SH_C0 = 0.28209479177387814  # 1 / (2·sqrt(pi))
N_REST = 45  # f_rest_* of a degree-3 file
REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
            "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


def inria_fields(n_rest: int = N_REST) -> list[str]:
    """Property names of the Inria layout, in file order."""
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


@dataclass
class Splats:
    """Raw 3DGS parameters of N Gaussians (as stored in the file), float32.

    means: [N, 3]; f_dc: [N, 3]; opacity_logit: [N]; log_scales: [N, 3]; quats: [N, 4] wxyz
    (not normalised); f_rest: [N, K] or None (not used by the importer).
    """

    means: np.ndarray
    f_dc: np.ndarray
    opacity_logit: np.ndarray
    log_scales: np.ndarray
    quats: np.ndarray
    f_rest: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.means.shape[0])


def sh0_to_rgb(f_dc: np.ndarray) -> np.ndarray:
    """rgb = 0.5 + C0 · f_dc: [N, 3] → [N, 3] float32 (not clipped)."""
    return (0.5 + SH_C0 * f_dc).astype(np.float32)


def rgb_to_sh0(rgb: np.ndarray) -> np.ndarray:
    """f_dc = (rgb − 0.5) / C0: [N, 3] → [N, 3] float32."""
    return ((np.asarray(rgb, dtype=np.float64) - 0.5) / SH_C0).astype(np.float32)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, float32 (overflow-safe for large |x|)."""
    return (0.5 + 0.5 * np.tanh(0.5 * np.asarray(x, dtype=np.float32))).astype(np.float32)


def logit(a: np.ndarray) -> np.ndarray:
    """Inverse of sigmoid, float32; a is clipped to [1e-6, 1 − 1e-6]."""
    a = np.clip(np.asarray(a, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(a / (1 - a)).astype(np.float32)


def normalized_quats(q: np.ndarray) -> np.ndarray:
    """q / |q| for q: [N, 4] wxyz; zero quaternions become the identity (1, 0, 0, 0)."""
    q = np.asarray(q, dtype=np.float32)
    n = np.linalg.norm(q, axis=1, keepdims=True)
    out = np.where(n > 0, q / np.where(n > 0, n, 1), np.float32(0))
    out[n[:, 0] == 0, 0] = 1.0
    return out.astype(np.float32)


def columns(data: np.ndarray, names: list[str]) -> np.ndarray:
    """Fields of a structured array as one [N, len(names)] float32 array."""
    out = np.empty((data.shape[0], len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        out[:, j] = data[name]
    return out


def read_splat_ply(path: str | os.PathLike, with_rest: bool = False) -> Splats:
    """Read a 3DGS PLY → Splats (raw parameters; see the module docstring for activations)."""
    data = read_vertices(path, REQUIRED)
    dtype = data.dtype
    rest = sorted((n for n in dtype.names if n.startswith("f_rest_")), key=lambda n: int(n[7:]))
    return Splats(
        means=columns(data, ["x", "y", "z"]),
        f_dc=columns(data, ["f_dc_0", "f_dc_1", "f_dc_2"]),
        opacity_logit=np.ascontiguousarray(data["opacity"], dtype=np.float32),
        log_scales=columns(data, ["scale_0", "scale_1", "scale_2"]),
        quats=columns(data, ["rot_0", "rot_1", "rot_2", "rot_3"]),
        f_rest=columns(data, rest) if with_rest and rest else None)


def write_splat_ply(path: str | os.PathLike, splats: Splats, normals: np.ndarray | None = None) -> None:
    """Write the Inria layout (all float32, f_rest_0..44 zero unless splats.f_rest has 45) with
    one ``tofile``. Used by tests and benchmarks; the backend writes its own files."""
    n = len(splats)
    names = inria_fields()
    data = np.zeros(n, dtype=[(name, "<f4") for name in names])
    for j, c in enumerate("xyz"):
        data[c] = splats.means[:, j]
        data[f"n{c}"] = 0.0 if normals is None else normals[:, j]
    for j in range(3):
        data[f"f_dc_{j}"] = splats.f_dc[:, j]
        data[f"scale_{j}"] = splats.log_scales[:, j]
    if splats.f_rest is not None:
        for j in range(min(N_REST, splats.f_rest.shape[1])):
            data[f"f_rest_{j}"] = splats.f_rest[:, j]
    data["opacity"] = splats.opacity_logit
    for j in range(4):
        data[f"rot_{j}"] = splats.quats[:, j]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names] + ["end_header"]
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        data.tofile(f)
