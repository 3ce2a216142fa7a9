"""The Transfer tab: the ResNet backbone inside torchvision's segmentation and detection models.
Also wires the ``/transfer`` API endpoint."""

from __future__ import annotations

import gradio as gr

from ..core.model import STAGES
from ..transfer.weights import MODELS, TASKS, backbones_for
from .components import SafeImage, example_photos
from .settings import IMAGE_FORMAT
from .transfer_handlers import (
    OWN_SIZE,
    backbone_choices,
    backbone_figure,
    model_choices,
    pick_stage,
    reset_target,
    transfer,
)

SIZES = [("the model's own (520 segment, 800 detect)", OWN_SIZE), ("640", 640), ("480", 480), ("320", 320)]


def build_transfer_tab() -> None:
    """Lay out the tab inside an open ``gr.Tab`` and wire its events; nothing in it talks to other tabs."""
    gr.Markdown(
        "The same ResNet at work in segmentation (DeepLabV3, FCN) and detection (Faster R-CNN, Mask R-CNN, "
        "RetinaNet): the photo segmented or boxed, Grad-CAM at every stage of the backbone for a class or an "
        "object of your choice, and the backbone shown to be our ResNet."
    )
    with gr.Row():
        image = SafeImage(type="filepath", image_mode=None, label="Photo", height=260, elem_id="transfer-photo")
        with gr.Column():
            task = gr.Radio(list(TASKS), value="segment", label="Task")
            # Custom values allowed: the menus' choices follow the task in the page, but an API call sees only
            # the first ones; the core checks every name and answers a wrong one with a sentence.
            model = gr.Dropdown(
                list(MODELS["segment"]), value=MODELS["segment"][0], label="Model", allow_custom_value=True
            )
            backbone = gr.Dropdown(
                list(backbones_for(task="segment", model=MODELS["segment"][0])),
                value="resnet50",
                label="Backbone (detection: ResNet-50 only)",
                allow_custom_value=True,
            )
            size = gr.Dropdown(
                SIZES, value=OWN_SIZE, label="Input short side (smaller is faster)", elem_id="transfer-size"
            )
        with gr.Column():
            threshold = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Detection score threshold")
            target = gr.Dropdown(
                [],
                value=None,
                label="Explain (after a run: a class found, or a detection)",
                elem_id="transfer-target",
                allow_custom_value=True,
            )
            stage = gr.Dropdown(list(STAGES), value="layer4", label="Large map: Grad-CAM stage")
            run = gr.Button("Run", variant="primary", elem_id="transfer-run")
    gr.Examples(example_photos(), inputs=[image])
    summary = gr.Markdown(elem_id="transfer-summary")  # above the pictures: an UNTRAINED banner must be seen
    with gr.Row():
        picture = gr.Image(label="Masks or boxes", interactive=False, height=320, format=IMAGE_FORMAT)
        heat = gr.Image(label="Grad-CAM at the chosen stage", interactive=False, height=320, format=IMAGE_FORMAT)
    legend = gr.Markdown(elem_id="transfer-legend")
    strip = gr.Gallery(
        label="Grad-CAM at every backbone stage, same target",
        columns=5,
        height=220,
        elem_id="transfer-strip",
        format=IMAGE_FORMAT,
        type="filepath",
    )
    features = gr.Gallery(
        label="Backbone feature maps: the most active channels of each stage",
        columns=5,
        height=260,
        elem_id="transfer-features",
        format=IMAGE_FORMAT,
    )
    diagram = gr.Plot(
        backbone_figure("segment", MODELS["segment"][0], "resnet50"), show_label=False, elem_id="transfer-diagram"
    )

    task.change(model_choices, [task, backbone], [model, backbone], api_name=False)
    model.change(backbone_choices, [task, model, backbone], [backbone], api_name=False)
    for control in (image, task, model, backbone, size, threshold):
        control.change(reset_target, None, [target], api_name=False, queue=False)
    for control in (model, backbone):
        control.change(backbone_figure, [task, model, backbone], [diagram], api_name=False)
    inputs = [image, task, model, backbone, threshold, size, target, stage]
    outputs = [picture, legend, heat, strip, features, summary, target]
    run.click(transfer, inputs, outputs, api_name="transfer", concurrency_id="checks")
    # Only picking an option reruns (.select): neither the run setting the menu nor leaving it (which fires
    # .input in Gradio's dropdown) may start another.
    target.select(transfer, inputs, outputs, api_name=False, concurrency_id="checks")
    stage.change(pick_stage, [strip, stage], [heat], api_name=False, queue=False)
