"""The Explain tab's handlers: a photo in, the top-5, its maps and feature maps out.

Plain functions, so the tests call them directly; the model, stage, method, class and
opacity are checked by the core (resnet_demo.core, resnet_demo.explain), which says what is wrong.
Each event with several outputs gets a named tuple (:class:`Explained`, :class:`ExplainPage`,
:class:`MapViews`, :class:`MapAlone`) whose fields are the Explain tab's component names; the
example photos' handlers are in :mod:`.example_handlers`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import gradio as gr
import PIL.Image

from ..core.errors import UserError
from ..core.model import STAGES
from ..core.render import check_opacity, overlay
from ..explain import (
    METHODS,
    Analysis,
    Attribution,
    analyze,
    get_method,
    method_cost,
    overlay_on_full,
    prepare,
    resolve_class,
)
from .analysis_store import ANALYSES, DISPLAY_MAX, stored
from .budget import within_budget
from .components import user_errors
from .downloads import DOWNLOADS
from .events import extend
from .map_captions import map_caption
from .messages import BAD_VIEW, NO_PHOTO, unknown_pick
from .model_choice import SETTINGS, resolve_model, status_markdown, untrained_name
from .session_folders import session_name

STAGE_CHOICES: list[tuple[str, str]] = [(s, s) for s in STAGES]
VIEW_CHOICES: list[tuple[str, str]] = [("The crop the model saw", "crop"), ("The whole photo", "full")]
TOP_CLASS = -1  # the class picker's value for "whatever the model ranks first"
LISTED_CLASSES = 20  # the most probable classes the class pickers list; any other is typed
NO_VERSUS = -1  # the versus picker's value for "no second class": the plain class score
STRIP_FALLBACK = "gradcam"  # the strip and the fusion of methods that have no map at every stage

Progress = Callable[[float], None]
Tiles = list[tuple[PIL.Image.Image, str]]  # a gallery's value: (image, caption) pairs
Pair = tuple[PIL.Image.Image, PIL.Image.Image]  # an image slider's value: left, right


class Views(NamedTuple):
    """One map of an analysis, drawn: the views every new photo and every other view fill."""

    heatmap: PIL.Image.Image
    caption: str  # Markdown
    strip: Any  # the method at every stage: tiles, or the gallery's update with its label
    raw: str  # the map before upsampling, a .npy file


class Explained(NamedTuple):
    """``/explain``'s outputs, by the Explain tab's component names: a new photo's analysis and its views."""

    analysis: str  # the analysis's key in the store: what the tab's gr.State holds
    top5: dict[str, float]
    status: str  # the weights banner
    target: Any  # the class picker's update: this photo's classes, back on the top class
    heatmap: PIL.Image.Image
    caption: str
    strip: Any
    features: Tiles  # the most active channels of each stage
    raw: str


ExplainPage = extend(
    Explained,
    "ExplainPage",
    {"versus": Any, "fusion": Tiles, "slider": Pair},
    doc="The page's own event for a new photo: /explain's outputs, then what else a new photo resets "
    "and the photo against its map.",
)
MapViews = extend(
    Views,
    "MapViews",
    {"fusion": Tiles, "slider": Pair},
    drop=("heatmap",),
    doc="Another view of the same photo: the map's views, the fused map and the photo against its map (the "
    "slider's map: the page's hidden copy of the map is /explain's, left as it is, as a new photo leaves it).",
)
MapAlone = extend(
    MapViews,
    "MapAlone",
    {},
    drop=("strip", "fusion"),
    doc="Another stage or view of the same map: the map alone (the strip and the fused map show every stage "
    "on the crop already; the hidden copy of the map is /explain's). No component is updated for nothing: "
    "Gradio rebuilds a component for every update, even an empty one.",
)


@dataclass(frozen=True)
class Settings:
    """The Explain tab's model and view settings; the defaults are the views a page opens with."""

    arch: str
    weights: str
    checkpoint: str | None
    stage: str = "layer4"
    method: str = "gradcam"
    opacity: float = 0.5
    view: str = "crop"


