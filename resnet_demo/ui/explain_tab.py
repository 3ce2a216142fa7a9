"""The Explain tab: pick a model, drop in a photo, see the top-5, the map of any stage,
class (or class versus class) and method, the map of every stage and their fusion, every
quick method side by side, how far to trust the map, and the feature maps. Also wires the
``/explain``, ``/predict`` and ``/evaluate`` API endpoints, which take this tab's inputs."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import gradio as gr

from . import example_handlers as eh
from . import explain_handlers as h
from . import method_menu as menu
from . import outputs as out
from .browser_views import STAGE_FROM_STRIP
from .cancellation import cancellable
from .components import OpenRadio, OpenSlider, SafeImage, example_photos, own_cache, stage_gallery
from .concepts_panel import ConceptsPanel, build_concepts_panel, wire_concepts_panel
from .events import outputs_of
from .inline_images import inline_images
from .model_choice import ARCH_CHOICES, WEIGHT_CHOICES, checkpoint_visibility, weights_status
from .settings import IMAGE_FORMAT, INFERENCE_LIMIT
from .trust_panel import TrustPanel, build_trust_panel, wire_trust_panel
from .zerogpu import on_gpu


@dataclass
class ExplainTab:
    """The tab's components; the app wires the model pickers and the explain event to other tabs.

    The handlers' named results (:class:`~.explain_handlers.Explained` and the others) name these fields.
    """

    arch: gr.Radio
    weights: gr.Dropdown
    checkpoint: gr.File  # a fine-tuned .pth, shown while the weights picker says so
    image: SafeImage
    run: gr.Button
    top5: gr.Label
    stage: gr.Radio
    view: gr.Radio  # the crop the model saw, or the whole photo
    target: gr.Dropdown  # the class to explain
    versus: gr.Dropdown  # an optional second class: "why the first and not this one"
    method: gr.Dropdown
    opacity: gr.Slider
    heatmap: gr.Image  # /explain's map, hidden: the page shows the slider
    slider: gr.ImageSlider  # the photo against its map, drag to compare
    caption: gr.Markdown
    raw: gr.File  # the map before upsampling, as .npy
    strip: gr.Gallery  # the map of every stage
    fusion: gr.Gallery  # every stage's map fused: one tile
    concepts: ConceptsPanel  # "What the network looks for": CRP's and DFF's concepts at the stage
    trust: TrustPanel  # the method gallery and "How far to trust this map"
    features: gr.Gallery
    examples: Any = None  # gr.Examples, made once the components its cached answers fill exist
    explained: Any = None  # the explain event, for what must follow a new photo or model


def build_explain_tab(
    *, arch: str, weights: str, checkpoint: str | None, status: gr.Markdown, analysis: gr.State
) -> ExplainTab:
    """Lay out the tab inside an open ``gr.Tab`` and wire its events.

    ``status`` is the weights banner and ``analysis`` the user's state, both above the tabs.
    """
    first = h.Settings(arch=arch, weights=weights, checkpoint=checkpoint)
    with gr.Row():
        with gr.Column(scale=2, min_width=300) as left:
            # The inputs of /explain, /predict and /evaluate take any value (OpenRadio, OpenSlider, custom values):
            # the core checks each and answers a wrong one in the command line's sentence, never Gradio's.
            arch_in = OpenRadio(ARCH_CHOICES, value=arch, label="Model", elem_id="arch")
            weights_in = gr.Dropdown(
                WEIGHT_CHOICES, value=weights, label="Weights", elem_id="weights", allow_custom_value=True
            )
            checkpoint_in = gr.File(
                label="Fine-tuned checkpoint (.pth)",  # the API parameter's name: it takes .safetensors too
                file_types=[".pth", ".pt", ".safetensors"],
                value=checkpoint,
                visible=checkpoint is not None,
                type="filepath",
            )
            image = SafeImage(
                type="filepath",
                image_mode=None,  # keep the file as uploaded: our loader handles every mode
                sources=["upload", "webcam", "clipboard"],
                label="Photo",
                elem_id="photo",
                height=320,
            )
            run = gr.Button("Explain", variant="primary", elem_id="run")
        with gr.Column(scale=3, min_width=400):
            top5 = out.Label(num_top_classes=5, label="Top-5 predictions", elem_id="top5")
            with gr.Row():
                stage = OpenRadio(h.STAGE_CHOICES, value=first.stage, label="Stage", elem_id="stage")
                view = OpenRadio(h.VIEW_CHOICES, value=first.view, label="Show on")
            with gr.Row():
                target = gr.Dropdown(
                    [("Top class", h.TOP_CLASS)],
                    value=h.TOP_CLASS,
                    label=f"Explain class (the {h.LISTED_CLASSES} most probable; type any other's name or index)",
                    elem_id="target",
                    allow_custom_value=True,  # a typed name or index: the core finds it, or names the closest
                )
                versus = gr.Dropdown(
                    [("Nothing (explain the class alone)", h.NO_VERSUS)],
                    value=h.NO_VERSUS,
                    label="…versus class (why the first and not this one?)",
                    elem_id="versus",
                    allow_custom_value=True,
                )
            method, opacity = _method_row(arch=arch, first=first)
            heatmap, slider, caption, raw = _map_views()
    with gr.Row(equal_height=True):
        strip = stage_gallery(label="Grad-CAM at every stage, same class", elem_id="strip", height=220, scale=5)
        # A one-tile gallery, so the fused map looks and scales like the strip's tiles.
        fusion = out.Gallery(
            label="Fused (max)", columns=1, height=220, elem_id="fusion", scale=1, min_width=220, format=IMAGE_FORMAT
        )
    concepts = build_concepts_panel()
    trust = build_trust_panel()
    features = stage_gallery(
        label="Feature maps: the most active channels of each stage", elem_id="features", height=260
    )
    tab = ExplainTab(
        arch=arch_in, weights=weights_in, checkpoint=checkpoint_in, image=image, run=run,
        top5=top5, stage=stage, view=view, target=target, versus=versus, method=method, opacity=opacity,
        heatmap=heatmap, slider=slider, caption=caption, raw=raw, strip=strip, fusion=fusion, concepts=concepts,
        trust=trust,
        features=features,
    )  # fmt: skip
    with left:  # under the photo; made last, as the answers it caches fill the components made since
        tab.examples = _examples(tab, first=first, status=status)
    tab.explained = _wire(tab, first=first, status=status, analysis=analysis)
    return tab


def _method_row(*, arch: str, first: h.Settings) -> tuple[gr.Dropdown, OpenSlider]:
    """The method menu (grouped by the question each answers, with its guide below) and the opacity."""
    with gr.Row():
        method = gr.Dropdown(
            menu.method_choices(arch=arch), value=first.method, label="Method", elem_id="method",
            allow_custom_value=True,
        )  # fmt: skip
        opacity = OpenSlider(0.0, 1.0, value=first.opacity, step=0.05, label="Heat-map opacity")
    with gr.Accordion("What each kind of method answers", open=False, elem_id="method-guide"):
        gr.Markdown(menu.method_guide(), latex_delimiters=[])
    return method, opacity


def _map_views() -> tuple[gr.Image, gr.ImageSlider, gr.Markdown, gr.File]:
    """The map's views: /explain's heat map (hidden: the page shows the slider), the photo against
    its map, the caption and the raw map's file."""
    heatmap = out.Image(
        label="Heat map", elem_id="heatmap", format=IMAGE_FORMAT, height=360, interactive=False, visible=False
    )
    slider = out.ImageSlider(
        label="Photo | heat map (drag the handle to compare)",
        elem_id="heatmap-slider",
        format=IMAGE_FORMAT,
        height=360,
        interactive=False,
    )
    caption = gr.Markdown(elem_id="caption", latex_delimiters=[])
    raw = out.File(label="Raw map (.npy, before upsampling)", interactive=False)
    return heatmap, slider, caption, raw


