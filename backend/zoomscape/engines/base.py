"""The protocols the pipeline (dream.py, pipeline.py, gaussians.py) speaks to an engine.

An engine paints and measures; it never knows the algorithm that drives it:

    Inpainter.inpaint(image, hole, prompt, cam, seed, *, on_step, should_cancel) -> image
                                                        S(Î_i, M_i) in LucidDreamer
    DepthEstimator.estimate_depth(image, cam, *, seed, role) -> depth      D(I_i), monocular
    DepthEstimator.depth_space                          "depth" or "disparity": the fit's space
    ZoomPainter.paint_zoom_stack(cam, prompts, factor, seed, *, scene_prompt, photo, progress,
                                 should_cancel, rig) -> zoom.ZoomStack     the zoom levels
    Engine = all three + name, device, models (what /v1/health reports)
    Sharpener.sharpen(image, mask, prompt, cam, seed, *, should_cancel) -> image   optional:
                                                        the detail a closer view resolves where
                                                        the image shows a blur of the surface
                                                        (dream.py's R_i); an engine without it
                                                        has those pixels inpainted instead

Engines are pooled and shared between jobs (jobs.EnginePool), so an engine holds no per-job
state: everything one call depends on is in its arguments, and the same arguments give the same
result on a fresh engine or on one that served a thousand jobs. Hooks are call arguments too, the
diffusers way (``callback_on_step_end``): ``on_step(step, total)`` after each denoising step (an
engine that does not denoise never calls it) and ``should_cancel()``, polled during the call,
which raises errors.JobCancelled once it returns True.

A full hole (every pixel True) asks for text-to-image: the first view of a world. Depth is z-depth
along the camera axis with an unknown scale and shift, as a monocular model gives it; dream.py
fits both against the point cloud (in disparity when depth_space is "disparity"). ``seed`` and
``role`` say which scene and which estimate a depth call is (DEPTH_ROLES); a real depth model
reads only the image and ignores them, the procedural engine derives its lie from
(seed, camera, role). Images are float32 [H, W, 3] in [0, 1]; cameras are
``zoomscape.cameras.Camera`` (OpenCV inside). numpy only.

``protocol_problems(engine)`` checks an object against these protocols by signature, not only
by the names isinstance() looks at.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Protocol, runtime_checkable

import numpy as np

from ..cameras import Camera, LevelCameras

if TYPE_CHECKING:  # zoom.py imports torch; the protocols need only its type
    from ..pointcloud import Projection
    from ..zoom import ZoomStack

OnStep = Callable[[int, int], None]        # on_step(step, total), step = 1 … total
ShouldCancel = Callable[[], bool]
Progress = Callable[[str, int, int, str], None]   # progress(stage, step, total, message)
Photo = Callable[[int, int], "Projection"]  # photo(width, height) → pointcloud.Projection (image, mask, depth)

# What a depth estimate is for: "first" the dream's first view (it sets the world's scale),
# "view" any later view of the dream, "level" a zoom level of the lift.
DEPTH_ROLES = ("first", "view", "level")
DEPTH_SPACES = ("depth", "disparity")


@runtime_checkable
class Inpainter(Protocol):
    def inpaint(self, image: np.ndarray, hole: np.ndarray, prompt: str, cam: Camera, seed: int, *,
                on_step: Optional[OnStep] = None,
                should_cancel: Optional[ShouldCancel] = None) -> np.ndarray:
        """image: [H, W, 3] float32 in [0, 1]; hole: [H, W] bool (True = paint here) → [H, W, 3].

        Pixels outside the hole come back unchanged. Deterministic in (image, hole, prompt, cam,
        seed). on_step(step, total) after each denoising step; should_cancel() polled during the
        call raises errors.JobCancelled when True.
        """


@runtime_checkable
class Sharpener(Protocol):
    def sharpen(self, image: np.ndarray, mask: np.ndarray, prompt: str, cam: Camera, seed: int, *,
                should_cancel: Optional[ShouldCancel] = None) -> np.ndarray:
        """image: [H, W, 3] float32 in [0, 1]; mask: [H, W] bool (True = sharpen here) → [H, W, 3].

        At the mask the image shows a surface seen before from farther away (a blur of what cam
        resolves): paint the detail cam resolves there, keeping what it shows (its layout and
        colours). Pixels outside the mask come back unchanged. Deterministic in its arguments;
        should_cancel() polled during the call raises errors.JobCancelled when True.
        """


@runtime_checkable
class DepthEstimator(Protocol):
    depth_space: str  # "depth" (metric or affine depth) or "disparity" (relative inverse depth)

    def estimate_depth(self, image: np.ndarray, cam: Camera, *, seed: Optional[int] = None,
                       role: Optional[str] = None) -> np.ndarray:
        """image: [H, W, 3] → z-depth [H, W] float32, > 0, up to an unknown scale and shift.

        seed: the request's seed; role: one of DEPTH_ROLES. Together with cam they identify the
        estimate (the procedural engine needs both; image-only models ignore them).
        """


@runtime_checkable
class ZoomPainter(Protocol):
    def paint_zoom_stack(self, cam: Camera, prompts: list[str], factor: float, seed: int, *,
                         scene_prompt: Optional[str] = None, photo: Optional[Photo] = None,
                         progress: Optional[Progress] = None,
                         should_cancel: Optional[ShouldCancel] = None,
                         rig: Optional[LevelCameras] = None) -> "ZoomStack":
        """The zoom stack of cam: N = len(prompts) consistent levels at zoom p^i = factor^i
        (zoom.ZoomStack, levels [H, W, 3] float32 in [0, 1]), level i seen by rig.level(i):
        DOLLY, the camera p^i times closer to the anchor; LENS (or rig None), cam zoomed p^i
        about the image centre.

        scene_prompt: the world's prompt (None: prompts[0]); photo(width, height) →
        pointcloud.Projection (image, mask, depth): the view of the already generated world from
        level 0's camera, which holds level 0 where the engine can use it and gives the geometry
        that maps DOLLY levels into each other. progress("zoom", step, total, message);
        should_cancel() raises errors.JobCancelled.
        """


@runtime_checkable
class Engine(Inpainter, DepthEstimator, ZoomPainter, Protocol):
    """An inpainter, a depth estimator and a zoom painter that belong together, with what
    /v1/health reports.

    name: the request's engine name; device: e.g. "cpu", "cuda:0";
    models: one dict per model, e.g. {"name", "role", "status"}.
    """

    name: str
    device: str
    models: list[dict]


PROTOCOLS = (Inpainter, DepthEstimator, ZoomPainter, Engine, Sharpener)


def _protocol_methods(protocol) -> dict[str, Callable]:
    out = {}
    for klass in reversed(protocol.__mro__):
        if klass in (object, Protocol) or not getattr(klass, "_is_protocol", False):
            continue
        for name, value in vars(klass).items():
            if inspect.isfunction(value) and not name.startswith("_"):
                out[name] = value
    return out


def _protocol_attributes(protocol) -> list[str]:
    out = []
    for klass in reversed(protocol.__mro__):
        if getattr(klass, "_is_protocol", False) and klass is not Protocol:
            out += [a for a in vars(klass).get("__annotations__", {}) if a not in out]
    return out


def signature_problems(method: Callable, spec: Callable, name: str) -> list[str]:
    """How a bound method fails to accept every call the protocol function spec allows: the
    same positional parameters in order, every keyword-only one (or **kwargs), defaults where
    spec has them, and no extra parameter without a default."""
    got = inspect.signature(method)
    want = list(inspect.signature(spec).parameters.values())[1:]  # drop self
    params = list(got.parameters.values())
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
    by_name = {p.name: p for p in params}
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    problems = []
    want_pos = [p for p in want if p.kind is p.POSITIONAL_OR_KEYWORD]
    for i, p in enumerate(want_pos):
        if i < len(positional):
            if positional[i].name != p.name:
                problems.append(f"{name}: positional parameter {i + 1} is {positional[i].name!r}, "
                                f"the protocol's is {p.name!r}")
        elif not var_pos:
            problems.append(f"{name}: missing positional parameter {p.name!r}")
    for p in want:
        if p.kind is not p.KEYWORD_ONLY:
            continue
        q = by_name.get(p.name)
        if q is None:
            if not var_kw:
                problems.append(f"{name}: missing keyword parameter {p.name!r}")
        elif q.kind not in (q.KEYWORD_ONLY, q.POSITIONAL_OR_KEYWORD):
            problems.append(f"{name}: parameter {p.name!r} cannot be passed by keyword")
        elif p.default is not p.empty and q.default is q.empty:
            problems.append(f"{name}: parameter {p.name!r} needs a default (callers may omit it)")
    spec_names = {p.name for p in want}
    for q in params:
        if (q.name not in spec_names and q.kind not in (q.VAR_KEYWORD, q.VAR_POSITIONAL)
                and q.default is q.empty):
            problems.append(f"{name}: extra parameter {q.name!r} has no default (protocol callers "
                            "never pass it)")
    return problems


def protocol_problems(obj, protocol=Engine) -> list[str]:
    """Everything obj lacks to satisfy protocol (default Engine): missing attributes, methods, or
    method signatures that do not accept the protocol's calls. [] when it satisfies it."""
    problems = []
    for attr in _protocol_attributes(protocol):
        if not hasattr(obj, attr):
            problems.append(f"{attr}: missing attribute")
    if hasattr(obj, "depth_space") and getattr(obj, "depth_space") not in DEPTH_SPACES:
        problems.append(f"depth_space: {getattr(obj, 'depth_space')!r} is not one of {DEPTH_SPACES}")
    for name, spec in _protocol_methods(protocol).items():
        method = getattr(obj, name, None)
        if not callable(method):
            problems.append(f"{name}: missing method")
            continue
        problems += signature_problems(method, spec, name)
    if protocol is Engine and callable(getattr(obj, "sharpen", None)):    # the optional Sharpener
        problems += signature_problems(obj.sharpen, Sharpener.sharpen, "sharpen")
    return problems


