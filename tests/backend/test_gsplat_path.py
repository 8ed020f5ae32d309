"""The rasterizer choice is explicit, and the lift reaches gsplat's branch with the engine's device.

gsplat cannot rasterize without CUDA, so the gsplat branch is exercised here through a stand-in
with gsplat.rasterization's signature that records its calls and renders with the reference.
"""
import numpy as np
import pytest
import torch

from zoomscape import gaussians, raster
from zoomscape.cameras import from_wire, look_at
from zoomscape.engines.base import DepthFor
from zoomscape.engines.procedural import ProceduralEngine, World

PROMPT, SEED = "a quiet valley", 3


def zoom_cam(size):
    return from_wire({"name": "Zoom", "matrix_world": look_at([0, -8, 3], [0, 0, 0.5]).tolist(),
                      "fx": 1.1 * size, "fy": 1.1 * size, "cx": size / 2, "cy": size / 2,
                      "width": size, "height": size})


def level_images(cam, n):
    from zoomscape.cameras import zoom_level_camera
    world = World(PROMPT, SEED)
    anchor = world.trace(cam, np.array([[cam.width / 2, cam.height / 2]])).point[0]
    return anchor, [world.render(zoom_level_camera(cam, 4.0, i))[0] for i in range(n)]


def test_choose_backend(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert raster.choose_backend(cpu) == "reference"
    monkeypatch.setattr(raster, "_gsplat_cuda_ready", lambda: False)
    assert raster.choose_backend(cuda) == "reference"        # no CUDA extension: the reference
    monkeypatch.setattr(raster, "_gsplat_cuda_ready", lambda: True)
    assert raster.choose_backend(cuda) == "gsplat"
    assert raster.choose_backend(cpu) == "reference"          # gsplat never rasterizes on the CPU
    assert raster.choose_backend(cuda, "reference") == "reference"
    assert raster.choose_backend(cpu, "gsplat") == "gsplat"
    with pytest.raises(ValueError, match="backend"):
        raster.choose_backend(cpu, "opengl")


class GsplatStandIn:
    """gsplat.rasterization's signature; records each call, renders with the reference."""

    def __init__(self):
        self.calls = []

    def __call__(self, means, quats, scales, opacities, colors, viewmats, Ks, width, height, *,
                 near_plane, far_plane, eps2d, packed, rasterize_mode, backgrounds):
        self.calls.append({"device": means.device, "n": len(means), "packed": packed,
                           "mode": rasterize_mode, "eps2d": eps2d, "grad": means.requires_grad})
        info = {}
        rgb, alpha = raster.rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width,
                                      height, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
                                      antialiased=rasterize_mode == "antialiased",
                                      backgrounds=backgrounds, backend="reference", info=info)
        return rgb, alpha, info


def test_lift_and_refine_take_gsplats_branch_for_the_engines_device(monkeypatch):
    """When the device is one gsplat serves, every render of the lift (coarser levels, PSNR,
    each refinement step) goes through gsplat.rasterization, with tensors on that device."""
    stand_in = GsplatStandIn()
    engine = ProceduralEngine(depth_lies={"Zoom/level_00": (1.0, 0.0)})
    seen, real_choose = [], raster.choose_backend

    def choose(device, backend="auto"):  # the engine's device stands for a CUDA device here
        seen.append(torch.device(device))
        if backend == "auto" and torch.device(device) == torch.device(engine.device):
            return "gsplat"
        return real_choose(device, backend)

    monkeypatch.setattr(raster, "choose_backend", choose)
    monkeypatch.setattr(raster, "gsplat_rasterization", lambda: stand_in)
    cam = zoom_cam(24)
    anchor, images = level_images(cam, 2)
    levels = gaussians.lift_levels(images, cam, anchor, 4.0, DepthFor(engine, SEED), refine_steps=3)
    assert seen and all(d == torch.device(engine.device) for d in seen)
    # level 1: coarse background + psnr_init + 3 refine steps + psnr; level 0 the same minus the background
    assert len(stand_in.calls) == 2 * 5 + 1
    assert sum(c["grad"] for c in stand_in.calls) == 2 * 3       # the refinement steps backpropagate
    # the image formation Blender renders (gaussians.EPS2D, ANTIALIASED): no dilation, classic
    assert all(c["device"] == torch.device(engine.device) and not c["packed"]
               and c["mode"] == "classic" and c["eps2d"] == 0.0 for c in stand_in.calls)
    # refined = kept (only when the PSNR did not drop); the 3 steps ran either way
    assert all(lv.stats["refine_steps"] == 3 and lv.stats["psnr"] > 25 for lv in levels)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without CUDA")
def test_lift_builds_its_tensors_on_the_engines_device():
    """A CUDA engine's lift puts the Gaussians on CUDA (here, without CUDA, that is the error);
    other devices lift on the CPU."""
    engine = ProceduralEngine(depth_lies={"Zoom/level_00": (1.0, 0.0)})
    cam = zoom_cam(16)
    anchor, images = level_images(cam, 1)
    engine.device = "cuda:0"
    with pytest.raises((AssertionError, RuntimeError), match="CUDA"):
        gaussians.lift_levels(images, cam, anchor, 4.0, DepthFor(engine, SEED))
    for device in ("cpu", "mps"):  # gsplat serves CUDA only: anything else lifts on the CPU
        engine.device = device
        assert len(gaussians.lift_levels(images, cam, anchor, 4.0, DepthFor(engine, SEED))[0]) == 16 * 16
