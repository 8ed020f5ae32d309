"""One job from request to results: cameras → dream → zoom anchor → zoom stack → Gaussians per level
→ the world as Gaussians.

``run_job`` is what the job store's worker and ``zoomscape generate`` both call, with a validated
``schema.JobRequest`` (docs/API.md); it returns the ``wire.manifest.Manifest`` it wrote. Results are written atomically (temp file +
os.replace) and manifest.json last, so a manifest means the results are complete.

Files: pointcloud.ply, level_NN.png + level_NN.ply per zoom level, zoom_stack.png, world.ply (the
world as 3D Gaussians, world.py), manifest.json.
Progress stages: "dream" (per view, or per denoising step), "zoom" (per denoising step or level),
"lift" (per level), "world" (lift, colour and refine the world's Gaussians, write world.ply), "write".
The world stage runs in a worker thread beside "zoom" and "lift" (background.BackgroundStage: it
needs only the dream); its reports are handed on after "lift", in stage order.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .cameras import Camera, LevelCameras, aim_at, from_wire, pixel_grid, pixels_to_world, world_to_pixels
from .background import BackgroundStage
from .dream import dream
from .engines.base import DepthFor
from .extra_views import DivePath
from .errors import JobCancelled
from .gaussians import LEVEL_REFINE_STEPS, lift_levels
from .pointcloud import PointCloud, project, write_ply
from .schema import JobRequest
from .settings import Settings, resolve
from .wire.atomic import atomic_open
from .wire.manifest import ConsensusSummary, Level, Manifest, ZoomInfo, write_manifest
from .wire.names import MANIFEST_FILE, POINTCLOUD_FILE, STACK_FILE, WORLD_FILE, level_gaussians, level_image
from .wire.splats import write_splat_ply
from .zoom import painted_levels

Progress = Callable[[str, int, int, str], None]
# A DOLLY zoom's dive views: the zoom camera at these τ on its path (between level 0 and level 1, where
# a dolly passes what stands beside its path), DIVE_WIDEN times its field of view (extra_views.DivePath),
# dreamed as the first extra views
DIVE_VIEWS = (0.5, 0.625)
DIVE_WIDEN = 1.15

__all__ = ["run_job", "surface_anchor", "JobCancelled", "POINTCLOUD_FILE", "MANIFEST_FILE"]


ANCHOR_RADII = (2.0, 4.0)  # pixels about the image centre whose front-surface points fit the anchor's plane
ANCHOR_MIN_POINTS = 6
ANCHOR_FRONT_TOL = 0.03   # a point farther than this behind its pixel's z-buffer depth is hidden


def surface_anchor(cloud: PointCloud, cam: Camera, window: Optional[int] = None) -> np.ndarray:
    """The surface point on cam's centre ray, through the image centre e = (W/2, H/2): [3] world.

    A DOLLY dive flies to the anchor: at zoom τ the camera is d0·p^−τ from it, so an anchor a
    fraction ε of d0 off the surface puts the surface ε·p^τ off where every deep level expects
    it (10 levels at p = 2: ε = 0.2 % doubles the last level's distance). So the anchor is the
    front surface's own depth at e. Its points (z ≤ (1 + ANCHOR_FRONT_TOL)·the z-buffer's depth
    at their pixel) within r px of e give a plane in inverse depth, 1/z = a + b·(u − e_u) +
    c·(v − e_v) (least squares, three rounds dropping residuals beyond 3 MADs); the intercept is
    then the median, over the front points of the whole window (`window` pixels, default
    max(2, min(W, H)/32)), of 1/z − b·(u − e_u) − c·(v − e_v): every point carried to the centre
    along the plane, so many points average their depth noise, and a surface beside the
    centre's, in a minority, does not count. A plane is linear in inverse depth, so this is exact
    on planes however slanted, where the window's median depth or the nearest point per pixel
    lies toward the camera (2.9 % on ground seen at a grazing angle; 0.24 % on the demo). The
    first r in ANCHOR_RADII with ANCHOR_MIN_POINTS points decides; else the median depth of the
    window's covered pixels; if none is covered there, the nearest covered pixel's point along
    its own pixel. Raises ValueError when the camera sees none of the cloud.
    """
    W, H = cam.width, cam.height
    proj = project(cloud, cam)
    if not proj.mask.any():
        raise ValueError(f"zoom.camera: camera '{cam.name}' sees none of the point cloud; "
                         "give zoom.anchor explicitly")
    centre = np.array([W / 2.0, H / 2.0])
    r = window if window is not None else max(2, round(min(W, H) / 32))
    z = _plane_depth_at_centre(cloud, cam, proj, centre, r)
    if z is not None:
        return pixels_to_world(cam, centre[None], np.array([z]))[0]
    uv = pixel_grid(W, H)
    near = (np.abs(uv - centre) <= r).all(axis=1) & proj.mask.reshape(-1)
    depth = proj.depth.reshape(-1).astype(np.float64)
    if near.any():
        z, at = float(np.median(depth[near])), centre
    else:
        covered = np.flatnonzero(proj.mask.reshape(-1))
        k = covered[np.argmin(np.linalg.norm(uv[covered] - centre, axis=1))]
        z, at = float(depth[k]), uv[k]
    return pixels_to_world(cam, at[None], np.array([z]))[0]


def _plane_depth_at_centre(cloud: PointCloud, cam: Camera, proj, centre: np.ndarray,
                           window: float) -> Optional[float]:
    """surface_anchor's plane: the front surface's z-depth at centre, or None (too few points)."""
    uv, z = world_to_pixels(cam, cloud.xyz)
    d = uv - centre
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(z) & (z > 0) & np.isfinite(uv).all(axis=1)

    def front_within(r: float) -> np.ndarray:
        """The points within r px of the centre that the z-buffer shows (not hidden behind)."""
        sel = np.flatnonzero(ok & (np.abs(d) <= r).all(axis=1))
        col = np.clip(np.floor(uv[sel, 0]).astype(np.int64), 0, cam.width - 1)
        row = np.clip(np.floor(uv[sel, 1]).astype(np.int64), 0, cam.height - 1)
        return sel[z[sel] <= (1.0 + ANCHOR_FRONT_TOL) * proj.depth[row, col]]

    for r in ANCHOR_RADII:
        sel = front_within(r)
        if len(sel) < ANCHOR_MIN_POINTS:
            continue
        A, w = np.c_[np.ones(len(sel)), d[sel]], 1.0 / z[sel]
        for _ in range(3):
            x = np.linalg.lstsq(A, w, rcond=None)[0]
            res = np.abs(w - A @ x)
            keep = res <= 3.0 * 1.4826 * np.median(res) + 1e-12
            if keep.sum() < ANCHOR_MIN_POINTS:
                break
            A, w = A[keep], w[keep]
        x = np.linalg.lstsq(A, w, rcond=None)[0]
        # the intercept: the median over the whole window's front points of their inverse depth
        # carried to the centre along that plane's slope (many points: the noise of a few
        # averages out; a median: a surface beside the centre's, in a minority, does not count)
        big = front_within(max(window, r))
        if len(big) > len(sel):
            x[0] = np.median(1.0 / z[big] - d[big] @ x[1:])
        if x[0] > 0 and np.isfinite(x[0]):
            return float(1.0 / x[0])
    return None


def _job_id(out_dir: Path, job_id: Optional[str]) -> str:
    """The job id for the manifest: given, else the job folder's name (out_dir is
    data_dir/jobs/<id>/results in the job store), else out_dir's own name."""
    if job_id:
        return str(job_id)
    out_dir = out_dir.resolve()
    return out_dir.parent.name if out_dir.name == "results" else out_dir.name


