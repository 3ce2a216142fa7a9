"""The Audit tab: a whole image set explained, each class's maps clustered (SpRAy).
Also wires the ``/audit`` API endpoint."""

from __future__ import annotations

import gradio as gr

from . import audit_handlers as h
from .cancellation import cancellable
from .events import outputs_of
from .model_choice import ARCH_CHOICES, WEIGHT_CHOICES, checkpoint_visibility
from .settings import IMAGE_FORMAT

_INTRO = """
Where does the model look **across a whole data set**? Every image is explained (Grad-CAM at the stage
that suits the crop size), the maps of each class are clustered (spectral relevance analysis,
Lapuschkin et al. 2019), and the odd cluster comes first: a watermark, a border, a background the model
learned instead of the object. Upload a **.zip** of images (class folders give labels and accuracy) or
audit the generated sample set.
"""


def build_audit_tab(*, arch: str, weights: str, checkpoint: str | None = None) -> None:
    """Lay out the tab inside an open ``gr.Tab`` and wire its event; nothing in it talks to other tabs.

    ``weights`` and ``checkpoint`` are the pickers' first values, as the Explain tab's (a checkpoint
    the app started on is shown, as if uploaded)."""
    gr.Markdown(_INTRO)
    gr.Markdown(h.limits_note())
    with gr.Row():
        with gr.Column():
            # Any value reaches the handler, which answers a wrong one with the app's sentence, not Gradio's.
            data_in = gr.Radio(
                [("My zip", "zip"), ("The sample set (coloured shapes)", h.SAMPLE)],
                value="zip",
                label="Data",
                elem_id="audit-data",
            )
            zip_in = gr.File(label="Zip of images", file_types=[".zip"], type="filepath", elem_id="audit-zip")
        with gr.Column():
            arch_in = gr.Dropdown(ARCH_CHOICES, value=arch, label="Architecture", allow_custom_value=True)
            weights_in = gr.Dropdown(WEIGHT_CHOICES, value=weights, label="Weights", allow_custom_value=True)
            checkpoint_in = gr.File(
                label="Fine-tuned checkpoint (.pth)", file_types=[".pth", ".safetensors"], type="filepath",
                value=checkpoint, visible=checkpoint is not None,
            )  # fmt: skip
            with gr.Row():
                run = gr.Button("Audit", variant="primary", elem_id="audit-run")
                stop = gr.Button("Cancel", elem_id="audit-cancel")
    panels = {
        "audit_summary": gr.Markdown(elem_id="audit-summary"),
        "class_table": gr.Dataframe(
            headers=["class", "images", "accuracy", "clusters", "odd cluster's size"],
            label="Per class",
            interactive=False,
            elem_id="audit-classes",
        ),  # fmt: skip
        "clusters": gr.Gallery(
            label="Clusters: mean map, then typical images (the odd cluster first)",
            columns=5,
            elem_id="audit-clusters",
            format=IMAGE_FORMAT,
        ),  # fmt: skip
        "misclassified": gr.Gallery(
            label="Misclassified, with their maps", columns=6, elem_id="audit-misclassified", format=IMAGE_FORMAT
        ),
        "report": gr.File(
            label="Report (report.html opens offline) and every file (zip)",
            file_count="multiple",
            elem_id="audit-report",
        ),  # fmt: skip
    }
    weights_in.change(checkpoint_visibility, weights_in, checkpoint_in, api_visibility="private", queue=False)
    event = run.click(
        cancellable(h.run_audit),
        [data_in, zip_in, arch_in, weights_in, checkpoint_in],
        outputs_of(h.Audited, **panels),
        api_name="audit",
        concurrency_id="checks",
    )
    stop.click(None, None, None, cancels=[event], api_visibility="private", queue=False)
