"""Zoom levels in Blender: one splat object per level, parented under a root empty whose
transform carries the zoom, and per-level cross-fades.

Precision. Level i is stored in its own local frame (docs/API.md): a local point x_l is the world
point  x = o + u_i·R·x_l  (origin o = the zoom anchor, R = the zoom camera's axes, u_i = p^−i).
The root empty sits at the anchor with rotation R; level i is its child with the local matrix
  L_i = [R ᵀR_i·u_i | Rᵀ(o_i − o)]   (= diag(u_i) for the backend's frames: no translation),
so nothing in the chain adds two numbers of very different size. The zoom scales the root about
the anchor, S(τ) = diag(p^τ, p^τ, p^τ) (DOLLY) or diag(p^τ, p^τ, 1) (LENS), while the camera
stays where it was: level i's geometry then has world coordinates of order 1 around the anchor
exactly when it fills the screen (τ ≈ i), and the camera never holds a coordinate 4^10 smaller
than its magnitude. Scaling the world by p^τ about the anchor with the camera fixed is the same
image as dollying the camera to distance d0·p^−τ; scaling only the camera's x, y by p^τ is the
same image as a lens of focal length f0·p^τ (for the anchor on the camera's axis), because a
perspective camera maps (m·x, m·y, z) with f0 to where it maps (x, y, z) with m·f0.

Cross-fade: level k is fully shown from τ = k (where it fills the screen at its own resolution,
the start of its zoom_range) and fades in linearly over the fade_width levels before that, while
the coarser levels stay shown; see fade_weights. Levels lie on the same surface, so depth cannot
say which one is in front: as level k+1 fades in, the Gaussians of level k that it covers (the
``zs_cover`` weight, feathered at the border of level k+1's view) fade out by the same amount,
an image-space cross-fade in which the finer level wins.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

import bpy
from mathutils import Matrix

from . import splat_import
from .importers import JOB_KEY, ensure_collection, remove_job_objects
from .splat_ply import read_splat_ply

ROOT_KIND, LEVEL_KIND = "level_root", "level"
FRAME_TOL = 1e-4  # orthonormality tolerance of a level frame's rotation
FEATHER = 0.1  # the cover weight ramps over this fraction of the finer level's image size


class LevelError(ValueError):
    """The manifest's levels are not usable; the message names the field."""


@dataclass(frozen=True)
class Level:
    """One zoom level of the manifest. rotation: [3, 3] float64, origin: [3] float64."""

    index: int
    gaussians: str
    origin: np.ndarray
    rotation: np.ndarray
    unit: float
    zoom_range: tuple[float, float]
    prompt: str = ""


