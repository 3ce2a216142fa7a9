"""The Architecture tab's handlers: the block diagram, coloured by the last photo, the inside
of one block, and the tables of parameters and multiply-accumulates. The events with several
outputs return named tuples whose fields are :class:`~.architecture_tab.ArchitectureTab`'s names."""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr
import PIL.Image
import plotly.graph_objects as go

from .. import diagram
from ..core.weights import ARCH_LABELS, check_arch
from ..explain import Analysis
from .analysis_store import stored_or_none
from .components import user_errors

FIRST_BLOCK = "layer3.0"  # the block shown first: a projection shortcut at a mid-depth stage
COLOR_CHOICES: list[tuple[str, str]] = [(label, key) for key, (label, _unit) in diagram.STAT_CHOICES.items()]
COLOR_CHOICES.append(("none", "none"))


class ArchChange(NamedTuple):
    """A newly picked model: its block picker and its per-stage table."""

    block: Any  # the block picker's update: this model's blocks, back on the first block shown
    stage_table: list[list[Any]]


class ArchitectureView(NamedTuple):
    """The diagram, the selected block's inside, its feature maps on the user's photo and what it did."""

    diagram: go.Figure
    block_inside: go.Figure
    block_features: PIL.Image.Image | None  # None before a photo of this model
    caption: str  # Markdown


def block_choices(*, arch: str) -> list[tuple[str, str]]:
    """Block picker entries, e.g. ("layer3.0 · 512→1024, stride 2", "layer3.0")."""
    return diagram.block_choices(arch=arch)


def arch_changed(arch: str) -> ArchChange:
    """A newly picked model: its block picker (back on the first block shown) and its per-stage table."""
    return ArchChange(
        block=gr.update(choices=block_choices(arch=arch), value=FIRST_BLOCK), stage_table=table_rows(arch=arch)[0]
    )


def _block_caption(analysis: Analysis, block: str) -> tuple[Any, str]:
    """The feature maps of ``block`` on the user's photo, and what the block did to it."""
    grid = analysis.feature_maps(block)
    c, h, w = grid.shape
    stat = next(b for b in analysis.blocks if b.name == block)
    caption = (
        f"**{block}** on your photo: output {c}×{h}×{w}, residual ratio ‖F(x)‖/‖x‖ = "
        f"{stat.residual_ratio:.3f}, mean activation {stat.mean_activation:.3f}. "
        f"Feature maps: its {len(grid.channels)} most active channels ({', '.join(map(str, grid.channels))})."
    )
    return grid.image, caption


@user_errors
def architecture_view(analysis: Analysis | str | None, arch: str, color_by: str, block: str | None) -> ArchitectureView:
    """Architecture tab: the diagram (coloured by the last photo of this arch), the selected
    block's inside and its feature maps."""
    check_arch(arch)  # the core's sentence, before the diagram's programming error
    names = [b.name for b in diagram.block_infos(arch)]
    block = block if block in names else names[0]  # a stale pick from another arch
    found = stored_or_none(analysis)  # an expired photo only leaves the diagram uncoloured
    live = found if found is not None and found.arch == arch else None
    stats = None
    if live is not None and color_by in diagram.STAT_CHOICES:
        stats = {b.name: float(getattr(b, color_by)) for b in live.blocks}
    # A fine-tuned or slimmed checkpoint is drawn as it is: its real widths, params and MACs, its own
    # classes, and the shapes of the crop it runs on.
    own: dict[str, Any] = {}  # the block's inside; the diagram also draws the head
    head: dict[str, Any] = {}
    if live is not None:
        own = {"widths": live.loaded.model.widths(), "image_size": live.spec.preprocessing.crop_size}
        head = {"num_classes": live.loaded.model.fc.out_features}
    fig = diagram.architecture_figure(
        arch=arch, stats=stats, stat=color_by if stats else "residual_ratio", selected=block, **own, **head
    )
    inside = diagram.block_figure(arch=arch, block=block, **own)
    if live is not None:
        features, caption = _block_caption(live, block)
    else:
        features = None
        caption = (
            f"Run a photo through {ARCH_LABELS[arch]} in the Explain tab to colour the blocks by what they did to it."
        )
    return ArchitectureView(diagram=fig, block_inside=inside, block_features=features, caption=caption)


_HEADERS = {
    "arch": "model",
    "blocks": "blocks",
    "weighted_layers": "weighted layers",
    "output_shape": "output (C×H×W)",
    "params": "params",
    "macs": "MACs",
    "gmacs": "GMACs",
    "params_share": "params %",
    "macs_share": "MACs %",
    "params_torchvision": "params (torchvision)",
    "params_m_guide": "params M (guide)",
    "gmacs_torchvision": "GMACs (torchvision)",
    "gmacs_guide": "GMACs (guide)",
    "top1_torchvision_v1": "top-1 % V1 (torchvision)",
    "top1_torchvision_v2": "top-1 % V2 (torchvision)",
    "top1_guide": "top-1 % (guide)",
}


def _table(rows: list[dict[str, Any]]) -> tuple[list[list[Any]], list[str]]:
    def cell(v: Any) -> Any:
        # Thousands separators make 25557032 readable; the table is for people.
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10_000 else v

    return [[cell(v) for v in r.values()] for r in rows], [_HEADERS.get(k, k) for k in rows[0]]


def table_rows(*, arch: str) -> tuple[list[list[Any]], list[str], list[list[Any]], list[str]]:
    """The per-stage table of ``arch`` and the comparison with the reproduction guide and torchvision, as rows."""
    return (*_table(diagram.stage_table(arch=arch)), *_table(diagram.comparison_table()))