def label_dict(analysis: Analysis) -> dict[str, float]:
    """The top-k as ``gr.Label`` wants it: plain Python floats."""
    return {p.label: float(p.prob) for p in analysis.predictions}


def class_choices(analysis: Analysis) -> list[tuple[str, int]]:
    """The class picker: top class, then the :data:`LISTED_CLASSES` most probable with their probabilities.

    Any other class is typed (a name, part of one, or an index) and found by the core. Not every
    class: Gradio's page copies a dropdown's choices on every status change of every event, and
    1000 of them in two pickers cost a visitor's browser more than the server's whole answer.
    """
    ranked = [(f"#{i + 1} {p.label} ({p.prob:.1%})", p.index) for i, p in enumerate(analysis.top(LISTED_CLASSES))]
    return [("Top class", TOP_CLASS), *ranked]


def class_picker(analysis: Analysis) -> Any:
    """The class picker's update for a new analysis: its classes, back on the top class."""
    return gr.update(choices=class_choices(analysis), value=TOP_CLASS)


def versus_picker(analysis: Analysis) -> Any:
    """The versus picker's update for a new analysis: its classes, back on "nothing"."""
    return gr.update(choices=versus_choices(analysis), value=NO_VERSUS)


def versus_choices(analysis: Analysis) -> list[tuple[str, int]]:
    """The versus picker: none (the default), then the classes as the class picker lists them."""
    return [("Nothing (explain the class alone)", NO_VERSUS), *class_choices(analysis)[1:]]


def class_index(target: int | float | str | None, *, categories: Sequence[str]) -> int | None:
    """A class picker's value as an index into ``categories``; None for "top class" / "nothing".

    The pickers take typed text too (an index or part of a name): the core's resolver finds the
    class, or names the closest ones for a typo."""
    if target is None or (isinstance(target, str) and not target.strip()):
        return None
    if isinstance(target, str) and target.strip() in (str(TOP_CLASS), str(NO_VERSUS)):
        return None
    if isinstance(target, str):
        return resolve_class(categories=categories, query=target)
    if not isinstance(target, (int, float)) or isinstance(target, bool) or not float(target).is_integer():
        raise UserError(unknown_pick(target))
    t = int(target)
    return None if t in (TOP_CLASS, NO_VERSUS) else resolve_class(categories=categories, query=t)


def progress_for(progress: Any, what: str) -> Progress:
    """The engine's progress callback (a fraction) as a Gradio progress bar saying ``what``."""
    return lambda fraction: progress(float(fraction), desc=what)


def versus_for(method: str, versus: int | None) -> int | None:
    """``versus`` for a method that has a contrastive version; None for one that ignores the class."""
    return versus if get_method(method).class_specific else None


def strip_method(method: str) -> str:
    """The method of the strip and the fusion: ``method`` if it is cheap and has a map at every stage."""
    entry = get_method(method)
    every_stage = entry.space == "layer" and entry.stages is None
    return method if entry.cheap and every_stage else STRIP_FALLBACK


def _strip(
    analysis: Analysis, *, target: int | None, versus: int | None, method: str, opacity: float
) -> list[tuple[PIL.Image.Image, str]]:
    """One method at every stage for the same class: where the evidence forms, early to late."""
    name = strip_method(method)
    maps = analysis.attributions(stages=STAGES, target=target, method=name, versus=versus_for(name, versus))
    out = []
    for stage, att in maps.items():
        note = " (all zero)" if att.all_zero else ""
        out.append((overlay(image=analysis.crop, heatmap=att.heatmap, opacity=opacity), f"{stage}{note}"))
    return out


def fusion_view(
    analysis: Analysis, *, target: int | None, versus: int | None, method: str, opacity: float
) -> list[tuple[PIL.Image.Image, str]]:
    """The strip's method with every stage fused (element-wise maximum): one captioned tile."""
    name = strip_method(method)
    att = analysis.fusion(target=target, method=name, versus=versus_for(name, versus))
    note = " (all zero)" if att.all_zero else ""
    return [(overlay(image=analysis.crop, heatmap=att.heatmap, opacity=opacity), f"{METHODS[name]} fused{note}")]


