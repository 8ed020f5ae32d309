"""manifest.json: what a job wrote, as dataclasses with from_dict / to_dict (docs/API.md).

The backend builds a :class:`Manifest` and writes ``to_dict()``; the extension reads one with
:func:`read_manifest` / :meth:`Manifest.from_dict`. The one reader is strict where the data is
used (the point cloud's file, every level's file, frame and zoom range; a level's frame must be
a rotation) and lenient where older jobs lack a part (no levels, no level image, no consensus,
no stack image): those default. Every problem is a :class:`ManifestError` naming the field.

Level frames are float64: a local point x_l is the world point origin + unit · R · x_l, with R's
columns the zoom camera's Blender axes, origin the zoom anchor and unit p^−i metres, so a level
4^10 deep keeps float32 precision in its own coordinates.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .atomic import write_json_atomic
from .cameras import ZOOM_MODES, Intrinsics
from .names import FORMAT, FORMAT_VERSION, MANIFEST_FILE, STACK_FILE

FRAME_TOL = 1e-4  # orthonormality tolerance of a level frame's rotation


class ManifestError(ValueError):
    """The manifest is not usable; the message names the field."""


def plain_file_name(value: Any, where: str) -> str:
    """value if it is a plain, non-empty file name (no folders, no '..'), else ManifestError."""
    if (not isinstance(value, str) or not value or value in (".", "..") or "\\" in value
            or os.path.basename(value) != value):
        raise ManifestError(f"{where}: {str(value)[:80]!r} must be a plain file name")
    return value


def _get(d: Any, key: str, where: str):
    if not isinstance(d, dict):
        raise ManifestError(f"{where}: must be an object, got {type(d).__name__}")
    if key not in d:
        raise ManifestError(f"{where}.{key}: missing")
    return d[key]


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ManifestError(f"{where}: {str(v)[:80]!r} must be a finite number")
    return float(v)


def _array(v: Any, shape: tuple, where: str) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.float64).reshape(shape)
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: must be {'×'.join(map(str, shape))} numbers") from None
    if not np.isfinite(a).all():
        raise ManifestError(f"{where}: must be finite")
    return a


def _int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ManifestError(f"{where}: {str(v)[:80]!r} must be an integer")
    return v


@dataclass(frozen=True)
class LevelFrame:
    """A zoom level's local frame, float64: origin [3] (world), rotation [3, 3] (columns = the
    zoom camera's Blender axes), unit (metres per local unit, p^−i)."""

    origin: np.ndarray
    rotation: np.ndarray
    unit: float

    @staticmethod
    def for_level(matrix_world, anchor, factor: float, i: int) -> "LevelFrame":
        """Level i's frame of a zoom about anchor from the camera at matrix_world (Blender
        camera-to-world): origin = anchor, axes = the camera's, unit = p^−i."""
        M = np.asarray(matrix_world, dtype=np.float64).reshape(4, 4)
        return LevelFrame(np.asarray(anchor, dtype=np.float64).reshape(3).copy(), M[:3, :3].copy(),
                          float(factor) ** (-i))

    def to_local(self, points) -> np.ndarray:
        """World points [N, 3] → local [N, 3] float64:  x_l = Rᵀ (x − origin) / unit."""
        return (np.asarray(points, np.float64) - self.origin) @ self.rotation / self.unit

    def to_world(self, points) -> np.ndarray:
        """Local points [N, 3] → world [N, 3] float64:  x = origin + unit · R x_l."""
        return self.origin + self.unit * (np.asarray(points, np.float64) @ self.rotation.T)

    def to_dict(self) -> dict:
        return {"origin": [float(v) for v in self.origin], "rotation": self.rotation.tolist(),
                "unit": float(self.unit)}

    @staticmethod
    def from_dict(d: Any, where: str = "frame") -> "LevelFrame":
        origin = _array(_get(d, "origin", where), (3,), f"{where}.origin")
        rotation = _array(_get(d, "rotation", where), (3, 3), f"{where}.rotation")
        unit = _number(_get(d, "unit", where), f"{where}.unit")
        if not unit > 0:
            raise ManifestError(f"{where}.unit: {unit} must be > 0")
        if (np.abs(rotation.T @ rotation - np.eye(3)).max() > FRAME_TOL
                or abs(np.linalg.det(rotation) - 1) > FRAME_TOL):
            raise ManifestError(f"{where}.rotation: not a rotation (orthonormal within {FRAME_TOL}, det +1)")
        return LevelFrame(origin, rotation, unit)


