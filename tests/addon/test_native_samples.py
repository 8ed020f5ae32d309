"""The Cycles samples native splats need (issue 12, native_render.py): on Blender 5.3+ importing
results raises the scene's samples to NATIVE_SAMPLES and switches the denoiser on (only if lower /
off), says so in the report and the panel, and keeps the user's settings with the preference
"Keep my render samples"; on 4.2–5.2 (instanced quads) nothing changes and nothing is said."""
import numpy as np
import pytest

import bpy

from conftest import add_camera, render_rgb, use_engine
from test_fidelity_import import results_to_import
from test_panel import draw
from test_splats import NATIVE, needs_native


def cycles_lines(zs):
    """The panel's text about Cycles samples (joined, "" when it draws none) and whether it
    draws the preference."""
    log = draw(zs)
    at = [i for i, (name, a, kw) in enumerate(log)
          if name == "label" and kw.get("text", "").startswith("Cycles:")]
    assert len(at) <= 1
    text = []
    for name, a, kw in (log[at[0]:] if at else []):
        if name != "label" or (text and kw.get("icon") != "BLANK1"):
            break
        text.append(kw["text"])
    drawn = [a[0] for name, a, kw in log if name == "prop"]
    return " ".join(text), "keep_render_samples" in drawn


def low_settings(scene, samples=4, denoise=False):
    scene.render.engine = "CYCLES"
    scene.cycles.samples, scene.cycles.use_denoising = samples, denoise


def test_the_import_raises_the_samples_and_switches_the_denoiser_on_only_for_native_splats(zs, tmp_path, capfd):
    scene = bpy.context.scene
    low_settings(scene)
    results_to_import(zs, scene, tmp_path, capfd, "job-samples")
    assert bpy.ops.zoomscape.import_results() == {"FINISHED"}
    report = capfd.readouterr()
    note = zs.runner.render_note(scene)
    text, pref_drawn = cycles_lines(zs)
    if not NATIVE:  # the quads composite exactly: the user's settings stay, and nothing is said
        assert (scene.cycles.samples, scene.cycles.use_denoising) == (4, False)
        assert note == "" and text == "" and not pref_drawn
        return
    n = zs.native_render.NATIVE_SAMPLES
    assert n == 40
    assert (scene.cycles.samples, scene.cycles.use_denoising) == (n, True)
    assert note == (f"Cycles: samples raised to {n} (were 4) and the denoiser switched on for Blender's "
                    "native splats, which Cycles samples stochastically")
    assert note in report.out + report.err  # the operator's report
    assert text == f"Cycles: {n} samples with the denoiser, enough for native splats" and pref_drawn
    # a user who lowers them again is told what the next import does
    scene.cycles.samples = 8
    assert cycles_lines(zs)[0] == (f"Cycles: 8 samples (native splats need {n}): native splats render "
                                   "noisy; Import results raises them")


@needs_native
@pytest.mark.parametrize("samples, denoise, want", [(256, True, (256, True)), (64, False, (64, True)),
                                                    (16, True, (40, True))])
def test_the_import_only_raises(zs, tmp_path, capfd, samples, denoise, want):
    scene = bpy.context.scene
    low_settings(scene, samples, denoise)
    out_dir = results_to_import(zs, scene, tmp_path, capfd, "job-raise")
    zs.runner.import_results(scene, out_dir)
    assert (scene.cycles.samples, scene.cycles.use_denoising) == want
    note = zs.runner.render_note(scene)
    if (samples, denoise) == want:
        assert note == f"Cycles: {samples} samples with the denoiser, enough for native splats"
    elif samples == want[0]:
        assert note.startswith("Cycles: the denoiser switched on for Blender's native splats")
    else:
        assert note.startswith(f"Cycles: samples raised to 40 (were {samples}) for")


