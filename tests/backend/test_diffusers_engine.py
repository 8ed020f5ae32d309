"""The diffusers engine on tiny random-weight models (built from configs, saved, loaded back with
from_pretrained): shapes, masks, progress, seeds, non-square and large views, depth, missing weights."""
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from tests.helpers.tiny_models import build_all, build_tiny_depth  # noqa: E402
from zoomscape.cameras import Camera  # noqa: E402
from zoomscape.errors import JobCancelled  # noqa: E402
from zoomscape.engines import EngineUnavailable, get_engine  # noqa: E402
from zoomscape.engines.base import Engine, protocol_problems  # noqa: E402
from zoomscape.engines.diffusers import (ray_distance_to_z, resize_hole, view_seed,  # noqa: E402
                                         working_size)

PROMPT = "a misty harbour town at dawn"
STEPS = 3


def make_cam(W=96, H=64, name="Cam.000", f=None):
    f = f or 0.9 * W
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]])
    return Camera(name, K, np.eye(4), W, H)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one torch thread is several times faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "tiny-models"
    build_all(root)
    return root


@pytest.fixture(scope="module")
def engine(tiny_root):
    return get_engine("diffusers", models=build_all(tiny_root), steps=STEPS, device="cpu")


@pytest.fixture
def fresh(engine):
    """The shared engine, as jobs share it: hooks are call arguments, so none is left on it."""
    assert not hasattr(engine, "on_step") and not hasattr(engine, "should_cancel")
    return engine


