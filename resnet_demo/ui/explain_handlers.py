"""The Explain tab's handlers: a photo in, the top-5, its maps and feature maps out.

Plain functions, so the tests call them directly; the stage, method, class and
opacity are checked by the core (resnet_demo.explain), which says what is wrong.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import PIL.Image

from ..explain import METHODS, STAGES, Analysis, Attribution, analyze, method_cost, overlay, overlay_on_full
from .components import user_errors
from .downloads import DOWNLOADS
from .model_choice import UNTRAINED_BANNER, resolve_model, status_markdown

STAGE_CHOICES: list[tuple[str, str]] = [(s, s) for s in STAGES]
VIEW_CHOICES: list[tuple[str, str]] = [("The 224 crop the model saw", "crop"), ("The whole photo", "full")]
TOP_CLASS = -1  # the class picker's value for "whatever the model ranks first"
NO_PHOTO = "Upload a photo first (or click one of the examples)."


def method_choices(*, arch: str) -> list[tuple[str, str]]:
    """Method picker entries, the slow ones labelled with their expected time here."""
    out = []
    for method, label in METHODS.items():
        cost = method_cost(method=method, arch=arch)
        out.append((label if cost < 1.0 else f"{label} (~{cost:.0f} s here)", method))
    return out


def method_picker(arch: str) -> dict[str, Any]:
    """The method picker for a newly picked model: its costs differ with depth."""
    return gr.update(choices=method_choices(arch=arch))


def label_dict(analysis: Analysis) -> dict[str, float]:
    """The top-k as ``gr.Label`` wants it: plain Python floats."""
    return {p.label: float(p.prob) for p in analysis.predictions}


def class_choices(analysis: Analysis) -> list[tuple[str, int]]:
    """The class picker: top class, then the top-k with probabilities, then every class."""
    top = [(f"#{i + 1} {p.label} ({p.prob:.1%})", p.index) for i, p in enumerate(analysis.predictions)]
    ranked = {p.index for p in analysis.predictions}
    rest = [(name, i) for i, name in enumerate(analysis.spec.categories) if i not in ranked]
    return [("Top class", TOP_CLASS), *top, *rest]


def _target(target: int | float | str | None) -> int | None:
    if target is None or target == "":
        return None
    try:
        t = int(target)
    except (TypeError, ValueError) as e:
        raise gr.Error(f"Unknown class {target!r}: pick one from the list.") from e
    return None if t == TOP_CLASS else t


def _ms(seconds: float) -> str:
    # layer4 Grad-CAM is a closed form (CAM) and takes well under a millisecond.
    return "<1 ms" if seconds < 1e-3 else f"{seconds * 1000:.0f} ms"


def _caption(analysis: Analysis, att: Attribution) -> str:
    prob = next((p.prob for p in analysis.predictions if p.index == att.target), None)
    prob_text = f" ({prob:.1%})" if prob is not None else ""
    parts = [
        f"**{METHODS[att.method]}** at **{att.stage}** for class **{att.target_label}**{prob_text}, "
        f"computed in {_ms(att.seconds)}."
    ]
    if att.all_zero:
        parts.append(
            "⚠️ The map is all zero: at this stage nothing in the image counts as positive "
            "evidence for this class (all of its evidence is negative)."
        )
    if analysis.untrained:
        parts.insert(0, f"**{UNTRAINED_BANNER}** (random weights): this map explains a meaningless prediction.")
    return "\n\n".join(parts)


def _strip(analysis: Analysis, *, target: int | None, opacity: float) -> list[tuple[PIL.Image.Image, str]]:
    """Grad-CAM of every stage for the same class: where the evidence forms, early to late."""
    out = []
    for stage in STAGES:
        att = analysis.attribution(stage=stage, target=target, method="gradcam")
        note = " (all zero)" if att.all_zero else ""
        out.append((overlay(image=analysis.crop, heatmap=att.heatmap, opacity=opacity), f"{stage}{note}"))
    return out


def _features(analysis: Analysis) -> list[tuple[PIL.Image.Image, str]]:
    out = []
    for stage in STAGES:
        grid = analysis.feature_maps(stage)
        c, h, w = grid.shape
        out.append((grid.image, f"{stage} · {c}×{h}×{w} · channels {', '.join(map(str, grid.channels[:4]))}…"))
    return out


def _check_view(*, opacity: float, view: str) -> None:
    # The renderer checks opacity too, but as a programming error; a request deserves a sentence.
    if not 0.0 <= float(opacity) <= 1.0:
        raise gr.Error("Opacity must be between 0 and 1.")
    if view not in ("crop", "full"):
        raise gr.Error("View must be 'crop' or 'full'.")


def _views(analysis: Analysis, *, stage: str, target: int | None, method: str, opacity: float, view: str) -> list[Any]:
    """(overlay, caption, strip, raw map file) of one map of ``analysis``."""
    att = analysis.attribution(stage=stage, target=target, method=method)
    if view == "full":
        heat = overlay_on_full(analysis=analysis, attribution=att, opacity=opacity)
    else:
        heat = overlay(image=analysis.crop, heatmap=att.heatmap, opacity=opacity)
    # The map's own stage ("input" for the pixel methods), not the request's, names the file.
    raw = DOWNLOADS.save_npy(att.raw, stem=f"{analysis.arch}-{att.stage}-{att.method}-class{att.target}")
    return [heat, _caption(analysis, att), _strip(analysis, target=target, opacity=opacity), raw]


@user_errors
def run_explain(
    image: str | None,
    arch: str,
    weights: str,
    checkpoint: str | None,
    stage: str,
    method: str,
    opacity: float,
    view: str,
) -> tuple[Any, ...]:
    """Explain tab, a new photo or model: one forward, then every view of it.

    Returns (analysis state, top-5, status, class picker, overlay, caption, strip,
    feature maps, raw map file).
    """
    if image is None:
        raise gr.Error(NO_PHOTO)
    _check_view(opacity=opacity, view=view)
    loaded = resolve_model(arch=arch, weights=weights, checkpoint=checkpoint)
    analysis = analyze(image=image, arch=arch, weights=loaded.spec.name, topk=5, loaded=loaded)
    heat, caption, strip, raw = _views(analysis, stage=stage, target=None, method=method, opacity=opacity, view=view)
    picker = gr.update(choices=class_choices(analysis), value=TOP_CLASS)
    features = _features(analysis)
    return analysis, label_dict(analysis), status_markdown(loaded), picker, heat, caption, strip, features, raw


@user_errors
def rerender(
    analysis: Analysis | None,
    stage: str,
    target: int | None,
    method: str,
    opacity: float,
    view: str,
) -> tuple[Any, ...]:
    """Explain tab, another stage / class / method / opacity / view of the same photo.

    No new forward pass: the analysis in the user's state serves it.
    Returns (overlay, caption, strip, raw map file).
    """
    if analysis is None:
        raise gr.Error(NO_PHOTO)
    _check_view(opacity=opacity, view=view)
    return tuple(_views(analysis, stage=stage, target=_target(target), method=method, opacity=opacity, view=view))


@user_errors
def predict(image: str | None, arch: str = "resnet50", weights: str = "imagenet-v2") -> dict[str, float]:
    """API: the top-5 classes of a photo (``/predict``)."""
    if image is None:
        raise gr.Error("Send an image.")
    loaded = resolve_model(arch=arch, weights=weights, checkpoint=None)
    return label_dict(analyze(image=image, arch=arch, weights=loaded.spec.name, topk=5, loaded=loaded))