@needs_native
def test_keep_my_render_samples_leaves_the_scene_as_it_was(zs, tmp_path, capfd):
    scene = bpy.context.scene
    prefs = zs.preferences.get()
    assert prefs.keep_render_samples is False  # off by default: the import raises them
    prefs.keep_render_samples = True
    low_settings(scene)
    out_dir = results_to_import(zs, scene, tmp_path, capfd, "job-keep-samples")
    assert bpy.ops.zoomscape.import_results() == {"FINISHED"}
    assert (scene.cycles.samples, scene.cycles.use_denoising) == (4, False)
    note = zs.runner.render_note(scene)
    assert note == ("Cycles: kept your 4 samples (native splats need 40), the denoiser off, so the native "
                    "splats render noisier than the quads would; turn off 'Keep my render samples' in the "
                    "preferences for 40 samples and the denoiser")
    assert note in capfd.readouterr().out + capfd.readouterr().err
    text, pref_drawn = cycles_lines(zs)
    assert text == ("Cycles: 4 samples (native splats need 40), the denoiser off: native splats render "
                    "noisy (Keep my render samples)") and pref_drawn
    # off again: the next import raises them
    prefs.keep_render_samples = False
    zs.runner.import_results(scene, out_dir)
    assert (scene.cycles.samples, scene.cycles.use_denoising) == (40, True)


def wall(zs, scene, native):
    """A wall of 32×32 flat Gaussians filling a 48-pixel view, its colours varying smoothly (about
    6 Gaussians a period: coplanar neighbours of near colours, whichever Cycles composites first)."""
    n = 32
    g = (np.arange(n) + 0.5) / n * 4.0 - 2.0
    X, Z = np.meshgrid(g, g)
    a, b = np.sin(2 * np.pi * X / 0.8).ravel(), np.cos(2 * np.pi * Z / 0.8).ravel()
    rgb = np.column_stack([0.5 + 0.35 * a, 0.5 + 0.35 * b, 0.5 - 0.175 * (a + b)])
    means = np.column_stack([X.ravel(), np.zeros(X.size), Z.ravel()]).astype(np.float32)
    q = np.tile([[np.sqrt(0.5), np.sqrt(0.5), 0.0, 0.0]], (X.size, 1)).astype(np.float32)  # normal → −y
    s = np.tile([[0.09, 0.09, 1e-5]], (X.size, 1)).astype(np.float32)
    gs = zs.wire.splats.Gaussians(means, q, s, np.full(X.size, 0.98, np.float32), rgb.astype(np.float32))
    return zs.splat_import.import_splats(scene, gs, "Wall", "job", native=native)


@needs_native
def test_at_the_imports_settings_native_splats_render_without_their_noise(zs, tmp_path):
    """The demo's finding in small: at 4 samples native splats render noisy (Cycles' stochastic
    alpha test); at the settings the import chooses (NATIVE_SAMPLES and the denoiser) the render is
    close to the converged one. Against 1024 samples: measured 21.4 dB at 4 samples, 33.2 dB at the
    import's settings. (Against the quads: scripts/bench_splats_native on the demo's levels.)"""
    scene = bpy.context.scene
    scene.camera = add_camera("Cam", (0.0, -6.0, 0.0), lens=50.0)
    scene.render.resolution_x = scene.render.resolution_y = 48
    scene.view_settings.view_transform = "Standard"
    use_engine(scene, "CYCLES", 1024)
    scene.cycles.use_denoising = False
    wall(zs, scene, native=True)
    converged = render_rgb(scene, str(tmp_path / "native1024.png"))
    scene.cycles.samples = 4
    noisy = render_rgb(scene, str(tmp_path / "native4.png"))
    assert zs.native_render.use_native_samples(scene, keep=False).startswith("Cycles: samples raised to 40")
    chosen = render_rgb(scene, str(tmp_path / "native40.png"))

    def psnr(a, b):
        return 10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2))

    assert converged.std() > 0.1  # a textured wall, not a flat colour
    assert psnr(chosen, converged) > psnr(noisy, converged) + 8.0, (psnr(noisy, converged), psnr(chosen, converged))
    assert psnr(chosen, converged) > 30.0, psnr(chosen, converged)


def test_the_preference_is_offered_only_where_it_applies(zs):
    """Edit ▸ Preferences ▸ Add-ons ▸ Zoomscape: the token, the view transform and, on 5.3+ only,
    the render samples."""
    log = []

    class Layout:
        def prop(self, data, name, **kw):
            assert name in data.bl_rna.properties, name
            log.append(name)

    prefs = zs.preferences.get()
    type(prefs).draw(type("Fake", (), {"layout": Layout(), "bl_rna": prefs.bl_rna})(), bpy.context)
    assert log[:2] == ["token", "keep_view_transform"]
    assert ("keep_render_samples" in log) == NATIVE
