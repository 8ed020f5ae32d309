"""Backend figures of issue 5 (scripts/bench_gaussians): lifting throughput and reference-rasterizer
frame time, each with a baseline measured in the same run.

  lift:   a job's zoom levels (default 2 levels of 96²) lifted with the default init: per-pixel
          Gaussians + the colour deconvolution as one sparse bounded least-squares solve
          (gaussians.fit_colors), vs the same lift with the previous colour fit (20 Adam steps
          through the autograd rasterizer, kept below as adam_colour_fit) on torch's default
          threads and on one thread, and vs the lift without colour fit; PSNR per level of both.
  raster: reference rasterizer, one 256² frame of 10k and 100k per-pixel-like Gaussians,
          forward and forward+backward, vs 8-pixel tiles (the previous default) and vs the naive
          evaluation of every Gaussian at every pixel (one image-sized tile; timed on 10k only,
          then extrapolated linearly in N for 100k)
Sizes and threads are flags; the machine is shared, so figures are medians of --repeat runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from zoomscape.cameras import from_wire, look_at, zoom_level_camera
from zoomscape.engines.base import DepthFor
from zoomscape.engines.procedural import ProceduralEngine, World
from zoomscape import gaussians
from zoomscape.gaussians import coarse_background, lift_levels, psnr, render_level
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
        tile8 = timed(lambda: rasterize(*args, size, size, tile_size=8), repeat)
        if naive10 is None:
            naive = timed(lambda: rasterize_naive(*args, size, size), 1)
            naive10, n10 = naive, n
            note = "measured"
        else:
            naive = naive10 * n / n10
            note = f"extrapolated from {n10}"
        print(f"  N={n:>7}: forward {fwd * 1e3:8.1f} ms ({n / fwd / 1e6:.2f} M Gaussians/s), "
              f"forward+backward {both * 1e3:8.1f} ms; 8-px tiles {tile8 * 1e3:8.1f} ms "
              f"(-> {tile8 / fwd:.1f}x); naive all-pairs {naive * 1e3:9.1f} ms ({note}) "
              f"-> tiled is {naive / fwd:.1f}x faster")


def adam_colour_fit(g, image: np.ndarray, cam, frame, background, steps: int = 20,
                    lr: float = 0.03) -> np.ndarray:
    """The previous colour fit, kept here as the baseline: projected Adam on ‖render(c) − I‖²,
    `steps` autograd passes through the reference rasterizer from c = the pixel colours."""
    target = torch.as_tensor(np.asarray(image, np.float32))
    c = torch.tensor(np.asarray(g.colors, np.float32), requires_grad=True)
    opt = torch.optim.Adam([c], lr=lr)
    for _ in range(steps):
        rgb, _ = render_level(g.replace(colors=c), cam, frame, background=background)
        loss = ((rgb - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            c.clamp_(0, 1)
    return c.detach().numpy().copy()


def level_psnrs(levels, images, cam, p: float) -> list[float]:
    """PSNR of each lifted level rendered from its camera over the coarser levels."""
    out = []
    for lv in levels:
        ci = zoom_level_camera(cam, p, lv.index)
        bg = coarse_background(levels[:lv.index], ci, lv.frame)
        with torch.no_grad():
            rgb, _ = render_level(lv.gaussians, ci, lv.frame, background=bg)
        out.append(psnr(rgb, images[lv.index]))
    return out


def lift_before(images, cam, anchor, engine):
    """The lift as it was: per-pixel Gaussians, then the Adam colour fit level by level (each
    level over the already fitted coarser ones), on torch's default thread count."""
    levels = lift_levels(images, cam, anchor, 4.0, engine, colour_steps=0)
    for lv in levels:
        ci = zoom_level_camera(cam, 4.0, lv.index)
        g = lv.gaussians
        bg = coarse_background(levels[:lv.index], ci, lv.frame)
        lv.gaussians = g.replace(colors=adam_colour_fit(g, images[lv.index], ci, lv.frame, bg))
    return levels