def _examples(tab: ExplainTab, *, first: h.Settings, status: gr.Markdown) -> gr.Examples:
    """The example photos, their answers at the opening settings cached on first click (see
    :func:`.example_handlers.example_answer`), in a cache folder of this server's own."""
    return own_cache(
        gr.Examples(
            example_photos(),
            inputs=[tab.image],
            outputs=outputs_of(eh.ExampleAnswer, tab, status=status),
            fn=functools.partial(eh.example_answer, first=first),
            cache_examples=True,
            cache_mode="lazy",
            label="Examples (click one)",
        )
    )


_QUIET = {"api_visibility": "private", "queue": False}  # instant UI updates: no queue, no API
_VIEW = {"api_visibility": "private", "concurrency_id": "inference", "trigger_mode": "always_last"}


def _wire(tab: ExplainTab, *, first: h.Settings, status: gr.Markdown, analysis: gr.State) -> Any:
    """The tab's events; returns the explain event."""
    model_inputs = [tab.arch, tab.weights, tab.checkpoint]
    tab.weights.change(checkpoint_visibility, tab.weights, tab.checkpoint, api_visibility="private", queue=False)
    gr.on(
        [tab.arch.change, tab.weights.change, tab.checkpoint.change],
        weights_status,
        model_inputs,
        status,
        api_visibility="private",
        concurrency_id="load",
        concurrency_limit=1,
    )
    # The methods' expected times depend on the model and the stage.
    gr.on([tab.arch.change, tab.stage.change], menu.method_picker, [tab.arch, tab.stage], tab.method, **_QUIET)

    above = {"analysis": analysis, "status": status}  # the user's state and the banner: above the tabs
    inputs = [tab.image, *model_inputs, tab.stage, tab.method, tab.opacity, tab.view]
    inference = {"concurrency_id": "inference", "concurrency_limit": INFERENCE_LIMIT, "trigger_mode": "always_last"}
    # The page's own event: /explain's outputs and the new photo's extras in one event of two steps (a
    # chained second event would cost another round trip through the queue before the page is complete).
    # The progress shows on the map alone: an animated overlay on each of a dozen panels costs the
    # visitor's browser more than the server's whole answer.
    page = {
        "fn": _page_handler(h.explain_ui),
        "inputs": inputs,
        "outputs": outputs_of(h.ExplainPage, tab, **above),
        "show_progress_on": tab.slider,
        **inference,
    }
    explained = gr.on([tab.run.click, tab.image.upload], api_visibility="private", **page)
    # Clicking an example fills the photo (no upload event) and shows its cached answer (computed on the
    # first click, for the settings a page opens with); then this visitor's own analysis goes in their state.
    example = tab.examples.load_input_event.then(
        **{**page, "fn": _page_handler(eh.example_followup(first=first))}, api_visibility="private"
    )
    photo_done = [explained, example]
    # /explain for scripts: the same analysis, its outputs as they always were.
    api_outputs = outputs_of(h.Explained, tab, **above)
    gr.Button(visible=False).click(_model_handler(h.run_explain), inputs, api_outputs, api_name="explain", **inference)

    _wire_views(tab, analysis=analysis)
    controls = {
        "stage": tab.stage, "target": tab.target, "versus": tab.versus, "method": tab.method,
        "opacity": tab.opacity, "image": tab.image, "arch": tab.arch, "weights": tab.weights,
        "checkpoint": tab.checkpoint,
    }  # fmt: skip
    wire_trust_panel(tab.trust, analysis=analysis, controls=controls, photo_done=photo_done)
    wire_concepts_panel(tab.concepts, analysis=analysis, controls=controls, features=tab.features)
    # /predict: top-5 only, for scripts. A hidden trigger gives it real components, so
    # gradio_client sees an image input and a label output in the API schema.
    gr.Button(visible=False).click(
        _model_handler(h.predict),
        [tab.image, tab.arch, tab.weights],
        gr.Label(visible=False),
        api_name="predict",
        concurrency_id="inference",
    )
    return explained


