"""The Explain tab's method menu: the methods grouped by the question their maps answer, each slow
one with its expected time here, and a stage that follows a method tied to some stages."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..explain import QUESTIONS, REGISTRY, get_method, grouped_methods, method_cost
from .components import user_errors

__all__ = ["method_changed", "method_choices", "method_guide", "method_picker"]


def method_choices(*, arch: str, stage: str = "layer4") -> list[tuple[str, str]]:
    """Method picker entries grouped by the question they answer ("Where · Grad-CAM"), registry order
    within; the slow ones say their expected time here at ``stage``, the ones tied to some stages say which."""
    out = []
    for name in grouped_methods():
        entry = REGISTRY[name]
        label = f"{entry.answers.capitalize()} · {entry.label}"
        supported = entry.space == "input" or entry.stages is None or stage in entry.stages
        text = label if entry.stages is None or entry.space == "input" else f"{label} ({', '.join(entry.stages)} only)"
        # Priced where it would run: an unsupported stage is switched to the method's first one.
        where = stage if supported else entry.stages[0]  # type: ignore[index]
        cost = method_cost(method=name, arch=arch, stage=where)
        out.append((text if cost < 1.0 else f"{text} (~{cost:.0f} s here)", name))
    return out


def method_guide() -> str:
    """One line per group of the method picker: the question its maps answer."""
    return "\n".join(f"- **{q.capitalize()}**: {text}." for q, text in QUESTIONS.items())


def method_picker(arch: str, stage: str = "layer4") -> dict[str, Any]:
    """The method picker for a newly picked model or stage: the costs differ with both."""
    return gr.update(choices=method_choices(arch=arch, stage=stage))


@user_errors
def method_changed(method: str, stage: str) -> Any:
    """A method that has no map at the current stage moves the stage to one it has, and says so."""
    entry = get_method(method)
    if entry.space == "input" or entry.stages is None or stage in entry.stages:
        return gr.skip()
    gr.Info(f"{entry.label} works at {' and '.join(entry.stages)} only: the stage is now {entry.stages[-1]}.")
    return entry.stages[-1]
