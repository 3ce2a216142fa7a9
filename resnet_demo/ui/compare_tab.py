"""The Compare depths tab: one photo through ResNet-50, 101 and 152, side by side.
Also wires the ``/compare`` API endpoint."""

from __future__ import annotations

import gradio as gr

from ..core.weights import ARCH_LABELS, ARCHES
from .cancellation import cancellable
from .compare_handlers import Compared, compare, field_name
from .components import SafeImage, example_photos
from .events import outputs_of
from .model_choice import WEIGHT_CHOICES
from .settings import IMAGE_FORMAT


def build_compare_tab(*, weights: str) -> None:
    """Lay out the tab inside an open ``gr.Tab`` and wire its event; nothing in it talks to other tabs."""
    gr.Markdown("The same photo through ResNet-50, 101 and 152: what does depth buy?")
    with gr.Row():
        image = SafeImage(type="filepath", image_mode=None, label="Photo", height=240)
        with gr.Column():
            # The named weights only: the three depths share no fine-tuned checkpoint.
            # Any value reaches the handler, which answers a wrong one with the app's sentence, not Gradio's.
            weights_in = gr.Dropdown(WEIGHT_CHOICES[:3], value=weights, label="Weights", allow_custom_value=True)
            run = gr.Button("Compare", variant="primary", elem_id="compare-run")
    gr.Examples(example_photos(), inputs=[image])
    panels = {}  # by Compared's field names: a depth without its fields fails here, at build time
    with gr.Row():
        for arch in ARCHES:
            with gr.Column():
                panels[field_name(arch, "top5")] = gr.Label(num_top_classes=5, label=ARCH_LABELS[arch])
                panels[field_name(arch, "heatmap")] = gr.Image(
                    label=f"{ARCH_LABELS[arch]}: layer4 Grad-CAM", interactive=False, height=220, format=IMAGE_FORMAT
                )
                panels[field_name(arch, "summary")] = gr.Markdown()
    outputs = outputs_of(Compared, **panels)
    run.click(cancellable(compare), [image, weights_in], outputs, api_name="compare", concurrency_id="checks")
