"""The Fine-tune tab: a zip of class folders (or a generated sample set) in, a checkpoint
for the Explain tab out, with live curves, a cancel button and an honest time estimate.

The handlers are in :mod:`.finetune_handlers`, the server's one running job in :mod:`.finetune_job`.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..core.weights import ARCHES
from . import finetune_handlers as h
from .events import outputs_of
from .model_choice import UPLOAD, WEIGHT_CHOICES
from .settings import TRAINING_QUEUE

IMAGE_SIZES = (128, 160, 192, 224)
FREEZE_CHOICES = [
    ("Head only (fastest)", "head"),
    ("layer4 + head", "layer4"),
    ("Everything (slowest)", "none"),
]

INTRO = """### Fine-tune on your own classes
Upload a **.zip of class folders** (one sub-folder of images per class; or `train/` and `val/` folders
each holding the class folders), or generate a small **sample set** of coloured shapes. The model
starts from the chosen weights (ImageNet, or random to train from scratch) with a new head for your
classes. The result loads in the Explain tab.
"""


@dataclass
class FinetuneTab:
    """The components the app wires to the Explain tab ("use this model"), the tests look at, and
    the handlers' results (:class:`.PreparedData`, :class:`.FinetuneProgress`) name."""

    arch: gr.Radio  # the architecture of the checkpoint: set the Explain tab's model to it
    curves: gr.Plot
    checkpoint: gr.File  # the finished checkpoint (best.pth), to download
    use_button: gr.Button  # "use this model": interactive once a checkpoint exists
    dataset: gr.State  # the prepared data folder (str) of this session
    data_summary: gr.Markdown
    status: gr.Markdown


def build_finetune_tab() -> FinetuneTab:
    """Lay out the tab inside an open ``gr.Tab``/``gr.Blocks`` and wire its events."""
    gr.Markdown(INTRO)
    dataset = gr.State(None)  # the prepared data folder (str) of this session
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            data_zip = gr.File(label="Zip of class folders", file_types=[".zip"], type="filepath")
            sample_button = gr.Button("Generate the sample set")
            data_summary = gr.Markdown("No data yet.")
        with gr.Column(scale=1, min_width=280):
            arch = gr.Radio(list(ARCHES), value="resnet50", label="Model")
            # The names the Explain tab's menu uses, so that a message can point to either.
            start = [(label, value) for label, value in WEIGHT_CHOICES if value != UPLOAD]
            weights = gr.Radio(start, value="imagenet-v2", label="Weights", info="what training starts from")
            freeze = gr.Radio(FREEZE_CHOICES, value="layer4", label="What trains")
            with gr.Row():
                epochs = gr.Slider(1, 50, value=5, step=1, label="Epochs")
                batch_size = gr.Slider(2, 128, value=16, step=1, label="Batch size")
            with gr.Row():
                lr = gr.Number(0.01, label="Learning rate (peak, SGD)", minimum=0)
                image_size = gr.Dropdown(list(IMAGE_SIZES), value=224, label="Image size (px)")
            estimate_button = gr.Button("Estimate time")
            estimate = gr.Markdown()
    with gr.Row():
        start_button = gr.Button("Start fine-tuning", variant="primary")
        cancel_button = gr.Button("Cancel", variant="stop")
    status = gr.Markdown()
    curves = gr.Plot(label="Training curves")
    with gr.Row():
        checkpoint = gr.File(label="Checkpoint (best validation top-1)", interactive=False)
        use_button = gr.Button("Use this model in the Explain tab", interactive=False)

    tab = FinetuneTab(
        arch=arch, curves=curves, checkpoint=checkpoint, use_button=use_button, dataset=dataset,
        data_summary=data_summary, status=status,
    )  # fmt: skip
    data = {"api_visibility": "private", "concurrency_id": "finetune-data"}
    data_zip.upload(h.prepare_upload, data_zip, outputs_of(h.PreparedData, tab), **data)
    sample_button.click(h.generate_sample, None, outputs_of(h.PreparedData, tab), **data)
    estimate_button.click(
        h.estimate_time,
        [dataset, arch, epochs, batch_size, freeze, image_size],
        estimate,
        api_visibility="private",
        concurrency_id="finetune-estimate",
    )
    settings = [dataset, arch, epochs, lr, batch_size, freeze, image_size, weights]
    progress = outputs_of(h.FinetuneProgress, tab)
    start_button.click(h.run_finetune, settings, progress, api_visibility="private", **TRAINING_QUEUE)
    cancel_button.click(h.cancel_finetune, None, status, api_visibility="private", queue=False)
    return tab