def parse_levels(manifest: dict) -> list[Level]:
    """manifest["levels"] → [Level] sorted by index; clear errors naming the field."""
    raw = manifest.get("levels")
    if not isinstance(raw, list) or not raw:
        raise LevelError("levels: missing or empty in the manifest")
    out = []
    for j, lv in enumerate(raw):
        where = f"levels[{j}]"
        try:
            frame = lv["frame"]
            origin = np.asarray(frame["origin"], dtype=np.float64).reshape(3)
            rotation = np.asarray(frame["rotation"], dtype=np.float64).reshape(3, 3)
            unit = float(frame["unit"])
            lo, hi = (float(v) for v in lv["zoom_range"])
            level = Level(int(lv["index"]), str(lv["gaussians"]), origin, rotation, unit, (lo, hi),
                          str(lv.get("prompt", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise LevelError(f"{where}: needs index, gaussians, frame (origin [3], rotation [3×3], "
                             f"unit) and zoom_range [2]: {e}") from None
        if not (np.isfinite(origin).all() and np.isfinite(rotation).all()):
            raise LevelError(f"{where}.frame: origin and rotation must be finite")
        if not (math.isfinite(unit) and unit > 0):
            raise LevelError(f"{where}.frame.unit: {unit} must be > 0")
        if (np.abs(rotation.T @ rotation - np.eye(3)).max() > FRAME_TOL
                or abs(np.linalg.det(rotation) - 1) > FRAME_TOL):
            raise LevelError(f"{where}.frame.rotation: not a rotation (orthonormal within {FRAME_TOL}, det +1)")
        if not 0 < lo < hi:
            raise LevelError(f"{where}.zoom_range: {[lo, hi]} must satisfy 0 < lo < hi")
        if os.path.basename(level.gaussians) != level.gaussians or not level.gaussians:
            raise LevelError(f"{where}.gaussians: '{level.gaussians}' must be a plain file name")
        out.append(level)
    out.sort(key=lambda lv: lv.index)
    if [lv.index for lv in out] != list(range(len(out))):
        raise LevelError(f"levels: indices {[lv.index for lv in out]} must be 0..{len(out) - 1}")
    return out


def level_local_matrix(level: Level, anchor: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """L_i: [4, 4] float64, level i's matrix relative to the unscaled root at (anchor, rotation)."""
    L = np.eye(4)
    L[:3, :3] = rotation.T @ level.rotation * level.unit
    L[:3, 3] = rotation.T @ (level.origin - anchor)
    return L


def fade_weights(tau: np.ndarray, k: int, width: float = 1.0) -> np.ndarray:
    """Opacity factor of level k at zoom time τ (in levels, magnification p^τ): [T] in [0, 1].

    w_0(τ) = 1;  w_k(τ) = clamp((τ − (k − width)) / width, 0, 1): linear in τ, so continuous and
    with a constant rate in log-magnification; level k is fully shown from τ = k on.
    """
    tau = np.asarray(tau, dtype=np.float64)
    if k == 0:
        return np.ones_like(tau)
    return np.clip((tau - (k - width)) / width, 0.0, 1.0)


def cover_weights(means: np.ndarray, level: Level, zoom: dict, factor: float) -> np.ndarray:
    """How much level i+1 covers each Gaussian of level i: [N] float32 in [0, 1].

    means: [N, 3] in level i's local frame. Level i+1's camera is the zoom camera zoomed by
    m = p^(i+1) about its image centre c (f_m = m·f, c_m = c + m·(c_0 − c)); a Gaussian whose centre
    projects at distance δ pixels inside that image's border gets clamp(δ / (FEATHER·min(W, H)), 0, 1).
    float64 throughout (world points are o + u_i·R·x).
    """
    try:
        M = np.asarray(zoom["matrix_world"], dtype=np.float64).reshape(4, 4)
        fx, fy, cx, cy = (float(zoom[k]) for k in ("fx", "fy", "cx", "cy"))
        W, H = float(zoom["width"]), float(zoom["height"])
    except (KeyError, TypeError, ValueError) as e:
        raise LevelError(f"zoom: matrix_world, fx, fy, cx, cy, width and height are needed for "
                         f"the levels' cross-fade: {e}") from None
    X = level.origin + level.unit * (np.asarray(means, dtype=np.float64) @ level.rotation.T)
    Xc = (X - M[:3, 3]) @ M[:3, :3]  # Blender camera axes (x right, y up, looking down −z)
    z = -Xc[:, 2]
    m = float(factor) ** (level.index + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = m * fx * Xc[:, 0] / z + W / 2 + m * (cx - W / 2)
        v = -m * fy * Xc[:, 1] / z + H / 2 + m * (cy - H / 2)
    inside = np.minimum(np.minimum(u, W - u), np.minimum(v, H - v))
    w = np.clip(inside / (FEATHER * min(W, H)), 0.0, 1.0)
    return np.where(z > 0, np.nan_to_num(w), 0.0).astype(np.float32)


def make_root(scene, anchor: np.ndarray, rotation: np.ndarray, job_id: str, name: str):
    """An empty at anchor with rotation (quaternion mode), unit scale → the object."""
    root = bpy.data.objects.new(name, None)
    root.empty_display_type, root.empty_display_size = "PLAIN_AXES", 0.1
    root[JOB_KEY], root["zoomscape_kind"] = job_id, ROOT_KIND
    root["zoomscape_anchor"] = [float(v) for v in anchor]
    root.rotation_mode = "QUATERNION"
    root.location = [float(v) for v in anchor]
    root.rotation_quaternion = Matrix(rotation.tolist()).to_quaternion()
    ensure_collection(scene).objects.link(root)
    return root


def parent_to(obj, root, local: np.ndarray) -> None:
    """Make obj a child of root with the local matrix (identity parent inverse)."""
    obj.parent = root
    obj.matrix_parent_inverse = Matrix.Identity(4)
    obj.matrix_basis = Matrix(np.asarray(local, dtype=np.float64).tolist())


def attach_world_object(obj, root, anchor: np.ndarray, rotation: np.ndarray) -> None:
    """Parent an object placed in world coordinates (e.g. the point cloud) under root so it zooms
    with the levels; its world placement at τ = 0 is unchanged."""
    rest_inv = np.eye(4)  # the inverse of the unscaled root, [R | anchor]⁻¹
    rest_inv[:3, :3] = rotation.T
    rest_inv[:3, 3] = -rotation.T @ anchor
    parent_to(obj, root, rest_inv @ np.array(obj.matrix_world, dtype=np.float64))


def build_level_rig(scene, levels: list[Level], splats_of, job_id: str = "",
                    name: str = "Zoomscape Levels", zoom: dict | None = None, factor: float = 0.0):
    """Import every level under a new root → (root, [level objects] by index).

    splats_of(level) → Splats (e.g. read from the results directory). zoom: the manifest's "zoom"
    (camera and factor) for the cover weights; None = no cover (levels blend by depth only).
    Replaces this job's earlier levels and root. The root sits at level 0's origin and rotation.
    """
    remove_job_objects(job_id, kinds=(ROOT_KIND, LEVEL_KIND))
    for mat in [m for m in bpy.data.materials if m.users == 0 and m.get(JOB_KEY) == job_id]:
        bpy.data.materials.remove(mat)
    anchor, rotation = levels[0].origin, levels[0].rotation
    root = make_root(scene, anchor, rotation, job_id, name)
    coll = ensure_collection(scene)
    objs = []
    for lv in levels:
        splats = splats_of(lv)
        extra = None
        if zoom is not None and lv.index + 1 < len(levels):
            extra = {splat_import.COVER_ATTR: cover_weights(splats.means, lv, zoom, factor)}
        obj = splat_import.import_splats(scene, splats, f"{name} {lv.index:02d}", job_id,
                                         coll, kind=LEVEL_KIND, extra=extra)
        obj["zoomscape_level"] = lv.index
        obj["zoomscape_zoom_range"] = list(lv.zoom_range)
        obj.data.materials[0][JOB_KEY] = job_id
        parent_to(obj, root, level_local_matrix(lv, anchor, rotation))
        objs.append(obj)
    return root, objs


def import_levels(scene, manifest: dict, out_dir: str, job_id: str = ""):
    """Read level_NN.ply of a results directory and build the rig → (root, [level objects])."""
    levels = parse_levels(manifest)
    for lv in levels:
        path = os.path.join(out_dir, lv.gaussians)
        if not os.path.isfile(path):
            raise LevelError(f"levels[{lv.index}].gaussians: {path} is missing")
    zoom = manifest.get("zoom") or {}
    try:
        factor = float(zoom["factor"])
    except (KeyError, TypeError, ValueError):
        raise LevelError("zoom.factor: missing; the levels need the zoom factor") from None
    return build_level_rig(scene, levels, lambda lv: read_splat_ply(os.path.join(out_dir, lv.gaussians)),
                           job_id, zoom=zoom, factor=factor)


def rig_of(job_id: str):
    """(root, [level objects sorted by level]) made for job_id, or (None, [])."""
    root = next((o for o in bpy.data.objects
                 if o.get(JOB_KEY) == job_id and o.get("zoomscape_kind") == ROOT_KIND), None)
    if root is None:
        return None, []
    objs = sorted((o for o in root.children if o.get("zoomscape_kind") == LEVEL_KIND),
                  key=lambda o: o["zoomscape_level"])
    return root, objs
