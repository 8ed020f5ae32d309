"""The zoom levels' Gaussians are refined within a time budget per level (issue 12, GPU path):
settings.level_refine_seconds (ZOOMSCAPE_LEVEL_REFINE_SECONDS, --level-refine-seconds), 20 s per
level with CUDA, off on the CPU; gaussians.refine_level keeps to it on an injected clock, and the
pipeline hands the budget for the engine's device to lift_levels."""
import numpy as np
import pytest
import torch

from zoomscape import cli, gaussians, pipeline
from zoomscape.cameras import from_wire, look_at, zoom_level_camera
from zoomscape.engines.base import DepthFor
from zoomscape.engines.procedural import ProceduralEngine, World
from zoomscape.gaussians import LEVEL_REFINE_STEPS, lift_levels, torch_threads
from zoomscape.schema import validate_request
from zoomscape.settings import ENV, Settings, SettingsError
from tests.helpers.render_clock import RenderClock

PROMPT, SEED = "a quiet valley", 3


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def zoom_cam(n=24):
    return from_wire({"name": "Zoom", "matrix_world": look_at([0, -8, 3], [0, 0, 0.5]).tolist(),
                      "fx": 1.1 * n, "fy": 1.1 * n, "cx": n / 2, "cy": n / 2, "width": n, "height": n})


def level_images(cam, n):
    world = World(PROMPT, SEED)
    anchor = world.trace(cam, np.array([[cam.width / 2, cam.height / 2]])).point[0]
    return anchor, [world.render(zoom_level_camera(cam, 4.0, i))[0] for i in range(n)]


# ------------------------------------------------------------------------------------ the budget

@pytest.mark.parametrize("budget, cap, steps", [(20.0, 100, 6), (4.0, 100, 0), (1e6, 2, 2), (None, 3, 3)])
def test_each_level_keeps_to_its_refinement_budget(monkeypatch, budget, cap, steps):
    """A PSNR pass costs 1 s, a step 3 s (the first step's guess: 3 renders). Budget 20 s: the two
    passes leave 18 s, 6 steps, and each level's refinement takes exactly 20 s; 4 s leave 2 s, no
    step (the level keeps its Gaussians); the step cap binds before a large budget; None: no limit."""
    clock = RenderClock()
    monkeypatch.setattr(gaussians, "render_level", clock.wrap(gaussians.render_level))
    cam = zoom_cam()
    anchor, images = level_images(cam, 2)
    engine = ProceduralEngine(depth_lies={"Zoom/level_00": (1.0, 0.0)})
    plain = lift_levels(images, cam, anchor, 4.0, DepthFor(engine, SEED))
    levels = lift_levels(images, cam, anchor, 4.0, DepthFor(engine, SEED), refine_steps=cap,
                         refine_seconds=budget, clock=clock)
    for lv, before in zip(levels, plain):
        st = lv.stats
        assert st["refine_steps"] == steps, st
        assert st["refine_seconds"] == 1 + 3 * steps + (1 if steps else 0)
        if budget is not None:
            assert st["refine_seconds"] <= budget
        if steps == 0:   # not refined: the colour-fitted Gaussians, unchanged
            assert not st["refined"] and st["psnr"] == st["psnr_init"]
            assert np.array_equal(lv.gaussians.means, before.gaussians.means)
        else:            # refined and kept (the PSNR rose), or refined and dropped
            changed = not np.array_equal(lv.gaussians.means, before.gaussians.means)
            assert changed == st["refined"] and st["psnr"] >= st["psnr_init"]


def test_refinement_is_kept_only_when_it_does_not_lower_the_psnr(monkeypatch):
    """A refinement that makes the level worse (here: a huge learning rate) is dropped."""
    cam = zoom_cam()
    anchor, images = level_images(cam, 1)
    engine = ProceduralEngine(depth_lies={"Zoom/level_00": (1.0, 0.0)})
    real = gaussians.refine_views
    monkeypatch.setattr(gaussians, "refine_views",
                        lambda *a, **kw: real(*a, **dict(kw, lr={"means": 5.0, "colors": 0.5})))
    lv = lift_levels(images, cam, anchor, 4.0, DepthFor(engine, SEED), refine_steps=4)[0]
    assert lv.stats["refine_steps"] == 4 and not lv.stats["refined"]
    assert lv.stats["psnr_refined"] < lv.stats["psnr_init"] == lv.stats["psnr"]


def test_zero_budget_refines_nothing(monkeypatch):
    calls = []
    monkeypatch.setattr(gaussians, "refine_views", lambda *a, **kw: calls.append(1))
    cam = zoom_cam(16)
    anchor, images = level_images(cam, 1)
    engine = ProceduralEngine(depth_lies={"Zoom/level_00": (1.0, 0.0)})
    lv = lift_levels(images, cam, anchor, 4.0, DepthFor(engine, SEED), refine_steps=50,
                     refine_seconds=0.0)[0]
    assert not calls and lv.stats["refine_steps"] == 0 and not lv.stats["refined"]
    with pytest.raises(ValueError, match="seconds: must be a finite number"):
        gaussians.refine_level(lv.gaussians, images[0], zoom_level_camera(cam, 4.0, 0), lv.frame,
                               steps=1, seconds=float("inf"))


