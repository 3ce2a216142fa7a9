"""The inside of one bottleneck block: its operations as boxes, with real widths and shapes.

The residual branch runs down the middle, one row per operation; the shortcut runs
down the left, as the identity or through the 1x1 projection and its BatchNorm; both
meet at the addition. Rows count downwards from the input at row 0 (y = -row).
"""

from __future__ import annotations

from typing import NamedTuple

import plotly.graph_objects as go
from torch import nn

from ..core.complexity import macs_by_module, parameter_count
from ..core.model import Bottleneck, Widths
from .blocks import (
    IMAGE_SIZE,
    BlockInfo,
    Shape,
    block_shapes,
    cached_block_infos,
    check_arch,
    check_head,
    meta_model,
    pair,
    widths_key,
)
from .formatting import fmt_count, fmt_shape
from .theme import NEUTRAL, PROJECTION, Theme, base_layout

_KIND_FILL = {
    "conv": "rgba(59,130,246,0.22)",
    "bn": "rgba(148,163,184,0.25)",
    "relu": "rgba(34,197,94,0.22)",
    "add": "rgba(245,158,11,0.30)",
    "io": "rgba(148,163,184,0.12)",
}
_KIND_LINE = {"conv": "#3b82f6", "bn": "#94a3b8", "relu": "#22c55e", "add": "#f59e0b", "io": "#94a3b8"}

_MAIN_X, _SHORT_X = 6.4, 1.9  # centres of the residual branch and of the shortcut
_W_MAIN, _W_SMALL, _W_SHORT = 4.4, 2.0, 3.0  # box widths: convolutions, BN/ReLU, projection conv
_BOX_H = 0.62
_ADD_ROW, _RELU_ROW, _OUT_ROW = 7.0, 8.0, 9.0
_PROJ_CONV_ROW, _PROJ_BN_ROW = 3.0, 4.6
_PROJ_CONV_H, _PROJ_BN_H = 1.15, 0.8  # the projection boxes hold three and two lines


class _Box(NamedTuple):
    """One operation: where its box sits, its kind (sets the colours), its label and hover."""

    row: float
    x: float
    width: float
    kind: str
    label: str
    hover: str
    height: float = _BOX_H


def block_figure(
    *,
    arch: str,
    block: str,
    dark: bool = False,
    height: int = 600,
    widths: Widths | None = None,
    image_size: int = IMAGE_SIZE,
) -> go.Figure:
    """The inside of one bottleneck block (``block`` like "layer3.0") with its real widths and shapes.

    The residual branch runs down the middle (1x1 reduce, 3x3 with the stride, 1x1
    expand, each followed by BN and, but for the last, ReLU); the shortcut runs down the
    left, as the identity or as a 1x1 projection + BN; both meet at the addition, then
    the last ReLU. Hovering a box shows its module name, shapes, parameters and MACs.
    ``widths`` (a pruned model's :meth:`~resnet_demo.core.model.ResNet.widths`) draws its real widths,
    ``image_size`` (a model's own crop) its real shapes.
    """
    check_arch(arch)
    check_head(image_size=image_size)
    key = widths_key(arch, widths)
    infos = {b.name: b for b in cached_block_infos(arch, image_size, key)}
    if block not in infos:
        raise ValueError(f"{arch} has no block {block!r}; blocks run from layer1.0 to {list(infos)[-1]}.")
    b = infos[block]
    theme = Theme.of(dark)
    stage_name, idx = block.split(".")
    mod: Bottleneck = meta_model(arch, key).stages[stage_name][int(idx)]
    macs = macs_by_module(arch, image_size=image_size, widths=key)
    shapes = (b.in_shape, *block_shapes(mod, b.in_shape))  # x, after conv1, conv2, conv3

    boxes = _residual_boxes(b, mod, shapes=shapes, macs=macs)
    if b.projection:
        boxes += _projection_boxes(b, mod, macs=macs)
    fig = go.Figure()
    _draw_boxes(fig, boxes)
    _draw_residual_flow(fig, shapes=shapes, theme=theme)
    _draw_shortcut(fig, b, theme=theme)
    fig.add_trace(_labels(boxes, theme=theme))
    _finish_layout(fig, b, arch=arch, theme=theme, height=height)
    return fig


def _conv_box(row: float, path: str, conv: nn.Conv2d, *, shapes: tuple[Shape, Shape], macs: dict[str, int]) -> _Box:
    """A convolution of the residual branch: kernel, stride, widths; shapes and cost in the hover."""
    k, st = pair(conv.kernel_size)[0], pair(conv.stride)[0]
    stride_txt = f", stride {st}" if st > 1 else ""
    conv_name = path.rsplit(".", 1)[1]
    return _Box(
        row,
        _MAIN_X,
        _W_MAIN,
        "conv",
        f"<b>{conv_name}</b>  {k}×{k} conv{stride_txt}  {conv.in_channels} → {conv.out_channels}",
        f"<b>{path}</b>: {k}×{k} conv{stride_txt}<br>{fmt_shape(shapes[0])} → {fmt_shape(shapes[1])}"
        f"<br>params {parameter_count(conv):,} · MACs {macs.get(path, 0):,} ({fmt_count(macs.get(path, 0))})",
    )


