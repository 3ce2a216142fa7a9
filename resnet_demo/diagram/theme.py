"""Colours and the layout both figures share, for the app's light and dark pages."""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

STAGE_COLORS = ("#3b82f6", "#14b8a6", "#8b5cf6", "#ec4899")  # layer1..layer4, in order
NEUTRAL = "#94a3b8"  # stem, head and lines: a mid grey that reads on white and on near-black
PROJECTION = "#f59e0b"
SELECTED = "#ef4444"
COLORSCALE = "Viridis"


@dataclass(frozen=True)
class Theme:
    """Text, muted text, hover background and accent colours of one page theme.

    The accent marks what a head reads: a lime unlike the stage colours, the projection's
    amber and the selection's red, darker on a light page and lighter on a dark one.
    """

    text: str
    muted: str
    hover_bg: str
    accent: str
    accent_fill: str  # the accent, faint, for a band behind nodes

    @staticmethod
    def of(dark: bool) -> Theme:
        if dark:
            return Theme(
                text="#e5e7eb",
                muted="#9ca3af",
                hover_bg="#111827",
                accent="#a3e635",
                accent_fill="rgba(163,230,53,0.10)",
            )
        return Theme(
            text="#1f2937", muted="#6b7280", hover_bg="#ffffff", accent="#4d7c0f", accent_fill="rgba(101,163,13,0.10)"
        )


def base_layout(fig: go.Figure, *, theme: Theme, height: int) -> None:
    """Set what both figures share: height, fonts, hover labels, hidden fixed axes, no dragging."""
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
