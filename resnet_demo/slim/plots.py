"""Accuracy versus multiply-accumulates of a slim run's models: the plotly figure (plotly only here).

Imported on its own, so the command line's run loads plotly only to write the figure.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go

from .report import SlimReport

__all__ = ["accuracy_macs_figure"]

FIGURE_HEIGHT = 380  # always set: plotly's autosize has rendered at zero height in hidden tabs
_COLOURS = {"original": "#94a3b8", "pruned": "#f59e0b", "slim": "#6366f1"}


def accuracy_macs_figure(report: SlimReport | Mapping[str, Any], *, height: int = FIGURE_HEIGHT) -> go.Figure:
    """Validation top-1 against GMACs, one marker per model (original, pruned before recovery,
    slim), an arrow from the original to the slim model; latency and parameters in the hover.

    ``report`` is a :class:`~resnet_demo.slim.report.SlimReport` or the dict of ``slim.json``.
    """
    data = report.to_dict() if isinstance(report, SlimReport) else dict(report)
    rows = [r for r in data["rows"] if r.get("val_top1") is not None]
    fig = go.Figure()
    for r in rows:
        latency = "not measured" if r.get("latency_ms") is None else f"{r['latency_ms']:.1f} ms"
        fig.add_trace(
            go.Scatter(
                x=[r["macs"] / 1e9],
                y=[r["val_top1"]],
                mode="markers+text",
                marker={"size": 14, "color": _COLOURS.get(r["name"], "#22c55e")},
                text=[r["name"]],
                # The pruned and the slim model share their MACs: their names go on opposite sides.
                textposition="bottom center" if r["name"] == "pruned" else "top center",
                name=html.escape(r["label"]),  # labels name the user's checkpoint file
                hovertext=[
                    f"<b>{html.escape(r['label'])}</b><br>val top-1 {r['val_top1']:.1f}%<br>{r['macs'] / 1e9:.3f} GMACs"
                    f"<br>{r['params']:,} params<br>CPU latency, batch 1: {latency}"
                ],
                hoverinfo="text",
            )
        )
    ends = {r["name"]: r for r in rows}
    if "original" in ends and "slim" in ends:
        a, b = ends["original"], ends["slim"]
        fig.add_annotation(
            x=b["macs"] / 1e9, y=b["val_top1"], ax=a["macs"] / 1e9, ay=a["val_top1"],
            xref="x", yref="y", axref="x", ayref="y", showarrow=True, arrowhead=2, opacity=0.5, text="",
        )  # fmt: skip
    fig.update_layout(
        height=height,
        title={"text": f"{data['arch']}: accuracy vs multiply-accumulates at {data['image_size']} px", "x": 0.01},
        xaxis={"title": "GMACs per image", "rangemode": "tozero"},
        yaxis={"title": "validation top-1 (%)"},
        legend={"orientation": "h", "y": -0.2},
        margin={"l": 50, "r": 10, "t": 40, "b": 10},
    )
    return fig