@dataclass(frozen=True)
class Level:
    """One zoom level's entry: index i, prompt, files (image may be None in older jobs), Gaussian
    count, local frame and zoom_range (p^i, p^(i+1)): the magnifications over which it is the
    finest level on screen."""

    index: int
    gaussians: str
    frame: LevelFrame
    zoom_range: tuple[float, float]
    prompt: str = ""
    image: Optional[str] = None
    count: int = 0

    def to_dict(self) -> dict:
        return {"index": self.index, "prompt": self.prompt, "image": self.image,
                "gaussians": self.gaussians, "count": int(self.count), "frame": self.frame.to_dict(),
                "zoom_range": [float(v) for v in self.zoom_range]}

    @staticmethod
    def from_dict(d: Any, where: str) -> "Level":
        index = _int(_get(d, "index", where), f"{where}.index")
        gaussians = plain_file_name(_get(d, "gaussians", where), f"{where}.gaussians")
        frame = LevelFrame.from_dict(_get(d, "frame", where), f"{where}.frame")
        zr = _get(d, "zoom_range", where)
        if not isinstance(zr, (list, tuple)) or len(zr) != 2:
            raise ManifestError(f"{where}.zoom_range: must be [lo, hi]")
        lo, hi = (_number(v, f"{where}.zoom_range") for v in zr)
        if not 0 < lo < hi:
            raise ManifestError(f"{where}.zoom_range: {[lo, hi]} must satisfy 0 < lo < hi")
        image = d.get("image")
        image = None if image is None else plain_file_name(image, f"{where}.image")
        prompt = d.get("prompt") or ""
        if not isinstance(prompt, str):
            raise ManifestError(f"{where}.prompt: must be a string")
        count = _int(d.get("count", 0), f"{where}.count")
        return Level(index, gaussians, frame, (lo, hi), prompt, image, count)


@dataclass(frozen=True)
class ZoomInfo:
    """The zoom the levels were painted from: the camera's name, its pose (Blender matrix_world
    [4, 4], aimed at the anchor) and intrinsics, the factor p, the level prompts, the anchor [3]
    (world) and where it came from ("surface" or "request"), and the stack strip's file.

    factor and prompts are the levels as painted: the user's factor p and N prompts were painted as
    substeps levels per step of p (factor = p^(1/substeps), (N − 1)·substeps + 1 levels, each with
    the prompt of the user's level it follows); a dive of F frames per user level takes
    F / substeps frames per level here (frames_per_level)."""

    camera: str
    matrix_world: np.ndarray
    intrinsics: Intrinsics
    factor: float
    prompts: list[str]
    anchor: np.ndarray
    anchor_source: str = "surface"
    stack_image: Optional[str] = STACK_FILE
    mode: str = "lens"      # where the levels were painted from (wire.cameras.level_pose)
    substeps: int = 1       # levels per step of the user's zoom factor (manifests before: 1)

    @property
    def user_factor(self) -> float:
        """The zoom factor p between the user's levels: factor^substeps."""
        return float(self.factor) ** int(self.substeps)

    def frames_per_level(self, user_frames: float) -> float:
        """Frames per painted level for a dive of user_frames per user level (the factor p)."""
        return float(user_frames) / int(self.substeps)

    def to_dict(self) -> dict:
        return {"camera": self.camera, "matrix_world": np.asarray(self.matrix_world).tolist(),
                **self.intrinsics.to_dict(), "factor": float(self.factor),
                "levels": [{"prompt": p} for p in self.prompts],
                "anchor": [float(v) for v in self.anchor], "anchor_source": self.anchor_source,
                "stack_image": self.stack_image, "mode": self.mode, "substeps": int(self.substeps)}

    @staticmethod
    def from_dict(d: Any, where: str = "zoom") -> "ZoomInfo":
        camera = _get(d, "camera", where)
        M = _array(_get(d, "matrix_world", where), (4, 4), f"{where}.matrix_world")
        k = {key: _number(_get(d, key, where), f"{where}.{key}") for key in ("fx", "fy", "cx", "cy")}
        size = {key: _int(_get(d, key, where), f"{where}.{key}") for key in ("width", "height")}
        factor = _number(_get(d, "factor", where), f"{where}.factor")
        levels = d.get("levels") or []
        if not isinstance(levels, list):
            raise ManifestError(f"{where}.levels: must be a list")
        prompts = [str(lv.get("prompt", "")) if isinstance(lv, dict) else "" for lv in levels]
        anchor = _array(_get(d, "anchor", where), (3,), f"{where}.anchor")
        stack = d.get("stack_image", STACK_FILE)
        stack = None if stack is None else plain_file_name(stack, f"{where}.stack_image")
        # manifests from before DOLLY levels were painted through a longer lens
        mode = d.get("mode", "lens")
        if mode not in ZOOM_MODES:
            raise ManifestError(f"{where}.mode: must be one of {', '.join(ZOOM_MODES)}, got {mode!r}")
        # manifests from before a step of the factor was painted in substeps: one level per step
        substeps = _int(d.get("substeps", 1), f"{where}.substeps")
        if substeps < 1:
            raise ManifestError(f"{where}.substeps: must be at least 1, got {substeps}")
        return ZoomInfo(str(camera), M, Intrinsics(**k, **size), factor, prompts, anchor,
                        str(d.get("anchor_source", "surface")), stack, mode, substeps)


