"""The Explain tab's lower half: the gallery comparing every quick method, the "How far to trust
this map" accordion, and the ``/evaluate`` API endpoint that runs the same checks for scripts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ..explain.metric_cards import METRICS, POINTING
from . import metric_cards_handlers as mc
from . import trust_handlers as t
from .cancellation import cancellable
from .components import OpenRadio, OpenSlider
from .evaluate_api import evaluate
from .events import extend, outputs_of
from .method_gallery import method_gallery
from .settings import IMAGE_FORMAT

TRUST_INTRO = """Two checks of the map above, computed only when you ask (each costs dozens of forward passes):

* **Deletion and insertion** (Petsiuk et al., 2018): remove the pixels the map ranks highest, most important first,
  and watch the class probability fall; or reveal them over a blurred photo and watch it rise. A faithful map makes
  deletion fall fast (low area under the curve) and insertion rise fast (high area); a random map shows chance.
  If the network still knows the blurred photo (both curves flat), pick the **mean colour** baseline: removed pixels
  then show the photo's average colour, with no shapes left at all.
* **Randomisation** (Adebayo et al., 2018): re-initialise the network from the top down and recompute the map. A map
  that survives random weights (high rank correlation ρ) shows the photo's edges, not what the network learned.
* **Metric cards**: ROAD, the drop in confidence, sparseness, complexity, max-sensitivity, the random-logit test, the
  pointing games (give the object as a box `x0,y0,x1,y1` in the photo's pixels, or a class such as `cat` to
  segment) and the deletion and insertion areas, each beside what a random map scores on this photo.
"""


@dataclass
class TrustPanel:
    """The panel's components, by the names the handlers' results (:mod:`.trust_handlers`) use."""

    show_gallery: gr.Checkbox
    gallery: gr.Gallery
    steps: gr.Slider
    baseline: gr.Radio  # what removed pixels show: the engine's baseline name
    faith_button: gr.Button
    rank_button: gr.Button
    sanity_button: gr.Button
    faith_plot: gr.Plot
    faith_summary: gr.Markdown
    ranking: gr.Dataframe
    rank_note: gr.Markdown
    sanity: gr.Gallery
    verdict: gr.Markdown
    metrics: gr.CheckboxGroup  # the metric names
    box: gr.Textbox  # "x0,y0,x1,y1" in the photo's pixels
    object_class: gr.Textbox  # a class the segmentation model knows
    compare: gr.Checkbox  # every quick method's cards too, for the figure
    cards_button: gr.Button
    cards_table: gr.Dataframe
    cards_plot: gr.Plot
    cards_note: gr.Markdown


def build_trust_panel() -> TrustPanel:
    """Lay out the gallery and the accordion; ``wire_trust_panel`` connects them."""
    show = gr.Checkbox(value=False, label="Compare every quick method side by side", elem_id="show-methods")
    gallery = gr.Gallery(  # two rows of six at full width
        label="Every quick method at this stage, same class", columns=6, height=500, visible=False,
        elem_id="methods", object_fit="contain", format=IMAGE_FORMAT,
    )  # fmt: skip
    with gr.Accordion("How far to trust this map", open=False, elem_id="trust"):
        gr.Markdown(TRUST_INTRO)
        with gr.Row():
            # Any value reaches the core's check (crafted requests included): its sentence, never Gradio's.
            steps = OpenSlider(
                4, 32, value=t.DEFAULT_STEPS, step=4, label="Points per curve (fewer: faster)", elem_id="steps"
            )
            baseline = OpenRadio(  # an input of /evaluate
                t.BASELINE_CHOICES, value=t.DEFAULT_BASELINE, label="Baseline (what removed pixels show)",
                elem_id="baseline",
            )  # fmt: skip
        with gr.Row():
            faith_btn = gr.Button(t.FAITH_LABEL, elem_id="faith-run")
            rank_btn = gr.Button(t.RANK_LABEL, elem_id="rank-run")
            sanity_btn = gr.Button(t.SANITY_LABEL, elem_id="sanity-run")
        plot = gr.Plot(label="Deletion and insertion", show_label=False, elem_id="faith-plot")  # titled inside
        faith_md = gr.Markdown(elem_id="faith-summary", latex_delimiters=[])
        table = gr.Dataframe(
            headers=t.RANK_HEADERS, label="Every quick method on this photo, best first", interactive=False,
            elem_id="ranking", wrap=True,
        )  # fmt: skip
        rank_md = gr.Markdown(latex_delimiters=[])
        sanity = gr.Gallery(
            label="The map as the network is randomised, one more part at each step, top down "
            "(ρ: rank correlation with the original map)",
            columns=6, height=240, elem_id="sanity", object_fit="contain", format=IMAGE_FORMAT,
        )  # fmt: skip
        verdict = gr.Markdown(elem_id="verdict", latex_delimiters=[])
        cards = _build_cards()
    return TrustPanel(
        show_gallery=show, gallery=gallery, steps=steps, baseline=baseline, faith_button=faith_btn,
        rank_button=rank_btn, sanity_button=sanity_btn, faith_plot=plot, faith_summary=faith_md, ranking=table,
        rank_note=rank_md, sanity=sanity, verdict=verdict, **cards,
    )  # fmt: skip


def _build_cards() -> dict[str, Any]:
    """The metric cards' controls and results, inside the accordion."""
    metrics = gr.CheckboxGroup(
        list(METRICS), value=[m for m in METRICS if m not in POINTING],
        label="Metrics", elem_id="card-metrics",
    )  # fmt: skip
    with gr.Row():
        box = gr.Textbox(label="Object box x0,y0,x1,y1 (photo pixels)", placeholder="e.g. 40,30,400,290",
                         elem_id="card-box")  # fmt: skip
        object_class = gr.Textbox(label="…or object class to segment", placeholder="e.g. cat", elem_id="card-object")
        compare = gr.Checkbox(value=False, label="Compare every quick method (slower)", elem_id="card-compare")
    button = gr.Button(mc.CARDS_LABEL, elem_id="cards-run")
    table = gr.Dataframe(headers=mc.CARD_HEADERS, label="Metric cards of this map", interactive=False,
                         elem_id="cards", wrap=True)  # fmt: skip
    plot = gr.Plot(label="Methods on every metric", show_label=False, elem_id="cards-plot")
    note = gr.Markdown(elem_id="cards-note", latex_delimiters=[])
    return {
        "metrics": metrics, "box": box, "object_class": object_class, "compare": compare, "cards_button": button,
        "cards_table": table, "cards_plot": plot, "cards_note": note,
    }  # fmt: skip


