"""Engines: what paints images and estimates depth for the algorithms (protocols in base.py).

``get_engine(name, settings=None, **options)`` builds one by its request name. ``procedural`` is
the offline engine (an analytic world, no weights, CPU); ``diffusers`` is the product: Stable
Diffusion text-to-image + inpainting and a monocular depth model (engines/diffusers.py).
settings: the server's settings.Settings (default Settings.from_env()); options are the engine's
keyword arguments, e.g. ``get_engine("diffusers", models={"depth": "/models/da2"})`` (a request's
"models" field), ``device="cuda"``, ``steps=30``, ``cpu_offload=True`` (overriding settings). It
raises EngineUnavailable at construction when weights are missing (naming the model and
``zoomscape models pull``), the packages are not installed or a setting is bad.
"""
from __future__ import annotations

from .base import DEPTH_ROLES, DepthEstimator, DepthFor, Engine, Inpainter, ZoomPainter, protocol_problems

ENGINES = ["procedural", "diffusers"]  # every name the request schema accepts


class EngineUnavailable(Exception):
    """This engine cannot run here (missing weights or packages, bad options); says why."""


def get_engine(name: str, *, settings=None, **options) -> Engine:
    """The engine called name, built from settings (a settings.Settings; None: from the
    environment) and options (engine-specific keyword arguments, overriding settings)."""
    if name == "procedural":
        from .procedural import ProceduralEngine

        options.pop("models", None)  # the procedural world loads no models (and needs no settings)
        return ProceduralEngine(**options)
    if name == "diffusers":
        try:
            from .diffusers import DiffusersEngine
        except ImportError as exc:  # torch/numpy-level import problems only: diffusers is imported lazily
            raise EngineUnavailable(f"the diffusers engine cannot be imported ({exc})") from None
        return DiffusersEngine(settings=settings, **options)
    raise EngineUnavailable(f"engine: unknown engine {name!r}; known engines: {', '.join(ENGINES)}")


def check_engine(name: str, models=None, *, settings=None, **_options) -> None:
    """Cheap check that get_engine(name, settings=settings, models=models) could be built here,
    without loading any weights (for a server's submit: reject early, build on the worker). Raises
    EngineUnavailable with the same message get_engine would give for unknown names, bad model
    roles or missing weights. options other than models are accepted and ignored."""
    if name == "procedural":
        return
    if name != "diffusers":
        raise EngineUnavailable(f"engine: unknown engine {name!r}; known engines: {', '.join(ENGINES)}")
    from ..models import ModelSettingsError, locate, missing_message, model_settings
    from ..settings import SettingsError, resolve

    try:
        settings = resolve(settings)
        ids = model_settings(models, settings=settings)
    except (ModelSettingsError, SettingsError) as exc:
        raise EngineUnavailable(str(exc)) from None
    missing = [loc for loc in (locate(role, mid, settings=settings) for role, mid in ids.items())
               if not loc.available]
    if missing:
        raise EngineUnavailable(missing_message(missing))


def available_engines(settings=None) -> list[str]:
    """Names of the engines that can run here with settings (None: from the environment):
    procedural always, diffusers when its packages are installed and every model it would use is
    in a local folder or the Hugging Face cache (a cheap file check: nothing is loaded)."""
    out = ["procedural"]
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401

        from ..models import locate_all

        if all(loc.available for loc in locate_all(settings=settings).values()):
            out.append("diffusers")
    except Exception:  # noqa: BLE001 - any problem means "not available", never a crash
        pass
    return out


__all__ = ["ENGINES", "EngineUnavailable", "get_engine", "check_engine", "available_engines",
           "Engine", "Inpainter", "DepthEstimator", "ZoomPainter", "DepthFor", "DEPTH_ROLES",
           "protocol_problems"]