class Spy:
    """Wraps a pipeline: records the keyword arguments of each call, delegates everything else."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.pipe(**kwargs)


def test_is_an_engine_with_models_and_device(fresh):
    assert isinstance(fresh, Engine) and fresh.name == "diffusers" and fresh.device == "cpu"
    assert protocol_problems(fresh) == [] and fresh.depth_space == "depth"   # by signature too
    roles = {m["role"]: m for m in fresh.models}
    assert set(roles) == {"text2img", "inpaint", "depth"}
    assert all(m["status"] == "loaded" and m["source"] == "local" for m in fresh.models)
    assert roles["depth"]["depth_kind"] == "metric"


def test_text_to_image_fills_the_view(fresh):
    cam = make_cam()
    img = fresh.inpaint(np.zeros((64, 96, 3), np.float32), np.ones((64, 96), bool), PROMPT, cam, 7)
    assert img.shape == (64, 96, 3) and img.dtype == np.float32
    assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0
    assert img.std() > 0.01  # painted something, not the black input


def test_known_pixels_stay_exact_and_holes_are_painted(fresh):
    cam = make_cam()
    rng = np.random.default_rng(0)
    given = rng.random((64, 96, 3), dtype=np.float32)
    hole = np.zeros((64, 96), bool)
    hole[10:40, 50:90] = True
    hole[::7, ::5] = True  # isolated one-pixel holes, finer than a latent cell
    out = fresh.inpaint(given, hole, PROMPT, cam, 3)
    assert out.shape == given.shape and out.dtype == np.float32
    assert np.array_equal(out[~hole], given[~hole])  # bit-exact outside the hole
    assert (np.abs(out[hole] - given[hole]).max(axis=1) > 1e-4).mean() > 0.99


def test_empty_hole_returns_the_image(fresh):
    cam = make_cam()
    given = np.full((64, 96, 3), 0.25, np.float32)
    calls = []
    out = fresh.inpaint(given, np.zeros((64, 96), bool), PROMPT, cam, 1, on_step=lambda s, t: calls.append(s),
                        should_cancel=lambda: calls.append("polled"))
    assert np.array_equal(out, given) and calls == []


def test_plain_checkpoint_inpaints_through_diffusers(tiny_root):
    """inpaint == text2img: a 4-channel UNet inpaints by blending known latents (shared components)."""
    paths = build_all(tiny_root)
    eng = get_engine("diffusers", models={**paths, "inpaint": paths["text2img"]}, steps=STEPS, device="cpu")
    assert eng.inpainter.unet is eng.text2img.unet and eng.inpainter.unet.config.in_channels == 4
    cam = make_cam()
    given = np.random.default_rng(1).random((64, 96, 3), dtype=np.float32)
    hole = np.zeros((64, 96), bool)
    hole[:, 60:] = True
    out = eng.inpaint(given, hole, PROMPT, cam, 5)
    assert np.array_equal(out[~hole], given[~hole])
    assert (np.abs(out[hole] - given[hole]).max(axis=1) > 1e-4).mean() > 0.99


def test_progress_per_denoising_step(fresh):
    cam = make_cam()
    for hole in (np.ones((64, 96), bool), np.eye(64, 96, dtype=bool) | np.eye(64, 96, 30, dtype=bool)):
        seen = []
        fresh.inpaint(np.zeros((64, 96, 3), np.float32), hole, PROMPT, cam, 2,
                      on_step=lambda step, total: seen.append((step, total)))
        assert seen == [(i, STEPS) for i in range(1, STEPS + 1)]
    fresh.inpaint(np.zeros((64, 96, 3), np.float32), hole, PROMPT, cam, 2)   # no hooks: nothing called
    assert len(seen) == STEPS


def test_should_cancel_stops_at_the_next_step(fresh):
    cam = make_cam()
    seen = []
    with pytest.raises(JobCancelled):
        fresh.inpaint(np.zeros((64, 96, 3), np.float32), np.ones((64, 96), bool), PROMPT, cam, 2,
                      on_step=lambda step, total: seen.append(step), should_cancel=lambda: len(seen) >= 2)
    assert seen == [1, 2]
    # the next call, without hooks, is not cancelled: nothing of the last call stayed on the engine
    img = fresh.inpaint(np.zeros((64, 96, 3), np.float32), np.ones((64, 96), bool), PROMPT, cam, 2)
    assert img.shape == (64, 96, 3) and seen == [1, 2]


def test_seeds_are_reproducible_per_seed_and_view(fresh):
    cam, other = make_cam(), make_cam(name="Cam.001")
    hole = np.ones((64, 96), bool)
    zeros = np.zeros((64, 96, 3), np.float32)
    a = fresh.inpaint(zeros, hole, PROMPT, cam, 11)
    b = fresh.inpaint(zeros, hole, PROMPT, cam, 11)
    c = fresh.inpaint(zeros, hole, PROMPT, cam, 12)
    d = fresh.inpaint(zeros, hole, PROMPT, other, 11)
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-3 and np.abs(a - d).mean() > 1e-3
    assert view_seed(11, "Cam.000") == view_seed(11, "Cam.000") != view_seed(12, "Cam.000")


def test_working_size_snaps_keeps_aspect_and_budget():
    for W, H in ((96, 64), (512, 512), (1920, 1080), (64, 2048), (2048, 2048), (700, 333)):
        w, h = working_size(W, H, 512)
        assert w % 8 == 0 and h % 8 == 0 and 128 <= min(w, h) and max(w, h) <= 1024
        if max(W, H) / min(W, H) <= 4:
            assert abs((w / h) / (W / H) - 1) < 0.06, (W, H, w, h)
            assert 0.85 < w * h / 512**2 < 1.15, (W, H, w, h)
    assert working_size(96, 64, 64) == (80, 56)
    assert working_size(1000, 1000, 512, pixel_budget=768 * 768) == (768, 768)


def test_non_square_and_large_views_run_at_the_working_size(fresh):
    for W, H in ((96, 64), (320, 200)):
        cam = make_cam(W, H)
        spy_t2i, spy_inp = Spy(fresh.text2img), Spy(fresh.inpainter)
        fresh.text2img, fresh.inpainter = spy_t2i, spy_inp
        try:
            first = fresh.inpaint(np.zeros((H, W, 3), np.float32), np.ones((H, W), bool), PROMPT, cam, 4)
            hole = np.zeros((H, W), bool)
            hole[H // 3:, W // 2:] = True
            second = fresh.inpaint(first, hole, PROMPT, cam, 4)
        finally:
            fresh.text2img, fresh.inpainter = spy_t2i.pipe, spy_inp.pipe
        want = working_size(W, H, 64)  # the tiny UNet: sample_size 8 × VAE factor 8
        assert [(c["width"], c["height"]) for c in spy_t2i.calls + spy_inp.calls] == [want, want]
        assert spy_inp.calls[0]["image"].shape == (1, want[1], want[0], 3)
        assert spy_inp.calls[0]["mask_image"].shape == (1, want[1], want[0], 1)
        assert first.shape == second.shape == (H, W, 3)
        assert np.array_equal(second[~hole], first[~hole])
    assert want != (320, 200)  # the large view really was snapped


def test_hole_resize_covers_every_latent_cell():
    """After resizing to the working size, dilating by one latent cell and the pipeline's nearest
    downsampling to latents, every camera hole pixel still lies in a masked latent cell."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(4)
    for W, H in ((96, 64), (320, 200), (64, 64)):
        hole = rng.random((H, W)) < 0.004  # scattered single pixels
        w, h = working_size(W, H, 64)
        work = resize_hole(hole, (w, h), dilate=8)
        latent = F.interpolate(torch.from_numpy(work.astype(np.float32))[None, None], size=(h // 8, w // 8))
        back = F.interpolate(latent, size=(H, W), mode="nearest")[0, 0].numpy() > 0.5
        assert back[hole].all()
        undilated = resize_hole(hole, (w, h), dilate=0)
        assert undilated.mean() < work.mean()


def test_depth_is_positive_z_at_camera_resolution(fresh):
    for W, H in ((96, 64), (200, 120)):
        cam = make_cam(W, H)
        img = np.random.default_rng(W).random((H, W, 3), dtype=np.float32)
        d = fresh.estimate_depth(img, cam)
        assert d.shape == (H, W) and d.dtype == np.float32
        assert np.isfinite(d).all() and (d > 0).all() and d.std() > 1e-3
        assert d.max() <= 20.0 + 1e-4  # the tiny metric head's max_depth


def test_relative_depth_model_gives_depth_up_to_scale(tiny_root):
    paths = build_all(tiny_root)
    eng = get_engine("diffusers", models={**paths, "depth": str(build_tiny_depth(tiny_root, metric=False))},
                     steps=1, device="cpu")
    assert eng.depth_kind == "relative"
    cam = make_cam()
    d = eng.estimate_depth(np.random.default_rng(2).random((64, 96, 3), dtype=np.float32), cam)
    assert d.shape == (64, 96) and np.isfinite(d).all() and (d > 0).all()
    far = d >= 100.0 - 1e-3  # zero disparity (the head's ReLU) → 1 / floor = 100 × the median depth
    assert 0 < far.mean() < 0.9
    assert abs(np.median(d[~far]) - 1.0) < 0.1  # 1/disparity normalised to median 1


def test_ray_distance_to_z_on_a_plane():
    cam = make_cam(96, 64)
    u = (np.arange(96) + 0.5 - cam.K[0, 2]) / cam.K[0, 0]
    v = (np.arange(64) + 0.5 - cam.K[1, 2]) / cam.K[1, 1]
    r = 3.0 * np.sqrt(1 + u[None] ** 2 + v[:, None] ** 2)  # a fronto-parallel plane at z = 3
    np.testing.assert_allclose(ray_distance_to_z(r, cam), 3.0, rtol=1e-6)


def test_bad_inputs_name_the_field(fresh):
    cam = make_cam()
    with pytest.raises(ValueError, match="image: shape"):
        fresh.inpaint(np.zeros((64, 64, 3), np.float32), np.ones((64, 96), bool), PROMPT, cam, 0)
    with pytest.raises(ValueError, match="hole: must be a boolean"):
        fresh.inpaint(np.zeros((64, 96, 3), np.float32), np.ones((64, 96)), PROMPT, cam, 0)
    with pytest.raises(ValueError, match="image: shape"):
        fresh.estimate_depth(np.zeros((60, 96, 3), np.float32), cam)


def test_missing_weights_name_the_model_and_the_pull_command(tiny_root, tmp_path):
    paths = build_all(tiny_root)
    for override, named in (({"depth": "zoomscape-tests/no-such-depth-model"}, "zoomscape-tests/no-such-depth-model"),
                            ({"inpaint": str(tmp_path / "nowhere")}, str(tmp_path / "nowhere"))):
        with pytest.raises(EngineUnavailable) as info:
            get_engine("diffusers", models={**paths, **override}, device="cpu")
        msg = str(info.value)
        assert named in msg and "zoomscape models pull" in msg, msg
        err = info.value  # no chained huggingface_hub/diffusers traceback
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


def test_default_models_missing_offline(monkeypatch, tmp_path):
    for var in ("ZOOMSCAPE_TEXT2IMG_MODEL", "ZOOMSCAPE_INPAINT_MODEL", "ZOOMSCAPE_DEPTH_MODEL", "ZOOMSCAPE_MODEL_DIR"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(EngineUnavailable, match="stable-diffusion-v1-5/stable-diffusion-v1-5.*zoomscape models pull"):
        get_engine("diffusers", cache_dir=tmp_path)


def test_corrupt_weights_are_a_clear_error(tiny_root, tmp_path):
    paths = build_all(tiny_root)
    broken = tmp_path / "broken-sd"
    shutil.copytree(paths["text2img"], broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EngineUnavailable, match="could not load the models.*zoomscape models pull"):
        get_engine("diffusers", models={**paths, "text2img": str(broken)}, device="cpu")


def test_bad_options_are_clear(tiny_root):
    paths = build_all(tiny_root)
    with pytest.raises(EngineUnavailable, match="models.colour: unknown model role"):
        get_engine("diffusers", models={**paths, "colour": "x"})
    with pytest.raises(EngineUnavailable, match="device: 'tpu'"):
        get_engine("diffusers", models=paths, device="tpu")
    with pytest.raises(EngineUnavailable, match="steps: 0"):
        get_engine("diffusers", models=paths, steps=0, device="cpu")
    with pytest.raises(EngineUnavailable, match="pixel_budget: 100 must be within"):
        get_engine("diffusers", models=paths, pixel_budget=100, device="cpu")


def test_bad_environment_is_clear(tiny_root, monkeypatch):
    monkeypatch.setenv("ZOOMSCAPE_STEPS", "many")
    with pytest.raises(EngineUnavailable, match="ZOOMSCAPE_STEPS: 'many' is not an integer"):
        get_engine("diffusers", models=build_all(tiny_root), device="cpu")


def test_settings_are_handed_down_not_read_from_the_environment(tiny_root, monkeypatch):
    """An engine built from a Settings uses it (the job store's EnginePool hands the server's down)
    and never looks at the environment: a broken variable does not matter then."""
    from zoomscape.settings import Settings

    paths = build_all(tiny_root)
    monkeypatch.setenv("ZOOMSCAPE_STEPS", "many")
    monkeypatch.setenv("ZOOMSCAPE_DEPTH_MODEL", "zoomscape-tests/not-this-one")
    settings = Settings(device="cpu", steps=2, pixel_budget=64 * 64, text2img_model=paths["text2img"],
                        inpaint_model=paths["inpaint"], depth_model=paths["depth"])
    eng = get_engine("diffusers", settings=settings)
    assert (eng.steps, eng.pixel_budget, eng.device, eng.settings) == (2, 64 * 64, "cpu", settings)
    assert {m["role"]: m["name"] for m in eng.models} == paths
    # keyword options beat the settings; a request's models beat both
    eng = get_engine("diffusers", settings=settings, steps=1, models={"inpaint": paths["text2img"]})
    assert eng.steps == 1 and eng.model_ids["inpaint"] == paths["text2img"]
    with pytest.raises(EngineUnavailable, match="steps: 0 must be within 1..1000"):
        get_engine("diffusers", settings=settings, steps=0)


def test_denoiser_from_the_text_to_image_pipeline(fresh):
    denoiser = pytest.importorskip("zoomscape.engines.denoiser")
    d = fresh.denoiser()
    assert isinstance(d, denoiser.SDDenoiser)
    assert d.unet is fresh.text2img.unet and d.vae is fresh.text2img.vae  # shared, not reloaded
    assert str(d.device) == "cpu" and d.dtype == fresh.dtype


def test_sharpen_keeps_what_the_mask_shows_and_the_rest_exactly(fresh):
    """sharpen is img2img on the mask: outside it bit-exact; inside painted again over the part of
    the schedule SHARPEN_STRENGTH leaves (fewer denoising steps than inpainting, which starts from
    noise). (Random tiny weights cannot show how close it stays: their VAE does not reconstruct.)"""
    from zoomscape.engines.diffusers import SHARPEN_STRENGTH

    cam = make_cam()
    y, x = np.mgrid[0:64, 0:96]
    given = np.stack([x / 96.0, y / 64.0, 0.5 + 0.4 * np.sin(x / 9.0)], -1).astype(np.float32)
    mask = np.zeros((64, 96), bool)
    mask[8:56, 16:80] = True
    polls_s, polls_i = [], []
    sharp = fresh.sharpen(given, mask, PROMPT, cam, 3, should_cancel=lambda: polls_s.append(1) and False)
    fresh.inpaint(given, mask, PROMPT, cam, 3, should_cancel=lambda: polls_i.append(1) and False)
    assert sharp.shape == given.shape and sharp.dtype == np.float32
    assert np.array_equal(sharp[~mask], given[~mask])
    assert np.abs(sharp[mask] - given[mask]).max() > 1e-3                     # it did paint
    assert len(polls_i) == fresh.steps and len(polls_s) == int(fresh.steps * SHARPEN_STRENGTH)
    empty = np.zeros((64, 96), bool)
    assert np.array_equal(fresh.sharpen(given, empty, PROMPT, cam, 3), given)


def test_sharpen_runs_the_inpainting_pipeline_at_part_strength(fresh):
    from zoomscape.engines.diffusers import SHARPEN_STRENGTH

    spy = Spy(fresh.inpainter)
    fresh.inpainter = spy
    try:
        cam = make_cam()
        given = np.full((64, 96, 3), 0.4, np.float32)
        mask = np.zeros((64, 96), bool)
        mask[:, :40] = True
        fresh.sharpen(given, mask, PROMPT, cam, 5)
        fresh.inpaint(given, mask, PROMPT, cam, 5)
    finally:
        fresh.inpainter = spy.pipe
    (s_call, i_call) = spy.calls
    assert s_call["strength"] == SHARPEN_STRENGTH < 1.0 and i_call["strength"] == 1.0
    # sharpen hands the pipeline the given pixels under the mask; inpaint blanks them
    assert np.allclose(s_call["image"][0], 0.4, atol=1e-6)
    assert np.allclose(i_call["image"][0][:, :30], 0.0, atol=1e-6)