def clear_results() -> t.TrustResults:
    """Empty results: what a new photo leaves in the panel."""
    return t.TrustResults()


PhotoFollowup = extend(
    t.TrustButtons,
    "PhotoFollowup",
    {"cards_button": Any, **t.TrustResults.__annotations__, "gallery_due": Any},
    doc="What a new photo changes in the panel, in one request: the checks' labels with this photo's expected "
    "times, the last photo's results cleared, and the method gallery's key when the gallery shows.",
)


def photo_followup(
    analysis: str | None, stage: str, method: str, versus: int | None, steps: int, metrics: Any, compare: bool,
    show_gallery: bool,
) -> PhotoFollowup:  # fmt: skip
    """The panel after a new photo (``analysis``: its key). One request rather than one per part: the page
    fires each at once when the photo's answer is in, on the same few connections as the page's own.
    The method gallery is only due while it shows (``gallery_due`` then changes, and its event computes
    it); hidden, a new photo costs it nothing."""
    return PhotoFollowup(
        *t.trust_buttons(analysis, stage, method, versus, steps),
        mc.cards_button(analysis, stage, method, steps, metrics, compare),
        *clear_results(),
        gallery_due=analysis if show_gallery else gr.skip(),
    )


def wire_trust_panel(panel: TrustPanel, *, analysis: gr.State, controls: dict[str, Any], photo_done: list[Any]) -> None:
    """Connect the panel. ``controls`` are the tab's stage, target, versus, method, opacity, image, arch, weights
    and checkpoint components; ``photo_done`` the events after which a new analysis is in the state."""
    c = controls
    buttons = outputs_of(t.TrustButtons, panel)
    heavy = {"concurrency_id": "inference", "api_visibility": "private"}
    # Checks take seconds: a queue of their own, so that new photos are not held up behind them.
    checks = {"concurrency_id": "checks", "api_visibility": "private"}
    gallery_inputs = [analysis, panel.show_gallery, c["stage"], c["target"], c["versus"], c["opacity"]]
    gallery_triggers = [panel.show_gallery.change, c["stage"].change, c["target"].input, c["versus"].input]
    label_inputs = [analysis, c["stage"], c["method"], c["versus"], panel.steps]
    label_triggers = [c["stage"].change, c["method"].change, c["versus"].change, panel.steps.change]
    gr.on(label_triggers, t.trust_buttons, label_inputs, buttons, api_visibility="private", queue=False)
    card_label_inputs = [analysis, c["stage"], c["method"], panel.steps, panel.metrics, panel.compare]
    card_triggers = [c["stage"].change, c["method"].change, panel.steps.change, panel.metrics.change,
                     panel.compare.change]  # fmt: skip
    gr.on(card_triggers, mc.cards_button, card_label_inputs, panel.cards_button, api_visibility="private", queue=False)
    due = gr.State()  # the key of the analysis the shown gallery is due for
    gr.on([*gallery_triggers, c["opacity"].release, due.change], cancellable(method_gallery), gallery_inputs,
          panel.gallery, **heavy)  # fmt: skip
    followup_inputs = [analysis, c["stage"], c["method"], c["versus"], panel.steps, panel.metrics, panel.compare,
                       panel.show_gallery]  # fmt: skip
    # Queued, though quick: Gradio's page hears of a changed state (``due``) only over the queue's stream.
    for event in photo_done:
        event.then(photo_followup, followup_inputs, outputs_of(PhotoFollowup, panel, gallery_due=due),
                   api_visibility="private", concurrency_id="labels", concurrency_limit=None)  # fmt: skip
    panel.faith_button.click(
        cancellable(t.faithfulness_panel),
        [analysis, c["stage"], c["target"], c["versus"], c["method"], panel.steps, panel.baseline],
        outputs_of(t.FaithfulnessView, panel), **checks,
    )  # fmt: skip
    panel.rank_button.click(
        cancellable(t.ranking_panel), [analysis, c["stage"], c["target"], c["versus"], panel.steps, panel.baseline],
        outputs_of(t.RankingView, panel), **checks,
    )  # fmt: skip
    panel.sanity_button.click(
        cancellable(t.sanity_panel), [analysis, c["method"], c["stage"], c["target"], c["versus"], c["opacity"]],
        outputs_of(t.SanityView, panel), **checks,
    )  # fmt: skip
    panel.cards_button.click(
        cancellable(mc.metric_cards_panel),
        [analysis, c["stage"], c["target"], c["versus"], c["method"], panel.steps, panel.baseline, panel.metrics,
         panel.box, panel.object_class, panel.compare],
        outputs_of(mc.CardsView, panel), **checks,
    )  # fmt: skip
    # /evaluate: the checks as JSON for scripts. The class arguments are free text (an index or a
    # name), so they get their own hidden boxes rather than the pickers, which accept listed values only.
    # The baseline comes next, from the panel's radio: its value makes it optional for scripts; then the
    # metric cards' inputs, empty by default so that the answers of existing scripts do not change.
    target_text = gr.Textbox(visible=False, label="target (class index or name; empty: the top class)")
    versus_text = gr.Textbox(visible=False, label="versus (class index or name; empty: none)")
    metrics_text = gr.Textbox(
        "", visible=False, label="metrics (all, or a comma list of names; empty: no metric cards)"
    )
    box_text = gr.Textbox("", visible=False, label="box (x0,y0,x1,y1 in the photo's pixels; empty: none)")
    object_text = gr.Textbox("", visible=False, label="object (a class to segment, e.g. cat; empty: none)")
    gr.Button(visible=False).click(
        cancellable(evaluate),
        [
            c["image"],
            c["arch"],
            c["weights"],
            c["checkpoint"],
            c["stage"],
            c["method"],
            target_text,
            versus_text,
            panel.baseline,
            metrics_text,
            box_text,
            object_text,
        ],
        gr.JSON(visible=False),
        api_name="evaluate",
        concurrency_id="checks",
    )
