"""Stage the extension the way users get it and enable it in bpy (stdlib + bpy only).

A temporary extension repository directory holds ``zoomscape/`` = addon/* + blender_manifest.toml;
it is registered with ``preferences.extensions.repos.new(custom_directory=...)`` and enabled as
``bl_ext.<repo module>.zoomscape``, so the package's ``__package__`` is what users get.
"""
from __future__ import annotations

import os
import shutil

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPO_MODULE = "zoomscape_test_repo"
EXT_ID = "zoomscape"


def stage(directory: str) -> str:
    """Copy addon/* and the manifest into directory/zoomscape → the extension directory."""
    ext_dir = os.path.join(directory, EXT_ID)
    if os.path.isdir(ext_dir):
        shutil.rmtree(ext_dir)
    shutil.copytree(os.path.join(REPO_ROOT, "addon"), ext_dir,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
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
