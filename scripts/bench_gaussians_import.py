"""Benchmark the extension's 3DGS import (run with a bpy Python; see scripts/bench_gaussians_import).

Writes N = 1,000,000 random Gaussians as an Inria-layout PLY (62 float properties), then times, in
one run:
  extension      wire.splats.read_splat_ply + splat_import.import_splats: every Gaussian, all
                 attributes (position, color, opacity, scale, rotation, the instancing frame),
                 geometry nodes and material (target: under 1 s, no subsampling)
  evaluate       the first depsgraph evaluation of that object (instancing N quads), for reference
  wm.ply_import  Blender's own C++ PLY importer on the same file (positions + raw properties)
  colour loop    a per-point Python loop setting rgb = 0.5 + C0·f_dc on a colour attribute
                 (from the file's raw f_dc, as per-point add-ons do)
  quat→Euler     a per-point loop converting each quaternion to Euler angles into an attribute
The two loops run on the first --loop-gaussians (100,000) and are scaled to N.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import bpy
from mathutils import Quaternion

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "addon"))
import blender_ext  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blender_bench import best_of, clear_scene  # noqa: E402


def colour_loop(f_dc: np.ndarray, c0: float) -> None:
    """What per-point add-ons do: one attribute element at a time."""
    n = len(f_dc)
    mesh = bpy.data.meshes.new("loop")
    mesh.vertices.add(n)
    mesh.attributes.new("color", "FLOAT_COLOR", "POINT")
    data = mesh.attributes["color"].data
    for i in range(n):
        r, g, b = f_dc[i]
        data[i].color = (0.5 + c0 * r, 0.5 + c0 * g, 0.5 + c0 * b, 1.0)


def euler_loop(quats: np.ndarray) -> None:
    n = len(quats)
    mesh = bpy.data.meshes.new("loop")
    mesh.vertices.add(n)
    mesh.attributes.new("rot_euler", "FLOAT_VECTOR", "POINT")
    data = mesh.attributes["rot_euler"].data
    for i in range(n):
        data[i].vector = Quaternion(quats[i]).normalized().to_euler()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gaussians", type=int, default=1_000_000)
    ap.add_argument("--loop-gaussians", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="zoomscape-bench-gs-")
    try:
        blender_ext.stage(tmp)
        name = blender_ext.enable(tmp)
        sp = importlib.import_module(name + ".wire.splats")
        si = importlib.import_module(name + ".splat_import")
        rng = np.random.default_rng(0)
        n = args.gaussians
        f_dc = rng.normal(size=(n, 3)).astype(np.float32)
        quats = rng.normal(size=(n, 4)).astype(np.float32)
        gaussians = sp.Gaussians(means=rng.normal(size=(n, 3)).astype(np.float32),
                                 quats=sp.normalized_quats(quats),
                                 scales=np.exp(rng.uniform(-7, -3, (n, 3))).astype(np.float32),
                                 opacities=sp.sigmoid(rng.normal(size=n)),
                                 colors=sp.sh0_to_rgb(f_dc))
        path = os.path.join(tmp, "bench_3dgs.ply")
        sp.write_splat_ply(path, gaussians)
        scene = bpy.context.scene
        size_mb = os.path.getsize(path) / 1e6

        def ext():
            obj = si.import_splats(scene, sp.read_splat_ply(path), "bench", "bench")
            assert si.splat_count(obj) == n

        def native():
            bpy.ops.wm.ply_import(filepath=path)
            assert len(bpy.context.selected_objects[0].data.attributes["position"].data) == n

        t_ext = best_of(args.repeats, ext)
        clear_scene()
        obj = si.import_splats(scene, sp.read_splat_ply(path), "bench", "bench")
        t0 = time.perf_counter()
        dg = bpy.context.evaluated_depsgraph_get()
        obj.evaluated_get(dg)
        t_eval = time.perf_counter() - t0
        t_native = best_of(args.repeats, native)
        clear_scene()
        m = min(args.loop_gaussians, n)
        t0 = time.perf_counter()
        colour_loop(f_dc[:m], sp.SH_C0)
        t_colour = (time.perf_counter() - t0) * (n / m)
        clear_scene()
        t0 = time.perf_counter()
        euler_loop(quats[:m])
        t_euler = (time.perf_counter() - t0) * (n / m)
        clear_scene()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"gaussians: {n:,} ({size_mb:.0f} MB PLY); loops on {m:,}, scaled ×{n / m:g}; "
          f"best of {args.repeats}; Blender {bpy.app.version_string}")
    print(f"extension import     {t_ext:8.3f} s   (target < 1 s: {'ok' if t_ext < 1.0 else 'MISSED'})")
    print(f"  first evaluation   {t_eval:8.3f} s   ({si.splat_path_label()}, for reference)")
    print(f"wm.ply_import        {t_native:8.3f} s")
    print(f"per-point colour     {t_colour:8.3f} s (scaled)")
    print(f"per-point quat→Euler {t_euler:8.3f} s (scaled)")
    print(f"extension / native   {t_ext / t_native:8.2f}×")
    print(f"colour loop / ext    {t_colour / t_ext:8.1f}×")
    print(f"Euler loop / ext     {t_euler / t_ext:8.1f}×")
    print(f"both loops / ext     {(t_colour + t_euler) / t_ext:8.1f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]))
