"""Fixtures for the extension tests: bpy with the extension enabled from a staged extension repo.

All bpy tests share one process, so every test starts from factory settings (empty scene) with the
extension enabled again.
"""
from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import blender_ext  # noqa: E402

bpy = pytest.importorskip("bpy")


@pytest.fixture(scope="session")
def ext_repo(tmp_path_factory):
    """A staged extension repository directory (zoomscape/ inside)."""
    directory = str(tmp_path_factory.mktemp("ext_repo"))
    blender_ext.stage(directory)
    return directory


@pytest.fixture
def zs(ext_repo):
    """Empty factory scene with the extension enabled → the extension's package module."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    name = blender_ext.enable(ext_repo)
    return sys.modules[name]


def import_backend(name: str):
    """A numpy-only backend module (e.g. "zoomscape.cameras"), imported from backend/ (the package
    __init__ imports nothing; the rest of the backend is not importable next to bpy)."""
    sys.path.insert(0, os.path.join(blender_ext.REPO_ROOT, "backend"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


@pytest.fixture(scope="session")
def backend_cameras():
    """The backend's zoomscape.cameras (numpy and its wire package only)."""
    return import_backend("zoomscape.cameras")


def add_camera(name, location, rotation=(1.5707963, 0.0, 0.0), lens=35.0, scene=None):
    """A perspective camera object linked to the scene → the object."""
    scene = scene or bpy.context.scene
    cam = bpy.data.cameras.new(name)
    cam.lens = lens
    obj = bpy.data.objects.new(name, cam)
    obj.location = location
    obj.rotation_euler = rotation
    scene.collection.objects.link(obj)
    return obj


def use_engine(scene, engine: str, samples: int) -> None:
    """Render scene with 'CYCLES' (CPU) or 'EEVEE' (EEVEE Next in 4.x) at `samples` samples."""
    if engine == "CYCLES":
        scene.render.engine = "CYCLES"
        scene.cycles.device, scene.cycles.samples = "CPU", samples
    else:
        scene.render.engine = "BLENDER_EEVEE_NEXT" if bpy.app.version < (5, 0, 0) else "BLENDER_EEVEE"
        scene.eevee.taa_render_samples = samples


def render_rgb(scene, path: str):
    """Render scene's current frame to the PNG path → its pixels [H, W, 3] float32 (rows bottom
    to top, as Blender stores them)."""
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(path)
    px = np.empty(img.size[0] * img.size[1] * img.channels, dtype=np.float32)
    img.pixels.foreach_get(px)
    out = px.reshape(img.size[1], img.size[0], img.channels)[..., :3]
    bpy.data.images.remove(img)
    return out
