"""Colour management of an import: the generated colours render as generated.

The level images, the point colours and the Gaussians' colours are display sRGB; the importers
decode them to linear once (importers.srgb_to_linear) and the render encodes them back. Only the
Standard view transform with no look (exposure 0, gamma 1, no curves) makes that round trip the
identity. Blender's default view transform (AgX in 4.2 and 5.x; a new scene made in 4.x gets
Filmic) tone-maps them: paler, flatter colours, about 6 dB against the truth on the demo's frame.

On import (:func:`use_generated_colours`) the scene's view transform is set to Standard and its
look to None; exposure, gamma and curves are left alone (the factory settings already have them
neutral; a user who changed them meant it) and named in the notes when they alter the colours.
The preference "Keep my view transform" (preferences.py) keeps the scene's settings untouched.
"""
from __future__ import annotations

from dataclasses import dataclass

STANDARD = "Standard"
NO_LOOK = "None"


@dataclass(frozen=True)
class ViewState:
    """What of a scene's colour management the render applies to the generated colours."""

    view_transform: str
    look: str
    exposure: float
    gamma: float
    curves: bool

    @classmethod
    def of(cls, scene) -> "ViewState":
        v = scene.view_settings
        return cls(v.view_transform, v.look, float(v.exposure), float(v.gamma), bool(v.use_curve_mapping))

    @property
    def standard(self) -> bool:
        """The view transform reproduces colours (Standard, no look)."""
        return self.view_transform == STANDARD and self.look == NO_LOOK

    def alterations(self) -> list[str]:
        """What changes the generated colours, for the notes ([] when they render as generated)."""
        out = []
        if self.view_transform != STANDARD:
            out.append(f"the {self.view_transform} view transform")
        if self.look != NO_LOOK:
            out.append(f"the look '{self.look}'")
        if abs(self.exposure) > 1e-6:
            out.append(f"exposure {self.exposure:+g}")
        if abs(self.gamma - 1.0) > 1e-6:
            out.append(f"gamma {self.gamma:g}")
        if self.curves:
            out.append("curves")
        return out


def keep_view_transform(context=None) -> bool:
    """The preference "Keep my view transform" (False when the preferences are unavailable)."""
    from . import preferences

    prefs = preferences.get(context)
    return bool(prefs is not None and prefs.keep_view_transform)


def use_generated_colours(scene, keep: bool) -> str:
    """On import: make the scene render the generated colours as generated (view transform
    Standard, look None) unless keep (the preference) → the note for the operator's report."""
    before = ViewState.of(scene)
    if not keep and not before.standard:
        scene.view_settings.view_transform = STANDARD
        scene.view_settings.look = NO_LOOK
    return import_note(before, ViewState.of(scene), keep)


def import_note(before: ViewState, after: ViewState, keep: bool) -> str:
    """The report's sentence for an import that found `before` and left `after`."""
    rest = after.alterations()
    if keep and not after.standard:
        return (f"Colour: kept your view settings ({', '.join(rest)}), so the generated colours are "
                f"tone-mapped; turn off 'Keep my view transform' in the preferences to render them as generated")
    if before.standard:
        note = "Colour: Standard view transform, so the generated colours render as generated"
    elif before.view_transform == STANDARD:
        note = f"Colour: look set to None (was '{before.look}') so the generated colours render as generated"
    else:
        note = (f"Colour: view transform set to Standard (was {before.view_transform}) so the "
                f"generated colours render as generated")
    if rest:  # exposure, gamma or curves the user set
        note += f"; {', '.join(rest)} still alter them"
    return note


def panel_note(scene, keep: bool) -> tuple[str, str]:
    """The panel's line about how the scene renders the generated colours now → (text, icon)."""
    state = ViewState.of(scene)
    what = ", ".join(state.alterations())
    if not what:
        return "Colour: Standard view transform, so the generated colours render as generated", "CHECKMARK"
    if state.standard:  # only exposure, gamma or curves: the user's, never reset
        return f"Colour: Standard view transform; the generated colours are altered by {what}", "INFO"
    if keep:
        return f"Colour: the generated colours are tone-mapped by {what} (Keep my view transform)", "INFO"
    return f"Colour: the generated colours are tone-mapped by {what}; Import results sets Standard", "INFO"
