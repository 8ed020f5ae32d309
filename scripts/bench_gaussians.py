"""Backend figures of issue 5 (scripts/bench_gaussians): lifting throughput and reference-rasterizer
frame time, each with a baseline measured in the same run.

  lift:   Gaussians lifted per second (depth fit + per-pixel Gaussians, no colour fit or refinement)
          vs the same lift plus the 20-step colour deconvolution (the default init)
  raster: reference rasterizer (tiles), one 256² frame of 10k and 100k per-pixel-like Gaussians,
          forward and forward+backward, vs the naive evaluation of every Gaussian at every pixel
          (one image-sized tile; timed on 10k only, then extrapolated linearly in N for 100k)
Sizes are flags; the machine is shared, so figures are medians of --repeat runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from zoomscape.cameras import from_wire, look_at, zoom_level_camera
from zoomscape.engines.procedural import ProceduralEngine
from zoomscape.gaussians import lift_levels
from zoomscape.raster import rasterize, rasterize_naive


def timed(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def scene(n: int, size: int, seed: int = 0):
    """n Gaussians about one pixel wide scattered over a 256² view, opacities ~0.9."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([2.0, 2.0, 0.5])
    means[:, 2] += 4.0
    px = 4.0 / size                      # metres per pixel at z = 4 with f = size/2·… (below)
    scales = torch.rand(n, 3, generator=g) * px * 1.5 * (size * size / n) ** 0.5 * 0.5 + px * 0.3
    K = torch.tensor([[[size / 2.0, 0, size / 2], [0, size / 2.0, size / 2], [0, 0, 1]]])
    return (means, torch.randn(n, 4, generator=g), scales, 0.5 + 0.5 * torch.rand(n, generator=g),
            torch.rand(n, 3, generator=g), torch.eye(4)[None], K)


def bench_raster(size: int, counts: list[int], repeat: int) -> None:
    print(f"reference rasterizer, {size}x{size}, median of {repeat}:")
    naive10 = None
    for n in counts:
        args = scene(n, size)
        fwd = timed(lambda: rasterize(*args, size, size), repeat)
        params = [a.clone().requires_grad_(True) for a in args[:5]]

        def fb():
            rgb, _ = rasterize(*params, *args[5:], size, size)
            rgb.sum().backward()
        both = timed(fb, repeat)
        if naive10 is None:
            naive = timed(lambda: rasterize_naive(*args, size, size), 1)
            naive10, n10 = naive, n
            note = "measured"
        else:
            naive = naive10 * n / n10
            note = f"extrapolated from {n10}"
        print(f"  N={n:>7}: forward {fwd * 1e3:8.1f} ms ({n / fwd / 1e6:.2f} M Gaussians/s), "
              f"forward+backward {both * 1e3:8.1f} ms; naive all-pairs {naive * 1e3:9.1f} ms ({note}) "
              f"-> tiled is {naive / fwd:.1f}x faster")


def bench_lift(size: int, levels: int, repeat: int) -> None:
    cam = from_wire({"name": "Zoom", "matrix_world": look_at([0, -8, 3], [0, 0, 0.5]),
                     "fx": 1.1 * size, "fy": 1.1 * size, "cx": size / 2, "cy": size / 2,
                     "width": size, "height": size})
    engine = ProceduralEngine()
    world = engine.world_for("a mossy valley", 3)
    anchor = world.trace(cam, np.array([[size / 2, size / 2]])).point[0]
    images = [world.render(zoom_level_camera(cam, 4.0, i))[0] for i in range(levels)]
    n = levels * size * size
    plain = timed(lambda: lift_levels(images, cam, anchor, 4.0, engine, colour_steps=0), repeat)
    full = timed(lambda: lift_levels(images, cam, anchor, 4.0, engine), 1)
    print(f"lifting {levels} levels of {size}x{size} ({n} Gaussians), median of {repeat}:")
    print(f"  depth fit + per-pixel Gaussians: {plain:7.2f} s = {n / plain:10.0f} Gaussians/s "
          f"(includes the procedural depth estimate)")
    print(f"  + 20-step colour deconvolution:  {full:7.2f} s = {n / full:10.0f} Gaussians/s "
          f"-> the colour fit costs {full / plain:.1f}x the plain lift")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="raster image size (default 256)")
    ap.add_argument("--counts", default="10000,100000", help="Gaussian counts (default 10000,100000)")
    ap.add_argument("--lift-size", type=int, default=128, help="level image size (default 128)")
    ap.add_argument("--levels", type=int, default=3, help="zoom levels to lift (default 3)")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CUDA {torch.cuda.is_available()}")
    bench_raster(a.size, [int(c) for c in a.counts.split(",")], a.repeat)
    bench_lift(a.lift_size, a.levels, a.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
