"""The procedural engine's zoom stack: the analytic World rendered at every zoom level camera.

For offline demos and as ground truth: level i is ``World(scene_prompt, seed).render`` through
level i's camera: in DOLLY (``rig``, cameras.LevelCameras) the zoom camera moved p^i times closer
to the anchor, in LENS ``cameras.zoom_level_camera(cam, p, i)`` (the zoom camera zoomed by p^i
about its image centre). The renderer point-samples one ray per pixel with footprint-filtered
detail, so neighbouring levels agree only approximately; a LENS stack is then made exactly
consistent with ``zoom.pi_image_all`` (every finer level, shrunk by p, pasted into the centre of
the coarser ones), as paint_zoom_stack's output is. A DOLLY stack is the world seen from each
level's own camera (its levels agree where they see the same surface, as one world's renders do).
The per-level prompts do not change the analytic world; they are kept on the result.

Which cameras a DOLLY stack is rendered from (true_dolly_rig). The rig's anchor is where the
job's geometry puts the surface on the zoom camera's centre ray, a few % off the true surface (the
world's scale is the first view's depth estimate's). A generator conditioned on that geometry
paints what it looks like from C_i = a + (C_0 − a)·p^−i; the geometry is the true world scaled
about C_0 by s = |a − C_0| / |a* − C_0| (a* the true surface on the ray), and that scaling maps
the camera C*_i = a* + (C_0 − a*)·p^−i to C_i, so what the geometry looks like from C_i is the
true world from C*_i: the same dive, toward the surface the zoom camera looks at. (Rendering the
true world from C_i itself would put the camera of a deep level behind the true surface once
p^−i·|a − C_0| falls below the anchor's error.)
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np
import torch

from ..cameras import Camera, LevelCameras, world_to_pixels, zoom_level_camera
from ..errors import JobCancelled
from ..zoom import MAX_PAINTED_LEVELS, ZoomStack, check_factor, pi_image_all
from .procedural import SKY, World


def true_dolly_rig(world: World, rig: LevelCameras) -> LevelCameras:
    """The DOLLY rig toward the true surface on the zoom camera's ray through the rig's anchor
    (the module docstring): the same cameras with anchor a* (the rig itself when that ray
    meets only the sky)."""
    cam = rig.camera
    uv, _ = world_to_pixels(cam, np.asarray(rig.anchor, np.float64)[None])
    hit = world.trace(cam, uv)
    if int(hit.kind[0]) == SKY or not np.isfinite(hit.t[0]):
        return rig
    return dataclasses.replace(rig, anchor=np.asarray(hit.point[0], np.float64))


def procedural_zoom_stack(cam: Camera, prompts: list[str], factor, seed: int, *,
                          scene_prompt: Optional[str] = None, size=None, consistent: bool = True,
                          progress: Optional[Callable[[str, int, int, str], None]] = None,
                          should_cancel: Optional[Callable[[], bool]] = None,
                          rig: Optional[LevelCameras] = None) -> ZoomStack:
    """Render the World of (scene_prompt or prompts[0], seed) at N = len(prompts) zoom levels.

    cam: the zoom camera (OpenCV, cameras.Camera); size: (H, W) to render at (default the camera's);
    rig: the level cameras (None: LENS from cam).
    consistent: paste finer levels into coarser ones (Π_image) so level i−1's centre is exactly
    level i shrunk by p. → ZoomStack(levels: N × [H, W, 3] float32 in [0, 1], latents None).
    progress("zoom", i + 1, N, message) after each level; should_cancel() raises errors.JobCancelled.
    """
    p = check_factor(factor)
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError("prompts: need one prompt per zoom level (at least 1)")
    if len(prompts) > MAX_PAINTED_LEVELS:
        raise ValueError(f"prompts: at most {MAX_PAINTED_LEVELS} zoom levels, got {len(prompts)}")
    if size is not None:
        H, W = (int(v) for v in size)
        if H <= 0 or W <= 0:
            raise ValueError(f"size: height and width must be positive, got {tuple(size)}")
        cam = cam.scaled(W, H)
    world = World(scene_prompt if scene_prompt is not None else prompts[0], seed)
    report = progress or (lambda *a: None)
    N = len(prompts)
    images, cameras = [], []
    dolly = rig is not None and rig.mode == "dolly"
    if dolly:
        rig = true_dolly_rig(world, rig)
    for i in range(N):
        if should_cancel is not None and should_cancel():
            raise JobCancelled(f"cancelled during zoom (level {i + 1}/{N})")
        cameras.append(rig.level(i, cam.width, cam.height) if dolly else zoom_level_camera(cam, p, i))
        rgb, _ = world.render(cameras[-1])
        images.append(rgb)
        report("zoom", i + 1, N, f"rendered level {i + 1}/{N} at zoom {p ** i:g}")
    stack = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)   # [N, 3, H, W]
    if consistent and not dolly:
        stack = pi_image_all(stack, p)
    levels = [np.ascontiguousarray(im.permute(1, 2, 0).numpy(), dtype=np.float32) for im in stack]
    return ZoomStack(levels=levels, latents=None, factor=p, prompts=list(prompts),
                     cameras=cameras if dolly else None)
