"""Shapes and counts as the figures and tables print them."""

from __future__ import annotations

from collections.abc import Sequence


def fmt_shape(shape: Sequence[int]) -> str:
    """(512, 28, 28) -> "512×28×28"."""
    return "×".join(str(d) for d in shape)


def fmt_count(n: int) -> str:
    """A parameter or MAC count with an SI prefix: 4089184256 -> "4.089 G"."""
    if n >= 1e9:
        return f"{n / 1e9:.3f} G"
    if n >= 1e6:
        return f"{n / 1e6:.2f} M"
    if n >= 1e3:
        return f"{n / 1e3:.1f} k"
    return str(n)


def fmt_value(v: float) -> str:
    """A block statistic, to four significant digits."""
    return f"{v:.4g}"