def bench_lift(size: int, levels: int, repeat: int) -> None:
    cam = from_wire({"name": "Zoom", "matrix_world": look_at([0, -8, 3], [0, 0, 0.5]),
                     "fx": 1.1 * size, "fy": 1.1 * size, "cx": size / 2, "cy": size / 2,
                     "width": size, "height": size})
    engine = DepthFor(ProceduralEngine(), 3)             # the lift's depth: seed 3, role "level"
    world = World("a mossy valley", 3)
    anchor = world.trace(cam, np.array([[size / 2, size / 2]])).point[0]
    images = [world.render(zoom_level_camera(cam, 4.0, i))[0] for i in range(levels)]
    n = levels * size * size
    threads = torch.get_num_threads()
    lift_levels(images, cam, anchor, 4.0, engine)                      # warm-up (lazy inits)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])             # the baseline's first Adam
                                                                       # imports torch._dynamo (~1 s)
    plain = timed(lambda: lift_levels(images, cam, anchor, 4.0, engine, colour_steps=0), repeat)
    after = timed(lambda: lift_levels(images, cam, anchor, 4.0, engine), repeat)
    serial = gaussians.SERIAL_PIXELS
    gaussians.SERIAL_PIXELS = 0                                        # sparse fit, all threads
    try:
        after_mt = timed(lambda: lift_levels(images, cam, anchor, 4.0, engine), 1)
    finally:
        gaussians.SERIAL_PIXELS = serial
    before = timed(lambda: lift_before(images, cam, anchor, engine), 1)
    with gaussians.torch_threads(1):
        before_1t = timed(lambda: lift_before(images, cam, anchor, engine), 1)
    p_before = level_psnrs(lift_before(images, cam, anchor, engine), images, cam, 4.0)
    p_after = level_psnrs(lift_levels(images, cam, anchor, 4.0, engine), images, cam, 4.0)
    fmt = lambda ps: ", ".join(f"{x:.2f}" for x in ps)  # noqa: E731
    print(f"lifting {levels} levels of {size}x{size} ({n} Gaussians); after: median of {repeat}, "
          f"before: 1 run:")
    print(f"  depth fit + per-pixel Gaussians only:       {plain:7.3f} s = {n / plain:9.0f} Gaussians/s "
          f"(includes the procedural depth estimate)")
    print(f"  before: 20 Adam steps through the rasterizer, {threads} thread(s): {before:7.3f} s  "
          f"PSNR {fmt(p_before)} dB")
    print(f"  before, the same on 1 thread:                {before_1t:7.3f} s")
    print(f"  after: sparse least squares (CG), {threads} thread(s):   {after_mt:7.3f} s")
    print(f"  after: as shipped (levels ≤ 512² on 1 thread):  {after:7.3f} s = {n / after:9.0f} Gaussians/s  "
          f"PSNR {fmt(p_after)} dB")
    print(f"  -> lifting is {before / after:.1f}x faster than before ({before_1t / after:.1f}x at equal "
          f"1 thread; threads alone {after_mt / after:.1f}x); the colour fit now costs "
          f"{max(after - plain, 0):.3f} s = {after / plain:.2f}x the plain lift")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="raster image size (default 256)")
    ap.add_argument("--counts", default="10000,100000", help="Gaussian counts (default 10000,100000)")
    ap.add_argument("--lift-size", type=int, default=96, help="level image size (default 96, a job's)")
    ap.add_argument("--levels", type=int, default=2, help="zoom levels to lift (default 2)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    ap.add_argument("--skip-raster", action="store_true", help="only the lifting figures")
    a = ap.parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CUDA {torch.cuda.is_available()}")
    if not a.skip_raster:
        bench_raster(a.size, [int(c) for c in a.counts.split(",")], a.repeat)
    bench_lift(a.lift_size, a.levels, a.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