def run_job(request: JobRequest, out_dir: Path, progress: Optional[Progress] = None,
            should_cancel: Optional[Callable[[], bool]] = None, engine=None, *,
            job_id: Optional[str] = None, settings: Optional[Settings] = None) -> Manifest:
    """Run one request; write out_dir/pointcloud.ply then out_dir/manifest.json; → the Manifest.

    request: a validated schema.JobRequest (schema.validate_request / validate_request_json), so
    every field is already within its limits. engine: an engines.base.Engine, or None to build
    request.engine with engines.get_engine. Raises JobCancelled (and writes no manifest) when
    should_cancel() turns True. settings: the backend's settings.Settings (None: from the
    environment); the refinement budgets of the zoom levels and the world come from it
    (level_refine_budget, world_refine_budget).
    """
    if not isinstance(request, JobRequest):
        raise TypeError(f"request: must be a validated schema.JobRequest, got {type(request).__name__} "
                        "(validate it with schema.validate_request)")
    out_dir = Path(out_dir)
    report = progress or (lambda *a: None)

    def check_cancel():
        if should_cancel is not None and should_cancel():
            raise JobCancelled("cancelled")

    zoom, seed = request.zoom, request.seed
    zi = [c.name for c in request.cameras].index(zoom.camera)
    cams = [from_wire(c) for c in request.cameras]
    if engine is None:
        from .engines import get_engine

        engine = get_engine(request.engine)

    init = None
    if request.init_rgbd is not None:
        from .init_view import decode_init_rgbd

        init = decode_init_rgbd(request.init_rgbd, cams[0])

    def find_anchor(cloud: PointCloud) -> list[float]:
        if zoom.anchor is not None:
            return [float(v) for v in zoom.anchor]
        return surface_anchor(cloud, cams[zi]).tolist()

    # DOLLY: the dream sees from the dive's path too, aimed at the anchor the user's views put (the
    # final cloud's, which the zoom takes, lies within their depth noise of it)
    dive = (DivePath(cams[zi], float(zoom.factor), DIVE_VIEWS, find_anchor, DIVE_WIDEN)
            if zoom.mode == "dolly" else None)

    # dream() hands on_step/should_cancel to every engine.inpaint call (the pooled engine keeps no
    # hooks), and reports stage "dream" per denoising step: step v·T + s of views·T
    result = dream(cams, request.scene_prompt, engine, seed, report, should_cancel, init=init,
                   extra_views=request.extra_views, dive=dive)
    check_cancel()

    anchor = find_anchor(result.cloud)
    anchor_source = "request" if zoom.anchor is not None else "surface"

    out_dir.mkdir(parents=True, exist_ok=True)
    write_ply(out_dir / POINTCLOUD_FILE, result.cloud)
    # the world's Gaussians need only the dream: they are made beside the zoom levels
    world = BackgroundStage("world", lambda rep, cancel: write_world(
        out_dir, result, cams, engine, seed, resolve(settings), rep, cancel), should_cancel)
    try:
        levels = _zoom_levels(request, result, cams[zi], engine, anchor, report, should_cancel,
                              resolve(settings))
        n_world = world.wait(report)
    except BaseException:
        world.stop()
        raise
    check_cancel()
    report("write", 1, 2, f"writing {len(levels)} zoom levels")
    lcam, prompts, factor = levels.camera, levels.prompts, levels.factor
    written = write_levels(out_dir, prompts, levels.images, levels.lifted)

    consensus = result.consensus
    manifest = Manifest(
        job_id=_job_id(out_dir, job_id), pointcloud_file=POINTCLOUD_FILE,
        points=len(result.cloud), engine=engine.name, seed=seed, scene_prompt=request.scene_prompt,
        views=[v.summary() for v in result.views],
        consensus=None if consensus is None else ConsensusSummary(
            consensus.used, consensus.sigma_before, consensus.sigma_after,
            float(np.abs(consensus.factor).max(initial=0.0))),
        zoom=ZoomInfo(zoom.camera, lcam.matrix_world, lcam.intrinsics, factor, prompts,
                      np.asarray(anchor, np.float64), anchor_source, STACK_FILE, levels.mode,
                      levels.substeps),
        levels=written, world_file=WORLD_FILE, world_gaussians=n_world)
    check_cancel()
    write_manifest(out_dir, manifest)
    report("write", 2, 2, "done")
    return manifest


