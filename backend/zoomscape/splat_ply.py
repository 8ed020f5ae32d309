"""3D Gaussians on disk: the Inria 3DGS PLY layout, exactly (docs/API.md "Zoom levels").

One binary little-endian ``element vertex N`` with float properties, in this order:

    x y z  nx ny nz  f_dc_0..2  f_rest_0..44  opacity  scale_0..2  rot_0..3

- f_dc: the degree-0 spherical-harmonic coefficient, rgb = 0.5 + C0 · f_dc, C0 = 0.28209479177387814
  (so f_dc = (rgb − 0.5)/C0); f_rest (degrees 1–3, 15 × 3 coefficients) are written as 0.
- opacity: the logit of the opacity; scale_k: the log of the scale; rot: the quaternion w, x, y, z.
- nx ny nz: 0 (3DGS writes zeros; viewers ignore them).

Read and written as one numpy structured array (one tofile / fromfile), atomically (temp file +
os.replace). numpy only.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

C0 = 0.28209479177387814
N_REST = 45
PROPERTIES = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
              + [f"f_rest_{k}" for k in range(N_REST)]
              + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
SPLAT_DTYPE = np.dtype([(name, "<f4") for name in PROPERTIES])
_EPS = 1e-7  # opacities are clipped to [ε, 1 − ε] before the logit, scales to ≥ 1e-30


@dataclass
class Splats:
    """Activated Gaussians (float32): means [N, 3], quats [N, 4] wxyz (unit), scales [N, 3] > 0,
    opacities [N] in (0, 1), colors [N, 3] RGB (the SH0 colour; may leave [0, 1] slightly)."""

    means: np.ndarray
    quats: np.ndarray
    scales: np.ndarray
    opacities: np.ndarray
    colors: np.ndarray

    def __len__(self) -> int:
        return len(self.means)


def _as(name: str, a, shape: tuple) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    if a.shape != shape:
        raise ValueError(f"{name}: shape {a.shape}, expected {shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: has non-finite values")
    return a


def splat_header(n: int) -> bytes:
    """The PLY header for n Gaussians."""
    return ("ply\nformat binary_little_endian 1.0\ncomment zoomscape 3D Gaussians (Inria 3DGS layout)\n"
            f"element vertex {n}\n" + "".join(f"property float {p}\n" for p in PROPERTIES)
            + "end_header\n").encode("ascii")


def to_records(means, quats, scales, opacities, colors) -> np.ndarray:
    """Activated arrays → the structured array [N] of SPLAT_DTYPE (logit, log, SH0)."""
    means = np.asarray(means)
    n = len(means)
    means = _as("means", means, (n, 3))
    quats = _as("quats", quats, (n, 4))
    scales = _as("scales", scales, (n, 3))
    opacities = _as("opacities", opacities, (n,))
    colors = _as("colors", colors, (n, 3))
    if (scales <= 0).any():
        raise ValueError("scales: must be > 0 (they are stored as logs)")
    if ((opacities < 0) | (opacities > 1)).any():
        raise ValueError("opacities: must be in [0, 1] (they are stored as logits)")
    norm = np.linalg.norm(quats, axis=1, keepdims=True)
    if (norm == 0).any():
        raise ValueError("quats: zero quaternion")
    rec = np.zeros(n, SPLAT_DTYPE)
    for a, k in enumerate("xyz"):
        rec[k] = means[:, a]
    for a in range(3):
        rec[f"f_dc_{a}"] = (colors[:, a] - 0.5) / C0
        rec[f"scale_{a}"] = np.log(scales[:, a])
    o = np.clip(opacities.astype(np.float64), _EPS, 1 - _EPS)
    rec["opacity"] = np.log(o / (1 - o))
    q = quats / norm
    for a in range(4):
        rec[f"rot_{a}"] = q[:, a]
    return rec


def from_records(rec: np.ndarray) -> Splats:
    """The structured array → activated Splats (sigmoid, exp, normalised quaternions)."""
    stack = lambda names: np.stack([rec[k] for k in names], 1).astype(np.float32)  # noqa: E731
    q = stack([f"rot_{a}" for a in range(4)])
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
    return Splats(means=stack("xyz"), quats=q,
                  scales=np.exp(stack([f"scale_{a}" for a in range(3)])),
                  opacities=(1 / (1 + np.exp(-rec["opacity"].astype(np.float64)))).astype(np.float32),
                  colors=0.5 + C0 * stack([f"f_dc_{a}" for a in range(3)]))


def write_splat_ply(path, means, quats, scales, opacities, colors) -> None:
    """Write activated Gaussians (see Splats) as a 3DGS PLY, atomically."""
    path = os.fspath(path)
    rec = to_records(means, quats, scales, opacities, colors)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(splat_header(len(rec)))
            rec.tofile(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_splat_ply(path) -> Splats:
    """Read a 3DGS PLY written in this exact layout (ours, or Inria's with SH degree 3).

    Raises ValueError when the header is not binary_little_endian with exactly PROPERTIES as
    floats, or the file is truncated.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path}: not a PLY file")
        fmt, n, props = None, None, []
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f"{path}: PLY header has no end_header")
            w = line.decode("ascii", "replace").split()
            if not w or w[0] in ("comment", "obj_info"):
                continue
            if w[0] == "end_header":
                break
            if w[0] == "format":
                fmt = w[1] if len(w) > 1 else None
            elif w[0] == "element":
                if n is not None or w[1:2] != ["vertex"]:
                    raise ValueError(f"{path}: expected one 'element vertex', got {line.strip()!r}")
                n = int(w[2])
            elif w[0] == "property":
                if len(w) != 3 or w[1] not in ("float", "float32"):
                    raise ValueError(f"{path}: property {line.strip()!r} is not a float")
                props.append(w[2])
        offset = f.tell()
    if fmt != "binary_little_endian":
        raise ValueError(f"{path}: format '{fmt}' is not supported (binary_little_endian only)")
    if props != PROPERTIES:
        raise ValueError(f"{path}: properties are not the 3DGS layout (x y z nx ny nz f_dc_0..2 "
                         f"f_rest_0..44 opacity scale_0..2 rot_0..3); got {len(props)} properties")
    need = offset + n * SPLAT_DTYPE.itemsize
    if os.path.getsize(path) < need:
        raise ValueError(f"{path}: truncated: {n} Gaussians need {need} bytes, "
                         f"file has {os.path.getsize(path)}")
    return from_records(np.fromfile(path, dtype=SPLAT_DTYPE, count=n, offset=offset))


def write_level_ply(path, level) -> None:
    """Write a gaussians.LevelGaussians (local frame) as a 3DGS PLY."""
    write_splat_ply(path, level.means, level.quats, level.scales, level.opacities, level.colors)