def _features(analysis: Analysis) -> list[tuple[PIL.Image.Image, str]]:
    return [(grid.image, grid.caption) for grid in map(analysis.feature_maps, STAGES)]


def _check_cost(*, arch: str, method: str, stage: str) -> None:
    """The map's expected time against the server's limit: refused before any model loads."""
    within_budget(
        seconds=method_cost(method=method, arch=arch, stage=stage), what=f"{METHODS.get(method, method)} at {stage}"
    )


def _check_view(view: str) -> None:
    # The app's own choice of drawing (the renderer checks the opacity): before any model loads.
    if view not in ("crop", "full"):
        raise UserError(BAD_VIEW)


def _map(
    analysis: Analysis,
    *,
    stage: str,
    target: int | None,
    method: str,
    opacity: float,
    view: str,
    versus: int | None = None,
    progress: Any = None,
) -> tuple[Attribution, PIL.Image.Image, str]:
    """One map of ``analysis``: the attribution, drawn over the crop or the whole photo, and its caption."""
    callback = progress_for(progress, f"{METHODS.get(method, method)}…") if progress is not None else None
    att = analysis.attribution(
        stage=stage, target=target, method=method, versus=versus_for(method, versus), progress=callback
    )
    if view == "full":
        heat = overlay_on_full(analysis=analysis, attribution=att, opacity=opacity)
    else:
        heat = overlay(image=analysis.crop, heatmap=att.heatmap, opacity=opacity)
    return att, heat, map_caption(analysis, att, dropped_versus=versus is not None and att.versus is None)


def _raw_file(analysis: Analysis, att: Attribution) -> str:
    """The map before upsampling, saved as .npy for download."""
    # The map's own stage ("input" for the pixel methods), not the request's, names the file.
    against = "" if att.versus is None else f"-vs{att.versus}"
    return DOWNLOADS.save_npy(att.raw, stem=f"{analysis.arch}-{att.stage}-{att.method}-class{att.target}{against}")


def photo_and_map(analysis: Analysis, heatmap: PIL.Image.Image, *, view: str) -> Pair:
    """The image slider's pair: the photo as the map shows it (the crop the model saw, or the whole
    photo's display copy, which the whole-photo map is drawn on), then ``heatmap``, the map over it."""
    return (analysis.crop if view == "crop" else analysis.image, heatmap)


def strip_label(method: str) -> str:
    """The strip's label: which method it shows (see :func:`strip_method`)."""
    return f"{METHODS[strip_method(method)]} at every stage, same class"


def _label_strip(result: Explained, method: str) -> Explained:
    """``result`` with its strip as the gallery's update that also says which method it shows."""
    return result._replace(strip=gr.update(value=result.strip, label=strip_label(method)))


def analyze_photo(
    image: str | None, arch: str, weights: str, checkpoint: str | None, stage: str, method: str, opacity: float,
    view: str, *, defer_backward: bool = False,
) -> Analysis:  # fmt: skip
    """One forward pass of a new photo (or model), kept nowhere; every setting is checked before any model loads.

    ``defer_backward``: the strip's one backward runs when the strip is drawn (see :func:`analyze`)."""
    if image is None:
        raise UserError(NO_PHOTO)
    _check_view(view)
    check_opacity(opacity)  # the core's sentence, before any model loads
    _check_cost(arch=arch, method=method, stage=stage)
    loaded = resolve_model(arch=arch, weights=weights, checkpoint=checkpoint)
    # Only a display copy of the photo is kept (a phone photo would pin 70 MB per visitor);
    # the model's crop comes from the photo at its loaded size.
    prepared = prepare(image=image, preprocessing=loaded.spec.preprocessing, display_max=DISPLAY_MAX)
    precision = SETTINGS["precision"]
    # The strip's Grad-CAM at every stage: one backward in the same pass beats one per stage later. A
    # bfloat16 forward takes its float32 gradients from a rerun of its own instead (see analyze()).
    strip_gradients = get_method(strip_method(method)).class_specific and precision == "float32"
    return analyze(
        image=prepared, topk=5, model=loaded, gradcam_stages=STAGES if strip_gradients else (),
        defer_backward=defer_backward, precision=precision,
    )  # fmt: skip


