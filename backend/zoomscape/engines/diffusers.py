"""The diffusers engine: Stable Diffusion paints, a transformers depth model measures.

    S(Î_i, M_i)   inpaint(image, hole, prompt, cam, seed, *, on_step, should_cancel)
                    full hole  → text-to-image (the first view of a world)
                    some hole  → an inpainting pipeline: a dedicated 9-channel checkpoint, or a plain
                                 4-channel text-to-image checkpoint through diffusers' inpainting
                                 pipeline (known latents blended back every step)
                    pixels outside the hole come back exactly as given: Ĩ = M ⊙ Î + (1 − M) ⊙ I_SD
    D(I_i)        estimate_depth(image, cam) → z-depth [H, W] (metres for a metric model; the
                  protocol's seed and role are accepted and ignored: the model reads the image)

Any camera size works (LucidDreamer is stuck at 512²): the image is snapped to a working size the
model supports (sides multiples of the VAE factor 8, area ≈ the model's native size², aspect kept,
sides clamped to [native/4, 2·native]), painted, and resized back to the camera's resolution
exactly. The hole is resized conservatively (any covered pixel counts) and dilated by one latent
cell so every hole pixel is repainted; the composite then uses the camera-resolution hole.

Configuration is one settings.Settings (device, steps, pixel budget, offload, slicing, model ids
and folder), handed down by the job store's EnginePool; keyword arguments override it. Model ids
and folders resolve through zoomscape.models (request overrides > settings > defaults). Devices:
CUDA in fp16, Apple MPS in fp16, else CPU in fp32; attention slicing and model CPU offload for
8 GB cards. Seeds are deterministic: a CPU torch.Generator seeded from (seed, camera name).
Hooks are call arguments (the engine is shared between jobs and keeps no per-job state):
``inpaint(..., on_step=f, should_cancel=g)`` calls f(step, total) once per denoising step and polls
g() at every step, raising errors.JobCancelled when it returns True (step_callback).
"""
from __future__ import annotations

import hashlib
import math
from typing import Mapping, Optional

import numpy as np

from ..cameras import Camera
from ..errors import JobCancelled
from ..models import (ROLES, ModelLocation, ModelSettingsError, locate, missing_message,
                      model_settings)
from ..settings import DEFAULT_STEPS, Settings, SettingsError, resolve  # noqa: F401 (DEFAULT_STEPS re-exported)
from .base import OnStep, ShouldCancel, check_hole, check_image

DEFAULT_GUIDANCE = 7.5
# sharpen's img2img strength: the blurred surface is noised to this point of the schedule and
# denoised again, so its layout and colours stay and the detail of the closer view is painted
SHARPEN_STRENGTH = 0.5
SMALL_GPU_BYTES = 10 * 2**30  # at most this much memory → attention slicing by default


# ----------------------------------------------------------------------------------- pure helpers

