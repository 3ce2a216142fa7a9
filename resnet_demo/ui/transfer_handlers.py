"""The Transfer tab's handlers: a photo segmented or with its objects boxed, Grad-CAM at every backbone
stage for a class or a detection of the user's choice, the backbone's feature maps and its diagram.
The events with several outputs return named tuples whose fields are the tab's component names."""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr
import plotly.graph_objects as go
from PIL import Image

from .. import diagram
from ..core.errors import UserError
from ..core.images import display_copy, load_image
from ..core.model import STAGES, check_stage
from ..core.render import overlay
from ..core.weights import offline
from ..transfer.backbone import DILATION, HEAD_INPUTS, READS
from ..transfer.detect import check_threshold
from ..transfer.drawing import draw_detections, draw_segmentation, hex_colour
from ..transfer.explain import TransferExplanation, explain_transfer, target_index
from ..transfer.weights import MODELS, TransferSpec, backbones_for, shared_transfer, transfer_spec
from .analysis_store import DISPLAY_MAX
from .components import user_errors
from .markdown_text import md_text
from .messages import NO_PHOTO
from .model_choice import UNTRAINED_BANNER

__all__ = [
    "AUTO_TARGET",
    "OWN_SIZE",
    "ModelMenus",
    "Transferred",
    "backbone_choices",
    "backbone_figure",
    "legend_markdown",
    "model_choices",
    "pick_stage",
    "reset_target",
    "summary_markdown",
    "target_choices",
    "transfer",
]

OWN_SIZE = 0  # the size menu's "the model's own input size"
AUTO_TARGET = None  # the target menu's "the largest class / the best detection"
Tiles = list[tuple[Image.Image, str]]


class ModelMenus(NamedTuple):
    """A newly picked task: the model menu and the backbone menu."""

    model: Any
    backbone: Any


class Transferred(NamedTuple):
    """``/transfer``'s outputs, by the tab's component names."""

    picture: Image.Image  # the photo with masks or boxes, a display copy (longer side at most DISPLAY_MAX)
    legend: str  # Markdown: the classes found, or the detections
    heat: str | Image.Image | None  # Grad-CAM at the chosen stage: the strip's tile (None: nothing to explain)
    strip: Tiles  # Grad-CAM at every backbone stage
    features: Tiles  # the backbone's feature maps
    summary: str  # Markdown: the model, what its head reads, the backbone check
    target: Any  # the target menu's update: what may be explained, on the one explained


def model_choices(task: str, backbone: str) -> ModelMenus:
    """The model menu for ``task`` (its default first) and the backbones that model is published on."""
    names = MODELS.get(task, ())
    model = names[0] if names else None
    return ModelMenus(
        model=gr.update(choices=list(names), value=model), backbone=backbone_choices(task, model, backbone)
    )


def backbone_choices(task: str, model: str | None, backbone: str) -> Any:
    """The backbone menu for ``model``: keeps ``backbone`` where the model is published on it."""
    have = list(backbones_for(task=task, model=model or ""))
    return gr.update(choices=have, value=backbone if backbone in have else (have[0] if have else None))


def reset_target() -> Any:
    """A new photo, model or threshold: the old class or detection means nothing any more."""
    return gr.update(choices=[], value=AUTO_TARGET)


@user_errors
def backbone_figure(task: str, model: str, backbone: str) -> go.Figure:
    """The backbone's block diagram: the stages the head reads marked, what the model changed noted."""
    spec = transfer_spec(task=task, model=model, backbone=backbone)
    return diagram.architecture_figure(
        arch=spec.backbone,
        taps=HEAD_INPUTS[spec.model],
        replace_stride_with_dilation=DILATION if spec.dilated else None,
        note=f"{spec.model} on {spec.backbone}: " + ("; ".join(spec.changes) or "the classifier's ResNet, unchanged"),
    )


def legend_markdown(result: TransferExplanation) -> str:
    """The classes found with their share of the photo and colour, or the detections over the threshold."""
    if result.segmentation is not None:
        rows = [
            f"<span style='color:{hex_colour(c.index)}'>■</span> {md_text(c.name)}: {c.share:.1%}"
            for c in result.segmentation.classes
        ]
        return "Classes found: " + " · ".join(rows)
    found = result.detections
    assert found is not None
    if found.items:
        return "\n".join(f"- {d.index}: **{md_text(d.label)}** {d.score:.2f}" for d in found.items)
    if found.threshold == 0:  # no lower threshold to try: every box the model returned is shown at 0
        return "Nothing detected, even at threshold 0: the model returned no box for this photo."
    return f"Nothing detected with a score of at least {found.threshold:.2f}: lower the threshold."