@dataclass
class ZoomLevels:
    """The zoom stack painted from the zoom camera and its levels lifted to Gaussians."""
    camera: Camera          # the level camera: the zoom camera aimed at the anchor, at the stack's size
    prompts: list[str]
    factor: float
    images: list[np.ndarray]
    lifted: list
    mode: str = "lens"      # where the levels were painted from (cameras.LevelCameras)
    substeps: int = 1       # levels painted per zoom factor the user asked (zoom.painted_levels)

    def __len__(self) -> int:
        return len(self.lifted)


def _zoom_levels(request: JobRequest, result, zoom_cam: Camera, engine, anchor,
                 report: Progress, should_cancel: Optional[Callable[[], bool]],
                 settings: Settings) -> ZoomLevels:
    """Paint the stack from zoom_cam (request.zoom.camera) aimed so the anchor is at the image
    centre, where levels are centred, holding level 0 to the view of the world: level i from the
    camera p^i times closer to the anchor (zoom.mode "dolly") or p^i longer lens ("lens",
    cameras.LevelCameras); lift each level from its own camera,
    refining each within settings.level_refine_budget(device) seconds (0: not refined)."""
    from .world import world_device
    zoom, seed = request.zoom, request.seed
    zcam = aim_at(zoom_cam, anchor)
    # each step of the user's factor p is painted as substeps levels of q = p^(1/substeps) ≤ 2, so
    # no frame between two levels magnifies one more than 2× (zoom.painted_levels)
    painted = painted_levels([lv.prompt for lv in zoom.levels], float(zoom.factor))
    prompts, factor = painted.prompts, painted.factor

    rig = LevelCameras(zcam, np.asarray(anchor, np.float64), factor, zoom.mode)

    def photo(width: int, height: int):
        return project(result.cloud, zcam.scaled(width, height))

    steps = (f" ({len(zoom.levels)} levels, each {float(zoom.factor):g}× step in {painted.substeps} "
             f"of {factor:.3g}×)" if painted.substeps > 1 else "")
    report("zoom", 0, 1, f"wrote {POINTCLOUD_FILE} ({len(result.cloud)} points); "
                         f"painting {len(prompts)} zoom levels{steps}")
    stack = engine.paint_zoom_stack(zcam, prompts, factor, seed,
                                    scene_prompt=request.scene_prompt, photo=photo,
                                    progress=report, should_cancel=should_cancel, rig=rig)
    H, W = stack.levels[0].shape[:2]
    lcam = zcam.scaled(W, H)
    depth0 = project(result.cloud, lcam).depth.astype(np.float64)
    # the levels lift where the world refines: the engine's CUDA device, else the CPU
    budget = settings.level_refine_budget(world_device(engine))
    lifted = lift_levels(stack.levels, lcam, anchor, factor,
                         DepthFor(engine, seed, "level"), depth0=depth0,
                         refine_steps=LEVEL_REFINE_STEPS if budget > 0 else 0, refine_seconds=budget,
                         progress=report, should_cancel=should_cancel, mode=zoom.mode,
                         painted_from=stack.cameras)
    return ZoomLevels(lcam, prompts, factor, list(stack.levels), lifted, zoom.mode, painted.substeps)


