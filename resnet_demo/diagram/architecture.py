"""The architecture diagram: the stem, layer1..layer4 as columns of bottleneck blocks, the head.

One node per block (long stages wrap into several columns), the main path through
them, one shortcut arc beside each block (identity thin and solid, projection dashed
with its 1x1 convolution as a diamond), an arrowhead before each stride-2 block, and
optionally every block coloured by a statistic of the last image. Each trace family
has its own builder below; :func:`architecture_figure` stacks them in drawing order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from ..model import Widths
from .blocks import IMAGE_SIZE, BlockInfo, cached_block_infos, check_arch, meta_model, widths_key
from .colouring import STAT_CHOICES, block_colours, stat_values
from .formatting import fmt_shape
from .hover import block_hover, edge_nodes, projection_hover, stride_hover
from .layout import BOTTOM_PAD, EDGE_W, MARGIN_B, MARGIN_T, TOP_PAD, Grid, arc, figure_height, grid, main_path
from .theme import NEUTRAL, PROJECTION, SELECTED, Theme, base_layout

_EDGE_NAMES = ("image", "conv1", "maxpool", "avgpool", "fc")  # the stem and head nodes, in drawing order


def architecture_figure(
    *,
    arch: str,
    stats: Mapping[str, float] | None = None,
    stat: str = "residual_ratio",
    selected: str | None = None,
    dark: bool = False,
    height: int | None = None,
    widths: Widths | None = None,
) -> go.Figure:
    """The block diagram of ``arch``: one node per bottleneck block, stages as columns.

    ``widths`` (a loaded model's :meth:`~resnet_demo.model.ResNet.widths`) draws a
    channel-pruned model as it is: the hover of each block shows its real widths, params
    and MACs. None, or the standard widths, draws the standard network.

    ``stats`` maps block names ("layer3.0") to the value of ``stat`` (a key of
    :data:`STAT_CHOICES`) for the last image; with it, blocks are coloured by value and a
    colour bar names the statistic. Blocks missing from ``stats`` are drawn grey, and
    names of other architectures are ignored, so stale statistics never break the view.
    ``selected`` (a block name) is ringed; an unknown name is ignored. The height is
    always set (``height`` or :func:`figure_height`), because plotly inside Gradio can
    render at zero height otherwise.
    """
    check_arch(arch)
    if stat not in STAT_CHOICES:
        raise ValueError(f"Unknown statistic {stat!r}; choose one of {', '.join(STAT_CHOICES)}.")
    theme = Theme.of(dark)
    key = widths_key(arch, widths)
    blocks = cached_block_infos(arch, IMAGE_SIZE, key)
    height = int(height or figure_height(arch=arch))
    g = grid(arch=arch, height=height)
    colouring = stat_values(stats, [b.name for b in blocks])

    fig = go.Figure()
    path = main_path(g.all_columns)
    fig.add_trace(_lines(*path, line={"color": NEUTRAL, "width": 1.6}, name="main path", showlegend=False))
    fig.add_traces(_shortcut_traces(blocks, g))
    fig.add_trace(_edge_trace(arch, g, theme, key))
    fig.add_traces(_block_traces(blocks, g, theme, colouring=colouring, stat=stat, selected=selected))
    fig.add_trace(_stride_trace(blocks, g, theme))
    if selected in {b.name for b in blocks}:  # a stale name (another architecture's block) draws no ring
        fig.add_trace(_selection_ring(selected, g))
    _add_stage_headers(fig, arch, g, theme, key)
    coloured = colouring is not None
    meta = {"arch": arch, "stat": stat if coloured else None, "selected": selected}
    _finish_layout(fig, g, theme, height=height, coloured=coloured, meta=meta)
    return fig


def _lines(xs: list[float | None], ys: list[float | None], *, line: dict, name: str, **legend: object) -> go.Scatter:
    """A polyline that shows no hover; ``legend`` says whether and where it appears in the legend."""
    return go.Scatter(x=xs, y=ys, mode="lines", line=line, hoverinfo="skip", name=name, **legend)


def _shortcut_traces(blocks: Sequence[BlockInfo], g: Grid) -> list[go.Scatter]:
    """One arc per block: identity arcs, projection arcs, and the diamonds of the projections' convs."""
    arcs: dict[bool, tuple[list[float | None], list[float | None]]] = {False: ([], []), True: ([], [])}
    diamonds: list[BlockInfo] = []
    mid: list[tuple[float, float]] = []
    for b in blocks:
        xs, ys = arc(*g.pos[b.name])
        arcs[b.projection][0].extend([*xs, None])
        arcs[b.projection][1].extend([*ys, None])
        if b.projection:
            diamonds.append(b)
            mid.append((xs[len(xs) // 2], ys[len(ys) // 2]))
    return [
        _lines(*arcs[False], line={"color": NEUTRAL, "width": 1.2}, name="identity shortcut (x)", legendrank=2),
        _lines(
            *arcs[True],
            line={"color": PROJECTION, "width": 2.4, "dash": "dot"},
            name="projection shortcut (1×1 conv + BN)",
            legendgroup="proj",
            legendrank=3,
        ),
        go.Scatter(
            x=[m[0] for m in mid],
            y=[m[1] for m in mid],
            mode="markers",
            marker={"symbol": "diamond", "size": g.marker_size * 0.6, "color": PROJECTION, "line": {"width": 0}},
            hovertext=[projection_hover(b) for b in diamonds],
            hoverinfo="text",
            name="projection conv",
            legendgroup="proj",
            showlegend=False,
        ),
    ]


def _edge_trace(arch: str, g: Grid, theme: Theme, widths: Widths | None) -> go.Scatter:
    """The stem and head nodes: the image as a circle, the layers as squares, labelled to the right."""
    edges = edge_nodes(arch, image_size=IMAGE_SIZE, widths=widths)
    return go.Scatter(
        x=[g.pos[n][0] for n in _EDGE_NAMES],
        y=[g.pos[n][1] for n in _EDGE_NAMES],
        mode="markers+text",
        marker={
            "symbol": ["circle", "square", "square", "square", "square"],
            "size": g.marker_size * 0.85,
            "color": NEUTRAL,
            "line": {"color": theme.text, "width": 1},
        },
        text=[edges[n][0] for n in _EDGE_NAMES],
        textposition="middle right",
        textfont={"size": g.text_size - 1, "color": theme.muted},
        hovertext=[edges[n][1] for n in _EDGE_NAMES],
        hoverinfo="text",
        name="stem and head",
        customdata=list(_EDGE_NAMES),
        showlegend=False,
        cliponaxis=False,
    )


def _block_marker(g: Grid, theme: Theme) -> dict[str, object]:
    """What every block node's marker shares, whatever its colour."""
    return {"symbol": "square", "size": g.marker_size, "line": {"color": theme.text, "width": 1}}


def _block_traces(
    blocks: Sequence[BlockInfo],
    g: Grid,
    theme: Theme,
    *,
    colouring: tuple[list[float], float, float] | None,
    stat: str,
    selected: str | None,
) -> list[go.Scatter]:
    """The block nodes, and over them grey nodes for blocks that have no value in ``colouring``."""
    names = [b.name for b in blocks]
    depths = {b.stage: b.index + 1 for b in blocks}  # the last block of a stage sets its depth
    marker, stat_lines = block_colours(colouring, blocks=blocks, stat=stat, theme=theme)
    marker.update(_block_marker(g, theme))
    traces = [
        go.Scatter(
            x=[g.pos[n][0] for n in names],
            y=[g.pos[n][1] for n in names],
            mode="markers+text",
            marker=marker,
            # The no-break spaces keep the label clear of the selection ring.
            text=[f"\u00a0\u00a0{b.index}" for b in blocks],
            textposition="middle right",
            textfont={"size": g.text_size, "color": [SELECTED if n == selected else theme.text for n in names]},
            hovertext=[
                block_hover(b, depth=depths[b.stage], stat_line=s) for b, s in zip(blocks, stat_lines, strict=True)
            ],
            hoverinfo="text",
            customdata=names,
            name="bottleneck blocks",
            showlegend=False,
            cliponaxis=False,
        )
    ]
    missing = [] if colouring is None else [n for n, v in zip(names, colouring[0], strict=True) if math.isnan(v)]
    if missing:
        # Neutral grey on top (plotly would paint them a dark grey); the hover still comes from the blocks underneath.
        traces.append(
            go.Scatter(
                x=[g.pos[n][0] for n in missing],
                y=[g.pos[n][1] for n in missing],
                mode="markers",
                marker={**_block_marker(g, theme), "color": NEUTRAL},
                hoverinfo="skip",
                customdata=missing,
                name="no value",
                showlegend=False,
            )
        )
    return traces


def _stride_trace(blocks: Sequence[BlockInfo], g: Grid, theme: Theme) -> go.Scatter:
    """Stride 2: an arrowhead on the path, just before each block that halves H and W."""
    down = [b for b in blocks if b.downsamples]
    return go.Scatter(
        x=[g.pos[b.name][0] for b in down],
        y=[g.pos[b.name][1] + 0.62 for b in down],
        mode="markers",
        marker={"symbol": "triangle-down", "size": g.marker_size * 0.75, "color": theme.text},
        hovertext=[stride_hover(b) for b in down],
        hoverinfo="text",
        customdata=[b.name for b in down],
        name="stride 2: halves H and W",
        legendrank=4,
    )


def _selection_ring(selected: str, g: Grid) -> go.Scatter:
    """An open square around the selected block."""
    sx, sy = g.pos[selected]
    return go.Scatter(
        x=[sx],
        y=[sy],
        mode="markers",
        marker={"symbol": "square-open", "size": g.marker_size + 8, "color": SELECTED, "line": {"width": 2.5}},
        hoverinfo="skip",
        customdata=[selected],
        name="selected",
        showlegend=False,
    )


def _add_stage_headers(fig: go.Figure, arch: str, g: Grid, theme: Theme, widths: Widths | None) -> None:
    """Three lines over each stage's columns: its name, its size, and its output (or input, for the stem)."""
    blocks = cached_block_infos(arch, IMAGE_SIZE, widths)
    last = {b.stage: b for b in blocks}  # the last block of each stage
    for stage, cols in g.columns:
        if stage in last:
            depth = last[stage].index + 1
            text = f"<b>{stage}</b><br>{depth} blocks<br>{fmt_shape(last[stage].out_shape)}"
        elif stage == "stem":
            text = f"<b>stem</b><br>1 conv<br>{fmt_shape(blocks[0].in_shape)}"
        else:
            text = f"<b>head</b><br>1 fc<br>{meta_model(arch, widths).fc.out_features} classes"
        fig.add_annotation(
            x=(cols[0].x + cols[-1].x) / 2 + 0.12,
            y=0.75,
            yanchor="bottom",
            xanchor="center",
            text=text,
            showarrow=False,
            font={"size": g.text_size, "color": theme.text},
        )


def _finish_layout(
    fig: go.Figure, g: Grid, theme: Theme, *, height: int, coloured: bool, meta: dict[str, object]
) -> None:
    """Axes ranges that fit the grid, margins (wider on the right for a colour bar), the legend
    below, and ``meta`` for the app."""
    base_layout(fig, theme=theme, height=height)
    fig.update_layout(
        margin={"l": 4, "r": 8 if coloured else 4, "t": MARGIN_T, "b": MARGIN_B},
        xaxis={"range": [g.x_first - 0.6, g.x_last + EDGE_W - 0.3]},
        yaxis={"range": [-(g.rows - 1) - BOTTOM_PAD, TOP_PAD]},
        showlegend=True,
        legend={
            "orientation": "h",
            "x": 0.5,
            "xanchor": "center",
            "y": 0,
            "yanchor": "top",
            "font": {"size": 11, "color": theme.text},
            "bgcolor": "rgba(0,0,0,0)",
            "itemclick": False,
            "itemdoubleclick": False,
        },
        meta=meta,
    )