@dataclass(frozen=True)
class ViewSummary:
    """What the dream did with one camera: points it added, its depth scale d_i, the fraction
    of its pixels the earlier views already covered, and whether it is an extra view the dream
    planned (not one of the user's cameras; absent in older manifests: false)."""

    camera: str
    new_points: int
    scale: float
    overlap: float
    extra: bool = False

    def to_dict(self) -> dict:
        return {"camera": self.camera, "new_points": int(self.new_points), "scale": float(self.scale),
                "overlap": float(self.overlap), "extra": bool(self.extra)}

    @staticmethod
    def from_dict(d: Any, where: str) -> "ViewSummary":
        extra = d.get("extra", False) if isinstance(d, dict) else False
        if not isinstance(extra, bool):
            raise ManifestError(f"{where}.extra: {str(extra)[:80]!r} must be true or false")
        return ViewSummary(str(_get(d, "camera", where)), _int(_get(d, "new_points", where), f"{where}.new_points"),
                           _number(_get(d, "scale", where), f"{where}.scale"),
                           _number(_get(d, "overlap", where), f"{where}.overlap"), extra)


@dataclass(frozen=True)
class ConsensusSummary:
    """The multi-view depth consensus: overlap samples used, the robust std of the log-depth
    disagreement before and after, and the largest log-depth factor it moved a point by."""

    samples: int
    disagreement_before: float
    disagreement_after: float
    largest_move: float

    def to_dict(self) -> dict:
        return {"samples": int(self.samples), "disagreement_before": float(self.disagreement_before),
                "disagreement_after": float(self.disagreement_after), "largest_move": float(self.largest_move)}

    @staticmethod
    def from_dict(d: Any, where: str = "consensus") -> "ConsensusSummary":
        return ConsensusSummary(_int(_get(d, "samples", where), f"{where}.samples"),
                                *(_number(_get(d, k, where), f"{where}.{k}")
                                  for k in ("disagreement_before", "disagreement_after", "largest_move")))