@pytest.mark.parametrize("device, settings, seconds", [
    ("cpu", Settings(), 0.0),                                  # the CPU default: off
    ("cuda:0", Settings(), 20.0),                              # the CUDA default
    ("cpu", Settings(level_refine_seconds=7.5), 7.5),          # set: on any device
])
def test_the_pipeline_hands_the_devices_budget_to_the_lift(tmp_path, monkeypatch, device, settings, seconds):
    seen = {}
    real = pipeline.lift_levels

    def spy(*args, **kw):
        seen.update(kw)
        return real(*args, **dict(kw, refine_steps=0, device="cpu"))

    monkeypatch.setattr(pipeline, "lift_levels", spy)
    # the world's Gaussians would be made on the engine's (here pretended) CUDA device: not this test's
    monkeypatch.setattr(pipeline, "write_world", lambda *a, **kw: 0)
    engine = ProceduralEngine()
    engine.device = device           # only the budget's device rule looks at it (the lift is real, on the CPU)
    req = {"engine": "procedural", "seed": SEED, "scene_prompt": PROMPT,
           "cameras": [{"name": "Cam", "matrix_world": look_at([0, -8, 3], [0, 0, 0.5]).tolist(),
                        "fx": 70.0, "fy": 70.0, "cx": 32.0, "cy": 32.0, "width": 64, "height": 64}],
           "zoom": {"camera": "Cam", "factor": 4, "levels": [{"prompt": "a stone"}], "anchor": None},
           "init_rgbd": None}
    pipeline.run_job(validate_request(req), tmp_path / "results", engine=engine,
                     settings=settings.with_flags(world_refine_seconds=0.0))
    assert seen["refine_seconds"] == seconds
    assert seen["refine_steps"] == (LEVEL_REFINE_STEPS if seconds > 0 else 0)


# ------------------------------------------------------------------------------------ the setting

def test_level_refine_seconds_defaults_by_device():
    s = Settings()
    assert s.level_refine_seconds is None
    assert s.level_refine_budget("cuda") == 20.0 and s.level_refine_budget(torch.device("cuda", 1)) == 20.0
    assert s.level_refine_budget("cpu") == 0.0 and s.level_refine_budget("mps") == 0.0
    assert s.level_refine_budget(None) == 0.0
    set_ = Settings(level_refine_seconds=3)
    assert set_.level_refine_seconds == 3.0 and set_.level_refine_budget("cpu") == 3.0
    assert set_.level_refine_budget("cuda") == 3.0
    assert Settings(level_refine_seconds=0).level_refine_budget("cuda") == 0.0   # off on CUDA too


def test_level_refine_seconds_from_the_environment_and_the_flag():
    assert ENV["level_refine_seconds"] == "ZOOMSCAPE_LEVEL_REFINE_SECONDS"
    env = {"ZOOMSCAPE_LEVEL_REFINE_SECONDS": " 12.5 "}
    assert Settings.from_env(env).level_refine_seconds == 12.5
    assert Settings.from_env({"ZOOMSCAPE_LEVEL_REFINE_SECONDS": ""}).level_refine_seconds is None
    parser = cli.build_parser()
    for command in ("serve", "generate"):
        extra = ["R.json", "--out", "o"] if command == "generate" else []
        args = parser.parse_args([command, *extra, "--level-refine-seconds", "4",
                                  "--world-refine-seconds", "9"])
        s = cli.build_settings(args, env)
        assert (s.level_refine_seconds, s.world_refine_seconds) == (4.0, 9.0)     # flags beat env
        bare = cli.build_settings(parser.parse_args([command, *extra]), env)
        assert (bare.level_refine_seconds, bare.world_refine_seconds) == (12.5, None)


@pytest.mark.parametrize("value, message", [
    (-1, r"level_refine_seconds: -1 must be within 0\.\.600 seconds"),
    (601, r"level_refine_seconds: 601 must be within 0\.\.600 seconds"),
    (float("nan"), "level_refine_seconds: must be a number of seconds"),
    (True, "level_refine_seconds: must be a number of seconds"),
    ("5", "level_refine_seconds: must be a number of seconds"),
])
def test_bad_level_budgets_name_the_field_and_the_limit(value, message):
    with pytest.raises(SettingsError, match=message):
        Settings(level_refine_seconds=value)


def test_bad_level_budget_variables_name_the_variable_and_the_limit():
    with pytest.raises(SettingsError, match="ZOOMSCAPE_LEVEL_REFINE_SECONDS: 'soon' is not a number"):
        Settings.from_env({"ZOOMSCAPE_LEVEL_REFINE_SECONDS": "soon"})
    with pytest.raises(SettingsError, match=r"ZOOMSCAPE_LEVEL_REFINE_SECONDS: 900 must be within 0\.\.600"):
        Settings.from_env({"ZOOMSCAPE_LEVEL_REFINE_SECONDS": "900"})


# ------------------------------------------------------------------------------------ the health answer

@pytest.mark.parametrize("device, settings, levels, world", [
    ("cpu", Settings(), 0.0, 0.0),
    ("cuda:0", Settings(), 20.0, 60.0),
    ("cpu", Settings(level_refine_seconds=4, world_refine_seconds=30), 4.0, 30.0),
])
def test_health_reports_the_refinement_budgets_of_the_servers_device(tmp_path, device, settings, levels, world):
    """GET /v1/health carries both budgets (schema.Health, typed), for the engine's device: what
    the extension's panel shows."""
    from fastapi.testclient import TestClient

    from zoomscape.jobs import EnginePool, JobStore
    from zoomscape.schema import Health
    from zoomscape.server import create_app

    engine = ProceduralEngine()
    engine.device = device
    store = JobStore(tmp_path, engines=EnginePool(settings, procedural=engine))
    body = TestClient(create_app(store, "procedural")).get("/v1/health").json()
    assert (body["level_refine_seconds"], body["world_refine_seconds"]) == (levels, world)
    assert Health.model_validate(body).level_refine_seconds == levels
    schema = Health.model_json_schema()
    assert {"level_refine_seconds", "world_refine_seconds"} <= set(schema["required"])
