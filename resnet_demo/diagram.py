"""The architecture view: plotly figures and tables that explain ResNet-50/101/152.

Everything here is read from the model the app runs (built on the meta device, so
no memory is spent on weights) and from :mod:`resnet_demo.complexity`; nothing about
the network is typed in by hand. The functions are pure and return plotly figures
or plain rows, so the app only has to show them.

* :func:`architecture_figure`: the stem, layer1..layer4 as columns of bottleneck
  blocks (one node each, long stages wrapped into several columns), the shortcuts
  (identity as thin arcs, projection as dashed arcs with their 1x1 convolution as a
  diamond), the stride-2 blocks marked, and optionally every block coloured by a
  statistic of the last image.
* :func:`block_figure`: the inside of one bottleneck block, with its real widths
  and shapes.
* :func:`stage_table`, :func:`comparison_table`: parameters and multiply-accumulates.
* :func:`model_source`: the code of the blocks, read from the module itself.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import plotly.graph_objects as go
import torch
from torch import nn

from . import model as model_module
from .complexity import arch_report, macs_by_module, parameter_count
from .model import ARCH_DEPTHS, Bottleneck, ResNet, build_model

__all__ = [
    "STAT_CHOICES",
    "BlockInfo",
    "architecture_figure",
    "block_choices",
    "block_figure",
    "block_infos",
    "comparison_table",
    "figure_height",
    "model_source",
    "stage_table",
]

# stat id -> (label, unit). The app computes the values; the ids are the contract.
STAT_CHOICES: dict[str, tuple[str, str]] = {
    "residual_ratio": ("residual ratio ||F(x)|| / ||x||", "ratio"),
    "mean_activation": ("mean activation", "mean of ReLU output"),
}

Shape = tuple[int, int, int]  # (C, H, W) of one image


@dataclass(frozen=True)
class BlockInfo:
    """One bottleneck block as the diagram shows it (shapes at ``image_size`` input)."""

    name: str  # module path, e.g. "layer3.0"
    stage: str  # "layer3"
    index: int  # position in its stage, from 0
    in_shape: Shape
    out_shape: Shape
    stride: int  # on the 3x3 convolution (ResNet v1.5)
    widths: tuple[int, int, int, int]  # channels: in, after 1x1 reduce, after 3x3, out
    projection: bool  # True: the shortcut is a 1x1 conv + BN; False: the identity
    params: int  # the whole block, projection included
    macs: int  # multiply-accumulates of the whole block, projection included
    shortcut_params: int = 0  # of the projection alone (0 for the identity)
    shortcut_macs: int = 0

    @property
    def downsamples(self) -> bool:
        return self.stride > 1


# ---------------------------------------------------------------------------
# Reading the network


@lru_cache(maxsize=4)
def _meta_model(arch: str) -> ResNet:
    # Meta tensors have shapes but no storage: the structure costs nothing to keep.
    # Callers only read module attributes; nothing is run or hooked on it.
    with torch.device("meta"):
        return build_model(arch).eval()


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _after(layer: nn.Module, shape: Shape) -> Shape:
    """Shape after a Conv2d or MaxPool2d, from its own kernel, stride and padding."""
    c, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = _pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding)
    out_c = layer.out_channels if isinstance(layer, nn.Conv2d) else c
    return (out_c, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)


def _stem_shapes(net: ResNet, image_size: int) -> tuple[Shape, Shape, Shape]:
    """(image, after conv1, after maxpool)."""
    image = (net.conv1.in_channels, image_size, image_size)
    after_conv = _after(net.conv1, image)
    return image, after_conv, _after(net.maxpool, after_conv)


def _block_shapes(block: Bottleneck, x: Shape) -> tuple[Shape, Shape, Shape]:
    """Shapes after conv1, conv2 and conv3 of one block with input shape ``x``."""
    a = _after(block.conv1, x)
    b = _after(block.conv2, a)
    return a, b, _after(block.conv3, b)


def _fmt_shape(shape: Sequence[int]) -> str:
    return "×".join(str(d) for d in shape)


@lru_cache(maxsize=16)
def _block_infos(arch: str, image_size: int) -> tuple[BlockInfo, ...]:
    net = _meta_model(arch)
    macs = macs_by_module(arch, image_size=image_size)
    x = _stem_shapes(net, image_size)[2]
    infos = []
    for stage_name, stage in net.stages.items():
        for i, block in enumerate(stage):
            name = f"{stage_name}.{i}"
            out = _block_shapes(block, x)[2]
            proj = block.downsample is not None
            infos.append(
                BlockInfo(
                    name=name,
                    stage=stage_name,
                    index=i,
                    in_shape=x,
                    out_shape=out,
                    stride=_pair(block.conv2.stride)[0],
                    widths=(block.conv1.in_channels, block.conv1.out_channels, block.conv2.out_channels, out[0]),
                    projection=proj,
                    params=parameter_count(block),
                    macs=macs.get(name, 0),
                    shortcut_params=parameter_count(block.downsample) if proj else 0,
                    shortcut_macs=macs.get(f"{name}.downsample", 0) if proj else 0,
                )
            )
            x = out
    return tuple(infos)


def _stage_depths(arch: str) -> dict[str, int]:
    """Stage name -> number of blocks, read from the model ("layer1": 3, ...)."""
    return {name: len(stage) for name, stage in _meta_model(arch).stages.items()}


def _check_arch(arch: str) -> None:
    if arch not in ARCH_DEPTHS:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of {', '.join(ARCH_DEPTHS)}.")


def block_infos(arch: str, *, image_size: int = 224) -> list[BlockInfo]:
    """Every bottleneck block of ``arch``, in the order the network runs them."""
    _check_arch(arch)
    return list(_block_infos(arch, image_size))


def block_choices(*, arch: str) -> list[tuple[str, str]]:
    """(label, block name) pairs for a dropdown, e.g. ("layer3.0 · 512→1024, stride 2", "layer3.0")."""
    out = []
    for b in block_infos(arch):
        extra = f", stride {b.stride}" if b.downsamples else ""
        out.append((f"{b.name} · {b.widths[0]}→{b.widths[3]}{extra}", b.name))
    return out


# ---------------------------------------------------------------------------
# Text and numbers


def _fmt_count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.3f} G"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k"
    return str(n)


def _fmt_value(v: float) -> str:
    return f"{v:.4g}"


def _block_hover(b: BlockInfo, depth: int, stat_line: str | None) -> str:
    w = b.widths
    lines = [
        f"<b>{b.name}</b>: stage {b.stage}, block index {b.index} (of 0–{depth - 1})",
        f"in {_fmt_shape(b.in_shape)} → out {_fmt_shape(b.out_shape)}",
        f"stride {b.stride}" + (": halves H and W" if b.downsamples else ""),
        f"conv widths {w[0]} → {w[1]} → {w[2]} → {w[3]} (1×1, 3×3{'/' + str(b.stride) if b.downsamples else ''}, 1×1)",
        (
            f"shortcut: projection, 1×1 conv {w[0]}→{w[3]}{' /' + str(b.stride) if b.downsamples else ''} + BN"
            if b.projection
            else "shortcut: identity"
        ),
        f"params {b.params:,} ({_fmt_count(b.params)}) · MACs {b.macs:,} ({_fmt_count(b.macs)})",
    ]
    if stat_line:
        lines.append(stat_line)
    return "<br>".join(lines)


# ---------------------------------------------------------------------------
# Theme

_STAGE_COLORS = ("#3b82f6", "#14b8a6", "#8b5cf6", "#ec4899")  # layer1..layer4, in order
_NEUTRAL = "#94a3b8"  # stem, head and lines: a mid grey that reads on white and on near-black
_PROJECTION = "#f59e0b"
_SELECTED = "#ef4444"
_COLORSCALE = "Viridis"


@dataclass(frozen=True)
class _Theme:
    text: str
    muted: str
    hover_bg: str

    @staticmethod
    def of(dark: bool) -> _Theme:
        if dark:
            return _Theme(text="#e5e7eb", muted="#9ca3af", hover_bg="#111827")
        return _Theme(text="#1f2937", muted="#6b7280", hover_bg="#ffffff")


def _base_layout(fig: go.Figure, theme: _Theme, height: int) -> None:
    # Transparent backgrounds: the app's light or dark page shows through.
    fig.update_layout(
        height=height,
        autosize=True,
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        font={"color": theme.text, "size": 12},
        hoverlabel={"bgcolor": theme.hover_bg, "font": {"color": theme.text}, "align": "left"},
        xaxis={"visible": False, "fixedrange": True},
        yaxis={"visible": False, "fixedrange": True},
        dragmode=False,
        hovermode="closest",
    )


# ---------------------------------------------------------------------------
# The architecture diagram

MAX_ROWS = 12  # a stage longer than this wraps into more columns (ResNet-152's layer3: 3 x 12)
_ROW_PX = 34  # pixels per block row at the default height
_TOP_PAD = 2.3  # rows above the first block: three-line stage headers
_BOTTOM_PAD = 0.9  # rows below the last block: the connectors between columns
_MARGIN_T, _MARGIN_B = 8, 48  # pixels; the bottom margin holds the legend
_COL_W = 1.0  # one column of blocks, its labels and its gutter, in x units
_STAGE_GAP = 0.25  # extra x between stages
_EDGE_W = 1.5  # the stem and head columns: their labels are longer than block indices


def _rows(arch: str) -> int:
    return min(max(max(ARCH_DEPTHS[arch]), 3), MAX_ROWS)


def figure_height(*, arch: str) -> int:
    """Default pixel height of :func:`architecture_figure` for ``arch``."""
    _check_arch(arch)
    span = _rows(arch) - 1 + _TOP_PAD + _BOTTOM_PAD
    return int(round(span * _ROW_PX)) + _MARGIN_T + _MARGIN_B


@dataclass(frozen=True)
class _Column:
    x: float
    names: tuple[str, ...]


def _layout_columns(arch: str) -> tuple[list[tuple[str, list[_Column]]], float, float]:
    """Columns per stage ("stem" and "head" included) and the x of the first and last."""
    rows = _rows(arch)
    x = 0.0
    out: list[tuple[str, list[_Column]]] = [("stem", [_Column(x, ("image", "conv1", "maxpool"))])]
    x += _EDGE_W + _STAGE_GAP
    for stage, depth in _stage_depths(arch).items():
        n_cols = math.ceil(depth / rows)
        per_col = math.ceil(depth / n_cols)  # balanced: 23 -> 12 + 11, not 12 + 11 by luck
        cols = []
        for c in range(n_cols):
            idx = range(c * per_col, min(depth, (c + 1) * per_col))
            cols.append(_Column(x, tuple(f"{stage}.{i}" for i in idx)))
            x += _COL_W
        out.append((stage, cols))
        x += _STAGE_GAP
    out.append(("head", [_Column(x, ("avgpool", "fc"))]))
    return out, 0.0, x


def _arc(x: float, y: float, n: int = 9) -> tuple[list[float], list[float]]:
    """A shortcut beside a block at (x, y): from above it to below it, bulging left."""
    p0, p1, p2 = (x - 0.05, y + 0.42), (x - 0.5, y), (x - 0.05, y - 0.42)
    xs, ys = [], []
    for k in range(n):
        t = k / (n - 1)
        a, b, c = (1 - t) ** 2, 2 * t * (1 - t), t**2
        xs.append(round(a * p0[0] + b * p1[0] + c * p2[0], 3))
        ys.append(round(a * p0[1] + b * p1[1] + c * p2[1], 3))
    return xs, ys


def _stat_values(stats: Mapping[str, float] | None, names: Sequence[str]) -> tuple[list[float], float, float] | None:
    """Colour values in block order (NaN where missing) and the colour range; None without stats."""
    if not stats:
        return None
    vals: list[float] = []
    for n in names:
        v = stats.get(n)
        # NaN, not None: plotly's validator refuses None in a numeric colour array; JSON sends null.
        vals.append(float(v) if v is not None and math.isfinite(float(v)) else math.nan)
    finite = [v for v in vals if not math.isnan(v)]
    if not finite:
        return None
    lo, hi = min(finite), max(finite)
    if hi - lo < 1e-12:  # one value, or all equal: give the scale some room
        lo, hi = lo - 0.5 * (abs(lo) or 1.0), hi + 0.5 * (abs(hi) or 1.0)
    return vals, lo, hi


def _edge_nodes(arch: str, image_size: int) -> dict[str, tuple[str, str]]:
    """Label and hover of the stem and head nodes."""
    net = _meta_model(arch)
    macs = macs_by_module(arch, image_size=image_size)
    image, after_conv, after_pool = _stem_shapes(net, image_size)
    last = _block_infos(arch, image_size)[-1].out_shape
    k, s = _pair(net.conv1.kernel_size)[0], _pair(net.conv1.stride)[0]
    pk, ps = _pair(net.maxpool.kernel_size)[0], _pair(net.maxpool.stride)[0]
    stem_params = parameter_count(net.conv1) + parameter_count(net.bn1)
    fc = net.fc
    return {
        "image": ("image", f"<b>input image</b><br>{_fmt_shape(image)}"),
        "conv1": (
            f"conv {k}×{k}/{s}",
            f"<b>stem: conv1 → bn1 → relu</b><br>{k}×{k} conv, stride {s}, {image[0]} → {after_conv[0]} channels"
            f"<br>in {_fmt_shape(image)} → out {_fmt_shape(after_conv)}"
            f"<br>params {stem_params:,} · MACs {macs.get('conv1', 0):,} ({_fmt_count(macs.get('conv1', 0))})",
        ),
        "maxpool": (
            f"maxpool /{ps}",
            f"<b>stem: maxpool</b><br>{pk}×{pk} max pool, stride {ps}"
            f"<br>in {_fmt_shape(after_conv)} → out {_fmt_shape(after_pool)}<br>no parameters",
        ),
        "avgpool": (
            "avgpool",
            f"<b>head: avgpool</b><br>global average pool<br>in {_fmt_shape(last)} → out {last[0]}",
        ),
        "fc": (
            f"fc {fc.out_features}",
            f"<b>head: fc</b><br>linear {fc.in_features} → {fc.out_features} classes"
            f"<br>params {parameter_count(fc):,} · MACs {macs.get('fc', 0):,}",
        ),
    }


def architecture_figure(
    *,
    arch: str,
    stats: Mapping[str, float] | None = None,
    stat: str = "residual_ratio",
    selected: str | None = None,
    dark: bool = False,
    height: int | None = None,
) -> go.Figure:
    """The block diagram of ``arch``: one node per bottleneck block, stages as columns.

    ``stats`` maps block names ("layer3.0") to the value of ``stat`` (a key of
    :data:`STAT_CHOICES`) for the last image; with it, blocks are coloured by value and a
    colour bar names the statistic. Blocks missing from ``stats`` are drawn grey, and
    names of other architectures are ignored, so stale statistics never break the view.
    ``selected`` (a block name) is ringed; an unknown name is ignored. The height is
    always set (``height`` or :func:`figure_height`), because plotly inside Gradio can
    render at zero height otherwise.
    """
    _check_arch(arch)
    if stat not in STAT_CHOICES:
        raise ValueError(f"Unknown statistic {stat!r}; choose one of {', '.join(STAT_CHOICES)}.")
    image_size = 224  # the hover shapes are those of the standard 224x224 crop
    theme = _Theme.of(dark)
    infos = {b.name: b for b in _block_infos(arch, image_size)}
    depths = _stage_depths(arch)
    columns, x_first, x_last = _layout_columns(arch)
    rows = _rows(arch)
    height = int(height or figure_height(arch=arch))

    # Marker size follows the row pitch, so a smaller height shrinks nodes instead of overlapping them.
    span = rows - 1 + _TOP_PAD + _BOTTOM_PAD
    row_px = (height - _MARGIN_T - _MARGIN_B) / span
    size = max(6.0, min(20.0, 0.58 * row_px))
    text_size = max(8, min(12, int(row_px * 0.36)))

    pos: dict[str, tuple[float, float]] = {}
    for _, cols in columns:
        for col in cols:
            for r, name in enumerate(col.names):
                pos[name] = (col.x, -float(r))

    fig = go.Figure()

    # The main path: down each column, then through the gutter to the top of the next.
    path_x: list[float | None] = []
    path_y: list[float | None] = []
    all_cols = [col for _, cols in columns for col in cols]
    for a, b in zip(all_cols, all_cols[1:], strict=False):
        bottom = -(len(a.names) - 1)
        gutter = b.x - 0.52 * _COL_W if b.x - a.x <= _COL_W + 1e-9 else b.x - 0.55 * _COL_W - _STAGE_GAP / 2
        path_x += [a.x, a.x, gutter, gutter, b.x, b.x, None]
        path_y += [0.0, bottom - 0.6, bottom - 0.6, 0.62, 0.62, 0.0, None]
    last_col = all_cols[-1]
    path_x += [last_col.x, last_col.x]
    path_y += [0.0, -(len(last_col.names) - 1)]
    fig.add_trace(
        go.Scatter(
            x=path_x,
            y=path_y,
            mode="lines",
            line={"color": _NEUTRAL, "width": 1.6},
            hoverinfo="skip",
            showlegend=False,
            name="main path",
        )
    )

    # Shortcuts: one arc per block, identity thin and solid, projection dashed with its conv as a diamond.
    ident_x: list[float | None] = []
    ident_y: list[float | None] = []
    proj_x: list[float | None] = []
    proj_y: list[float | None] = []
    diamonds: list[tuple[float, float, str]] = []
    for b in infos.values():
        xs, ys = _arc(*pos[b.name])
        if b.projection:
            proj_x += [*xs, None]
            proj_y += [*ys, None]
            w = b.widths
            stride_text = f", stride {b.stride}" if b.downsamples else ""
            diamonds.append(
                (
                    xs[len(xs) // 2],
                    ys[len(ys) // 2],
                    f"<b>{b.name}.downsample</b>: projection shortcut<br>1×1 conv {w[0]} → {w[3]}{stride_text}, then BN"
                    f"<br>{_fmt_shape(b.in_shape)} → {_fmt_shape(b.out_shape)}"
                    f"<br>params {b.shortcut_params:,} · MACs {b.shortcut_macs:,} ({_fmt_count(b.shortcut_macs)})"
                    "<br>needed because the "
                    + (" and ".join(x for x, c in (("width", w[0] != w[3]), ("size", b.downsamples)) if c))
                    + " changes",
                )
            )
        else:
            ident_x += [*xs, None]
            ident_y += [*ys, None]
    fig.add_trace(
        go.Scatter(
            x=ident_x,
            y=ident_y,
            mode="lines",
            line={"color": _NEUTRAL, "width": 1.2},
            hoverinfo="skip",
            name="identity shortcut (x)",
            legendrank=2,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=proj_x,
            y=proj_y,
            mode="lines",
            line={"color": _PROJECTION, "width": 2.4, "dash": "dot"},
            hoverinfo="skip",
            name="projection shortcut (1×1 conv + BN)",
            legendgroup="proj",
            legendrank=3,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[d[0] for d in diamonds],
            y=[d[1] for d in diamonds],
            mode="markers",
            marker={"symbol": "diamond", "size": size * 0.6, "color": _PROJECTION, "line": {"width": 0}},
            hovertext=[d[2] for d in diamonds],
            hoverinfo="text",
            name="projection conv",
            legendgroup="proj",
            showlegend=False,
        )
    )

    # Stem and head nodes.
    edges = _edge_nodes(arch, image_size)
    edge_names = ["image", "conv1", "maxpool", "avgpool", "fc"]
    fig.add_trace(
        go.Scatter(
            x=[pos[n][0] for n in edge_names],
            y=[pos[n][1] for n in edge_names],
            mode="markers+text",
            marker={
                "symbol": ["circle", "square", "square", "square", "square"],
                "size": size * 0.85,
                "color": _NEUTRAL,
                "line": {"color": theme.text, "width": 1},
            },
            text=[edges[n][0] for n in edge_names],
            textposition="middle right",
            textfont={"size": text_size - 1, "color": theme.muted},
            hovertext=[edges[n][1] for n in edge_names],
            hoverinfo="text",
            name="stem and head",
            customdata=edge_names,
            showlegend=False,
            cliponaxis=False,
        )
    )

    # The blocks: one marker each.
    names = list(infos)
    colouring = _stat_values(stats, names)
    label, unit = STAT_CHOICES[stat]
    if colouring is not None:
        values, lo, hi = colouring
        marker: dict[str, object] = {
            "color": values,
            "colorscale": _COLORSCALE,
            "cmin": lo,
            "cmax": hi,
            "showscale": True,
            "colorbar": {
                "title": {"text": f"{label} ({unit})", "side": "right", "font": {"color": theme.text}},
                "tickfont": {"color": theme.text},
                "thickness": 12,
                "len": 0.85,
                "outlinewidth": 0,
            },
        }
        stat_lines = [f"{label}: no value" if math.isnan(v) else f"{label}: {_fmt_value(v)}" for v in values]
    else:
        stage_colour = dict(zip(depths, _STAGE_COLORS, strict=True))
        marker = {"color": [stage_colour[infos[n].stage] for n in names]}
        stat_lines = [None] * len(names)
    marker.update({"symbol": "square", "size": size, "line": {"color": theme.text, "width": 1}})
    fig.add_trace(
        go.Scatter(
            x=[pos[n][0] for n in names],
            y=[pos[n][1] for n in names],
            mode="markers+text",
            # The no-break spaces keep the label clear of the selection ring.
            marker=marker,
            text=[f"\u00a0\u00a0{infos[n].index}" for n in names],
            textposition="middle right",
            textfont={"size": text_size, "color": [_SELECTED if n == selected else theme.text for n in names]},
            hovertext=[
                _block_hover(infos[n], depths[infos[n].stage], s) for n, s in zip(names, stat_lines, strict=True)
            ],
            hoverinfo="text",
            customdata=names,
            name="bottleneck blocks",
            showlegend=False,
            cliponaxis=False,
        )
    )

    if colouring is not None:
        # Blocks without a value: neutral grey on top (plotly would paint them a dark grey);
        # the hover still comes from the blocks underneath.
        missing = [n for n, v in zip(names, colouring[0], strict=True) if math.isnan(v)]
        if missing:
            fig.add_trace(
                go.Scatter(
                    x=[pos[n][0] for n in missing],
                    y=[pos[n][1] for n in missing],
                    mode="markers",
                    marker={
                        "symbol": "square",
                        "size": size,
                        "color": _NEUTRAL,
                        "line": {"color": theme.text, "width": 1},
                    },
                    hoverinfo="skip",
                    customdata=missing,
                    name="no value",
                    showlegend=False,
                )
            )

    # Stride 2: an arrowhead on the path, just before the block that halves H and W.
    down = [b for b in infos.values() if b.downsamples]
    fig.add_trace(
        go.Scatter(
            x=[pos[b.name][0] for b in down],
            y=[pos[b.name][1] + 0.62 for b in down],
            mode="markers",
            marker={"symbol": "triangle-down", "size": size * 0.75, "color": theme.text},
            hovertext=[
                f"<b>{b.name}</b> has stride {b.stride}: {_fmt_shape(b.in_shape)} → {_fmt_shape(b.out_shape)}"
                for b in down
            ],
            hoverinfo="text",
            customdata=[b.name for b in down],
            name="stride 2: halves H and W",
            legendrank=4,
        )
    )

    if selected in infos:
        sx, sy = pos[selected]
        fig.add_trace(
            go.Scatter(
                x=[sx],
                y=[sy],
                mode="markers",
                marker={"symbol": "square-open", "size": size + 8, "color": _SELECTED, "line": {"width": 2.5}},
                hoverinfo="skip",
                customdata=[selected],
                name="selected",
                showlegend=False,
            )
        )

    # Stage headers, centred over each stage's columns.
    for stage, cols in columns:
        xc = (cols[0].x + cols[-1].x) / 2 + 0.12
        if stage in depths:
            out = infos[f"{stage}.{depths[stage] - 1}"].out_shape
            text = f"<b>{stage}</b><br>{depths[stage]} blocks<br>{_fmt_shape(out)}"
        elif stage == "stem":
            text = f"<b>stem</b><br>1 conv<br>{_fmt_shape(infos['layer1.0'].in_shape)}"
        else:
            text = f"<b>head</b><br>1 fc<br>{edges['fc'][0].split()[-1]} classes"
        fig.add_annotation(
            x=xc,
            y=0.75,
            yanchor="bottom",
            xanchor="center",
            text=text,
            showarrow=False,
            font={"size": text_size, "color": theme.text},
        )

    _base_layout(fig, theme, height)
    fig.update_layout(
        margin={"l": 4, "r": 4 if colouring is None else 8, "t": _MARGIN_T, "b": _MARGIN_B},
        xaxis={"range": [x_first - 0.6, x_last + _EDGE_W - 0.3]},
        yaxis={"range": [-(rows - 1) - _BOTTOM_PAD, _TOP_PAD]},
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
        meta={"arch": arch, "stat": stat if colouring is not None else None, "selected": selected},
    )
    return fig


# ---------------------------------------------------------------------------
# The inside of one block

_KIND_FILL = {
    "conv": "rgba(59,130,246,0.22)",
    "bn": "rgba(148,163,184,0.25)",
    "relu": "rgba(34,197,94,0.22)",
    "add": "rgba(245,158,11,0.30)",
    "io": "rgba(148,163,184,0.12)",
}
_KIND_LINE = {"conv": "#3b82f6", "bn": "#94a3b8", "relu": "#22c55e", "add": "#f59e0b", "io": "#94a3b8"}


def block_figure(*, arch: str, block: str, dark: bool = False, height: int = 600) -> go.Figure:
    """The inside of one bottleneck block (``block`` like "layer3.0") with its real widths and shapes.

    The residual branch runs down the middle (1x1 reduce, 3x3 with the stride, 1x1
    expand, each followed by BN and, but for the last, ReLU); the shortcut runs down the
    left, as the identity or as a 1x1 projection + BN; both meet at the addition, then
    the last ReLU. Hovering a box shows its module name, shapes, parameters and MACs.
    """
    _check_arch(arch)
    infos = {b.name: b for b in _block_infos(arch, 224)}
    if block not in infos:
        raise ValueError(f"{arch} has no block {block!r}; blocks run from layer1.0 to {list(infos)[-1]}.")
    b = infos[block]
    theme = _Theme.of(dark)
    stage_name, idx = block.split(".")
    mod: Bottleneck = _meta_model(arch).stages[stage_name][int(idx)]
    macs = macs_by_module(arch, image_size=224)
    after1, after2, after3 = _block_shapes(mod, b.in_shape)
    s = b.stride

    main_x, short_x = 6.4, 1.9
    w_main, w_small, w_short = 4.4, 2.0, 3.0
    box_h = 0.62

    # (row, x, width, kind, label, hover)
    boxes: list[tuple[float, float, float, str, str, str]] = []

    def conv_box(row: float, conv_name: str, conv: nn.Conv2d, shape_in: Shape, shape_out: Shape) -> None:
        k, st = _pair(conv.kernel_size)[0], _pair(conv.stride)[0]
        path = f"{block}.{conv_name}"
        stride_txt = f", stride {st}" if st > 1 else ""
        label = f"<b>{conv_name}</b>  {k}×{k} conv{stride_txt}  {conv.in_channels} → {conv.out_channels}"
        hover = (
            f"<b>{path}</b>: {k}×{k} conv{stride_txt}<br>{_fmt_shape(shape_in)} → {_fmt_shape(shape_out)}"
            f"<br>params {parameter_count(conv):,} · MACs {macs.get(path, 0):,} ({_fmt_count(macs.get(path, 0))})"
        )
        boxes.append((row, main_x, w_main, "conv", label, hover))

    def bn_relu_row(row: float, n: int, shape: Shape, relu: bool) -> None:
        bn = getattr(mod, f"bn{n}")
        hover_bn = (
            f"<b>{block}.bn{n}</b>: BatchNorm over {bn.num_features} channels"
            f"<br>params {parameter_count(bn):,} (scale and shift per channel)"
        )
        if relu:
            boxes.append((row, main_x - w_small / 2 - 0.1, w_small, "bn", f"<b>bn{n}</b>  BatchNorm", hover_bn))
            boxes.append(
                (
                    row,
                    main_x + w_small / 2 + 0.1,
                    w_small,
                    "relu",
                    f"<b>relu{n}</b>  ReLU",
                    f"<b>{block}.relu{n}</b>: ReLU, max(0, ·)<br>{_fmt_shape(shape)}",
                )
            )
        else:
            boxes.append((row, main_x, w_small, "bn", f"<b>bn{n}</b>  BatchNorm", hover_bn))

    boxes.append(
        (
            0,
            main_x,
            w_main,
            "io",
            f"<b>x</b>  {_fmt_shape(b.in_shape)}",
            f"<b>input of {block}</b><br>{_fmt_shape(b.in_shape)}",
        )
    )
    conv_box(1, "conv1", mod.conv1, b.in_shape, after1)
    bn_relu_row(2, 1, after1, True)
    conv_box(3, "conv2", mod.conv2, after1, after2)
    bn_relu_row(4, 2, after2, True)
    conv_box(5, "conv3", mod.conv3, after2, after3)
    bn_relu_row(6, 3, after3, False)
    add_row, relu_row, out_row = 7.0, 8.0, 9.0
    boxes.append(
        (
            add_row,
            main_x,
            1.3,
            "add",
            "<b>+</b>",
            f"<b>addition</b>: F(x) + shortcut(x)<br>both {_fmt_shape(b.out_shape)}",
        )
    )
    boxes.append(
        (relu_row, main_x, w_small, "relu", "<b>relu3</b>  ReLU", f"<b>{block}.relu3</b>: ReLU after the addition")
    )
    boxes.append(
        (
            out_row,
            main_x,
            w_main,
            "io",
            f"<b>out</b>  {_fmt_shape(b.out_shape)}",
            f"<b>output of {block}</b><br>{_fmt_shape(b.out_shape)}",
        )
    )
    if b.projection:
        ds = mod.downsample
        path = f"{block}.downsample.0"
        conv = ds[0]
        stride_txt = f", stride {s}" if s > 1 else ""
        boxes.append(
            (
                3.0,
                short_x,
                w_short,
                "conv",
                f"<b>downsample.0</b><br>1×1 conv{stride_txt}<br>{conv.in_channels} → {conv.out_channels}",
                f"<b>{path}</b>: projection shortcut, 1×1 conv{stride_txt}"
                f"<br>{_fmt_shape(b.in_shape)} → {_fmt_shape(b.out_shape)}"
                f"<br>params {parameter_count(conv):,} · MACs {macs.get(path, 0):,} ({_fmt_count(macs.get(path, 0))})",
            )
        )
        boxes.append(
            (
                4.6,
                short_x,
                w_small,
                "bn",
                "<b>downsample.1</b><br>BN",
                f"<b>{block}.downsample.1</b>: BatchNorm over {ds[1].num_features} channels"
                f"<br>params {parameter_count(ds[1]):,}",
            )
        )

    fig = go.Figure()
    proj_rows = (3.0, 4.6)
    proj_h = {3.0: 1.15, 4.6: 0.8}  # the projection boxes hold three and two lines
    for row, x, w, kind, _label, _hover in boxes:
        h = proj_h[row] if x == short_x else box_h
        fig.add_shape(
            type="rect",
            x0=x - w / 2,
            x1=x + w / 2,
            y0=-row - h / 2,
            y1=-row + h / 2,
            fillcolor=_KIND_FILL[kind],
            line={"color": _KIND_LINE[kind], "width": 1.5},
            layer="below",
        )

    def arrow(x0: float, y0: float, x1: float, y1: float, color: str = _NEUTRAL) -> None:
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

    # Residual branch, with the tensor shape after each convolution (where shapes change).
    for r0, r1 in ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 9)):
        arrow(main_x, -r0 - box_h / 2, main_x, -r1 + box_h / 2)
    for y, text in (
        (-1.5, _fmt_shape(after1)),
        (-3.5, _fmt_shape(after2)),
        (-5.5, _fmt_shape(after3)),
        (-add_row + 0.5, f"F(x)  {_fmt_shape(after3)}"),
    ):
        fig.add_annotation(
            x=main_x + 0.15,
            y=y,
            text=text,
            showarrow=False,
            xanchor="left",
            font={"size": 11, "color": theme.muted},
        )

    # The shortcut: out of the input box to the left, down (through the projection, if any), into the addition.
    sc_color = _PROJECTION if b.projection else _NEUTRAL
    add_y = -add_row
    sc_x: list[float | None] = [main_x - w_main / 2, short_x]
    sc_y: list[float | None] = [0.0, 0.0]
    if b.projection:
        for row in proj_rows:  # leave a gap where each projection box sits
            h = proj_h[row]
            sc_x += [short_x, None, short_x]
            sc_y += [-row + h / 2, None, -row - h / 2]
    sc_x.append(short_x)
    sc_y.append(add_y)
    fig.add_trace(
        go.Scatter(
            x=sc_x,
            y=sc_y,
            mode="lines",
            line={"color": sc_color, "width": 2.2 if b.projection else 1.6, "dash": "dot" if b.projection else "solid"},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    arrow(short_x, add_y, main_x - 0.65, add_y, color=sc_color)
    sc_text = (
        f"shortcut: projection<br>{_fmt_shape(b.in_shape)}<br>→ {_fmt_shape(b.out_shape)}"
        if b.projection
        else f"shortcut: identity x<br>{_fmt_shape(b.in_shape)}"
    )
    fig.add_annotation(
        x=short_x + 0.15,
        y=-6.1 if b.projection else -3.5,
        text=sc_text,
        showarrow=False,
        xanchor="left",
        align="left",
        font={"size": 11, "color": theme.muted},
    )

    fig.add_trace(
        go.Scatter(
            x=[bx[1] for bx in boxes],
            y=[-bx[0] for bx in boxes],
            mode="text",
            text=[bx[4] for bx in boxes],
            textfont={"size": 12, "color": theme.text},
            hovertext=[bx[5] for bx in boxes],
            hoverinfo="text",
            showlegend=False,
            name="ops",
        )
    )

    _base_layout(fig, theme, height)
    kind = "projection shortcut" if b.projection else "identity shortcut"
    if b.downsamples:
        kind += f", stride {s}"
    fig.update_layout(
        margin={"l": 4, "r": 4, "t": 36, "b": 4},
        title={
            "text": f"<b>{block}</b> of {arch}: {kind} · params {b.params:,} · MACs {_fmt_count(b.macs)}",
            "x": 0.01,
            "xanchor": "left",
            "y": 0.99,
            "yanchor": "top",
            "font": {"size": 13, "color": theme.text},
        },
        xaxis={"range": [0.0, 10.0]},
        yaxis={"range": [-out_row - 0.6, 0.6]},
        showlegend=False,
        meta={"arch": arch, "block": block},
    )
    return fig


# ---------------------------------------------------------------------------
# Tables and code


def stage_table(*, arch: str, image_size: int = 224) -> list[dict[str, object]]:
    """Per-stage rows: stem, layer1..layer4, head, total.

    Keys: ``stage``, ``blocks``, ``weighted_layers`` (convolutions and fc: they add up to
    the 50/101/152 of the name), ``output_shape``, ``params``, ``macs``, ``gmacs``,
    ``params_share`` and ``macs_share`` (percent of the total). The total row equals
    :func:`resnet_demo.complexity.arch_report`.
    """
    _check_arch(arch)
    net = _meta_model(arch)
    macs = macs_by_module(arch, image_size=image_size)
    infos = _block_infos(arch, image_size)
    total_params, total_macs = parameter_count(net), macs[""]

    def row(stage: str, blocks: int, layers: int, shape: str, params: int, m: int) -> dict[str, object]:
        return {
            "stage": stage,
            "blocks": blocks,
            "weighted_layers": layers,
            "output_shape": shape,
            "params": params,
            "macs": m,
            "gmacs": round(m / 1e9, 3),
            "params_share": round(100 * params / total_params, 1),
            "macs_share": round(100 * m / total_macs, 1),
        }

    stem_out = _stem_shapes(net, image_size)[2]
    rows = [
        row(
            "stem",
            0,
            1,
            _fmt_shape(stem_out),
            parameter_count(net.conv1) + parameter_count(net.bn1),
            macs.get("conv1", 0),
        )
    ]
    for stage_name, stage in net.stages.items():
        out = [b for b in infos if b.stage == stage_name][-1].out_shape
        rows.append(
            row(
                stage_name, len(stage), 3 * len(stage), _fmt_shape(out), parameter_count(stage), macs.get(stage_name, 0)
            )
        )
    rows.append(row("head", 0, 1, str(net.fc.out_features), parameter_count(net.fc), macs.get("fc", 0)))
    rows.append(
        row(
            "total",
            sum(r["blocks"] for r in rows),
            sum(r["weighted_layers"] for r in rows),
            rows[-1]["output_shape"],
            total_params,
            total_macs,
        )
    )
    return rows


def comparison_table() -> list[dict[str, object]]:
    """Per architecture: measured parameters and GMACs beside the reproduction guide's table and torchvision's published figures."""
    out = []
    for arch in ARCH_DEPTHS:
        r = arch_report(arch)
        out.append(
            {
                "arch": arch,
                "blocks": "-".join(str(d) for d in r.depths),
                "params": r.params,
                "params_torchvision": r.tv_params,
                "params_m_guide": r.guide_params_m,
                "gmacs": round(r.gmacs, 3),
                "gmacs_torchvision": r.tv_gmacs,
                "gmacs_guide": r.guide_gmacs,
                "top1_torchvision_v1": r.tv_acc1_v1,
                "top1_torchvision_v2": r.tv_acc1_v2,
                "top1_guide": r.guide_top1,
            }
        )
    return out


# What the app shows beside the diagram, in the module's own order.
_SOURCE_OBJECTS = ("conv3x3", "conv1x1", "Bottleneck", "ResNet")


def model_source() -> str:
    """The source of ``conv3x3``, ``conv1x1``, ``Bottleneck`` and ``ResNet``, read from
    :mod:`resnet_demo.model` with :mod:`inspect`, so it is always the code that runs."""
    return "\n\n".join(inspect.getsource(getattr(model_module, name)).rstrip("\n") + "\n" for name in _SOURCE_OBJECTS)
