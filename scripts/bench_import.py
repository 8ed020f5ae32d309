"""Benchmark the extension's point cloud import (run with a bpy Python; see scripts/bench_import).

Imports a 1,000,000-point coloured PLY through the extension's importer, through Blender's own C++
importer (bpy.ops.wm.ply_import), and 100,000 points through a per-vertex Python loop (scaled ×10),
and prints the times and ratios. Targets: ≤ 1.5× the native importer, ≥ 20× faster than the loop.
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time

import numpy as np

import bpy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "addon"))
import blender_ext  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from blender_bench import best_of, clear_scene  # noqa: E402


def loop_import(path: str, n: int, srgb_lut: np.ndarray):
    """The naive way: parse and set one vertex at a time (first n points of path)."""
    with open(path, "rb") as f:
        head = f.read(4096)
        f.seek(head.index(b"end_header\n") + len(b"end_header\n"))
        raw = f.read(n * 19)
    mesh = bpy.data.meshes.new("loop")
    mesh.vertices.add(n)
    mesh.attributes.new("col", "FLOAT_COLOR", "POINT")
    verts, colors = mesh.vertices, mesh.attributes["col"].data
    for i, (x, y, z, r, g, b, _radius) in enumerate(struct.iter_unpack("<fffBBBf", raw)):
        verts[i].co = (x, y, z)
        colors[i].color = (srgb_lut[r], srgb_lut[g], srgb_lut[b], 1.0)
    obj = bpy.data.objects.new("loop", mesh)
    bpy.context.scene.collection.objects.link(obj)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--loop-points", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="zoomscape-bench-")
    blender_ext.stage(tmp)
    zs = sys.modules[blender_ext.enable(tmp)]
    rng = np.random.default_rng(0)
    n = args.points
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (n, 3), dtype=np.uint8)
    radius = rng.uniform(0.001, 0.01, n).astype(np.float32)
    path = os.path.join(tmp, "bench.ply")
    ply = zs.wire.ply
    ply.write_point_ply(path, ply.PointCloud(xyz, rgb, radius))
    scene = bpy.context.scene

    def ext():
        obj = zs.importers.import_points(scene, ply.read_point_ply(path), "bench", "bench")
        assert len(obj.data.vertices) == n

    def native():
        bpy.ops.wm.ply_import(filepath=path)
        assert len(bpy.context.selected_objects[0].data.vertices) == n

    t_ext = best_of(args.repeats, ext)
    t_native = best_of(args.repeats, native)
    clear_scene()
    m = args.loop_points
    t0 = time.perf_counter()
    loop_import(path, m, zs.importers.srgb_to_linear(np.arange(256) / 255.0))
    t_loop = (time.perf_counter() - t0) * (n / m)
    clear_scene()

    print(f"points: {n:,} (loop: {m:,}, scaled ×{n / m:g}); best of {args.repeats}")
    print(f"extension importer  {t_ext:8.3f} s")
    print(f"wm.ply_import       {t_native:8.3f} s")
    print(f"per-vertex loop     {t_loop:8.3f} s (scaled)")
    r_native, r_loop = t_ext / t_native, t_loop / t_ext
    print(f"extension / native  {r_native:8.2f}×  (target ≤ 1.5×: {'ok' if r_native <= 1.5 else 'MISSED'})")
    print(f"loop / extension    {r_loop:8.1f}×  (target ≥ 20×: {'ok' if r_loop >= 20 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]))
