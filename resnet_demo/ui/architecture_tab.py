"""The Architecture tab: the block diagram of the picked model, the inside of one block,
the per-stage tables and the model code itself."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from .. import diagram
from . import architecture_handlers as h
from .events import outputs_of
from .model_choice import ARCH_CHOICES
from .settings import IMAGE_FORMAT

ABOUT = (
    "Each box is one bottleneck block (1x1 reduce, 3x3, 1x1 expand). Diamonds mark the first "
    "block of a stage, whose shortcut is a strided 1x1 projection. After you explain a photo, "
    "the blocks are coloured by what they did to it."
)


@dataclass
class ArchitectureTab:
    """The tab's components, by the names of the handlers' results; the app points ``arch`` at the
    model of the last explained photo."""

    arch: gr.Radio
    color_by: gr.Radio
    block: gr.Dropdown
    caption: gr.Markdown
    diagram: gr.Plot
    block_inside: gr.Plot
    block_features: gr.Image
    stage_table: gr.Dataframe


def build_architecture_tab(*, arch: str, tab: gr.Tab, analysis: gr.State) -> ArchitectureTab:
    """Lay out the tab inside the open ``tab`` and wire its events; ``analysis`` is the user's last photo."""
    gr.Markdown(ABOUT)
    with gr.Row():
        arch_view = gr.Radio(ARCH_CHOICES, value=arch, label="Model", elem_id="architecture-arch")
        color_by = gr.Radio(h.COLOR_CHOICES, value="residual_ratio", label="Colour blocks by")
        block = gr.Dropdown(h.block_choices(arch=arch), value=h.FIRST_BLOCK, label="Block", elem_id="block")
    caption = gr.Markdown()
    # No label: it would cover the figure's own top-left corner.
    diagram_plot = gr.Plot(show_label=False, elem_id="diagram")
    with gr.Row():
        block_plot = gr.Plot(show_label=False, elem_id="block-inside")
        block_features = gr.Image(label="Feature maps of the selected block", interactive=False, format=IMAGE_FORMAT)
    stage_rows, stage_headers, compare_rows, compare_headers = h.table_rows(arch=arch)
    stage_table = gr.Dataframe(stage_rows, headers=stage_headers, label="Per stage", interactive=False)
    gr.Dataframe(
        compare_rows,
        headers=compare_headers,
        label="Measured vs the reproduction guide vs torchvision",
        interactive=False,
    )
    gr.Code(
        diagram.model_source(),
        language="python",
        label="The model code (resnet_demo/model.py), read from the module that runs",
        max_lines=40,
    )

    built = ArchitectureTab(
        arch=arch_view, color_by=color_by, block=block, caption=caption, diagram=diagram_plot,
        block_inside=block_plot, block_features=block_features, stage_table=stage_table,
    )  # fmt: skip
    arch_view.change(h.arch_changed, arch_view, outputs_of(h.ArchChange, built), api_visibility="private")
    # Plots in a hidden tab can render undersized, so draw them when the tab is shown.
    gr.on(
        [tab.select, color_by.change, block.change, arch_view.change],
        h.architecture_view,
        [analysis, arch_view, color_by, block],
        outputs_of(h.ArchitectureView, built),
        api_visibility="private",
        trigger_mode="always_last",
    )
    return built