def explained_of(
    analysis: Analysis, *, key: str, stage: str, method: str, opacity: float, view: str, progress: Any = None
) -> Explained:
    att, heat, caption = _map(
        analysis, stage=stage, target=None, method=method, opacity=opacity, view=view, progress=progress
    )
    return Explained(
        analysis=key,
        top5=label_dict(analysis),
        status=status_markdown(analysis.loaded),
        target=class_picker(analysis),
        heatmap=heat,
        caption=caption,
        strip=_strip(analysis, target=None, versus=None, method=method, opacity=opacity),
        features=_features(analysis),
        raw=_raw_file(analysis, att),
    )


def explain_photo(
    image: str | None, arch: str, weights: str, checkpoint: str | None, stage: str, method: str, opacity: float,
    view: str, *, session: str, progress: Any = None,
) -> tuple[Analysis, Explained]:  # fmt: skip
    """One forward pass of a new photo (or model), kept in the store for ``session``, and every view of it.

    Returns the analysis and ``/explain``'s outputs.
    """
    analysis = analyze_photo(image, arch, weights, checkpoint, stage, method, opacity, view)
    key = ANALYSES.put(analysis, session=session)
    return analysis, explained_of(
        analysis, key=key, stage=stage, method=method, opacity=opacity, view=view, progress=progress
    )


def page_of(analysis: Analysis, explained: Explained, *, method: str, opacity: float, view: str) -> ExplainPage:
    """A new photo's whole page at once: ``explained`` (/explain's outputs) and what else a new photo resets."""
    return ExplainPage(
        **_label_strip(explained, method)._asdict(),
        versus=versus_picker(analysis),
        fusion=fusion_view(analysis, target=None, versus=None, method=method, opacity=opacity),
        slider=photo_and_map(analysis, explained.heatmap, view=view),
    )


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
    request: gr.Request | None = None,
    progress: Any = gr.Progress(),  # noqa: B008  (Gradio's marker for a progress bar; not an API input)
) -> Explained:
    """``/explain``: a new photo or model, one forward, then every view of it.

    Its parameters are the API's, in their order: scripts call it by position.
    """
    _analysis, explained = explain_photo(
        image, arch, weights, checkpoint, stage, method, opacity, view, session=session_name(request), progress=progress
    )
    return explained


def page_step(**values: Any) -> ExplainPage:
    """A step of the page's event: ``values``, and every other component left as it is."""
    return ExplainPage(**{**dict.fromkeys(ExplainPage._fields, gr.skip()), **values})


@user_errors
def explain_ui(
    image: str | None, arch: str, weights: str, checkpoint: str | None, stage: str, method: str, opacity: float,
    view: str, request: gr.Request | None = None,
    progress: Any = gr.Progress(),  # noqa: B008  (Gradio's marker for a progress bar)
) -> Iterator[ExplainPage]:  # fmt: skip
    """The tab's own event for a new photo or model, in two steps of one event (one round trip).

    First what a visitor looks at: the top-5, the map and its caption, before the backward pass that
    only the strip needs, and with no component rebuilt (Gradio rebuilds one for every
    ``gr.update``). Then the rest: the strip, the fused map, the feature maps, the raw map's file,
    the class and versus pickers with this photo's classes, and the analysis's key. The page's
    hidden copy of the map (``/explain``'s output) is left as it is: nobody sees it.
    """
    analysis = analyze_photo(image, arch, weights, checkpoint, stage, method, opacity, view, defer_backward=True)
    att, heat, caption = _map(
        analysis, stage=stage, target=None, method=method, opacity=opacity, view=view, progress=progress
    )
    yield page_step(
        top5=label_dict(analysis),
        status=status_markdown(analysis.loaded),
        caption=caption,
        slider=photo_and_map(analysis, heat, view=view),
    )
    strip = _strip(analysis, target=None, versus=None, method=method, opacity=opacity)  # runs the backward
    yield page_step(
        analysis=ANALYSES.put(analysis, session=session_name(request)),
        target=class_picker(analysis),
        strip=gr.update(value=strip, label=strip_label(method)),
        fusion=fusion_view(analysis, target=None, versus=None, method=method, opacity=opacity),
        features=_features(analysis),
        raw=_raw_file(analysis, att),
        versus=versus_picker(analysis),
    )


