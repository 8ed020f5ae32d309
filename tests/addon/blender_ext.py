"""Stage the extension the way users get it and enable it in bpy (stdlib + bpy only).

A temporary extension repository directory holds ``zoomscape/`` = what scripts/build_extension puts
in the zip (addon/* and backend/zoomscape/wire as ``wire/``, copied by its ``copy_package``) +
blender_manifest.toml; it is registered with ``preferences.extensions.repos.new(custom_directory=...)``
and enabled as ``bl_ext.<repo module>.zoomscape``, so the package's ``__package__`` and its
``.wire`` are what users get.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPO_MODULE = "zoomscape_test_repo"
EXT_ID = "zoomscape"


def build_module():
    """scripts/build_extension.py as a module (it is a script, not a package)."""
    name = "zoomscape_build_extension"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(REPO_ROOT, "scripts", "build_extension.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses need the module registered
        spec.loader.exec_module(module)
    return sys.modules[name]


def stage(directory: str) -> str:
    """Copy the extension package (addon/* + wire/, as the build does) and the manifest into
    directory/zoomscape → the extension directory."""
    ext_dir = os.path.join(directory, EXT_ID)
    if os.path.isdir(ext_dir):
        shutil.rmtree(ext_dir)
    build_module().copy_package(ext_dir)
    shutil.copy(os.path.join(REPO_ROOT, "blender_manifest.toml"), ext_dir)
    return ext_dir


def enable(directory: str) -> str:
    """Register directory as a local extension repo and enable zoomscape → its module name."""
    import addon_utils
    import bpy

    repos = bpy.context.preferences.extensions.repos
    repo = next((r for r in repos if r.module == REPO_MODULE), None)
    if repo is None:
        repo = repos.new(name="Zoomscape test", module=REPO_MODULE, custom_directory=directory,
                         source="USER")
    module = f"bl_ext.{REPO_MODULE}.{EXT_ID}"
    errors = []
    mod = addon_utils.enable(module, default_set=True, handle_error=lambda e: errors.append(e))
    if mod is None or errors:
        raise RuntimeError(f"could not enable {module}: {errors}")
    return module
