"""Zoomscape: grow a 3D world from your cameras and prompts, then zoom into it (register only)."""

from . import operators, panel, preferences, properties

_modules = (preferences, properties, operators, panel)


def register():
    for module in _modules:
        module.register()


def unregister():
    from . import runner
    runner.shutdown()
    for module in reversed(_modules):
        module.unregister()
