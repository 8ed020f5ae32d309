"""Helpers shared by the Blender-side benchmarks (run with a bpy environment's Python)."""
from __future__ import annotations

import time

import bpy


def clear_scene() -> None:
    """Remove every object, mesh, material and point cloud (a clean slate between timed runs)."""
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for coll in (bpy.data.meshes, bpy.data.materials, bpy.data.pointclouds):
        for block in list(coll):
            coll.remove(block)


def best_of(repeats: int, fn) -> float:
    """The fastest of `repeats` timed calls of fn(), each on a cleared scene (seconds)."""
    times = []
    for _ in range(repeats):
        clear_scene()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
