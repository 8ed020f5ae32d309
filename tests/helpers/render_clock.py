"""A fake clock for the refinement budgets (gaussians.refine_level, world.refine_world): time
passes only by rendering, so a budget test counts renders, not wall time."""
from __future__ import annotations

import torch


class RenderClock:
    """A fake clock where time passes only by rendering: a forward render costs `render`
    seconds, a render with autograd (a refinement step) `step` seconds. calls: how often it was
    read. wrap(render_fn) is the render function that advances it."""

    def __init__(self, render=1.0, step=3.0):
        self.t, self.render, self.step, self.calls = 0.0, render, step, 0

    def __call__(self):
        self.calls += 1
        return self.t

    def wrap(self, fn):
        def timed(*args, **kwargs):
            self.t += self.step if torch.is_grad_enabled() else self.render
            return fn(*args, **kwargs)
        return timed