def view_seed(seed: int, view: str) -> int:
    """A 63-bit seed for one view: sha256 of (seed, view name), stable across runs and machines."""
    digest = hashlib.sha256(f"{int(seed)}\x1f{view}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def working_size(width: int, height: int, native: int, *, multiple: int = 8,
                 pixel_budget: Optional[int] = None) -> tuple[int, int]:
    """The (w, h) to run a model of native size (e.g. 512) at for a width×height view.

    Area ≈ pixel_budget (default native²) with the aspect kept: s = sqrt(budget / (W·H)); each side
    round(side · s) snapped to a multiple of `multiple` and clamped to [native/4, 2·native].
    """
    if width < 1 or height < 1:
        raise ValueError(f"size: {width}×{height} must be at least 1×1")
    budget = int(pixel_budget or native * native)
    s = math.sqrt(budget / float(width * height))
    lo = max(multiple, (native // 4) // multiple * multiple)
    hi = max(lo, (2 * native) // multiple * multiple)

    def snap(side: float) -> int:
        return int(min(max(round(side / multiple) * multiple, lo), hi))

    return snap(width * s), snap(height * s)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """image: [H, W, C] float32 → [h, w, C] at size = (w, h); antialiased when shrinking, in [0, 1]."""
    import torch
    import torch.nn.functional as F

    w, h = size
    if image.shape[:2] == (h, w):
        return image.astype(np.float32, copy=True)
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    shrink = h < image.shape[0] or w < image.shape[1]
    y = F.interpolate(x, size=(h, w), mode="bilinear" if shrink else "bicubic", align_corners=False,
                      antialias=shrink)
    return y[0].permute(1, 2, 0).clamp_(0.0, 1.0).numpy()


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """depth: [h, w] → [H, W] at size = (W, H), bilinear (no overshoot: stays within the input range)."""
    import torch
    import torch.nn.functional as F

    W, H = size
    x = torch.as_tensor(np.ascontiguousarray(depth, dtype=np.float32))[None, None]
    if tuple(x.shape[-2:]) == (H, W):
        return x[0, 0].numpy().copy()
    shrink = H < x.shape[-2] or W < x.shape[-1]
    return F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False, antialias=shrink)[0, 0].numpy()


def resize_hole(hole: np.ndarray, size: tuple[int, int], dilate: int = 0) -> np.ndarray:
    """hole: [H, W] bool → [h, w] bool at size = (w, h), conservative: a working pixel is a hole if
    any camera pixel under it is (area coverage > 0), then dilated by `dilate` pixels (square)."""
    import torch
    import torch.nn.functional as F

    w, h = size
    x = torch.from_numpy(hole.astype(np.float32))[None, None]
    y = F.interpolate(x, size=(h, w), mode="area") > 0 if (h, w) != hole.shape else x > 0
    if dilate > 0:
        y = F.max_pool2d(y.float(), 2 * dilate + 1, stride=1, padding=dilate) > 0
    return y[0, 0].numpy()


def ray_distance_to_z(distance: np.ndarray, cam: Camera) -> np.ndarray:
    """Ray length r: [H, W] → z-depth: z = r / ‖K⁻¹ (u, v, 1)‖ at pixel centres."""
    H, W = distance.shape
    u = (np.arange(W) + 0.5 - cam.K[0, 2]) / cam.K[0, 0]
    v = (np.arange(H) + 0.5 - cam.K[1, 2]) / cam.K[1, 1]
    norm = np.sqrt(1.0 + u[None, :] ** 2 + v[:, None] ** 2)
    return (distance / norm).astype(np.float32)


def disparity_to_depth(disparity: np.ndarray, floor: float = 1e-2) -> np.ndarray:
    """Relative (affine-invariant) inverse depth → a positive depth up to scale: 1 / max(δ/median δ, floor)."""
    valid = np.isfinite(disparity) & (disparity > 0)
    med = float(np.median(disparity[valid])) if valid.any() else 1.0
    d = np.where(valid, disparity / med, floor)
    return (1.0 / np.maximum(d, floor)).astype(np.float32)


def default_device() -> str:
    """ "cuda" if available, else "mps" (Apple), else "cpu"."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def step_callback(total_hint: int, on_step: Optional[OnStep] = None,
                  should_cancel: Optional[ShouldCancel] = None):
    """A diffusers callback_on_step_end for one call: on_step(step, total) after each denoising
    step (total: the pipeline's num_timesteps, else total_hint), then should_cancel() polled,
    raising errors.JobCancelled when True."""

    def callback(pipe, i, t, kwargs):
        if on_step is not None:
            total = int(getattr(pipe, "num_timesteps", 0) or total_hint)
            on_step(i + 1, total)
        if should_cancel is not None and should_cancel():
            raise JobCancelled("cancelled during denoising")
        return kwargs

    return callback


# ----------------------------------------------------------------------------------- the engine

class DiffusersEngine:
    """Stable Diffusion text-to-image + inpainting and a monocular depth model (engines.base.Engine).

    settings: the server's settings.Settings (default Settings.from_env()); the keyword arguments
    device, steps, pixel_budget, attention_slicing, cpu_offload and model_dir override its fields.
    models: overrides {"text2img", "inpaint", "depth"} (model ids or folders; None/blank = the
    settings' model). An inpaint model equal to the text2img model reuses its components
    (4-channel inpainting through diffusers). device: "cuda", "cuda:1", "mps", "cpu" (None: the
    best available). dtype: torch dtype (default fp16 on CUDA/MPS, fp32 on CPU). steps, guidance:
    denoising steps (default 50) and classifier-free guidance. pixel_budget: working area in pixels
    (None: the model's native²). attention_slicing / cpu_offload: for 8 GB cards (None: slicing on
    CUDA cards with ≤ 10 GB, offload off). depth_is_ray_distance: the depth model predicts distance
    along the ray (converted to z-depth). cache_dir: the Hugging Face cache to look in.

    Raises EngineUnavailable at construction when a model is missing (naming it and
    `zoomscape models pull`) or cannot be loaded.
    """

    name = "diffusers"

    def __init__(self, models: Optional[Mapping[str, Optional[str]]] = None, *,
                 settings: Optional[Settings] = None, device: Optional[str] = None,
                 dtype=None, steps: Optional[int] = None, guidance: float = DEFAULT_GUIDANCE,
                 negative_prompt: Optional[str] = None, pixel_budget: Optional[int] = None,
                 attention_slicing: Optional[bool] = None, cpu_offload: Optional[bool] = None,
                 depth_is_ray_distance: bool = False, model_dir=None, cache_dir=None):
        from . import EngineUnavailable

        try:
            self.settings: Settings = resolve(settings).with_flags(
                device=device, steps=steps, pixel_budget=pixel_budget, attention_slicing=attention_slicing,
                cpu_offload=cpu_offload, model_dir=model_dir)
            self.model_ids: dict[str, str] = model_settings(models, settings=self.settings)
        except (SettingsError, ModelSettingsError) as exc:
            raise EngineUnavailable(str(exc)) from None
        self.locations: dict[str, ModelLocation] = {
            role: locate(role, mid, cache_dir=cache_dir, settings=self.settings)
            for role, mid in self.model_ids.items()}
        missing = [loc for loc in self.locations.values() if not loc.available]
        if missing:
            raise EngineUnavailable(missing_message(missing))

        try:
            import torch  # noqa: F401
            import diffusers  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as exc:
            raise EngineUnavailable(f"the diffusers engine needs the packages diffusers, transformers and "
                                    f"accelerate ({exc}); install with: pip install 'zoomscape[diffusers]'") from None
        import torch

        s = self.settings
        self.device = str(s.device or default_device())
        kind = self.device.split(":")[0]
        if kind == "cuda" and not torch.cuda.is_available():
            raise EngineUnavailable(f"device: {self.device!r} requested but torch sees no CUDA GPU")
        self.dtype = dtype or (torch.float16 if kind in ("cuda", "mps") else torch.float32)
        self.steps = s.steps
        self.guidance = float(guidance)
        self.negative_prompt = negative_prompt
        self.pixel_budget = s.pixel_budget
        self.depth_is_ray_distance = bool(depth_is_ray_distance)
        small_gpu = kind == "cuda" and torch.cuda.get_device_properties(
            torch.device(self.device)).total_memory <= SMALL_GPU_BYTES
        self.attention_slicing = bool(small_gpu if s.attention_slicing is None else s.attention_slicing)
        # accelerate's model offload only helps (and only works) with a GPU
        self.cpu_offload = bool(s.cpu_offload) and kind == "cuda"

        try:
            self._load()
        except EngineUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a corrupt folder must not be a traceback
            names = ", ".join(f"{r} {self.model_ids[r]!r} ({self.locations[r].path})" for r in ROLES)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise EngineUnavailable(f"could not load the models ({type(exc).__name__}: {first}); "
                                    f"models: {names}. Re-fetch them with `zoomscape models pull "
                                    "--engine diffusers`") from None

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        import transformers
        from diffusers import StableDiffusionInpaintPipeline, StableDiffusionPipeline
        from diffusers.pipelines import pipeline_utils
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        # newer diffusers/transformers call it dtype (torch_dtype is deprecated); older ones torch_dtype
        sd_dtype_kw = "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"
        common = dict(safety_checker=None, requires_safety_checker=False, **{sd_dtype_kw: self.dtype})
        self.text2img = StableDiffusionPipeline.from_pretrained(self.locations["text2img"].path, **common)
        if self.locations["inpaint"].path == self.locations["text2img"].path:
            self.inpainter = StableDiffusionInpaintPipeline(**self.text2img.components)
        else:
            self.inpainter = StableDiffusionInpaintPipeline.from_pretrained(self.locations["inpaint"].path, **common)
        for pipe in (self.text2img, self.inpainter):
            pipe.set_progress_bar_config(disable=True)
            if self.attention_slicing:
                pipe.enable_attention_slicing()
            if self.cpu_offload:
                pipe.enable_model_cpu_offload(device=self.device)
            else:
                pipe.to(self.device)

        dtype_kw = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        depth_path = self.locations["depth"].path
        self.depth_processor = AutoImageProcessor.from_pretrained(depth_path)
        self.depth_model = AutoModelForDepthEstimation.from_pretrained(depth_path, **{dtype_kw: self.dtype})
        self.depth_model.to(self.device).eval()
        cfg = self.depth_model.config
        metric = cfg.model_type == "zoedepth" or getattr(cfg, "depth_estimation_type", None) == "metric"
        self.depth_kind = "metric" if metric else "relative"
        # dream.py fits metric depth in depth (scale, shift) and relative models in disparity.
        self.depth_space = "depth" if metric else "disparity"

        self.models = [{"name": self.model_ids[r], "role": r, "status": "loaded",
                        "source": self.locations[r].source} for r in ROLES]
        self.models[2]["depth_kind"] = self.depth_kind

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _native(pipe) -> tuple[int, int]:
        """(native side in pixels, VAE factor) of a pipeline: unet.sample_size · vae factor."""
        factor = int(getattr(pipe, "vae_scale_factor", 8))
        return int(pipe.unet.config.sample_size) * factor, factor

    def _generator(self, seed: int, cam: Camera):
        import torch

        return torch.Generator(device="cpu").manual_seed(view_seed(seed, cam.name))

    # ------------------------------------------------------------------ the protocols
    def inpaint(self, image: np.ndarray, hole: np.ndarray, prompt: str, cam: Camera, seed: int, *,
                on_step: Optional[OnStep] = None, should_cancel: Optional[ShouldCancel] = None) -> np.ndarray:
        """image: [H, W, 3] float32 in [0, 1]; hole: [H, W] bool (True = paint) → [H, W, 3] float32.

        A full hole is text-to-image; otherwise the inpainting pipeline. Pixels outside the hole are
        returned bit-exactly as given. on_step(step, total) per denoising step; should_cancel()
        polled at every step (errors.JobCancelled). An empty hole paints nothing and calls neither.
        """
        image = check_image(image, cam)
        hole = check_hole(hole, cam)
        if not hole.any():
            return image.copy()
        return self._paint(image, hole, prompt, cam, seed, 1.0, on_step, should_cancel)

    def sharpen(self, image: np.ndarray, mask: np.ndarray, prompt: str, cam: Camera, seed: int, *,
                should_cancel: Optional[ShouldCancel] = None) -> np.ndarray:
        """image: [H, W, 3] float32 in [0, 1]; mask: [H, W] bool → [H, W, 3] float32: the inpainting
        pipeline as img2img on the mask at SHARPEN_STRENGTH (SDEdit): the given pixels there are
        noised part of the way and denoised at this view's resolution, so what they show stays and
        gains the detail a closer view resolves. Pixels outside the mask come back bit-exactly;
        an empty mask paints nothing. should_cancel() polled at every step."""
        image = check_image(image, cam)
        mask = check_hole(mask, cam)
        if not mask.any():
            return image.copy()
        return self._paint(image, mask, prompt, cam, seed, SHARPEN_STRENGTH, None, should_cancel)

    def _paint(self, image: np.ndarray, hole: np.ndarray, prompt: str, cam: Camera, seed: int,
               strength: float, on_step, should_cancel) -> np.ndarray:
        """inpaint (strength 1: the hole painted afresh, a full hole is text-to-image) or sharpen
        (strength < 1: the hole's own pixels start the denoising)."""
        full = bool(hole.all()) and strength >= 1.0
        pipe = self.text2img if full and self.text2img.unet.config.in_channels == 4 else self.inpainter
        native, factor = self._native(pipe)
        size = working_size(cam.width, cam.height, native, multiple=factor, pixel_budget=self.pixel_budget)
        w, h = size
        args = dict(prompt=prompt, negative_prompt=self.negative_prompt, height=h, width=w,
                    num_inference_steps=self.steps, guidance_scale=self.guidance,
                    generator=self._generator(seed, cam), output_type="np",
                    callback_on_step_end=step_callback(self.steps, on_step, should_cancel))
        if pipe is self.inpainter:
            work_hole = np.ones((h, w), bool) if full else resize_hole(hole, size, dilate=factor)
            known = image if strength < 1.0 else np.where(hole[..., None], 0.0, image).astype(np.float32)
            args.update(image=resize_image(known, size)[None], mask_image=work_hole[None, ..., None].astype(np.float32),
                        strength=float(strength))
        painted = np.asarray(pipe(**args).images[0], dtype=np.float32)
        painted = resize_image(np.clip(painted, 0.0, 1.0), (cam.width, cam.height))
        return np.where(hole[..., None], painted, image).astype(np.float32)

    def estimate_depth(self, image: np.ndarray, cam: Camera, *, seed: Optional[int] = None,
                       role: Optional[str] = None) -> np.ndarray:
        """image: [H, W, 3] → z-depth [H, W] float32 > 0 (metres for a metric model; for a relative
        model the inverse of its disparity normalised to median 1, i.e. depth up to scale). Zero or
        non-finite predictions are floored at 1e-3 × the median depth. seed and role (the
        protocol's) do not matter: the model reads only the image."""
        import torch
        from PIL import Image

        image = check_image(image, cam)
        pil = Image.fromarray(np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8))
        inputs = self.depth_processor(images=pil, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.depth_model.dtype)
        with torch.inference_mode():
            predicted = self.depth_model(pixel_values=pixel_values).predicted_depth
        raw = predicted.reshape(predicted.shape[-2:]).float().cpu().numpy()
        depth = resize_depth(raw, (cam.width, cam.height))
        if self.depth_kind == "relative":
            depth = disparity_to_depth(depth)
        elif self.depth_is_ray_distance:
            depth = ray_distance_to_z(depth, cam)
        valid = np.isfinite(depth) & (depth > 0)
        floor = 1e-3 * (float(np.median(depth[valid])) if valid.any() else 1.0)
        return np.where(valid, np.maximum(depth, floor), floor).astype(np.float32)

    # ------------------------------------------------------------------ zoom
    def denoiser(self):
        """The text-to-image pipeline's components (shared, not copied) as an
        engines.denoiser.SDDenoiser on this engine's device and dtype (for zoom.py)."""
        from .denoiser import SDDenoiser

        return SDDenoiser.from_pipeline(self.text2img, device=self.device, dtype=self.dtype)

    def paint_zoom_stack(self, cam: Camera, prompts: list[str], factor: float, seed: int, *,
                         scene_prompt: Optional[str] = None, photo=None, progress=None,
                         should_cancel=None, rig=None):
        """The zoom stack of cam by joint sampling (zoom.paint_zoom_stack) at the model's working size.

        photo: None or photo(width, height) → pointcloud.Projection (image, mask, depth, …) or a
        tuple (image [h, w, 3], known [h, w] bool), the view of the already generated world, which
        holds level 0. rig: the level cameras (cameras.LevelCameras; None or mode "lens": the 2D
        stack). In mode "dolly" the levels are painted from the cameras p^i times closer to the
        anchor: the 3D stack (zoom3d.stack_geometry from level 0's depth, the view's depth; without
        one, the anchor's plane, where it is the 2D stack). → zoom.ZoomStack, levels at the working size.
        """
        from ..zoom import paint_zoom_stack

        native, multiple = self._native(self.text2img)
        w, h = working_size(cam.width, cam.height, native, multiple=multiple, pixel_budget=self.pixel_budget)
        view = photo(w, h) if photo is not None else None
        image, known = (None, None) if view is None else (view if isinstance(view, tuple) else (view.image, view.mask))
        geometry = None
        if rig is not None and rig.mode == "dolly":
            geometry = dolly_geometry(rig, view, len(prompts), factor, (h, w), self.device)
        return paint_zoom_stack(self.denoiser(), list(prompts), factor, seed, steps=self.steps,
                                guidance=self.guidance, negative_prompt=self.negative_prompt or "",
                                photo=image, photo_mask=known, size=(h, w), progress=progress,
                                should_cancel=should_cancel, geometry=geometry)


def dolly_geometry(rig, view, levels: int, factor: float, size, device=None):
    """The 3D zoom stack's geometry (zoom3d.StackGeometry at size (h, w)) for DOLLY levels: level 0's
    z-depth from the view (a pointcloud.Projection's depth; +inf where the world has no point), or
    unknown everywhere (a tuple view, or none), which zoom3d fills with the anchor's depth. Built on
    a CUDA device when given one (the geometry is float64, which Apple's MPS lacks: there the CPU)."""
    from ..zoom3d import stack_geometry

    h, w = size
    depth = getattr(view, "depth", None) if view is not None and not isinstance(view, tuple) else None
    depth0 = np.full((h, w), np.nan) if depth is None else np.asarray(depth, dtype=np.float64)
    if depth0.shape != (h, w):
        raise ValueError(f"photo: the view's depth has shape {depth0.shape}, not the working size {(h, w)}")
    on = device if device is not None and str(device).startswith("cuda") else "cpu"
    return stack_geometry(depth0, rig.anchor_depth, factor, levels, size=(h, w), device=on)