@dataclass(frozen=True)
class DepthFor:
    """engine.estimate_depth with one job's seed and role filled in, for code that calls
    estimate_depth(image, cam) alone (gaussians.lift_levels). Made per job by the caller, so the
    pooled engine keeps nothing; every other attribute (name, device, depth_space, …) is the
    engine's."""

    engine: DepthEstimator
    seed: int
    role: str = "level"

    def estimate_depth(self, image, cam: Camera, *, seed: Optional[int] = None,
                       role: Optional[str] = None) -> np.ndarray:
        return self.engine.estimate_depth(image, cam, seed=self.seed if seed is None else seed,
                                          role=self.role if role is None else role)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.engine, name)


def check_role(role) -> str:
    """role as one of DEPTH_ROLES, or ValueError naming the field."""
    if role not in DEPTH_ROLES:
        raise ValueError(f"role: {role!r} is not one of {', '.join(DEPTH_ROLES)}")
    return role


def check_image(image, cam: Camera, field: str = "image") -> np.ndarray:
    """image as float32 [H, W, 3] matching cam, or ValueError naming the field and the limit."""
    a = np.asarray(image)
    want = (cam.height, cam.width, 3)
    if a.shape != want:
        raise ValueError(f"{field}: shape {a.shape} does not match camera '{cam.name}', "
                         f"expected {want}")
    a = a.astype(np.float32, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{field}: has non-finite values; colours must be finite in [0, 1]")
    return a


def check_hole(hole, cam: Camera, field: str = "hole") -> np.ndarray:
    """hole as bool [H, W] matching cam, or ValueError naming the field."""
    h = np.asarray(hole)
    want = (cam.height, cam.width)
    if h.shape != want:
        raise ValueError(f"{field}: shape {h.shape} does not match camera '{cam.name}', "
                         f"expected {want}")
    if h.dtype != bool:
        raise ValueError(f"{field}: must be a boolean mask (True = paint here), got {h.dtype}")
    return h
