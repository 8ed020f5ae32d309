"""The world as Gaussians: world.ply (the backend's world Gaussians, Inria 3DGS layout, world
coordinates) → a splat object beside the point object, and which of the two renders.

Both show the same surface: the Gaussians are the dreamed views' pixels as oriented discs flat on
the surface, colour-deconvolved over all views, and they stay closed where the camera looks at
the surface at a slant; the point object (pointcloud.ply) is the fallback. Exactly one of them is
rendered (``WORLD_DISPLAY``); the other stays in the file, hidden, so switching costs nothing.
In a level rig the world fades out where level 0 takes over (level_rig.world_cover,
zoom_path.key_world_splats_fade); what level 0's camera cannot see stays for the frames that do.
"""
from __future__ import annotations

import os

import bpy

from . import splat_import
from .importers import JOB_KEY, ensure_collection, remove_job_objects
from .wire.manifest import Manifest, ManifestError
from .wire.splats import Gaussians, read_splat_ply

KIND = "world"  # zoomscape_kind of the world's splat object
POINTS_KIND = "points"
WORLD_DISPLAY = (("GAUSSIANS", "Gaussians", "Render the world as its Gaussians (world.ply)"),
                 ("POINTS", "Points", "Render the world as its point cloud (pointcloud.ply)"))


class WorldError(ManifestError):
    """The manifest's world cannot be imported (e.g. world.ply is missing); names the field."""


def read_world(manifest: Manifest, out_dir: str) -> Gaussians | None:
    """The world's Gaussians of a results directory (world coordinates), or None when the job has
    none (older backends); WorldError when the manifest names a file that is missing."""
    name = manifest.world_file
    if not name:
        return None
    path = os.path.join(out_dir, name)
    if not os.path.isfile(path):
        raise WorldError(f"world_file: {path} is missing")
    return read_splat_ply(path)


def import_world(scene, manifest: Manifest, out_dir: str, job_id: str = "",
                 gaussians: Gaussians | None = None, cover=None):
    """The world's splat object for a results directory → the object, or None when the job has
    no world Gaussians. Replaces this job's earlier world object. gaussians: read_world's, when
    the caller has read them; cover: [N] how much level 0 covers each (level_rig.world_cover),
    stored as the splats' cover attribute so the world fades out only where level 0 takes over
    (zoom_path.key_world_splats_fade)."""
    remove_job_objects(job_id, kinds=(KIND,))
    gaussians = read_world(manifest, out_dir) if gaussians is None else gaussians
    if gaussians is None:
        return None
    extra = None if cover is None else {splat_import.COVER_ATTR: cover}
    obj = splat_import.import_splats(scene, gaussians, f"Zoomscape {job_id[:8]} World", job_id,
                                     ensure_collection(scene), kind=KIND, extra=extra)
    for mat in obj.data.materials:  # the quads' own material (native splats have none)
        mat[JOB_KEY] = job_id
    return obj


def world_objects(job_id: str) -> dict:
    """{"GAUSSIANS": the world's splat object or None, "POINTS": the point object or None}."""
    found = {"GAUSSIANS": None, "POINTS": None}
    for obj in bpy.data.objects:
        if obj.get(JOB_KEY) != job_id:
            continue
        kind = obj.get("zoomscape_kind")
        if kind == KIND:
            found["GAUSSIANS"] = obj
        elif kind == POINTS_KIND:
            found["POINTS"] = obj
    return found


def show_world(job_id: str, display: str) -> str:
    """Render the world of job_id as display ("GAUSSIANS" or "POINTS") and hide the other (from
    renders and the viewport) → what is shown: "POINTS" when the job has no world Gaussians."""
    if display not in {d[0] for d in WORLD_DISPLAY}:
        raise ValueError(f"world display: '{display}' is not GAUSSIANS or POINTS")
    objs = world_objects(job_id)
    shown = display if objs[display] is not None else "POINTS"
    for key, obj in objs.items():
        if obj is not None:
            obj.hide_render = obj.hide_viewport = key != shown
    return shown
