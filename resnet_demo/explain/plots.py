"""Plotly figures of the trust checks of an explanation map (the engine itself draws nothing).

:func:`faithfulness_figure` draws the deletion and insertion curves of a map and of a
random map (:func:`resnet_demo.explain.faithfulness.faithfulness`), side by side, with
the areas under the curves in the legend. Transparent background and theme-aware text,
like the architecture diagram, so it reads on the app's light and dark pages.

:func:`metric_cards_figure` compares the metric cards of several maps (one per method) and of
a random map as grouped bars, one group per metric, each scaled so that the best of the bars
shown reaches 1 and the worst 0 in the metric's own better direction (the raw values in the
hover): the metrics' ranges differ, their direction does not.
"""

from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..diagram.theme import Theme
from .faithfulness import Curves, Faithfulness
from .methods import METHODS
from .metric_cards import CardReport

__all__ = ["FIGURE_HEIGHT", "faithfulness_figure", "metric_cards_figure"]

FIGURE_HEIGHT = 360  # always set: plotly's autosize has rendered at zero height in gr.Plot
# One colour for the map and a grey for the random map, in both panels; both read on white and near-black.
_MAP, _RANDOM = "#f97316", "#94a3b8"


_GRID = "rgba(148,163,184,0.25)"  # a faint slate that shows on both page themes


def _chart_layout(fig: go.Figure, *, theme: Theme, height: int, legend_y: float, top: int) -> None:
    """What the charts share: height, transparent backgrounds (the app's light or dark page shows
    through), fonts, hover labels, the legend below, no dragging."""
    fig.update_layout(
        height=height,
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        font={"color": theme.text, "size": 12},
        hoverlabel={"bgcolor": theme.hover_bg, "font": {"color": theme.text}},
        legend={"orientation": "h", "yanchor": "top", "y": legend_y, "x": 0, "font": {"color": theme.text}},
        margin={"l": 56, "r": 16, "t": top, "b": 96},
        dragmode=False,
    )


def _trace(curves: Curves, kind: str, *, name: str, color: str, dash: str) -> go.Scatter:
    y = curves.deletion if kind == "deletion" else curves.insertion
    auc = curves.deletion_auc if kind == "deletion" else curves.insertion_auc
    return go.Scatter(
        x=[float(v) for v in curves.fractions],
        y=[float(v) for v in y],
        mode="lines+markers",
        name=f"{name}: {kind} AUC {auc:.3f}",
        legendgroup=f"{name}-{kind}",
        line={"color": color, "dash": dash, "width": 2.5 if dash == "solid" else 1.5},
        marker={"size": 4},
        hovertemplate=f"{name}<br>{kind} of %{{x:.0%}} of the pixels<br>score %{{y:.3f}}<extra></extra>",
    )


def faithfulness_figure(result: Faithfulness, *, dark: bool = False, height: int = FIGURE_HEIGHT) -> go.Figure:
    """Deletion (left; lower is better) and insertion (right; higher is better) curves of the
    map and of a random map, the AUCs in the legend."""
    theme = Theme.of(dark)
    # Plotly renders a few HTML tags in text; class names come from checkpoints, so they are escaped.
    target, versus = html.escape(result.target_label), html.escape(result.versus_label or "")
    score = "p(class)" if result.versus is None else f"p({target} | it or {versus})"
    label = METHODS.get(result.method, result.method)
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.1,
        subplot_titles=("Deletion: most important pixels removed first", "Insertion: revealed first"),
    )
    for col, kind in ((1, "deletion"), (2, "insertion")):
        fig.add_trace(_trace(result.curves, kind, name=label, color=_MAP, dash="solid"), row=1, col=col)
        fig.add_trace(_trace(result.random, kind, name="random map", color=_RANDOM, dash="dash"), row=1, col=col)
    fig.update_xaxes(
        range=[0, 1], tickformat=".0%", gridcolor=_GRID, zeroline=False, fixedrange=True, color=theme.muted
    )
    fig.update_xaxes(title_text="pixels removed", row=1, col=1)
    fig.update_xaxes(title_text="pixels revealed", row=1, col=2)
    fig.update_yaxes(range=[0, 1.02], gridcolor=_GRID, zeroline=False, fixedrange=True, color=theme.muted)
    fig.update_yaxes(title_text=score, row=1, col=1)
    fig.update_annotations(font={"color": theme.text, "size": 12})
    _chart_layout(fig, theme=theme, height=height, legend_y=-0.22, top=40)
    return fig


_SERIES = ("#f97316", "#0ea5e9", "#22c55e", "#a855f7", "#eab308", "#ef4444", "#14b8a6", "#ec4899", "#6366f1")


def _scaled(values: list[float | None], higher: bool) -> list[float | None]:
    """Each value as its place between the worst (0) and the best (1) of ``values``; all equal: 0.5."""
    known = [v for v in values if v is not None]
    if not known:
        return [None] * len(values)
    lo, hi = min(known), max(known)
    if hi == lo:
        return [None if v is None else 0.5 for v in values]
    return [None if v is None else ((v - lo) if higher else (hi - v)) / (hi - lo) for v in values]


def metric_cards_figure(reports: list[CardReport], *, dark: bool = False, height: int = FIGURE_HEIGHT) -> go.Figure:
    """Grouped bars: per metric, every report's map and the random map (of the first report), scaled per metric
    so that 1 is the best shown and 0 the worst (see the module docstring)."""
    theme = Theme.of(dark)
    names = [n for n in reports[0].cards if all(n in r.cards for r in reports)]
    series = [(METHODS.get(r.method, r.method), [r.cards[n].value for n in names]) for r in reports]
    series.append(("random map", [reports[0].cards[n].random for n in names]))
    columns = [
        _scaled([vals[i] for _, vals in series], reports[0].cards[n].card.better == "higher")
        for i, n in enumerate(names)
    ]
    fig = go.Figure()
    for k, (label, raw) in enumerate(series):
        color = _RANDOM if label == "random map" else _SERIES[k % len(_SERIES)]
        fig.add_trace(
            go.Bar(
                x=names,
                y=[columns[i][k] for i in range(len(names))],
                name=html.escape(label),
                marker={"color": color},
                customdata=[("n/a" if v is None else f"{v:.4g}") for v in raw],
                hovertemplate=f"{html.escape(label)}<br>%{{x}}: %{{customdata}}<extra></extra>",
            )
        )
    fig.update_yaxes(range=[0, 1.05], gridcolor=_GRID, zeroline=False, fixedrange=True, color=theme.muted,
                     title_text="1: best shown, 0: worst")  # fmt: skip
    fig.update_xaxes(color=theme.muted, fixedrange=True)
    _chart_layout(fig, theme=theme, height=height, legend_y=-0.2, top=24)
    fig.update_layout(barmode="group")
    return fig
