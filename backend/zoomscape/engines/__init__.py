"""Engines: what paints images and estimates depth for the algorithms.

``get_engine(name, **options)`` builds one by its request name. ``procedural`` is the offline
engine (an analytic world, no weights, CPU); ``diffusers`` (Stable Diffusion inpainting +
monocular depth) is built in a later issue and reports itself unavailable until then.
"""
from __future__ import annotations

from .base import DepthEstimator, Engine, Inpainter

ENGINES = ["procedural", "diffusers"]  # every name the request schema accepts


class EngineUnavailable(Exception):
    """This engine cannot run here (not built yet, missing weights or packages); says why."""


def get_engine(name: str, **options) -> Engine:
    """The engine called name, built with options (engine-specific keyword arguments)."""
    if name == "procedural":
        from .procedural import ProceduralEngine

        return ProceduralEngine(**options)
    if name == "diffusers":
        raise EngineUnavailable(
            "the diffusers engine is not available yet in this version (it arrives in a later "
            "release); use engine \"procedural\"")
    raise EngineUnavailable(f"engine: unknown engine {name!r}; known engines: {', '.join(ENGINES)}")


def available_engines() -> list[str]:
    """Names of the engines that can run in this version."""
    return ["procedural"]


__all__ = ["ENGINES", "EngineUnavailable", "get_engine", "available_engines",
           "Engine", "Inpainter", "DepthEstimator"]