def _bn_relu_boxes(row: float, block: str, bn: nn.BatchNorm2d, *, n: int, shape: Shape, relu: bool) -> list[_Box]:
    """The BatchNorm after convolution ``n`` and, beside it, its ReLU (none after the last)."""
    hover_bn = (
        f"<b>{block}.bn{n}</b>: BatchNorm over {bn.num_features} channels"
        f"<br>params {parameter_count(bn):,} (scale and shift per channel)"
    )
    if not relu:
        return [_Box(row, _MAIN_X, _W_SMALL, "bn", f"<b>bn{n}</b>  BatchNorm", hover_bn)]
    return [
        _Box(row, _MAIN_X - _W_SMALL / 2 - 0.1, _W_SMALL, "bn", f"<b>bn{n}</b>  BatchNorm", hover_bn),
        _Box(
            row,
            _MAIN_X + _W_SMALL / 2 + 0.1,
            _W_SMALL,
            "relu",
            f"<b>relu{n}</b>  ReLU",
            f"<b>{block}.relu{n}</b>: ReLU, max(0, ·)<br>{fmt_shape(shape)}",
        ),
    ]


def _residual_boxes(
    b: BlockInfo, mod: Bottleneck, *, shapes: tuple[Shape, Shape, Shape, Shape], macs: dict[str, int]
) -> list[_Box]:
    """Input, the three conv/BN(/ReLU) pairs of rows, the addition, the last ReLU and the output."""
    block = b.name
    x = fmt_shape(b.in_shape)
    boxes = [_Box(0, _MAIN_X, _W_MAIN, "io", f"<b>x</b>  {x}", f"<b>input of {block}</b><br>{x}")]
    for n in (1, 2, 3):
        conv = getattr(mod, f"conv{n}")
        boxes.append(_conv_box(2 * n - 1, f"{block}.conv{n}", conv, shapes=shapes[n - 1 : n + 1], macs=macs))
        bn = getattr(mod, f"bn{n}")
        boxes += _bn_relu_boxes(2 * n, block, bn, n=n, shape=shapes[n], relu=n < 3)
    out = fmt_shape(b.out_shape)
    return [
        *boxes,
        _Box(_ADD_ROW, _MAIN_X, 1.3, "add", "<b>+</b>", f"<b>addition</b>: F(x) + shortcut(x)<br>both {out}"),
        _Box(
            _RELU_ROW, _MAIN_X, _W_SMALL, "relu", "<b>relu3</b>  ReLU", f"<b>{block}.relu3</b>: ReLU after the addition"
        ),
        _Box(_OUT_ROW, _MAIN_X, _W_MAIN, "io", f"<b>out</b>  {out}", f"<b>output of {block}</b><br>{out}"),
    ]


def _projection_boxes(b: BlockInfo, mod: Bottleneck, *, macs: dict[str, int]) -> list[_Box]:
    """The projection shortcut's 1x1 convolution and its BatchNorm, on the left."""
    conv, bn = mod.downsample[0], mod.downsample[1]
    path = f"{b.name}.downsample.0"
    stride_txt = f", stride {b.stride}" if b.stride > 1 else ""
    return [
        _Box(
            _PROJ_CONV_ROW,
            _SHORT_X,
            _W_SHORT,
            "conv",
            f"<b>downsample.0</b><br>1×1 conv{stride_txt}<br>{conv.in_channels} → {conv.out_channels}",
            f"<b>{path}</b>: projection shortcut, 1×1 conv{stride_txt}"
            f"<br>{fmt_shape(b.in_shape)} → {fmt_shape(b.out_shape)}"
            f"<br>params {parameter_count(conv):,} · MACs {macs.get(path, 0):,} ({fmt_count(macs.get(path, 0))})",
            _PROJ_CONV_H,
        ),
        _Box(
            _PROJ_BN_ROW,
            _SHORT_X,
            _W_SMALL,
            "bn",
            "<b>downsample.1</b><br>BN",
            f"<b>{b.name}.downsample.1</b>: BatchNorm over {bn.num_features} channels"
            f"<br>params {parameter_count(bn):,}",
            _PROJ_BN_H,
        ),
    ]


def _draw_boxes(fig: go.Figure, boxes: list[_Box]) -> None:
    """Each box as a rectangle behind everything else, coloured by its kind."""
    for box in boxes:
        fig.add_shape(
            type="rect",
            x0=box.x - box.width / 2,
            x1=box.x + box.width / 2,
            y0=-box.row - box.height / 2,
            y1=-box.row + box.height / 2,
            fillcolor=_KIND_FILL[box.kind],
            line={"color": _KIND_LINE[box.kind], "width": 1.5},
            layer="below",
        )


