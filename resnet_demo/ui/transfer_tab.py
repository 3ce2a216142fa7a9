"""The Transfer tab: the ResNet backbone inside torchvision's segmentation and detection models.
Also wires the ``/transfer`` API endpoint."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..core.model import STAGES
from ..transfer.weights import MODELS, TASKS, backbones_for
from .cancellation import cancellable
from .components import OpenRadio, OpenSlider, SafeImage, example_photos, stage_gallery
from .events import outputs_of
from .settings import IMAGE_FORMAT
from .transfer_handlers import (
    OWN_SIZE,
    ModelMenus,
    Transferred,
    backbone_choices,
    backbone_figure,
    model_choices,
    pick_stage,
    reset_target,
    transfer,
)

SIZES = [("the model's own (520 segment, 800 detect)", OWN_SIZE), ("640", 640), ("480", 480), ("320", 320)]


@dataclass
class TransferTab:
    """The tab's components, by the names of the handlers' results (:class:`.Transferred`, :class:`.ModelMenus`)."""

    image: SafeImage
    task: gr.Radio
    model: gr.Dropdown
    backbone: gr.Dropdown
    size: gr.Dropdown
    threshold: gr.Slider
    target: gr.Dropdown  # what to explain: a class found, or a detection
    stage: gr.Dropdown
    run: gr.Button
    summary: gr.Markdown
    picture: gr.Image
    heat: gr.Image
    legend: gr.Markdown
    strip: gr.Gallery
    features: gr.Gallery
    diagram: gr.Plot


def build_transfer_tab() -> TransferTab:
    """Lay out the tab inside an open ``gr.Tab`` and wire its events; nothing in it talks to other tabs."""
    gr.Markdown(
        "The same ResNet at work in segmentation (DeepLabV3, FCN) and detection (Faster R-CNN, Mask R-CNN, "
        "RetinaNet): the photo segmented or boxed, Grad-CAM at every stage of the backbone for a class or an "
        "object of your choice, and the backbone shown to be our ResNet."
    )
    with gr.Row():
        image = SafeImage(type="filepath", image_mode=None, label="Photo", height=260, elem_id="transfer-photo")
        with gr.Column():
            task = OpenRadio(list(TASKS), value="segment", label="Task")
            # Any value goes through to the core, which answers a wrong one with the command line's sentence:
            # the menus' choices follow the task in the page, and an API call sees only the first ones.
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
                SIZES,
                value=OWN_SIZE,
                label="Input short side (smaller is faster)",
                elem_id="transfer-size",
                allow_custom_value=True,
            )
        with gr.Column():
            threshold = OpenSlider(0.0, 1.0, value=0.5, step=0.05, label="Detection score threshold")
            target = gr.Dropdown(
                [],
                value=None,
                label="Explain (after a run: a class found, or a detection)",
                elem_id="transfer-target",
                allow_custom_value=True,
            )
            stage = gr.Dropdown(
                list(STAGES), value="layer4", label="Large map: Grad-CAM stage", allow_custom_value=True
            )
            run = gr.Button("Run", variant="primary", elem_id="transfer-run")
    gr.Examples(example_photos(), inputs=[image])
    summary = gr.Markdown(elem_id="transfer-summary")  # above the pictures: an UNTRAINED banner must be seen
    with gr.Row():
        picture = gr.Image(label="Masks or boxes", interactive=False, height=320, format=IMAGE_FORMAT)
        heat = gr.Image(label="Grad-CAM at the chosen stage", interactive=False, height=320, format=IMAGE_FORMAT)
    legend = gr.Markdown(elem_id="transfer-legend")
    strip = stage_gallery(
        label="Grad-CAM at every backbone stage, same target", elem_id="transfer-strip", height=220, type="filepath"
    )
    features = stage_gallery(
        label="Backbone feature maps: the most active channels of each stage", elem_id="transfer-features", height=260
    )
    diagram = gr.Plot(
        backbone_figure("segment", MODELS["segment"][0], "resnet50"), show_label=False, elem_id="transfer-diagram"
    )
    tab = TransferTab(
        image=image, task=task, model=model, backbone=backbone, size=size, threshold=threshold, target=target,
        stage=stage, run=run, summary=summary, picture=picture, heat=heat, legend=legend, strip=strip,
        features=features, diagram=diagram,
    )  # fmt: skip
    _wire(tab)
    return tab


def _wire(t: TransferTab) -> None:
    """The tab's events: only ``/transfer`` is in the API."""
    private = {"api_visibility": "private"}
    menus = [t.task, t.model, t.backbone]
    t.task.change(model_choices, [t.task, t.backbone], outputs_of(ModelMenus, t), **private)
    t.model.change(backbone_choices, menus, t.backbone, **private)
    for control in (t.image, *menus, t.size, t.threshold):
        control.change(reset_target, None, t.target, queue=False, **private)
    for control in (t.model, t.backbone):
        control.change(backbone_figure, menus, t.diagram, **private)
    # The API's parameters, in their order: scripts call /transfer by position.
    inputs = [t.image, *menus, t.threshold, t.size, t.target, t.stage]
    outputs = outputs_of(Transferred, t)
    t.run.click(cancellable(transfer), inputs, outputs, api_name="transfer", concurrency_id="checks")
    # Only picking an option reruns (.select): neither the run setting the menu nor leaving it (which fires
    # .input in Gradio's dropdown) may start another.
    t.target.select(cancellable(transfer), inputs, outputs, concurrency_id="checks", **private)
    t.stage.change(pick_stage, [t.strip, t.stage], t.heat, queue=False, **private)
