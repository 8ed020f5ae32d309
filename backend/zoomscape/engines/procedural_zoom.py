"""The procedural engine's zoom stack: the analytic World rendered at every zoom level camera.

For offline demos and as ground truth: level i is ``World(scene_prompt, seed).render`` through
level i's camera: in DOLLY (``rig``, cameras.LevelCameras) the zoom camera moved p^i times closer
to the anchor, in LENS ``cameras.zoom_level_camera(cam, p, i)`` (the zoom camera zoomed by p^i
about its image centre). The renderer point-samples one ray per pixel with footprint-filtered
detail, so neighbouring levels agree only approximately; a LENS stack is then made exactly
consistent with ``zoom.pi_image_all`` (every finer level, shrunk by p, pasted into the centre of
the coarser ones), as paint_zoom_stack's output is. A DOLLY stack is the world seen from each
level's own camera (its levels agree where they see the same surface, as one world's renders do). The per-level prompts do not change the analytic world; they are kept on the result.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

from ..cameras import Camera, LevelCameras, zoom_level_camera
from ..errors import JobCancelled
from ..zoom import MAX_LEVELS, ZoomStack, check_factor, pi_image_all
from .procedural import World


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
    if len(prompts) > MAX_LEVELS:
        raise ValueError(f"prompts: at most {MAX_LEVELS} zoom levels, got {len(prompts)}")
    if size is not None:
        H, W = (int(v) for v in size)
        if H <= 0 or W <= 0:
            raise ValueError(f"size: height and width must be positive, got {tuple(size)}")
        cam = cam.scaled(W, H)
    world = World(scene_prompt if scene_prompt is not None else prompts[0], seed)
    report = progress or (lambda *a: None)
    N = len(prompts)
    images = []
    for i in range(N):
        if should_cancel is not None and should_cancel():
            raise JobCancelled(f"cancelled during zoom (level {i + 1}/{N})")
        dolly = rig is not None and rig.mode == "dolly"
        rgb, _ = world.render(rig.level(i, cam.width, cam.height) if dolly else zoom_level_camera(cam, p, i))
        images.append(rgb)
        report("zoom", i + 1, N, f"rendered level {i + 1}/{N} at zoom {p ** i:g}")
    stack = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)   # [N, 3, H, W]
    if consistent and not (rig is not None and rig.mode == "dolly"):
        stack = pi_image_all(stack, p)
    levels = [np.ascontiguousarray(im.permute(1, 2, 0).numpy(), dtype=np.float32) for im in stack]
    return ZoomStack(levels=levels, latents=None, factor=p, prompts=list(prompts))
