"""Joint zoom-stack sampling with a tiny random-weight Stable Diffusion (CPU), and the procedural stack."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.helpers.tiny_models import build_tiny_sd  # noqa: E402

from zoomscape.cameras import BLENDER_TO_OPENCV, Camera, intrinsics_matrix, look_at, zoom_level_camera  # noqa: E402
from zoomscape.dream import JobCancelled  # noqa: E402
from zoomscape.engines.denoiser import SDDenoiser  # noqa: E402
from zoomscape.engines.procedural import World  # noqa: E402
from zoomscape.engines.procedural_zoom import procedural_zoom_stack  # noqa: E402
from zoomscape.zoom import MAX_PAINTED_LEVELS, consistency_error, invert_photo, paint_zoom_stack  # noqa: E402

PROMPTS = ["a city at night", "a lit window", "a cat on the sill", "the cat's eye"]
SIZE = (64, 64)   # latents 8×8


@pytest.fixture(scope="module")
def denoiser(tmp_path_factory):
    return SDDenoiser.from_pretrained(build_tiny_sd(tmp_path_factory.mktemp("zoom-models")))


def pixels(stack):
    return torch.from_numpy(np.stack(stack.levels)).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def joint_and_independent(denoiser):
    kw = dict(steps=8, guidance=3.0, size=SIZE)
    return (paint_zoom_stack(denoiser, PROMPTS, 2, 0, **kw),
            paint_zoom_stack(denoiser, PROMPTS, 2, 0, joint=False, **kw))


def test_denoiser_adapter(denoiser, tmp_path):
    from diffusers import StableDiffusionPipeline

    assert denoiser.vae_scale_factor == 8 and denoiser.latent_channels == 4
    cond, uncond = denoiser.encode_prompts(["a", "b", "c"], "")
    assert cond.shape[0] == uncond.shape[0] == 3 and not torch.allclose(cond[0], cond[1])
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    e = denoiser.predict_eps(x, 500, cond)
    assert torch.allclose(denoiser.predict_eps(x, 500, cond, batch_size=1), e, atol=1e-5)
    pipe = StableDiffusionPipeline.from_pretrained(build_tiny_sd(tmp_path), safety_checker=None)
    other = SDDenoiser.from_pipeline(pipe)
    assert torch.allclose(other.predict_eps(x, 500, cond), e, atol=1e-5)
    img = denoiser.decode(x)
    assert img.shape == (3, 3, 64, 64) and 0 <= img.min() and img.max() <= 1
    assert denoiser.encode(img).shape == (3, 4, 8, 8)


def test_inpainting_unet_is_refused(tmp_path):
    with pytest.raises(ValueError, match="inpainting"):
        SDDenoiser.from_pretrained(build_tiny_sd(tmp_path, inpainting=True))


def test_joint_sampling_gives_consistent_levels_in_latents_and_pixels(joint_and_independent):
    joint, indep = joint_and_independent
    assert len(joint.levels) == 4 and joint.levels[0].shape == (64, 64, 3)
    assert joint.levels[0].dtype == np.float32 and joint.latents.shape == (4, 4, 8, 8)
    scale = joint.latents.abs().mean()
    assert (consistency_error(joint.latents, 2) < 1e-5 * scale).all()
    assert (consistency_error(pixels(joint), 2) < 1e-5).all()
    # the independent baseline is not consistent, in latents or in pixels
    assert (consistency_error(indep.latents, 2) > 0.1 * indep.latents.abs().mean()).all()
    assert (consistency_error(pixels(indep), 2) > 0.02).all()


def test_joint_sampling_makes_the_models_own_predictions_agree(joint_and_independent):
    """Before the last blend: the UNet's per-level x̂ already agree ≥ 10× better than sampled alone."""
    joint, indep = joint_and_independent
    e_joint, e_indep = consistency_error(joint.predictions, 2), consistency_error(indep.predictions, 2)
    assert (e_joint * 10 < e_indep).all(), (e_joint, e_indep)


