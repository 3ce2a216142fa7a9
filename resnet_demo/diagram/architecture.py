"""The architecture diagram: the stem, layer1..layer4 as columns of bottleneck blocks, the head.

One node per block (long stages wrap into several columns), the main path through
them, one shortcut arc beside each block (identity thin and solid, projection dashed
with its 1x1 convolution as a diamond), an arrowhead before each stride-2 block, and
optionally every block coloured by a statistic of the last image, a dilated network's
real shapes, the stages a head reads marked, and a note. Each trace family has its own
builder below; :func:`architecture_figure` stacks them in drawing order.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from ..core.model import Dilation, Widths
from .blocks import (
    IMAGE_SIZE,
    NUM_CLASSES,
    BlockInfo,
    cached_block_infos,
    check_arch,
    check_head,
    dilation_key,
    meta_model,
    widths_key,
)
from .colouring import STAT_CHOICES, block_colours, stat_values
from .formatting import fmt_shape
from .hover import block_hover, edge_nodes, projection_hover, stride_hover
from .layout import BOTTOM_PAD, EDGE_W, MARGIN_B, MARGIN_T, TOP_PAD, Grid, arc, figure_height, grid, main_path
from .theme import NEUTRAL, PROJECTION, SELECTED, Theme, base_layout

_EDGE_NAMES = ("image", "conv1", "maxpool", "avgpool", "fc")  # the stem and head nodes, in drawing order
_TAPPABLE = ("layer1", "layer2", "layer3", "layer4")  # the stages a head can read
_TAP_ROWS = 1.0  # block rows below the diagram for the labels of the tapped stages
_NOTE_PX = 22  # extra top margin for the note


def architecture_figure(
    *,
    arch: str,
    stats: Mapping[str, float] | None = None,
    stat: str = "residual_ratio",
    selected: str | None = None,
    dark: bool = False,
    height: int | None = None,
    widths: Widths | None = None,
    replace_stride_with_dilation: Dilation | list[bool] | None = None,
    taps: Mapping[str, str] | None = None,
    note: str | None = None,
    num_classes: int = NUM_CLASSES,
    image_size: int = IMAGE_SIZE,
) -> go.Figure:
    """The block diagram of ``arch``: one node per bottleneck block, stages as columns.

    ``widths`` (a loaded model's :meth:`~resnet_demo.core.model.ResNet.widths`) draws a
    channel-pruned model as it is: the hover of each block shows its real widths, params
    and MACs. None, or the standard widths, draws the standard network.

    ``stats`` maps block names ("layer3.0") to the value of ``stat`` (a key of
    :data:`STAT_CHOICES`) for the last image; with it, blocks are coloured by value and a
    colour bar names the statistic. Blocks missing from ``stats`` are drawn grey, and
    names of other architectures are ignored, so stale statistics never break the view.
    ``selected`` (a block name) is ringed; an unknown name is ignored. The height is
    always set (``height`` or :func:`figure_height`), because plotly inside Gradio can
    render at zero height otherwise.

    ``replace_stride_with_dilation`` (the model's, see :class:`~resnet_demo.core.model.ResNet`)
    draws a dilated network: real shapes in the hover, no stride marker on the stages that
    keep stride 1, and each dilated stage's header names its dilation. ``taps`` maps a stage
    ("layer1".."layer4") to what reads it (e.g. {"layer4": "ASPP head"}); each such stage is
    outlined in the accent colour and labelled under its columns. ``note`` is one line of
    text over the diagram. Text from the caller is shown as text, never as markup.

    ``num_classes`` and ``image_size`` draw a model's own head and shapes (a fine-tuned or slimmed
    checkpoint's classes and crop); the defaults are ImageNet's 1000 classes at 224 px.
    """
    check_arch(arch)
    check_head(num_classes=num_classes, image_size=image_size)
    if stat not in STAT_CHOICES:
        raise ValueError(f"Unknown statistic {stat!r}; choose one of {', '.join(STAT_CHOICES)}.")
    tapped = _checked_taps(taps)
    theme = Theme.of(dark)
    key, dilation = widths_key(arch, widths), dilation_key(replace_stride_with_dilation)
    blocks = cached_block_infos(arch, image_size, key, dilation)
    room = {"bottom_rows": _TAP_ROWS if tapped else 0.0, "top_px": _NOTE_PX if note else 0}
    height = int(height or figure_height(arch=arch, **room))
    g = grid(arch=arch, height=height, **room)
    colouring = stat_values(stats, [b.name for b in blocks])

    fig = go.Figure()
    if tapped:  # first, so that the bands lie under everything else
        fig.add_traces(_tap_traces(tapped, blocks, g, theme))
    path = main_path(g.all_columns)
    fig.add_trace(_lines(*path, line={"color": NEUTRAL, "width": 1.6}, name="main path", showlegend=False))
    fig.add_traces(_shortcut_traces(blocks, g))
    fig.add_trace(_edge_trace(arch, g, theme, key, dilation, num_classes=num_classes, image_size=image_size))
    fig.add_traces(_block_traces(blocks, g, theme, colouring=colouring, stat=stat, selected=selected))
    fig.add_trace(_stride_trace(blocks, g, theme))
    if selected in {b.name for b in blocks}:  # a stale name (another architecture's block) draws no ring
        fig.add_trace(_selection_ring(selected, g))
    _add_stage_headers(
        fig, arch, g, theme, key, dilation, head_replaced=bool(tapped), num_classes=num_classes, image_size=image_size
    )
    if note:
        _add_note(fig, note, theme)
    coloured = colouring is not None
    meta = _figure_meta(
        arch=arch, stat=stat if coloured else None, selected=selected, dilation=dilation, taps=tapped, note=note,
        num_classes=num_classes, image_size=image_size,
    )  # fmt: skip
    _finish_layout(fig, g, theme, height=height, coloured=coloured, meta=meta)
    return fig


def _figure_meta(
    *, arch: str, stat: str | None, selected: str | None, dilation: Dilation | None, taps: dict[str, str],
    note: str | None, num_classes: int, image_size: int,
) -> dict[str, object]:  # fmt: skip
    """What the figure's ``layout.meta`` says it draws (the tests and the app read it back)."""
    meta: dict[str, object] = {"arch": arch, "stat": stat, "selected": selected}
    # Only what was given, so that a figure drawn without them is the same as before they existed.
    if dilation:
        meta["replace_stride_with_dilation"] = list(dilation)
    if taps:
        meta["taps"] = dict(taps)
    if note:
        meta["note"] = note
    if (num_classes, image_size) != (NUM_CLASSES, IMAGE_SIZE):
        meta.update(num_classes=num_classes, image_size=image_size)
    return meta


def _checked_taps(taps: Mapping[str, str] | None) -> dict[str, str]:
    """``taps`` in stage order; raises ValueError for a stage a head cannot read or an empty reader."""
    taps = dict(taps or {})
    for stage, reader in taps.items():
        if stage not in _TAPPABLE:
            raise ValueError(f"taps names {stage!r:.40}; a head reads one of {', '.join(_TAPPABLE)}.")
        if not isinstance(reader, str) or not reader.strip():
            raise ValueError(f"taps gives {stage} no reader; name what reads it, e.g. 'FPN P5'.")
    return {s: taps[s] for s in _TAPPABLE if s in taps}


def _tap_traces(taps: Mapping[str, str], blocks: Sequence[BlockInfo], g: Grid, theme: Theme) -> list[go.Scatter]:
    """A faint accent band around each tapped stage's columns, and under it "→ reader"."""
    stage_cols = dict(g.columns)
    out_shape = {b.stage: b.out_shape for b in blocks}  # the last block of a stage sets its output
    top, bottom = 0.7, g.y_bottom + 0.05  # from under the stage header to under the connectors
    xs: list[float | None] = []
    ys: list[float | None] = []
    centres = []
    for stage in taps:
        cols = stage_cols[stage]
        left, right = cols[0].x - 0.58, cols[-1].x + 0.46  # the arcs bulge left, the indices sit right
        xs += [left, right, right, left, left, None]
        ys += [top, top, bottom, bottom, top, None]
        centres.append((left + right) / 2)
    band = go.Scatter(
        x=xs,
        y=ys,
        mode="lines",
        fill="toself",
        fillcolor=theme.accent_fill,
        line={"color": theme.accent, "width": 2},
        hoverinfo="skip",
        name="read by a head",
        legendrank=5,
    )
    labels = go.Scatter(
        x=centres,
        y=[g.y_bottom - 0.45] * len(centres),
        mode="text",
        text=[f"<b>→ {html.escape(reader, quote=False)}</b>" for reader in taps.values()],
        textposition="middle center",
        textfont={"size": g.text_size, "color": theme.accent},
        hovertext=[
            f"<b>{stage}</b> output {fmt_shape(out_shape[stage])} → {html.escape(reader, quote=False)}"
            for stage, reader in taps.items()
        ],
        hoverinfo="text",
        customdata=list(taps),
        name="head inputs",
        showlegend=False,
        cliponaxis=False,
    )
    return [band, labels]


def _add_note(fig: go.Figure, note: str, theme: Theme) -> None:
    """One line of muted text over the diagram, in the extra top margin."""
    fig.add_annotation(
        name="note",
        x=0,
        y=1,
        xref="paper",
        yref="paper",
        xanchor="left",
        yanchor="bottom",
        text=html.escape(note, quote=False),
        showarrow=False,
        font={"size": 12, "color": theme.muted},
    )


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


def _edge_trace(
    arch: str,
    g: Grid,
    theme: Theme,
    widths: Widths | None,
    dilation: Dilation | None,
    *,
    num_classes: int = NUM_CLASSES,
    image_size: int = IMAGE_SIZE,
) -> go.Scatter:
    """The stem and head nodes: the image as a circle, the layers as squares, labelled to the right."""
    edges = edge_nodes(arch, image_size=image_size, widths=widths, dilation=dilation, num_classes=num_classes)
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


def _add_stage_headers(
    fig: go.Figure,
    arch: str,
    g: Grid,
    theme: Theme,
    widths: Widths | None,
    dilation: Dilation | None,
    *,
    head_replaced: bool = False,
    num_classes: int = NUM_CLASSES,
    image_size: int = IMAGE_SIZE,
) -> None:
    """Three lines over each stage's columns: its name (and dilation), its size, and its output
    (or input, for the stem). ``head_replaced``: other heads read the stages, the classifier's is unused."""
    blocks = cached_block_infos(arch, image_size, widths, dilation)
    last = {b.stage: b for b in blocks}  # the last block of each stage
    for stage, cols in g.columns:
        if stage in last:
            b = last[stage]
            # The stage's later blocks carry its dilation (the first keeps the one before).
            dilated = f" · dilation {b.dilation}" if b.dilation > 1 else ""
            text = f"<b>{stage}</b>{dilated}<br>{b.index + 1} blocks<br>{fmt_shape(b.out_shape)}"
        elif stage == "stem":
            text = f"<b>stem</b><br>1 conv<br>{fmt_shape(blocks[0].in_shape)}"
        elif head_replaced:
            text = "<b>classifier head</b><br>not used: the heads<br>below replace it"
        else:
            text = f"<b>head</b><br>1 fc<br>{meta_model(arch, widths, dilation, num_classes).fc.out_features} classes"
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
        margin={"l": 4, "r": 8 if coloured else 4, "t": MARGIN_T + g.top_px, "b": MARGIN_B},
        xaxis={"range": [g.x_first - 0.6, g.x_last + EDGE_W - 0.3]},
        yaxis={"range": [-(g.rows - 1) - BOTTOM_PAD - g.bottom_rows, TOP_PAD]},
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
