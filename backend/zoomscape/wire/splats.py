"""3D Gaussians and their file: the Inria 3DGS PLY layout, exactly (docs/API.md "Zoom levels").

One binary little-endian ``element vertex N`` with float properties, in this order:

    x y z  nx ny nz  f_dc_0..2  f_rest_0..44  opacity  scale_0..2  rot_0..3

The file stores the optimiser's raw parameters; :class:`Gaussians` holds them activated
(3DGS, Kerbl et al. 2023):

    rgb = 0.5 + C0 · f_dc          (C0 = 1/(2√π), the degree-0 spherical harmonic)
    α   = sigmoid(opacity)          (opacity is a logit)
    s   = exp(scale_k)              (per-axis standard deviations)
    q   = rot / |rot|               (w, x, y, z)

f_rest (degrees 1–3) are written as 0 and ignored on reading; nx ny nz are written as 0. The
reader accepts other tools' files too: fewer f_rest (lower SH degree), other property orders,
extra properties or elements, either byte order. numpy only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

import numpy as np

from .ply import columns, read_vertices, write_vertices

SH_C0 = 0.28209479177387814  # 1 / (2·sqrt(pi))
N_REST = 45  # f_rest_* of a degree-3 file
PROPERTIES = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
              + [f"f_rest_{k}" for k in range(N_REST)]
              + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
SPLAT_DTYPE = np.dtype([(name, "<f4") for name in PROPERTIES])
REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
            "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
OPACITY_EPS = 1e-7  # opacities are clipped to [ε, 1 − ε] before the logit


# ---------------------------------------------------------------------------------------------
# Activations

def sigmoid(x) -> np.ndarray:
    """Logistic function, computed in float64 (no overflow for large |x|) → float32."""
    x = np.asarray(x, dtype=np.float64)
    return (0.5 + 0.5 * np.tanh(0.5 * x)).astype(np.float32)


def logit(a, eps: float = OPACITY_EPS) -> np.ndarray:
    """Inverse of sigmoid → float32; a is clipped to [eps, 1 − eps] first."""
    a = np.clip(np.asarray(a, dtype=np.float64), eps, 1 - eps)
    return np.log(a / (1 - a)).astype(np.float32)


def sh0_to_rgb(f_dc) -> np.ndarray:
    """rgb = 0.5 + C0 · f_dc: [N, 3] → [N, 3] float32 (not clipped)."""
    return (0.5 + SH_C0 * np.asarray(f_dc, dtype=np.float64)).astype(np.float32)


def rgb_to_sh0(rgb) -> np.ndarray:
    """f_dc = (rgb − 0.5) / C0: [N, 3] → [N, 3] float32."""
    return ((np.asarray(rgb, dtype=np.float64) - 0.5) / SH_C0).astype(np.float32)


def normalized_quats(q) -> np.ndarray:
    """q / |q| for q: [N, 4] wxyz → float32; zero quaternions become the identity (1, 0, 0, 0)."""
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q, axis=1, keepdims=True)
    out = np.where(n > 0, q / np.where(n > 0, n, 1.0), 0.0)
    out[n[:, 0] == 0, 0] = 1.0
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Gaussians

@dataclass
class Gaussians:
    """N activated 3D Gaussians (numpy arrays on the wire; the backend also holds torch tensors).

    means: [N, 3]; quats: [N, 4] wxyz (unit); scales: [N, 3] > 0 (standard deviations along the
    quaternion's axes); opacities: [N] in (0, 1); colors: [N, 3] RGB, the SH0 colour (display
    sRGB; may leave [0, 1] slightly). Coordinates are the frame's the caller says (a zoom level's
    local frame, or the world).
    """

    means: Any
    quats: Any
    scales: Any
    opacities: Any
    colors: Any

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def map(self, fn: Callable[[Any], Any]) -> "Gaussians":
        """A Gaussians with fn applied to every field (e.g. torch.as_tensor, or an index)."""
        return Gaussians(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def select(self, index) -> "Gaussians":
        """The Gaussians picked by a boolean mask [N] or an integer index [M]."""
        return self.map(lambda a: a[index])

    def replace(self, **changes) -> "Gaussians":
        """A copy with the named fields replaced."""
        return replace(self, **changes)

    @staticmethod
    def concat(parts: list["Gaussians"]) -> "Gaussians":
        """numpy Gaussians one after another."""
        return Gaussians(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                            for f in fields(Gaussians)})


def _checked(name: str, a, shape: tuple) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.shape != shape:
        raise ValueError(f"{name}: shape {a.shape}, expected {shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: has non-finite values")
    return a


def to_records(g: Gaussians) -> np.ndarray:
    """Activated Gaussians → the structured array [N] of SPLAT_DTYPE (logit, log, SH0);
    ValueError naming the field for wrong shapes, non-finite values or values out of range."""
    n = len(np.asarray(g.means))
    means = _checked("means", g.means, (n, 3))
    quats = _checked("quats", g.quats, (n, 4))
    scales = _checked("scales", g.scales, (n, 3))
    opacities = _checked("opacities", g.opacities, (n,))
    colors = _checked("colors", g.colors, (n, 3))
    if (scales <= 0).any():
        raise ValueError("scales: must be > 0 (they are stored as logs)")
    if ((opacities < 0) | (opacities > 1)).any():
        raise ValueError("opacities: must be in [0, 1] (they are stored as logits)")
    if (np.linalg.norm(quats, axis=1) == 0).any():
        raise ValueError("quats: zero quaternion")
    rec = np.zeros(n, SPLAT_DTYPE)
    f_dc, log_s, q = rgb_to_sh0(colors), np.log(scales), normalized_quats(quats)
    for a, k in enumerate("xyz"):
        rec[k] = means[:, a]
    for a in range(3):
        rec[f"f_dc_{a}"] = f_dc[:, a]
        rec[f"scale_{a}"] = log_s[:, a]
    rec["opacity"] = logit(opacities)
    for a in range(4):
        rec[f"rot_{a}"] = q[:, a]
    return rec


def from_records(rec: np.ndarray) -> Gaussians:
    """A structured array with the REQUIRED fields → activated Gaussians (float32)."""
    return Gaussians(means=columns(rec, "xyz"),
                     quats=normalized_quats(columns(rec, [f"rot_{a}" for a in range(4)])),
                     scales=np.exp(columns(rec, [f"scale_{a}" for a in range(3)], np.float64)).astype(np.float32),
                     opacities=sigmoid(rec["opacity"]),
                     colors=sh0_to_rgb(columns(rec, [f"f_dc_{a}" for a in range(3)])))


def write_splat_ply(path, g: Gaussians) -> None:
    """Write activated Gaussians as an Inria 3DGS PLY, atomically (nothing is left on error)."""
    write_vertices(os.fspath(path), to_records(g), "zoomscape 3D Gaussians (Inria 3DGS layout)")


def read_splat_ply(path) -> Gaussians:
    """Read a 3DGS PLY (ours, Inria's with any SH degree, or another tool's order) → Gaussians."""
    return from_records(read_vertices(path, REQUIRED, what="the 3DGS layout"))