def test_photograph_holds_level_zero(denoiser):
    z_star = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    photo = denoiser.decode(z_star)[0].permute(1, 2, 0).numpy()        # a picture the VAE can make
    floor = np.abs(denoiser.decode(invert_photo(denoiser, torch.from_numpy(photo).permute(2, 0, 1),
                                                torch.ones(SIZE))[None])[0].permute(1, 2, 0).numpy() - photo).mean()
    kw = dict(steps=8, guidance=3.0, size=SIZE)
    free = paint_zoom_stack(denoiser, PROMPTS, 2, 0, **kw)
    held = paint_zoom_stack(denoiser, PROMPTS, 2, 0, photo=photo, photo_levels=4, photo_weight=1.0, **kw)
    ring = np.ones(SIZE, bool)
    ring[16:48, 16:48] = False                                         # level 0 outside level 1
    e_free, e_held = np.abs(free.levels[0] - photo), np.abs(held.levels[0] - photo)
    assert e_held.mean() < 0.6 * e_free.mean(), (e_held.mean(), e_free.mean())
    assert e_held[ring].mean() < 1.25 * floor, (e_held[ring].mean(), floor)
    assert (consistency_error(pixels(held), 2) < 1e-5).all()


def test_deep_stack_stays_consistent_across_chained_windows(denoiser):
    prompts = [f"level {i}" for i in range(16)]
    deep = paint_zoom_stack(denoiser, prompts, 2, 1, steps=4, guidance=3.0, size=SIZE, sampler="ddim")
    assert len(deep.levels) == 16
    assert (consistency_error(deep.latents, 2) < 1e-5 * deep.latents.abs().mean()).all()
    assert (consistency_error(pixels(deep), 2) < 1e-5).all()
    indep = paint_zoom_stack(denoiser, prompts, 2, 1, steps=4, guidance=3.0, size=SIZE, sampler="ddim", joint=False)
    e_joint, e_indep = consistency_error(deep.predictions, 2), consistency_error(indep.predictions, 2)
    assert (e_joint * 10 < e_indep).all(), (e_joint, e_indep)


@pytest.mark.parametrize("p", [4, 2.5])
def test_other_factors(denoiser, p):
    z = paint_zoom_stack(denoiser, PROMPTS[:3], p, 2, steps=3, size=SIZE)
    assert (consistency_error(pixels(z), p) < 1e-5).all()


def test_progress_and_cancel(denoiser):
    seen = []
    paint_zoom_stack(denoiser, PROMPTS[:2], 2, 0, steps=3, size=SIZE, progress=lambda *a: seen.append(a))
    assert [s[:3] for s in seen[:3]] == [("zoom", 1, 3), ("zoom", 2, 3), ("zoom", 3, 3)]
    assert sum("decoded level" in s[3] for s in seen) == 2
    calls = []
    with pytest.raises(JobCancelled):
        paint_zoom_stack(denoiser, PROMPTS[:2], 2, 0, steps=3, size=SIZE,
                         should_cancel=lambda: calls.append(1) or len(calls) > 1)


@pytest.mark.parametrize("kw,field", [(dict(size=(60, 64)), "size"), (dict(prompts=["a"] * (MAX_PAINTED_LEVELS + 1)), "prompts"),
                                      (dict(factor=1.0), "factor"), (dict(steps=0), "steps"),
                                      (dict(photo=np.zeros((8, 8, 3))), "photo"), (dict(sampler="euler"), "sampler")])
def test_bad_input_names_the_field(denoiser, kw, field):
    args = dict(prompts=PROMPTS[:2], factor=2, seed=0, size=SIZE, steps=2)
    args.update(kw)
    with pytest.raises(ValueError, match=field):
        paint_zoom_stack(denoiser, **args)


def test_procedural_zoom_stack_renders_every_level_camera():
    cam = Camera("zoom", intrinsics_matrix(40, 40, 24, 24), look_at((0, -12, 3), (0, 0, 1)) @ BLENDER_TO_OPENCV, 48, 48)
    raw = procedural_zoom_stack(cam, PROMPTS[:3], 2, 3, scene_prompt="a harbour", consistent=False)
    world = World("a harbour", 3)
    for i, level in enumerate(raw.levels):
        assert np.array_equal(level, world.render(zoom_level_camera(cam, 2, i))[0])
    S = torch.from_numpy(np.stack(raw.levels)).permute(0, 3, 1, 2)
    assert (consistency_error(S, 2, size=4) < 0.05).all()           # the renderer nearly agrees by itself
    stack = procedural_zoom_stack(cam, PROMPTS[:3], 2, 3, scene_prompt="a harbour")
    assert stack.latents is None and len(stack.levels) == 3
    assert (consistency_error(pixels(stack), 2) < 1e-6).all()
