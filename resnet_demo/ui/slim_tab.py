"""The Slim tab: a fine-tuned checkpoint in, a smaller one out. Structured channel pruning,
a recovery fine-tune (optionally distilled from the unpruned model), live curves, cancel,
and a before/after report of parameters, GMACs, CPU latency and validation top-1.

The handlers are in :mod:`.slim_handlers`; the run shares the server's one training slot
with the Fine-tune tab (:mod:`.finetune_job`).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..slim import MAX_FRACTION
from . import slim_handlers as h
from .events import outputs_of
from .settings import TRAINING_QUEUE

INTRO = """### Slim a fine-tuned model
Removes a fraction of the inner channels of every bottleneck block (the outputs of its 1x1 and 3x3
convolutions: the tensors really shrink), then fine-tunes the smaller model to recover, optionally
learning from the unpruned model's soft predictions (knowledge distillation). The report puts the
parameters, multiply-accumulates, CPU latency and validation top-1 before and after side by side.
"""
TEACHER_INFO = (
    "A teacher must predict the student's classes: for a fine-tuned model that is the unpruned checkpoint; "
    "an ImageNet teacher fits only a model of the 1000 ImageNet classes."
)
CRITERIA = [("BatchNorm scale (network slimming)", "bn-scale"), ("L1 norm of the filters", "l1")]


@dataclass
class SlimTab:
    """The components the app wires to the Explain tab ("use this model"), the tests look at, and
    the run's result (:class:`.SlimProgress`) names."""

    status: gr.Markdown
    curves: gr.Plot
    report: gr.Markdown  # before and after, as a table
    report_plot: gr.Plot  # accuracy versus MACs
    checkpoint: gr.File  # the slim checkpoint (best validation top-1), to download
    use_button: gr.Button  # "use this model": interactive once a checkpoint exists


def build_slim_tab(*, trained: gr.File | None = None) -> SlimTab:
    """Lay out the tab inside an open ``gr.Tab``/``gr.Blocks`` and wire its events.

    ``trained`` is the Fine-tune tab's checkpoint, offered as the model to slim.
    """
    gr.Markdown(INTRO)
    sources = [("The model just trained in the Fine-tune tab", h.TRAINED), ("A .pth checkpoint (upload)", h.UPLOADED)]
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            source = gr.Radio(
                sources if trained is not None else sources[1:],
                value=h.TRAINED if trained is not None else h.UPLOADED,
                label="Checkpoint to slim",
            )
            upload = gr.File(label="Fine-tuned checkpoint (.pth)", file_types=[".pth", ".safetensors"], type="filepath")
            data = gr.Radio(
                [("The Fine-tune tab's data", h.FINETUNE_DATA), ("The generated sample set", h.SAMPLE_DATA)],
                value=h.FINETUNE_DATA,
                label="Images to recover on",
                info="the classes the checkpoint was fine-tuned on",
            )
        with gr.Column(scale=1, min_width=280):
            fraction = gr.Slider(0, MAX_FRACTION, value=0.3, step=0.05, label="Fraction of inner channels removed")
            criterion = gr.Radio(CRITERIA, value="bn-scale", label="Which channels go first")
            teacher = gr.Radio(
                h.teacher_choices(), value=h.SELF_TEACHER, label="Distillation teacher", info=TEACHER_INFO
            )
            epochs = gr.Slider(1, 50, value=3, step=1, label="Recovery epochs")
    with gr.Row():
        start_button = gr.Button("Start slimming", variant="primary")
        cancel_button = gr.Button("Cancel", variant="stop")
    status = gr.Markdown()
    curves = gr.Plot(label="Recovery curves")
    report = gr.Markdown()
    report_plot = gr.Plot(label="Accuracy versus multiply-accumulates")  # the figure sets its height
    with gr.Row():
        checkpoint = gr.File(label="Slim checkpoint (best validation top-1)", interactive=False)
        use_button = gr.Button("Use this model in the Explain tab", interactive=False)

    tab = SlimTab(
        status=status, curves=curves, report=report, report_plot=report_plot, checkpoint=checkpoint,
        use_button=use_button,
    )  # fmt: skip
    if trained is None:  # a hidden stand-in keeps one handler signature
        trained = gr.File(visible=False, interactive=False)
    settings = [source, upload, trained, data, fraction, criterion, teacher, epochs]
    # The Fine-tune tab's queue: one training job per server.
    start_button.click(
        h.run_slim, settings, outputs_of(h.SlimProgress, tab), api_visibility="private", **TRAINING_QUEUE
    )
    cancel_button.click(h.cancel_slim, None, status, api_visibility="private", queue=False)
    return tab