def target_choices(result: TransferExplanation) -> list[tuple[str, int]]:
    """What the user may explain: each class found, or each detection over the threshold."""
    if result.segmentation is not None:
        return [(f"{c.name} ({c.share:.0%} of the photo)", c.index) for c in result.segmentation.classes]
    assert result.detections is not None
    return [(f"{d.index}: {d.label} {d.score:.2f}", d.index) for d in result.detections.items]


def summary_markdown(spec: TransferSpec, result: TransferExplanation) -> str:
    """What the model is, which stages its head reads, what changed in the backbone, and the equality check."""
    changed = "; ".join(spec.changes) or "the backbone is the classifier's ResNet, unchanged"
    metrics = ", ".join(f"{k} {v:g}" for k, v in spec.metrics.items())
    worst = max(result.backbone_diff.values())
    agree = "is bit-identical" if worst == 0.0 else f"agrees to {worst:.1e} (relative)"
    explained = "Nothing to explain." if result.target_text is None else f"Grad-CAM of {md_text(result.target_text)}."
    return (
        f"**{spec.label}** · published {metrics} · the head reads {', '.join(READS[spec.model])}"
        f" · {changed}.\n\n"
        f"Backbone = our {spec.backbone}: every stage's output {agree}. {explained}"
    )


def _strip(photo: Image.Image, result: TransferExplanation) -> list[tuple[Image.Image, str]]:
    tiles = []
    for stage, cam in result.cams.items():
        note = " (all zero)" if cam.all_zero else ""
        tiles.append((overlay(image=photo, heatmap=cam.heatmap), f"{stage}{note}"))
    return tiles


def _features(result: TransferExplanation) -> list[tuple[Image.Image, str]]:
    return [(result.features[stage].image, result.features[stage].caption) for stage in STAGES]


@user_errors
def pick_stage(strip: list[Any] | None, stage: str) -> Any:
    """The strip's tile for ``stage`` as the large map (no rerun: the strip holds every stage)."""
    check_stage(stage)
    for item in strip or []:
        picture, caption = (item[0], item[1]) if isinstance(item, (list, tuple)) else (item, "")
        if str(caption).split(" ")[0] == stage:
            return picture.get("path", picture) if isinstance(picture, dict) else picture
    return None


def _size(size: int | float | str | None) -> int | None:
    if size in (None, OWN_SIZE):
        return None
    if isinstance(size, bool) or not isinstance(size, int | float) or not float(size).is_integer():
        raise UserError(f"The input size must be a whole number of pixels, not {size!r:.40}.")
    return int(size)


def _banner(spec: TransferSpec, because: str | None) -> str:
    hint = " The server is offline: an administrator must place the file in torchvision's cache." if offline() else ""
    return (
        f"⚠️ **{spec.label} on random weights ({UNTRAINED_BANNER}): masks, boxes and maps are meaningless.** "
        f"{because}{hint}\n\n"
    )


@user_errors
def transfer(
    image: str | None,
    task: str,
    model: str,
    backbone: str,
    threshold: float,
    size: int | None,
    target: int | str | None,
    stage: str,
) -> Transferred:
    """Run one photo: the picture with masks or boxes, its legend, Grad-CAM at ``stage`` and at every
    stage, the feature maps, the summary and the target menu. ``target`` None explains the largest
    class other than background, or the best detection."""
    if image is None:
        raise UserError(NO_PHOTO)
    spec = transfer_spec(task=task, model=model, backbone=backbone)
    check_stage(stage)
    photo: Image.Image = load_image(image)
    # Like every tab, usable offline: on random weights, labelled UNTRAINED with the reason.
    loaded = shared_transfer(task=spec.task, model=spec.model, backbone=spec.backbone, fallback_to_random=True)
    result = explain_transfer(
        loaded=loaded,
        image=photo,
        target=target_index(spec, target),
        threshold=check_threshold(threshold),
        size=_size(size),
        check=True,
    )
    # The model sees the whole photo; the pictures are drawn on the same display copy /explain keeps
    # (a 24 MP photo would otherwise send two full-size JPEGs, about 50 MB, per answer).
    shown = display_copy(photo, max_side=DISPLAY_MAX)
    if result.segmentation is not None:
        picture = draw_segmentation(shown, result.segmentation)
    else:
        assert result.detections is not None
        picture = draw_detections(shown, result.detections)
    strip = _strip(shown, result)
    heat = pick_stage(strip, stage)
    summary = summary_markdown(spec, result)
    if loaded.untrained:
        summary = _banner(spec, loaded.untrained_because) + summary
    return Transferred(
        picture=picture,
        legend=legend_markdown(result),
        heat=heat,
        strip=strip,
        features=_features(result),
        summary=summary,
        target=gr.update(choices=target_choices(result), value=result.target),
    )
