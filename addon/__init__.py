"""Zoomscape: grow a 3D world from your cameras and prompts, then zoom into it (register only)."""

from . import operators, panel, properties

_modules = (properties, operators, panel)


def register():
    for module in _modules:
        module.register()


def unregister():
    from . import runner
    for scene_name in list(runner._jobs):
        thread = runner._jobs.pop(scene_name)
        thread.cancel()
    for module in reversed(_modules):
        module.unregister()
