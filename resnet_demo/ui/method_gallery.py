"""The "compare methods" gallery: every quick method's map at one stage, for one class, side by side.

The cheap ones come from the analysis in the user's state (its stored pass and at most one
shared backward); the others (LRP, CRP, DFF, Guided Grad-CAM) cost a few forwards each.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import PIL.Image
import PIL.ImageEnhance

from ..core.render import overlay
from ..explain import REGISTRY, Analysis, quick_methods
from .analysis_store import stored
from .components import user_errors
from .explain_handlers import class_index

# How much a tile keeps of the photo when the method has no map at the stage: dimmed, so it
# reads as "nothing here" and never as a map.
_UNAVAILABLE_BRIGHTNESS = 0.35


def _unavailable(analysis: Analysis) -> PIL.Image.Image:
    return PIL.ImageEnhance.Brightness(analysis.crop.convert("L").convert("RGB")).enhance(_UNAVAILABLE_BRIGHTNESS)


def _tile(
    analysis: Analysis, *, name: str, stage: str, target: int | None, versus: int | None, opacity: float
) -> tuple[PIL.Image.Image, str]:
    """One method's overlay and its caption (label, time, and what the map could not show)."""
    entry = REGISTRY[name]
    if entry.stages is not None and stage not in entry.stages:
        return _unavailable(analysis), f"{entry.label}: not available at {stage} ({', '.join(entry.stages)} only)"
    agnostic = versus is not None and not entry.class_specific
    att = analysis.attribution(stage=stage, target=target, method=name, versus=None if agnostic else versus)
    notes = [f"{att.seconds * 1000:.0f} ms" if att.seconds >= 1e-3 else "<1 ms"]
    if agnostic:
        notes.append("ignores the class")
    if att.all_zero:
        notes.append("all zero")
    return overlay(image=analysis.crop, heatmap=att.heatmap, opacity=opacity), f"{entry.label} · {' · '.join(notes)}"


def gallery_tiles(
    analysis: Analysis, *, stage: str, target: int | None, versus: int | None, opacity: float
) -> list[tuple[PIL.Image.Image, str]]:
    """Every quick method (registry order) at ``stage`` for ``target`` (None: the top class)."""
    return [
        _tile(analysis, name=name, stage=stage, target=target, versus=versus, opacity=opacity)
        for name in quick_methods()
    ]


@user_errors
def method_gallery(
    analysis: Analysis | str | None, show: bool, stage: str, target: int | None, versus: int | None, opacity: float
) -> dict[str, Any]:
    """The gallery for the tab's current photo, stage, class and versus class; hidden while ``show`` is off."""
    if not show:
        return gr.update(visible=False)
    analysis = stored(analysis)
    t, v = (class_index(c, categories=analysis.categories) for c in (target, versus))
    tiles = gallery_tiles(analysis, stage=stage, target=t, versus=v, opacity=opacity)
    return gr.update(value=tiles, visible=True)
