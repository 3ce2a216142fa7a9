"""Colouring the diagram's blocks: by a statistic of the last image, or by stage without one."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from .blocks import BlockInfo
from .formatting import fmt_value
from .theme import COLORSCALE, STAGE_COLORS, Theme

# stat id -> (label, unit). The app computes the values; the ids are the contract.
STAT_CHOICES: dict[str, tuple[str, str]] = {
    "residual_ratio": ("residual ratio ||F(x)|| / ||x||", "ratio"),
    "mean_activation": ("mean activation", "mean of ReLU output"),
}


def stat_values(stats: Mapping[str, float] | None, names: Sequence[str]) -> tuple[list[float], float, float] | None:
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


def block_colours(
    colouring: tuple[list[float], float, float] | None,
    *,
    blocks: Sequence[BlockInfo],
    stat: str,
    theme: Theme,
) -> tuple[dict[str, object], list[str | None]]:
    """The colour part of the blocks' marker, and each block's statistic line for its hover.

    ``colouring`` is :func:`stat_values` of ``blocks``: with it, a colour scale and a colour
    bar named after ``stat``; without it, one colour per stage and no statistic lines.
    """
    if colouring is None:
        stage_colour = dict(zip(dict.fromkeys(b.stage for b in blocks), STAGE_COLORS, strict=True))
        return {"color": [stage_colour[b.stage] for b in blocks]}, [None] * len(blocks)
    values, lo, hi = colouring
    label, unit = STAT_CHOICES[stat]
    marker: dict[str, object] = {
        "color": values,
        "colorscale": COLORSCALE,
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
    return marker, [f"{label}: no value" if math.isnan(v) else f"{label}: {fmt_value(v)}" for v in values]
