"""Every tensor the GPU path makes lives on the device of its inputs (issue 12: on CUDA nothing may
fall back to a CPU tensor). Without a GPU this is checked with PyTorch's default-device context:
inside `with torch.device("meta")` any tensor made without an explicit device lands on "meta",
and mixing it with the CPU inputs raises — exactly where a CUDA run would mix CUDA and CPU tensors.
Covered: the reference rasterizer and its sparse weights (the colour fit on CUDA), SSIM, a level's
lift with its colour fit and budgeted refinement, densification, and the joint zoom sampler."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.backend.test_level_refine import level_images, zoom_cam  # noqa: E402
from tests.helpers.tiny_models import build_tiny_sd  # noqa: E402

from zoomscape import gaussians, raster, zoom  # noqa: E402
from zoomscape.cameras import zoom_level_camera  # noqa: E402
from zoomscape.engines.base import DepthFor  # noqa: E402
from zoomscape.engines.denoiser import SDDenoiser  # noqa: E402
from zoomscape.engines.procedural import ProceduralEngine  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    with gaussians.torch_threads(1):
        yield


def test_the_trick_catches_a_tensor_made_without_a_device():
    x = torch.ones(3)
    with torch.device("meta"), pytest.raises((RuntimeError, NotImplementedError)):
        float((x + torch.arange(3)).sum())


def random_gaussians(n=60):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 3.0]), torch.randn(n, 4, generator=g),
            torch.rand(n, 3, generator=g) * 0.1, torch.rand(n, generator=g), torch.rand(n, 3, generator=g))


def test_reference_rasterizer_and_its_weights_stay_on_the_inputs_device():
    means, quats, scales, op, col = random_gaussians()
    V, K = torch.eye(4)[None], torch.tensor([[[20.0, 0, 16], [0, 20, 16], [0, 0, 1]]])
    rgb0, _ = raster.rasterize(means, quats, scales, op, col, V, K, 32, 32, backend="reference")
    with torch.device("meta"):
        rgb, alpha = raster.rasterize(means, quats, scales, op, col, V, K, 32, 32, backend="reference")
        p = raster.project(means, quats, scales, op, V, K, 32, 32)
        rows, cols, w, T = raster.composite_weights(p, 32, 32)
        s = gaussians.ssim(rgb[0], rgb0[0] * 0.5)
    assert rgb.device.type == rows.device.type == T.device.type == s.device.type == "cpu"
    assert torch.equal(rgb, rgb0) and len(rows) > 0


def test_a_levels_lift_colour_fit_and_refinement_stay_on_the_device():
    cam = zoom_cam(24)
    anchor, images = level_images(cam, 2)
    engine = ProceduralEngine(depth_lies={"Zoom/level_00": (1.0, 0.0)})
    with torch.device("meta"):
        levels = gaussians.lift_levels(images, cam, anchor, 4.0, DepthFor(engine, 3), refine_steps=2,
                                       refine_seconds=60.0, device="cpu")
    assert [lv.stats["refine_steps"] for lv in levels] == [2, 2]
    assert all(np.isfinite(lv.gaussians.means).all() for lv in levels)


def test_densification_stays_on_the_device():
    """Runs of ≥ gaussians.DENSIFY_MIN_STEPS steps grow and prune with gsplat's DefaultStrategy."""
    cam = zoom_cam(16)
    anchor, images = level_images(cam, 1)
    engine = ProceduralEngine(depth_lies={"Zoom/level_00": (1.0, 0.0)})
    lv = gaussians.lift_levels(images, cam, anchor, 4.0, DepthFor(engine, 3), colour_steps=0)[0]
    c0 = zoom_level_camera(cam, 4.0, 0)
    with torch.device("meta"):
        out, st = gaussians.refine_views(lv.gaussians, images[:1], [c0], lv.frame,
                                         steps=gaussians.DENSIFY_MIN_STEPS, device="cpu",
                                         grow_grad2d=1e-6)
    assert st["steps"] == gaussians.DENSIFY_MIN_STEPS and len(out) != len(lv.gaussians)   # it densified


def test_the_joint_zoom_sampler_stays_on_the_denoisers_device(tmp_path):
    d = SDDenoiser.from_pretrained(build_tiny_sd(tmp_path))
    # the tokenizer (transformers') makes its id tensors without a device, then they are moved:
    # its embeddings are made outside the check
    embeddings = d.encode_prompts(["a", "b", "c"], "")
    d.encode_prompts = lambda *a, **kw: embeddings
    photo = np.full((64, 64, 3), 0.5, np.float32)
    ref = zoom.paint_zoom_stack(d, ["a", "b", "c"], 2, 0, steps=2, guidance=3.0, size=(64, 64), photo=photo)
    with torch.device("meta"):
        out = zoom.paint_zoom_stack(d, ["a", "b", "c"], 2, 0, steps=2, guidance=3.0, size=(64, 64), photo=photo)
    assert np.array_equal(np.stack(out.levels), np.stack(ref.levels))


@pytest.mark.parametrize("engine_device, expected, budget", [("cuda:0", "cuda:0", 60.0), ("mps", "cpu", 0.0),
                                                             ("cpu", "cpu", 0.0)])
def test_the_world_is_coloured_and_refined_where_the_levels_are(monkeypatch, tmp_path, engine_device,
                                                               expected, budget):
    """pipeline.write_world: the colour solve and LucidDreamer's 3DGS stage both on the engine's
    CUDA device (gsplat there), else the CPU, with the device's budget (60 s with CUDA)."""
    from zoomscape import pipeline, world
    from zoomscape.settings import Settings

    seen = {}

    def colour(result, views, *, device=None, measure=True):
        seen["colour"] = str(device)
        return "coloured"

    def refine(w, images, views, *, seconds, seed, should_cancel, device):
        seen["refine"], seen["seconds"] = str(device), seconds
        return type("W", (), {"gaussians": None, "stats": {"refine_steps": 0}, "__len__": lambda self: 0})()

    monkeypatch.setattr(world, "world_gaussians", colour)
    monkeypatch.setattr(world, "refine_world", refine)
    monkeypatch.setattr(world, "dreamed_cameras", lambda result, cams: cams)
    monkeypatch.setattr(pipeline, "write_splat_ply", lambda path, g: None)
    engine = type("E", (), {"device": engine_device})()
    result = type("R", (), {"cloud": [], "images": []})()
    pipeline.write_world(tmp_path, result, [], engine, 0, Settings(), lambda *a: None)
    assert seen == {"colour": expected, "refine": expected, "seconds": budget}
