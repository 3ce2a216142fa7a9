"""The Transfer tab: the ResNet backbone inside torchvision's segmentation and detection models.
Also wires the ``/transfer`` API endpoint."""

from __future__ import annotations

import gradio as gr

from ..model import STAGES
from ..transfer.weights import BACKBONES, MODELS, TASKS
from .components import SafeImage, example_photos
from .settings import IMAGE_FORMAT
from .transfer_handlers import model_choices, transfer


def build_transfer_tab() -> None:
    """Lay out the tab inside an open ``gr.Tab`` and wire its events; nothing in it talks to other tabs."""
    gr.Markdown(
        "The same ResNet at work in segmentation (DeepLabV3, FCN) and detection (Faster R-CNN, Mask R-CNN, "
        "RetinaNet): the photo segmented or boxed, and the backbone shown to be our ResNet, with Grad-CAM."
    )
    with gr.Row():
        image = SafeImage(type="filepath", image_mode=None, label="Photo", height=260)
        with gr.Column():
            task = gr.Radio(list(TASKS), value="segment", label="Task")
            model = gr.Dropdown(list(MODELS["segment"]), value=MODELS["segment"][0], label="Model")
            backbone = gr.Dropdown(list(BACKBONES), value="resnet50", label="Backbone (detection: ResNet-50 only)")
            threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Detection score threshold")
            stage = gr.Dropdown(list(STAGES), value="layer4", label="Grad-CAM stage")
            run = gr.Button("Run", variant="primary", elem_id="transfer-run")
    gr.Examples(example_photos(), inputs=[image])
    with gr.Row():
        picture = gr.Image(label="Masks or boxes", interactive=False, height=320, format=IMAGE_FORMAT)
        heat = gr.Image(label="Grad-CAM at the backbone stage", interactive=False, height=320, format=IMAGE_FORMAT)
    legend = gr.Markdown()
    summary = gr.Markdown()
    task.change(model_choices, [task], [model], api_name=False)
    run.click(
        transfer,
        [image, task, model, backbone, threshold, stage],
        [picture, legend, heat, summary],
        api_name="transfer",
        concurrency_id="checks",
    )