def page_after(steps: Iterable[ExplainPage]) -> ExplainPage:
    """The page once every step of an event has arrived: each field's last value that was not a skip."""
    page = dict.fromkeys(ExplainPage._fields, gr.skip())
    for step in steps:
        page.update({k: v for k, v in step._asdict().items() if not _is_skip(v)})
    return ExplainPage(**page)


def _is_skip(value: Any) -> bool:
    return isinstance(value, dict) and value == gr.skip()


@user_errors
def rerender(
    analysis: Analysis | str | None,
    stage: str,
    target: int | None,
    versus: int | None,
    method: str,
    opacity: float,
    view: str,
    progress: Any = gr.Progress(),  # noqa: B008  (Gradio's marker for a progress bar)
) -> MapViews:
    """Explain tab, another class / versus class / method / opacity of the same photo.

    No new forward pass: the analysis in the user's state serves it.
    """
    redrawn = _redrawn(analysis, stage, target, versus, method, opacity, view, progress)
    a, t, v = redrawn.analysis, redrawn.target, redrawn.versus
    return MapViews(
        caption=redrawn.map.caption,
        strip=gr.update(value=_strip(a, target=t, versus=v, method=method, opacity=opacity), label=strip_label(method)),
        raw=redrawn.map.raw,
        fusion=fusion_view(a, target=t, versus=v, method=method, opacity=opacity),
        slider=redrawn.map.slider,
    )


@user_errors
def restage(
    analysis: Analysis | str | None,
    stage: str,
    target: int | None,
    versus: int | None,
    method: str,
    opacity: float,
    view: str,
    progress: Any = gr.Progress(),  # noqa: B008  (Gradio's marker for a progress bar)
) -> MapAlone:
    """Explain tab, another stage or view of the same map: the map alone (see :class:`MapAlone`)."""
    return _redrawn(analysis, stage, target, versus, method, opacity, view, progress).map


class _Redrawn(NamedTuple):
    analysis: Analysis
    target: int | None  # the class pickers' values as class indices
    versus: int | None
    map: MapAlone


def _redrawn(
    analysis: Analysis | str | None, stage: str, target: int | None, versus: int | None, method: str,
    opacity: float, view: str, progress: Any,
) -> _Redrawn:  # fmt: skip
    """One map of the visitor's stored analysis, every setting checked, drawn."""
    analysis = stored(analysis)
    _check_view(view)
    _check_cost(arch=analysis.arch, method=method, stage=stage)
    t, v = (class_index(c, categories=analysis.categories) for c in (target, versus))
    att, heat, caption = _map(
        analysis, stage=stage, target=t, method=method, opacity=opacity, view=view, versus=v, progress=progress
    )
    alone = MapAlone(caption=caption, raw=_raw_file(analysis, att), slider=photo_and_map(analysis, heat, view=view))
    return _Redrawn(analysis=analysis, target=t, versus=v, map=alone)


@user_errors
def predict(image: str | None, arch: str = "resnet50", weights: str = "imagenet-v2") -> dict[str, float]:
    """API: the top-5 classes of a photo (``/predict``), each name marked UNTRAINED on random weights."""
    if image is None:
        raise UserError(NO_PHOTO)
    loaded = resolve_model(arch=arch, weights=weights, checkpoint=None)
    top5 = label_dict(analyze(image=image, topk=5, model=loaded))
    # A Label's answer is class names and probabilities only, and /predict has no status text:
    # on random weights the names themselves must say the prediction is meaningless.
    return {untrained_name(name=name): prob for name, prob in top5.items()} if loaded.untrained else top5
