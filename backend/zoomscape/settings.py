"""One Settings object: how this backend is configured, built once and handed down.

``zoomscape serve`` / ``generate`` / ``models`` build it from their flags and the environment
(``Settings.from_env().with_flags(...)``) and hand it to the job store's EnginePool, the engines
and models.py. Precedence, highest first: command-line flags, the environment, the defaults below.
This module is the only place that reads the ZOOMSCAPE_* variables, and nothing writes
os.environ. Library callers that hand no Settings get ``Settings.from_env()``: what a command
without flags would build.

    field              environment                     default
    engine             -                               "procedural"
    device             ZOOMSCAPE_DEVICE                None: the best available (cuda, mps, cpu)
    steps              ZOOMSCAPE_STEPS                 50 denoising steps (1..1000)
    pixel_budget       ZOOMSCAPE_PIXEL_BUDGET          None: the model's native size² (4096..4096²)
    cpu_offload        ZOOMSCAPE_CPU_OFFLOAD           None: off (1/0, true/false, yes/no, on/off)
    attention_slicing  ZOOMSCAPE_ATTENTION_SLICING     None: on for CUDA cards with ≤ 10 GB
    model_dir          ZOOMSCAPE_MODEL_DIR             None: no local model folder
    text2img_model     ZOOMSCAPE_TEXT2IMG_MODEL        models.DEFAULTS (a Hub repo id or a folder)
    inpaint_model      ZOOMSCAPE_INPAINT_MODEL
    depth_model        ZOOMSCAPE_DEPTH_MODEL
    data_dir           ZOOMSCAPE_DATA_DIR              ~/.local/share/zoomscape (jobs and results)
    world_refine_seconds ZOOMSCAPE_WORLD_REFINE_SECONDS None: 60 s with CUDA, 0 on the CPU (0..3600 s)
    level_refine_seconds ZOOMSCAPE_LEVEL_REFINE_SECONDS None: 20 s per zoom level with CUDA, 0 on the CPU
                                                       (0..600 s)
    host, port, token  -                               127.0.0.1, 8765, None (what the server binds)

world_refine_seconds bounds the world Gaussians' refinement (world.refine_world, LucidDreamer's
3DGS stage) in wall time; world.REFINE_STEPS bounds its steps. On the CPU a step of the reference
rasterizer at the demo's size (4 views at 320×240, ~200k Gaussians) costs 1.3–2 s on one core;
4 steps lower the views' PSNR, 16 (~26 s, the demo job's whole time again) raise it by 0.4 dB, so
the CPU default is 0: no refinement (world_refine_budget; world.py says more).

level_refine_seconds bounds each zoom level's refinement (gaussians.refine_level: Adam on the
level's image with the coarser levels frozen) in wall time; gaussians.LEVEL_REFINE_STEPS bounds its
steps. On the CPU the default is 0 (off): a level at 512² is 262k Gaussians, and a step of the
reference rasterizer costs about a second on one core already at 128²–256² (measured on a shared
machine, 4 steps with the procedural engine's levels); when set there, levels above 128² pixels are
still not refined (gaussians.lift_levels' refine_max_pixels). Both budgets are what /v1/health
reports (level_refine_seconds, world_refine_seconds) for the engine's device.

Blank environment values count as unset. Every bad value is a SettingsError naming the field (or
the variable it came from). stdlib only: no torch, nothing heavy.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from .wire.names import DEFAULT_PORT, ENGINE_NAMES, MAX_MODEL_CHARS, MODEL_ROLES

ROLES = MODEL_ROLES  # ("text2img", "inpaint", "depth")

# The models each role loads by default (models.py documents why these; all exist on the Hub).
DEFAULT_MODELS = {
    "text2img": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "inpaint": "stable-diffusion-v1-5/stable-diffusion-inpainting",
    "depth": "depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf",
}
DEFAULT_STEPS = 50
STEPS_RANGE = (1, 1000)
PIXEL_BUDGET_RANGE = (64 * 64, 4096 * 4096)
WORLD_REFINE_SECONDS_MAX = 3600.0
WORLD_REFINE_DEFAULT = {"cuda": 60.0, "cpu": 0.0}  # seconds by device type; others: the CPU's
LEVEL_REFINE_SECONDS_MAX = 600.0
LEVEL_REFINE_DEFAULT = {"cuda": 20.0, "cpu": 0.0}  # seconds per zoom level by device type
# the seconds fields: field → (largest value, defaults by device type)
REFINE_BUDGETS = {"world_refine_seconds": (WORLD_REFINE_SECONDS_MAX, WORLD_REFINE_DEFAULT),
                  "level_refine_seconds": (LEVEL_REFINE_SECONDS_MAX, LEVEL_REFINE_DEFAULT)}
LOOPBACK = "127.0.0.1"

# field → environment variable (the only ZOOMSCAPE_* names the backend reads)
ENV = {
    "device": "ZOOMSCAPE_DEVICE",
    "steps": "ZOOMSCAPE_STEPS",
    "pixel_budget": "ZOOMSCAPE_PIXEL_BUDGET",
    "cpu_offload": "ZOOMSCAPE_CPU_OFFLOAD",
    "attention_slicing": "ZOOMSCAPE_ATTENTION_SLICING",
    "model_dir": "ZOOMSCAPE_MODEL_DIR",
    "text2img_model": "ZOOMSCAPE_TEXT2IMG_MODEL",
    "inpaint_model": "ZOOMSCAPE_INPAINT_MODEL",
    "depth_model": "ZOOMSCAPE_DEPTH_MODEL",
    "data_dir": "ZOOMSCAPE_DATA_DIR",
    "world_refine_seconds": "ZOOMSCAPE_WORLD_REFINE_SECONDS",
    "level_refine_seconds": "ZOOMSCAPE_LEVEL_REFINE_SECONDS",
}
MODEL_ENV = {role: ENV[f"{role}_model"] for role in ROLES}  # role → its variable

_DEVICE = re.compile(r"^(cuda(:\d+)?|mps|cpu)$")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A setting has a bad value; the message starts with the field (or variable) it names."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def default_data_dir() -> Path:
    """~/.local/share/zoomscape: jobs and results when neither --data-dir nor the variable is set."""
    return Path.home() / ".local" / "share" / "zoomscape"


@dataclass(frozen=True)
class Settings:
    """How this backend runs (module docstring: fields, variables, defaults). Frozen: build a
    changed copy with with_flags()."""

    engine: str = "procedural"
    device: Optional[str] = None
    steps: int = DEFAULT_STEPS
    pixel_budget: Optional[int] = None
    cpu_offload: Optional[bool] = None
    attention_slicing: Optional[bool] = None
    model_dir: Optional[Path] = None
    text2img_model: str = DEFAULT_MODELS["text2img"]
    inpaint_model: str = DEFAULT_MODELS["inpaint"]
    depth_model: str = DEFAULT_MODELS["depth"]
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    host: str = LOOPBACK
    port: int = DEFAULT_PORT
    token: Optional[str] = None
    world_refine_seconds: Optional[float] = None
    level_refine_seconds: Optional[float] = None

    def __post_init__(self):
        if self.engine not in ENGINE_NAMES:
            raise SettingsError("engine", f"unknown engine {self.engine!r}; known engines: "
                                          f"{', '.join(ENGINE_NAMES)}")
        if self.device is not None and not (isinstance(self.device, str) and _DEVICE.match(self.device)):
            raise SettingsError("device", f"{self.device!r} is not one of cuda, cuda:N, mps, cpu")
        _check_int("steps", self.steps, *STEPS_RANGE)
        if self.pixel_budget is not None:
            _check_int("pixel_budget", self.pixel_budget, *PIXEL_BUDGET_RANGE, unit=" pixels")
        for name in ("cpu_offload", "attention_slicing"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise SettingsError(name, f"must be true, false or unset, got {value!r}")
        for name in ("model_dir", "data_dir"):
            value = getattr(self, name)
            if value is None and name == "model_dir":
                continue
            if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
                raise SettingsError(name, f"must be a folder path, got {value!r}")
            object.__setattr__(self, name, Path(value).expanduser())
        for role in ROLES:
            name = f"{role}_model"
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise SettingsError(name, f"must be a model id or a folder, got {value!r}")
            if len(value.strip()) > MAX_MODEL_CHARS:
                raise SettingsError(name, f"model id is {len(value.strip())} characters, at most "
                                          f"{MAX_MODEL_CHARS} allowed")
            object.__setattr__(self, name, value.strip())
        if not isinstance(self.host, str) or not self.host.strip():
            raise SettingsError("host", f"must be a host name or address, got {self.host!r}")
        _check_int("port", self.port, 0, 65535)
        if self.token is not None and (not isinstance(self.token, str) or not self.token.strip()):
            raise SettingsError("token", "must not be blank (leave it unset for no token)")
        for name, (top, _) in REFINE_BUDGETS.items():
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SettingsError(name, f"must be a number of seconds, got {v!r}")
            if not 0 <= v <= top:
                raise SettingsError(name, f"{v:g} must be within 0..{top:g} seconds")
            object.__setattr__(self, name, float(v))

    @property
    def models(self) -> dict[str, str]:
        """{role: model id or folder} for every role (text2img, inpaint, depth)."""
        return {role: getattr(self, f"{role}_model") for role in ROLES}

    def world_refine_budget(self, device) -> float:
        """Seconds the world's refinement may take on device (a torch.device or its name):
        world_refine_seconds when set, else WORLD_REFINE_DEFAULT for the device's type."""
        return self._budget("world_refine_seconds", device)

    def level_refine_budget(self, device) -> float:
        """Seconds each zoom level's refinement may take on device (a torch.device or its name):
        level_refine_seconds when set, else LEVEL_REFINE_DEFAULT for the device's type."""
        return self._budget("level_refine_seconds", device)

    def _budget(self, name: str, device) -> float:
        value = getattr(self, name)
        if value is not None:
            return value
        defaults = REFINE_BUDGETS[name][1]
        kind = str(getattr(device, "type", device) or "cpu").split(":")[0]
        return defaults.get(kind, defaults["cpu"])

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Settings":
        """The defaults overridden by the ZOOMSCAPE_* variables of environ (default os.environ).
        A bad value raises SettingsError naming the variable."""
        environ = os.environ if environ is None else environ
        values = {}
        for name, var in ENV.items():
            raw = str(environ.get(var, "")).strip()
            if not raw:
                continue
            if name in ("steps", "pixel_budget"):
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise SettingsError(var, f"{raw!r} is not an integer") from None
            elif name in REFINE_BUDGETS:
                try:
                    values[name] = float(raw)
                except ValueError:
                    raise SettingsError(var, f"{raw!r} is not a number of seconds") from None
            elif name in ("cpu_offload", "attention_slicing"):
                if raw.lower() not in _TRUE + _FALSE:
                    raise SettingsError(var, f"{raw!r} is not one of 1/0, true/false, yes/no, on/off")
                values[name] = raw.lower() in _TRUE
            else:
                values[name] = raw
        try:
            return cls(**values)
        except SettingsError as exc:
            var = ENV.get(exc.field, exc.field)
            raise SettingsError(var, str(exc).split(": ", 1)[1]) from None

    def with_flags(self, **flags) -> "Settings":
        """A copy with the given flags applied; a flag that is None (or a blank string) was not
        given and leaves the setting as it is. Unknown names raise SettingsError."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(flags) - known)
        if unknown:
            raise SettingsError(unknown[0], f"unknown setting; known: {', '.join(sorted(known))}")
        given = {k: v for k, v in flags.items()
                 if v is not None and not (isinstance(v, str) and not v.strip())}
        return dataclasses.replace(self, **given) if given else self

    def with_models(self, overrides: Optional[Mapping[str, Optional[str]]]) -> "Settings":
        """A copy with some roles' models replaced ({role: id}; None or blank values fall through).
        Unknown roles raise SettingsError naming models.<role>."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(ROLES))
        if unknown:
            raise SettingsError(f"models.{unknown[0]}", f"unknown model role; known roles: {', '.join(ROLES)}")
        try:
            return self.with_flags(**{f"{role}_model": v for role, v in overrides.items()})
        except SettingsError as exc:
            role = exc.field[:-len("_model")] if exc.field.endswith("_model") else exc.field
            raise SettingsError(f"models.{role}", str(exc).split(": ", 1)[1]) from None


def resolve(settings: Optional[Settings]) -> Settings:
    """settings, or Settings.from_env() when a caller handed none."""
    return settings if settings is not None else Settings.from_env()


def _check_int(field: str, value, lo: int, hi: int, unit: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(field, f"must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise SettingsError(field, f"{value} must be within {lo}..{hi}{unit}")


__all__ = ["Settings", "SettingsError", "ENV", "MODEL_ENV", "ROLES", "DEFAULT_MODELS", "DEFAULT_STEPS",
           "default_data_dir", "resolve"]