def write_world(out_dir: Path, result, cams: list[Camera], engine, seed: int, settings: Settings,
                report: Progress, should_cancel: Optional[Callable[[], bool]] = None) -> int:
    """The world as Gaussians (world.py): one per point of the dream's cloud, coloured over all
    dreamed views, refined on them within settings.world_refine_budget(device) seconds; written
    to out_dir/world.ply (atomically). Stage "world", steps 0..2. → the number of Gaussians."""
    from .world import dreamed_cameras, refine_world, world_device, world_gaussians

    views = dreamed_cameras(result, cams)
    device = world_device(engine)
    budget = settings.world_refine_budget(device)
    report("world", 0, 2, f"lifting {len(result.cloud)} points to Gaussians over {len(views)} views")
    # the colour solve and the refinement run where the levels' do: the engine's CUDA device (the
    # reference rasterizer's sparse weights there, gsplat for the refinement), else the CPU
    world = world_gaussians(result, views, device=device, measure=False)
    report("world", 1, 2, f"coloured {len(world)} Gaussians over {len(views)} views"
                          + (f"; refining for up to {budget:g} s" if budget > 0 else ""))
    world = refine_world(world, result.images, views, seconds=budget, seed=seed,
                         should_cancel=should_cancel, device=device)
    write_splat_ply(out_dir / WORLD_FILE, world.gaussians)
    st = world.stats
    report("world", 2, 2, f"wrote {WORLD_FILE} ({len(world)} Gaussians"
                          + (f", {st['refine_steps']} refinement steps" if st["refine_steps"] else "") + ")")
    return len(world)


def write_levels(out_dir: Path, prompts: list[str], images: list[np.ndarray], lifted: list) -> list[Level]:
    """level_NN.png and level_NN.ply per level, and the stack strip; → the manifest's levels."""
    out = []
    for i, (prompt, image, level) in enumerate(zip(prompts, images, lifted)):
        png, ply = level_image(i), level_gaussians(i)
        write_png(out_dir / png, image)
        write_splat_ply(out_dir / ply, level.gaussians)
        out.append(Level(index=i, gaussians=ply, frame=level.frame,
                         zoom_range=tuple(float(v) for v in level.zoom_range), prompt=prompt,
                         image=png, count=len(level)))
    write_png(out_dir / STACK_FILE, np.concatenate(list(images), axis=1))
    return out


def write_png(path: Path, image: np.ndarray) -> None:
    """image: [H, W, 3] float in [0, 1] → an 8-bit PNG at path (atomically)."""
    from PIL import Image

    pixels = np.round(np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0).astype(np.uint8)
    with atomic_open(path) as f:
        Image.fromarray(pixels).save(f, format="PNG")
