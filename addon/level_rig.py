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
``zs_cover`` weight: what level k+1's camera sees of them, feathered at the border of its view;
cover.py) fade out by the same amount, an image-space cross-fade in which the finer level wins.
What level k+1's camera cannot see (behind a nearer surface) stays, for the frames between the
two cameras that do see it. The world joins the rig the same way against level 0
(runner.import_results, zoom_path.key_world_splats_fade).
"""
from __future__ import annotations

import os

import numpy as np

import bpy
from mathutils import Matrix

from . import cover, splat_import
from .importers import JOB_KEY, ensure_collection, remove_job_objects
from .wire.manifest import Level, Manifest, ManifestError, ZoomInfo
from .wire.splats import Gaussians, read_splat_ply

ROOT_KIND, LEVEL_KIND = "level_root", "level"
PAINTED_MODE_KEY = "zoomscape_painted_mode"  # on the root: the manifest's zoom.mode, upper case


class LevelError(ManifestError):
    """The manifest's levels cannot be imported (e.g. a level file is missing); names the field."""


def level_local_matrix(level: Level, anchor: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """L_i: [4, 4] float64, level i's matrix relative to the unscaled root at (anchor, rotation)."""
    frame = level.frame
    L = np.eye(4)
    L[:3, :3] = rotation.T @ frame.rotation * frame.unit
    L[:3, 3] = rotation.T @ (frame.origin - anchor)
    return L


def fade_weights(tau: np.ndarray, k: int, width: float = 1.0, from_world: bool = False) -> np.ndarray:
    """Opacity factor of level k at zoom time τ (in levels, magnification p^τ): [T] in [0, 1].

    w_k(τ) = clamp((τ − (k − width)) / width, 0, 1) for k ≥ 1: linear in τ, so continuous and
    with a constant rate in log-magnification; level k is fully shown from τ = k on.
    w_0(τ) = 1, or with from_world (the rig holds the world's point cloud or Gaussians, which
    show the zoom camera's view at τ = 0 exactly as the user's own cameras see it)
    w_0(τ) = clamp(τ / (width/8), 0, 1): level 0 comes in over the first eighth of the width,
    behind the still opaque world, which then fades out over τ ∈ [width/8, 5·width/8]
    (world_fade). The view stays covered through the hand-over, and at τ = 0 (frame_start, where
    the user's cameras are rendered) only the world shows.
    """
    tau = np.asarray(tau, dtype=np.float64)
    if k == 0:
        return np.clip(tau / (width / 8.0), 0.0, 1.0) if from_world else np.ones_like(tau)
    return np.clip((tau - (k - width)) / width, 0.0, 1.0)


def world_fade(width: float = 1.0) -> tuple[float, float]:
    """(τ₀, τ₁): the world (point cloud, world Gaussians) of a rig fades out linearly over
    τ ∈ [τ₀, τ₁] = [width/8, 5·width/8], once level 0 is fully shown (fade_weights)."""
    return width / 8.0, 5.0 * width / 8.0


def level_covers(levels: list[Level], gaussians: list[Gaussians], zoom: ZoomInfo) -> list:
    """Per level, how much the next finer level covers each of its Gaussians (cover.cover_weights
    in world coordinates: level i against level i+1's Gaussians from level i+1's camera) → a list
    of [N_i] float32, None for the finest level."""
    world = [lv.frame.to_world(g.means) for lv, g in zip(levels, gaussians)]
    return [cover.cover_weights(world[i], world[i + 1], zoom, levels[i + 1].index)
            if i + 1 < len(levels) else None for i in range(len(levels))]


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


def build_level_rig(scene, levels: list[Level], gaussians_of, job_id: str = "",
                    name: str = "Zoomscape Levels", zoom: ZoomInfo | None = None):
    """Import every level under a new root → (root, [level objects] by index).

    gaussians_of(level) → Gaussians in the level's local frame (e.g. read from the results
    directory); every level is read before the first is imported (the cover weights need the
    next level). zoom: the manifest's zoom (cameras, factor, mode) for the cover weights; None =
    no cover (levels blend by depth only). Replaces this job's earlier levels and root. The root
    sits at level 0's origin and rotation.
    """
    remove_job_objects(job_id, kinds=(ROOT_KIND, LEVEL_KIND))
    for mat in [m for m in bpy.data.materials if m.users == 0 and m.get(JOB_KEY) == job_id]:
        bpy.data.materials.remove(mat)
    anchor, rotation = levels[0].frame.origin, levels[0].frame.rotation
    root = make_root(scene, anchor, rotation, job_id, name)
    root[PAINTED_MODE_KEY] = (zoom.mode if zoom is not None else "lens").upper()
    coll = ensure_collection(scene)
    objs = []
    all_gaussians: list[Gaussians] = [gaussians_of(lv) for lv in levels]
    covers = level_covers(levels, all_gaussians, zoom) if zoom is not None else [None] * len(levels)
    for lv, gaussians, cov in zip(levels, all_gaussians, covers):
        extra = None if cov is None else {splat_import.COVER_ATTR: cov}
        obj = splat_import.import_splats(scene, gaussians, f"{name} {lv.index:02d}", job_id,
                                         coll, kind=LEVEL_KIND, extra=extra)
        obj["zoomscape_level"] = lv.index
        obj["zoomscape_zoom_range"] = list(lv.zoom_range)
        for mat in obj.data.materials:  # the quads' own material (native splats have none)
            mat[JOB_KEY] = job_id
        parent_to(obj, root, level_local_matrix(lv, anchor, rotation))
        objs.append(obj)
    return root, objs


def read_levels(manifest: Manifest, out_dir: str) -> list[Gaussians]:
    """Every level's Gaussians (level_NN.ply of a results directory, in its local frame), in the
    manifest's order; LevelError names the level whose file is missing."""
    if not manifest.levels:
        raise LevelError("levels: missing or empty in the manifest")
    for lv in manifest.levels:
        path = os.path.join(out_dir, lv.gaussians)
        if not os.path.isfile(path):
            raise LevelError(f"levels[{lv.index}].gaussians: {path} is missing")
    return [read_splat_ply(os.path.join(out_dir, lv.gaussians)) for lv in manifest.levels]


def import_levels(scene, manifest: Manifest, out_dir: str, job_id: str = "",
                  gaussians: list[Gaussians] | None = None):
    """Build the rig of a results directory's levels → (root, [level objects]); gaussians: what
    read_levels(manifest, out_dir) gives, when the caller has read them already."""
    gaussians = read_levels(manifest, out_dir) if gaussians is None else gaussians
    by_level = {lv.index: g for lv, g in zip(manifest.levels, gaussians)}
    return build_level_rig(scene, manifest.levels, lambda lv: by_level[lv.index], job_id, zoom=manifest.zoom)


def world_cover(world_means: np.ndarray, level_0: Gaussians, manifest: Manifest) -> np.ndarray:
    """How much level 0 covers each of the world's Gaussians ([N, 3] world coordinates) →
    [N] float32 (cover.cover_weights from level 0's camera, the zoom camera)."""
    frame = manifest.levels[0].frame
    return cover.cover_weights(world_means, frame.to_world(level_0.means), manifest.zoom, manifest.levels[0].index)


def painted_mode(job_id: str) -> str | None:
    """"DOLLY" or "LENS": how job_id's imported levels were painted (None without a level rig)."""
    root = next((o for o in bpy.data.objects
                 if o.get(JOB_KEY) == job_id and o.get("zoomscape_kind") == ROOT_KIND), None)
    return root.get(PAINTED_MODE_KEY) if root is not None else None


def rig_of(job_id: str):
    """(root, [level objects sorted by level]) made for job_id, or (None, [])."""
    root = next((o for o in bpy.data.objects
                 if o.get(JOB_KEY) == job_id and o.get("zoomscape_kind") == ROOT_KIND), None)
    if root is None:
        return None, []
    objs = sorted((o for o in root.children if o.get("zoomscape_kind") == LEVEL_KIND),
                  key=lambda o: o["zoomscape_level"])
    return root, objs
