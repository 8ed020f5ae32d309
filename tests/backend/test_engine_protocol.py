"""engines/base.py states the whole protocol the pipeline speaks; both engines satisfy it by
signature (not only by the names isinstance looks at); hooks and a job's seed are call
arguments; one JobCancelled everywhere; the EnginePool hands its Settings down."""
import inspect

import numpy as np
import pytest

from zoomscape import errors
from zoomscape.cameras import Camera
from zoomscape.engines.base import (DEPTH_ROLES, DepthEstimator, DepthFor, Engine, Inpainter,
                                    ZoomPainter, protocol_problems, signature_problems)
from zoomscape.engines.procedural import ProceduralEngine


def cam(name="Cam", W=32, H=24):
    K = np.array([[30.0, 0, W / 2], [0, 30.0, H / 2], [0, 0, 1]])
    c2w = np.eye(4)
    c2w[:3, 3] = [0.0, -8.0, 1.5]
    c2w[:3, :3] = [[1, 0, 0], [0, 0, 1], [0, -1, 0]]   # OpenCV axes looking along +Y (z forward)
    return Camera(name, K, c2w, W, H)


def test_the_protocol_names_everything_the_pipeline_uses():
    methods = {name for p in (Inpainter, DepthEstimator, ZoomPainter) for name, v in vars(p).items()
               if inspect.isfunction(v) and not name.startswith("_")}
    assert methods == {"inpaint", "estimate_depth", "paint_zoom_stack"}
    assert {"name", "device", "models"} <= set(Engine.__annotations__)
    assert "depth_space" in DepthEstimator.__annotations__
    assert Engine.__doc__ and all(getattr(Engine, m).__doc__ for m in methods)   # each one documented
    assert inspect.signature(Inpainter.inpaint).parameters["on_step"].kind is inspect.Parameter.KEYWORD_ONLY
    assert set(inspect.signature(DepthEstimator.estimate_depth).parameters) >= {"seed", "role"}
    assert DEPTH_ROLES == ("first", "view", "level")


def test_both_engines_satisfy_it_by_signature():
    from zoomscape.engines.diffusers import DiffusersEngine

    assert protocol_problems(ProceduralEngine()) == []
    # the diffusers engine's methods without loading weights (its instance is checked in
    # test_diffusers_engine.py, attributes included)
    bare = object.__new__(DiffusersEngine)
    for name, spec in (("inpaint", Inpainter.inpaint), ("estimate_depth", DepthEstimator.estimate_depth),
                       ("paint_zoom_stack", ZoomPainter.paint_zoom_stack)):
        assert signature_problems(getattr(bare, name), spec, name) == [], name


def test_an_engine_of_the_old_protocol_is_caught():
    class Old:
        name, device, models, depth_space = "old", "cpu", [], "depth"

        def inpaint(self, image, hole, prompt, cam, seed):
            return image

        def estimate_depth(self, image, cam):
            return np.ones(image.shape[:2], np.float32)

        def paint_zoom_stack(self, cam, prompts, factor, seed, *, scene_prompt=None, photo=None,
                             progress=None, should_cancel=None, extra):
            return None

    assert isinstance(Old(), Engine)                     # isinstance alone sees no difference
    problems = protocol_problems(Old())
    assert "inpaint: missing keyword parameter 'on_step'" in problems
    assert "inpaint: missing keyword parameter 'should_cancel'" in problems
    assert "estimate_depth: missing keyword parameter 'seed'" in problems
    assert any(p.startswith("paint_zoom_stack: extra parameter 'extra' has no default") for p in problems)

    class Lenient(Old):
        def inpaint(self, image, hole, prompt, cam, seed, **hooks):
            return image

        def estimate_depth(self, image, cam, *, seed=None, role=None, record=None):
            return np.ones(image.shape[:2], np.float32)

        def paint_zoom_stack(self, cam, prompts, factor, seed, **kw):
            return None

    assert protocol_problems(Lenient()) == []
    Lenient.depth_space = "inverse"
    assert protocol_problems(Lenient()) == ["depth_space: 'inverse' is not one of ('depth', 'disparity')"]


def test_depth_for_fills_in_a_jobs_seed_and_role():
    engine = ProceduralEngine(depth_warp=0.0)
    c = cam()
    image = np.zeros((24, 32, 3), np.float32)
    bound = DepthFor(engine, 7, "level")
    np.testing.assert_array_equal(bound.estimate_depth(image, c),
                                  engine.estimate_depth(image, c, seed=7, role="level"))
    assert not np.array_equal(bound.estimate_depth(image, c), engine.estimate_depth(image, c, seed=8, role="level"))
    assert (bound.name, bound.device, bound.depth_space) == ("procedural", "cpu", "depth")
    assert protocol_problems(bound, DepthEstimator) == []


def test_one_job_cancelled():
    import zoomscape.dream
    import zoomscape.gaussians
    import zoomscape.jobs
    import zoomscape.pipeline

    for module in (zoomscape.dream, zoomscape.gaussians, zoomscape.jobs, zoomscape.pipeline):
        assert module.JobCancelled is errors.JobCancelled, module.__name__
    engine = ProceduralEngine()
    with pytest.raises(errors.JobCancelled):
        engine.inpaint(np.zeros((24, 32, 3), np.float32), np.ones((24, 32), bool), "p", cam(), 1,
                       should_cancel=lambda: True)
    with pytest.raises(errors.JobCancelled):
        engine.paint_zoom_stack(cam(), ["a", "b"], 2.0, 1, should_cancel=lambda: True)


def test_engine_pool_hands_its_settings_down_and_shares_engines():
    from zoomscape.jobs import EnginePool
    from zoomscape.settings import Settings

    settings = Settings(steps=3, device="cpu")
    pool = EnginePool(settings)
    assert pool.settings is settings
    first = pool.get("procedural")
    assert pool.get("procedural") is first                   # one engine, shared between jobs
    pool.check("procedural")
    from zoomscape.engines import EngineUnavailable

    with pytest.raises(EngineUnavailable, match="unknown engine 'magic'"):
        pool.check("magic")
    # with no Settings handed, the pool uses the environment's (what `zoomscape serve` builds bare)
    assert EnginePool().settings == Settings.from_env()


def test_an_optional_sharpen_is_checked_by_signature_when_present():
    class Bare:
        name, device, models, depth_space = "bare", "cpu", [], "depth"

        def inpaint(self, image, hole, prompt, cam, seed, *, on_step=None, should_cancel=None):
            return image

        def estimate_depth(self, image, cam, *, seed=None, role=None):
            return np.ones(image.shape[:2], np.float32)

        def paint_zoom_stack(self, cam, prompts, factor, seed, **kw):
            return None

    assert protocol_problems(Bare()) == []                  # sharpen is optional

    class Wrong(Bare):
        def sharpen(self, image, mask, prompt, cam):
            return image

    assert any(p.startswith("sharpen:") for p in protocol_problems(Wrong()))
    assert protocol_problems(ProceduralEngine()) == []       # its sharpen has the protocol's shape