@dataclass(frozen=True)
class Manifest:
    """A job's results (docs/API.md "Results of a job"): the point cloud's file and size, the
    dream's views and consensus, the zoom and its levels (sorted by index, indices 0..n−1), and
    the world as Gaussians (world_file, a 3DGS PLY in world coordinates, with world_gaussians of
    them; None and 0 in older manifests: JSON "world": {"file", "gaussians"} or null)."""

    job_id: Optional[str]
    pointcloud_file: str
    points: int
    engine: str = ""
    seed: int = 0
    scene_prompt: str = ""
    views: list[ViewSummary] = field(default_factory=list)
    consensus: Optional[ConsensusSummary] = None
    zoom: Optional[ZoomInfo] = None
    levels: list[Level] = field(default_factory=list)
    version: int = FORMAT_VERSION
    world_file: Optional[str] = None
    world_gaussians: int = 0

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": self.version, "job_id": self.job_id,
                "engine": self.engine, "seed": int(self.seed), "scene_prompt": self.scene_prompt,
                "pointcloud": {"file": self.pointcloud_file, "points": int(self.points)},
                "views": [v.to_dict() for v in self.views],
                "consensus": None if self.consensus is None else self.consensus.to_dict(),
                "zoom": None if self.zoom is None else self.zoom.to_dict(),
                "levels": [lv.to_dict() for lv in self.levels],
                "world": None if self.world_file is None else {"file": self.world_file,
                                                               "gaussians": int(self.world_gaussians)}}

    @staticmethod
    def from_dict(d: Any) -> "Manifest":
        if not isinstance(d, dict):
            raise ManifestError(f"manifest: must be a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise ManifestError(f"format: {str(d.get('format'))[:80]!r} is not {FORMAT!r}: "
                                "not a zoomscape results manifest")
        version = _int(d.get("version", FORMAT_VERSION), "version")
        if version > FORMAT_VERSION:
            raise ManifestError(f"version: {version} is newer than this reader's {FORMAT_VERSION}; "
                                "update the extension")
        pc = _get(d, "pointcloud", "manifest")
        file = plain_file_name(_get(pc, "file", "pointcloud"), "pointcloud.file")
        points = _int(pc.get("points", 0), "pointcloud.points")
        job_id = d.get("job_id")
        views = d.get("views") or []
        if not isinstance(views, list):
            raise ManifestError("views: must be a list")
        levels_raw = d.get("levels") or []
        if not isinstance(levels_raw, list):
            raise ManifestError("levels: must be a list")
        levels = sorted((Level.from_dict(lv, f"levels[{j}]") for j, lv in enumerate(levels_raw)),
                        key=lambda lv: lv.index)
        if [lv.index for lv in levels] != list(range(len(levels))):
            raise ManifestError(f"levels: indices {[lv.index for lv in levels]} must be 0..{len(levels) - 1}")
        zoom = None if d.get("zoom") is None else ZoomInfo.from_dict(d["zoom"])
        if levels and zoom is None:
            raise ManifestError("zoom: missing; the levels need the zoom camera and factor")
        seed = d.get("seed", 0)
        world = d.get("world")
        world_file, world_gaussians = None, 0
        if world is not None:
            world_file = plain_file_name(_get(world, "file", "world"), "world.file")
            world_gaussians = _int(world.get("gaussians", 0), "world.gaussians")
            if world_gaussians < 0:
                raise ManifestError(f"world.gaussians: {world_gaussians} must be ≥ 0")
        return Manifest(job_id=None if job_id is None else str(job_id), pointcloud_file=file,
                        points=points, engine=str(d.get("engine", "")),
                        seed=seed if isinstance(seed, int) else 0,
                        scene_prompt=str(d.get("scene_prompt", "")),
                        views=[ViewSummary.from_dict(v, f"views[{j}]") for j, v in enumerate(views)],
                        consensus=None if d.get("consensus") is None else ConsensusSummary.from_dict(d["consensus"]),
                        zoom=zoom, levels=levels, version=version,
                        world_file=world_file, world_gaussians=world_gaussians)

    def image_files(self) -> list[tuple[int, str, str]]:
        """(level index, prompt, file) of every level image, by index (levels without one are
        left out), then (−1, "Zoom stack", the stack strip) when the zoom names one."""
        out = [(lv.index, lv.prompt, lv.image) for lv in self.levels if lv.image]
        if self.zoom is not None and self.zoom.stack_image:
            out.append((-1, "Zoom stack", self.zoom.stack_image))
        return out


def read_manifest(folder) -> Manifest:
    """folder/manifest.json → Manifest; ManifestError (with the path) when it is not one."""
    path = os.path.join(os.fspath(folder), MANIFEST_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: not JSON ({e})") from None
    try:
        return Manifest.from_dict(data)
    except ManifestError as e:
        raise ManifestError(f"{path}: {e}") from None


def write_manifest(folder, manifest: Manifest) -> None:
    """Write folder/manifest.json atomically (the last file a job writes: it means "complete")."""
    write_json_atomic(os.path.join(os.fspath(folder), MANIFEST_FILE), manifest.to_dict())