def _model_handler(fn: Any) -> Any:
    """A handler that runs a model: cancel stops its work, and on ZeroGPU hardware it holds the GPU."""
    return cancellable(on_gpu(fn))


def _page_handler(fn: Any) -> Any:
    """A model handler of the page's own events: its images travel inside its messages (see inline_images)."""
    return _model_handler(inline_images(fn))


def _wire_views(tab: ExplainTab, *, analysis: gr.State) -> None:
    """Another view of the same photo: another stage or view (the map alone), class, versus class,
    opacity or method. A method without a map at the current stage first moves the stage
    (programmatically: the stage's .input does not fire), then renders once."""
    view_inputs = [analysis, tab.stage, tab.target, tab.versus, tab.method, tab.opacity, tab.view]
    view_outputs = outputs_of(h.MapViews, tab)
    view = {**_VIEW, "show_progress_on": tab.slider}  # on the map alone, as the page's event
    # Another stage or view leaves the strip and the fused map as they are: only the map is drawn and sent.
    # A stage the strip shows is drawn first by the browser itself, from the strip's tile (see browser_views).
    tab.stage.input(None, [tab.stage, tab.strip, tab.slider], tab.slider, js=STAGE_FROM_STRIP, **_QUIET)
    alone = outputs_of(h.MapAlone, tab)
    gr.on([tab.stage.input, tab.view.change], _page_handler(h.restage), view_inputs, alone, **view)
    rerender = _page_handler(h.rerender)
    gr.on([tab.target.input, tab.versus.input, tab.opacity.release], rerender, view_inputs, view_outputs, **view)
    tab.method.input(menu.method_changed, [tab.method, tab.stage], tab.stage, **_QUIET).then(
        rerender, view_inputs, view_outputs, **view
    )