def _labels(boxes: list[_Box], *, theme: Theme) -> go.Scatter:
    """The boxes' labels, one text point each, which also carry the hover."""
    return go.Scatter(
        x=[box.x for box in boxes],
        y=[-box.row for box in boxes],
        mode="text",
        text=[box.label for box in boxes],
        textfont={"size": 12, "color": theme.text},
        hovertext=[box.hover for box in boxes],
        hoverinfo="text",
        showlegend=False,
        name="ops",
    )


def _arrow(fig: go.Figure, x0: float, y0: float, x1: float, y1: float, *, color: str = NEUTRAL) -> None:
    """An arrow from (x0, y0) to (x1, y1), in data coordinates."""
    fig.add_annotation(
        x=x1,
        y=y1,
        ax=x0,
        ay=y0,
        xref="x",
        yref="y",
        axref="x",
        ayref="y",
        showarrow=True,
        arrowhead=2,
        arrowsize=1,
        arrowwidth=1.6,
        arrowcolor=color,
        text="",
    )


def _note(fig: go.Figure, x: float, y: float, text: str, *, theme: Theme, **extra: object) -> None:
    """Small muted text, left-aligned at (x, y)."""
    fig.add_annotation(
        x=x, y=y, text=text, showarrow=False, xanchor="left", font={"size": 11, "color": theme.muted}, **extra
    )


def _draw_residual_flow(fig: go.Figure, *, shapes: tuple[Shape, Shape, Shape, Shape], theme: Theme) -> None:
    """Arrows from each row of the residual branch to the next, and the shape after each convolution."""
    for r0 in range(int(_OUT_ROW)):
        _arrow(fig, _MAIN_X, -r0 - _BOX_H / 2, _MAIN_X, -(r0 + 1) + _BOX_H / 2)
    after1, after2, after3 = shapes[1:]
    for y, text in (
        (-1.5, fmt_shape(after1)),
        (-3.5, fmt_shape(after2)),
        (-5.5, fmt_shape(after3)),
        (-_ADD_ROW + 0.5, f"F(x)  {fmt_shape(after3)}"),
    ):
        _note(fig, _MAIN_X + 0.15, y, text, theme=theme)


def _draw_shortcut(fig: go.Figure, b: BlockInfo, *, theme: Theme) -> None:
    """The shortcut: out of the input box to the left, down (through the projection, if any), into the addition."""
    color = PROJECTION if b.projection else NEUTRAL
    add_y = -_ADD_ROW
    xs: list[float | None] = [_MAIN_X - _W_MAIN / 2, _SHORT_X]
    ys: list[float | None] = [0.0, 0.0]
    if b.projection:
        for row, h in ((_PROJ_CONV_ROW, _PROJ_CONV_H), (_PROJ_BN_ROW, _PROJ_BN_H)):  # a gap where each box sits
            xs += [_SHORT_X, None, _SHORT_X]
            ys += [-row + h / 2, None, -row - h / 2]
    xs.append(_SHORT_X)
    ys.append(add_y)
    line = {"color": color, "width": 2.2 if b.projection else 1.6, "dash": "dot" if b.projection else "solid"}
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=line, hoverinfo="skip", showlegend=False))
    _arrow(fig, _SHORT_X, add_y, _MAIN_X - 0.65, add_y, color=color)
    if b.projection:
        text = f"shortcut: projection<br>{fmt_shape(b.in_shape)}<br>→ {fmt_shape(b.out_shape)}"
    else:
        text = f"shortcut: identity x<br>{fmt_shape(b.in_shape)}"
    _note(fig, _SHORT_X + 0.15, -6.1 if b.projection else -3.5, text, theme=theme, align="left")


def _finish_layout(fig: go.Figure, b: BlockInfo, *, arch: str, theme: Theme, height: int) -> None:
    """A title naming the block, its shortcut and its cost; axes ranges that fit the rows."""
    base_layout(fig, theme=theme, height=height)
    kind = "projection shortcut" if b.projection else "identity shortcut"
    if b.downsamples:
        kind += f", stride {b.stride}"
    fig.update_layout(
        margin={"l": 4, "r": 4, "t": 36, "b": 4},
        title={
            "text": f"<b>{b.name}</b> of {arch}: {kind} · params {b.params:,} · MACs {fmt_count(b.macs)}",
            "x": 0.01,
            "xanchor": "left",
            "y": 0.99,
            "yanchor": "top",
            "font": {"size": 13, "color": theme.text},
        },
        xaxis={"range": [0.0, 10.0]},
        yaxis={"range": [-_OUT_ROW - 0.6, 0.6]},
        showlegend=False,
        meta={"arch": arch, "block": b.name},
    )
