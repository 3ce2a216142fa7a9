"""Handlers of "What the network looks for": the concepts of a stage on the user's photo.

Two kinds, both from the engine (:mod:`resnet_demo.explain.crp`, :mod:`resnet_demo.explain.dff`):

* CRP: the k channels of the stage carrying the most relevance of the explained class, each a
  tile "concept 1 · channel 1234: 23% of the relevance" showing where on the photo that
  relevance comes from; a click on a tile shows that channel first in the feature maps;
* DFF: the stage's activations factorised into k parts, drawn together in one colour each, with a
  legend naming the classes each part supports most.

Each result is a named tuple whose fields are the :class:`~.concepts_panel.ConceptsPanel`'s
component names.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr
import PIL.Image

from ..core.errors import UserError
from ..core.model import STAGES
from ..core.render import overlay
from ..explain import Analysis, method_cost
from ..explain.crp import DEFAULT_CONCEPTS as CRP_DEFAULT
from ..explain.crp import concepts as crp_concepts
from ..explain.dff import CONCEPTS as DFF_DEFAULT
from ..explain.dff import concept_overlay
from ..explain.dff import concepts as dff_concepts
from .analysis_store import stored
from .budget import within_budget
from .components import user_errors
from .explain_handlers import class_index
from .markdown_text import md_text
from .messages import unknown_pick

__all__ = [
    "CONCEPT_KINDS",
    "ConceptsView",
    "PickedConcept",
    "concept_defaults",
    "concepts_button",
    "concepts_cost",
    "concepts_view",
    "picked_concept",
]

# (label, engine name) for the radio; the defaults of k are the engine's.
CONCEPT_KINDS = [
    ("Relevance (CRP): the channels that carry the class", "crp"),
    ("Factorisation (DFF): the stage split into parts", "dff"),
]
DEFAULT_K = {"crp": CRP_DEFAULT, "dff": DFF_DEFAULT}
LABELS = {"crp": "CRP's concepts", "dff": "DFF's concepts"}
FIND = "Find the concepts"

Tiles = list[tuple[PIL.Image.Image, str]]


class ConceptsView(NamedTuple):
    concept_tiles: Tiles
    concept_legend: str
    concept_channels: list[int]  # the CRP tiles' channels, in tile order (none for DFF: its parts mix channels)
    concept_stage: str  # the stage the tiles belong to, for a click


class PickedConcept(NamedTuple):
    features: Tiles
    concept_note: str


def concept_defaults(kind: str) -> Any:
    """The k slider's value for a newly picked kind: the engine's default for it."""
    return gr.update(value=DEFAULT_K.get(kind, DEFAULT_K["crp"]))


def _kind(kind: str) -> str:
    if kind not in DEFAULT_K:
        raise gr.Error(unknown_pick(kind))
    return kind


@user_errors
def concepts_view(
    analysis: Analysis | str | None,
    kind: str,
    stage: str,
    target: int | str | None,
    k: int,
    opacity: float,
    progress: Any = gr.Progress(),  # noqa: B008  (Gradio's marker for a progress bar)
) -> ConceptsView:
    """The concepts of ``stage`` on the stored photo: CRP's tiles for the class, or DFF's parts in colour."""
    analysis = stored(analysis)
    kind = _kind(kind)
    t = class_index(target, categories=analysis.categories)
    t = analysis.predictions[0].index if t is None else t
    progress(0.0, desc="Finding the concepts…")

    within_budget(seconds=concepts_cost(arch=analysis.arch, kind=kind, stage=stage), what=f"{LABELS[kind]} at {stage}")
    progress(0.0, desc="Finding the concepts…")
    if kind == "crp":
        return _crp_view(analysis, stage=stage, target=t, k=k, opacity=opacity)
    return _dff_view(analysis, stage=stage, target=t, k=k, opacity=opacity)


def _crp_view(analysis: Analysis, *, stage: str, target: int, k: int, opacity: float) -> ConceptsView:
    found = crp_concepts(analysis=analysis, stage=stage, target=target, k=int(k))
    tiles = [
        (
            overlay(image=analysis.crop, heatmap=c.heatmap, opacity=opacity),
            f"#{i + 1} · channel {c.channel} · {_share(c.share)}",
        )
        for i, c in enumerate(found)
    ]
    total = sum(c.share for c in found)
    shares = ", ".join(f"#{i + 1} channel {c.channel}: {_share(c.share)}" for i, c in enumerate(found))
    legend = (
        f"The {len(found)} channels of **{stage}** that carry the most relevance of class "
        f"**{md_text(analysis.categories[target])}** ({analysis.prob(target):.1%}), of the relevance at the "
        f"stage: {shares} (together {_share(total)}). Each tile shows where on the photo that channel's "
        "relevance comes from. **Click a tile** to see that channel first in the feature maps below."
    )
    channels = [c.channel for c in found]
    return ConceptsView(concept_tiles=tiles, concept_legend=legend, concept_channels=channels, concept_stage=stage)


def _share(share: float) -> str:
    # One decimal: a stage has hundreds of channels, so one channel's share is often under 1%.
    return f"{share:.1%}"


def _dff_view(analysis: Analysis, *, stage: str, target: int, k: int, opacity: float) -> ConceptsView:
    result = dff_concepts(analysis=analysis, stage=stage, k=int(k), target=target)
    image, keys = concept_overlay(result=result, image=analysis.crop, opacity=opacity)
    tiles = [(image, f"{len(keys)} concepts of {stage}, one colour each")]
    tiles += [
        (overlay(image=analysis.crop, heatmap=concept.heatmap, opacity=opacity), text)
        for concept, (_colour, text) in zip(result.concepts, keys, strict=True)
    ]
    rows = "\n".join(
        f'- <span style="color:#{r:02x}{g:02x}{b:02x}">■</span> {md_text(text)}' for (r, g, b), text in keys
    )
    named = (
        "" if stage == "layer4" else " (the classes each supports are named at layer4, where the classifier reads it)"
    )
    legend = (
        f"**{stage}** factorised into {len(keys)} concepts (non-negative matrix factorisation of its "
        f"activations){named}:\n{rows}"
    )
    return ConceptsView(concept_tiles=tiles, concept_legend=legend, concept_channels=[], concept_stage=stage)


def concepts_cost(*, arch: str, kind: str, stage: str) -> float:
    """Expected seconds of the concepts of ``kind`` at ``stage`` on this machine (the registry's price)."""
    return method_cost(method=_kind(kind), arch=arch, stage=stage)


def concepts_button(arch: str, kind: str, stage: str) -> Any:
    """The button, saying how long it should take here."""
    try:
        seconds = concepts_cost(arch=arch, kind=kind, stage=stage)
    except (UserError, gr.Error):
        return gr.update(value=FIND)
    return gr.update(value=f"{FIND} (~{seconds:.0f} s here)" if seconds >= 1 else FIND)


@user_errors
def picked_concept(
    analysis: Analysis | str | None, channels: list[int], stage: str, evt: gr.SelectData
) -> PickedConcept:
    """A click on a CRP tile: the feature maps with that tile's channel first at its stage."""
    if not channels or evt is None or not isinstance(evt.index, int) or not 0 <= evt.index < len(channels):
        return PickedConcept(features=gr.skip(), concept_note=gr.skip())  # a DFF part, or a stale click
    analysis = stored(analysis)
    channel = channels[evt.index]
    tiles = []
    for s in STAGES:
        grid = analysis.feature_maps(s, first=[channel] if s == stage else ())
        caption = (
            f"{s} · channel {channel} first (concept {evt.index + 1}), then the most active"
            if s == stage
            else grid.caption
        )
        tiles.append((grid.image, caption))
    note = f"Feature maps: **{stage}** shows channel **{channel}** (concept {evt.index + 1}) first."
    return PickedConcept(features=tiles, concept_note=note)
