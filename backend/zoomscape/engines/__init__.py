"""Engines: what paints images and estimates depth for the algorithms.

``get_engine(name, **options)`` builds one by its request name. ``procedural`` is the offline
engine (an analytic world, no weights, CPU); ``diffusers`` is the product: Stable Diffusion
text-to-image + inpainting and a monocular depth model (engines/diffusers.py). Its options are
DiffusersEngine's keyword arguments, e.g. ``get_engine("diffusers", models={"depth": "/models/da2"})``
(a request's "models" field), ``device="cuda"``, ``steps=30``, ``cpu_offload=True``. It raises
EngineUnavailable at construction when weights are missing (naming the model and
``zoomscape models pull``) or the packages are not installed.
"""
from __future__ import annotations

from .base import DepthEstimator, Engine, Inpainter

ENGINES = ["procedural", "diffusers"]  # every name the request schema accepts


class EngineUnavailable(Exception):
    """This engine cannot run here (missing weights or packages, bad options); says why."""


def get_engine(name: str, **options) -> Engine:
    """The engine called name, built with options (engine-specific keyword arguments)."""
    if name == "procedural":
        from .procedural import ProceduralEngine

        options.pop("models", None)  # the procedural world loads no models
        return ProceduralEngine(**options)
    if name == "diffusers":
        try:
            from .diffusers import DiffusersEngine
        except ImportError as exc:  # torch/numpy-level import problems only: diffusers is imported lazily
            raise EngineUnavailable(f"the diffusers engine cannot be imported ({exc})") from None
        return DiffusersEngine(**options)
    raise EngineUnavailable(f"engine: unknown engine {name!r}; known engines: {', '.join(ENGINES)}")


def check_engine(name: str, models=None, **_options) -> None:
    """Cheap check that get_engine(name, models=models) could be built here, without loading any
    weights (for a server's submit: reject early, build on the worker). Raises EngineUnavailable
    with the same message get_engine would give for unknown names, bad model roles or missing
    weights. options other than models are accepted and ignored."""
    if name == "procedural":
        return
    if name != "diffusers":
        raise EngineUnavailable(f"engine: unknown engine {name!r}; known engines: {', '.join(ENGINES)}")
    from ..models import ModelSettingsError, locate, missing_message, model_settings

    try:
        settings = model_settings(models)
    except ModelSettingsError as exc:
        raise EngineUnavailable(str(exc)) from None
    missing = [loc for loc in (locate(role, mid) for role, mid in settings.items()) if not loc.available]
    if missing:
        raise EngineUnavailable(missing_message(missing))


def available_engines() -> list[str]:
    """Names of the engines that can run here: procedural always, diffusers when its packages are
    installed and every model it would use is in a local folder or the Hugging Face cache (a cheap
    file check: nothing is loaded)."""
    out = ["procedural"]
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401

        from ..models import locate_all

        if all(loc.available for loc in locate_all().values()):
            out.append("diffusers")
    except Exception:  # noqa: BLE001 - any problem means "not available", never a crash
        pass
    return out


__all__ = ["ENGINES", "EngineUnavailable", "get_engine", "check_engine", "available_engines",
           "Engine", "Inpainter", "DepthEstimator"]
