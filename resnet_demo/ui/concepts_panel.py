"""The Explain tab's "What the network looks for" accordion: the concepts of the picked stage
(CRP's channels carrying the class, or DFF's parts of the stage), computed when asked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from . import concepts_handlers as c
from .cancellation import cancellable
from .components import OpenRadio, OpenSlider
from .events import outputs_of
from .settings import IMAGE_FORMAT

CONCEPTS_INTRO = """A heat map says *where*; concepts say *what*. At the stage picked above:

* **Relevance (CRP**, Achtibat et al., 2023): the channels that carry the most of the class's relevance (layer-wise
  relevance propagation), each with its share and where on the photo its relevance comes from.
* **Factorisation (DFF**, Collins et al., 2018): the stage's activations split into parts (non-negative matrix
  factorisation), each part in its own colour, with the classes it supports most (at layer4, through the classifier).
"""


@dataclass
class ConceptsPanel:
    """The panel's components, by the names the handlers' results (:mod:`.concepts_handlers`) use."""

    concept_kind: gr.Radio
    concept_k: gr.Slider
    concept_button: gr.Button
    concept_tiles: gr.Gallery
    concept_legend: gr.Markdown
    concept_note: gr.Markdown
    concept_channels: gr.State  # the CRP tiles' channels, for a click
    concept_stage: gr.State


def build_concepts_panel() -> ConceptsPanel:
    """Lay out the accordion; :func:`wire_concepts_panel` connects it."""
    with gr.Accordion("What the network looks for: concepts at this stage (CRP, DFF)", open=False, elem_id="concepts"):
        gr.Markdown(CONCEPTS_INTRO)
        with gr.Row():
            kind = OpenRadio(c.CONCEPT_KINDS, value="crp", label="Concepts by", elem_id="concept-kind", scale=3)
            k = OpenSlider(2, 12, value=c.DEFAULT_K["crp"], step=1, label="How many (k)", elem_id="concept-k", scale=2)
            button = gr.Button(c.FIND, elem_id="concepts-run", scale=1)
        tiles = gr.Gallery(
            label="Concepts", columns=6, height=240, elem_id="concept-tiles", object_fit="contain",
            format=IMAGE_FORMAT, allow_preview=False,
        )  # fmt: skip
        legend = gr.Markdown(elem_id="concept-legend", latex_delimiters=[])
        note = gr.Markdown(elem_id="concept-note", latex_delimiters=[])
    return ConceptsPanel(
        concept_kind=kind, concept_k=k, concept_button=button, concept_tiles=tiles, concept_legend=legend,
        concept_note=note, concept_channels=gr.State([]), concept_stage=gr.State("layer4"),
    )  # fmt: skip


def wire_concepts_panel(
    panel: ConceptsPanel, *, analysis: gr.State, controls: dict[str, Any], features: gr.Gallery
) -> None:
    """Connect the panel to the tab's ``controls`` (arch, stage, target, opacity) and its feature maps."""
    private = {"api_visibility": "private"}
    panel.concept_kind.change(c.concept_defaults, panel.concept_kind, panel.concept_k, queue=False, **private)
    gr.on(
        [panel.concept_kind.change, controls["stage"].change, controls["arch"].change],
        c.concepts_button,
        [controls["arch"], panel.concept_kind, controls["stage"]],
        panel.concept_button,
        queue=False,
        **private,
    )
    panel.concept_button.click(
        cancellable(c.concepts_view),
        [analysis, panel.concept_kind, controls["stage"], controls["target"], panel.concept_k, controls["opacity"]],
        outputs_of(c.ConceptsView, panel),
        concurrency_id="checks",
        **private,
    )
    panel.concept_tiles.select(
        c.picked_concept,
        [analysis, panel.concept_channels, panel.concept_stage],
        outputs_of(c.PickedConcept, panel, features=features),
        concurrency_id="inference",
        **private,
    )
