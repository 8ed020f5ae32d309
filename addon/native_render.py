"""Cycles settings for Blender's native splats (5.3+, splat_import.native_splats): on import the
scene renders at least NATIVE_SAMPLES samples with the denoiser on, so the native splats render as
faithfully as the instanced quads do at the demo's settings.

Why: Cycles finds a native splat by a stochastic alpha test (kernel/geom/gsplat_intersect.h: the
ray stops at a splat with probability α·exp(−½ d²), else goes on), so each sample sees one splat
where the quads composite all of them exactly. At the demo's 4 samples the zoom levels rendered
from their level cameras are 3.7–5.0 dB further from the level images than the quads; without the
denoiser the quads' fidelity needs about 64 samples (4.3× the quads' time). OpenImageDenoise
(in the bpy 5.3 build, CPU) removes most of that noise: 40 samples + the denoiser are within
0.17–0.32 dB of the quads at 4 samples, at 2.75× their time (1.5–3.8× per level; 32 samples
were 0.21–0.46 dB, 48 no better than 40; scripts/bench_splats_native prints the figures of one
run).

Each setting is raised, never lowered: samples below NATIVE_SAMPLES become NATIVE_SAMPLES, the
denoiser is switched on if it is off (its kind and passes stay the user's). The preference "Keep
my render samples" (preferences.py) leaves the scene as it is; the import's note and the panel say
which applies. Before 5.3 (instanced quads, exact) nothing is changed and nothing is said.
"""
from __future__ import annotations

from dataclasses import dataclass

from .splat_import import native_splats

NATIVE_SAMPLES = 40  # with the denoiser: within 0.5 dB of the quads at every demo level


@dataclass(frozen=True)
class SampleState:
    """What of a scene's Cycles settings decides how noisy native splats render."""

    samples: int
    denoise: bool

    @classmethod
    def of(cls, scene) -> "SampleState | None":
        cycles = getattr(scene, "cycles", None)
        if cycles is None:  # Cycles disabled
            return None
        return cls(int(cycles.samples), bool(cycles.use_denoising))

    @property
    def enough(self) -> bool:
        """Native splats render as faithfully as the quads (NATIVE_SAMPLES and the denoiser)."""
        return self.samples >= NATIVE_SAMPLES and self.denoise

    def shortfalls(self) -> list[str]:
        out = []
        if self.samples < NATIVE_SAMPLES:
            out.append(f"{self.samples} samples (native splats need {NATIVE_SAMPLES})")
        if not self.denoise:
            out.append("the denoiser off")
        return out


def keep_render_samples(context=None) -> bool:
    """The preference "Keep my render samples" (False when the preferences are unavailable)."""
    from . import preferences

    prefs = preferences.get(context)
    return bool(prefs is not None and prefs.keep_render_samples)


def use_native_samples(scene, keep: bool) -> str:
    """On import: raise the scene's Cycles samples to NATIVE_SAMPLES and switch the denoiser on
    (each only if lower / off) unless keep (the preference) → the note for the operator's report
    ("" before 5.3 or without Cycles: nothing to do)."""
    before = SampleState.of(scene)
    if not native_splats() or before is None:
        return ""
    if not keep:
        if before.samples < NATIVE_SAMPLES:
            scene.cycles.samples = NATIVE_SAMPLES
        if not before.denoise:
            scene.cycles.use_denoising = True
    return import_note(before, SampleState.of(scene), keep)


def import_note(before: SampleState, after: SampleState, keep: bool) -> str:
    """The report's sentence for an import on the native path that found `before`, left `after`."""
    if keep and not after.enough:
        return (f"Cycles: kept your {', '.join(after.shortfalls())}, so the native splats render "
                f"noisier than the quads would; turn off 'Keep my render samples' in the preferences "
                f"for {NATIVE_SAMPLES} samples and the denoiser")
    if before.enough:
        return f"Cycles: {after.samples} samples with the denoiser, enough for native splats"
    done = []
    if after.samples != before.samples:
        done.append(f"samples raised to {after.samples} (were {before.samples})")
    if after.denoise and not before.denoise:
        done.append("the denoiser switched on")
    return f"Cycles: {' and '.join(done)} for Blender's native splats, which Cycles samples stochastically"


def panel_note(scene, keep: bool) -> tuple[str, str] | None:
    """The panel's line about the scene's Cycles samples for native splats → (text, icon), or
    None before 5.3 or without Cycles."""
    state = SampleState.of(scene)
    if not native_splats() or state is None:
        return None
    if state.enough:
        return f"Cycles: {state.samples} samples with the denoiser, enough for native splats", "CHECKMARK"
    what = ", ".join(state.shortfalls())
    if keep:
        return f"Cycles: {what}: native splats render noisy (Keep my render samples)", "INFO"
    return f"Cycles: {what}: native splats render noisy; Import results raises them", "INFO"
