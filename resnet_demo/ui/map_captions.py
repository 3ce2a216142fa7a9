"""What the Explain tab's captions say of a map: what it explains, how long it took, and what to
know before reading it."""

from __future__ import annotations

from ..explain import METHODS, Analysis, Attribution
from ..explain.lrp import relevance_conservation
from .markdown_text import md_text
from .model_choice import UNTRAINED_BANNER

__all__ = ["conservation_line", "map_caption", "subject"]


def _ms(seconds: float) -> str:
    # layer4 Grad-CAM is a closed form (CAM) and takes well under a millisecond.
    if seconds < 1e-3:
        return "<1 ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.0f} s"


def subject(analysis: Analysis, att: Attribution) -> str:
    """What a map explains, as Markdown: "class **A** (12.0%)" or "**A** versus **B**"; names escaped."""
    if att.versus is not None:
        return f"**{md_text(att.target_label)}** versus **{md_text(att.versus_label or str(att.versus))}**"
    prob = next((p.prob for p in analysis.predictions if p.index == att.target), None)
    prob_text = f" ({prob:.1%})" if prob is not None else ""
    return f"class **{md_text(att.target_label)}**{prob_text}"


def map_caption(analysis: Analysis, att: Attribution, *, dropped_versus: bool = False) -> str:
    """A map's caption, as Markdown: method, stage, subject and time, and what to know about it (an all-zero
    map, where LRP's relevance went, an approximate forward, random weights)."""
    parts = [
        f"**{METHODS[att.method]}** at **{att.stage}** for {subject(analysis, att)}, computed in {_ms(att.seconds)}."
    ]
    if dropped_versus:
        parts.append(f'{METHODS[att.method]} ignores the class, so there is no "versus" version of it.')
    if att.all_zero:
        parts.append(
            "⚠️ The map is all zero: at this stage nothing in the image counts as positive "
            "evidence for this class (all of its evidence is negative)."
        )
    if att.method == "lrp":
        parts.append(conservation_line(analysis, att))
    if analysis.precision != "float32":
        parts.append(
            f"Forward in **{analysis.precision}**: approximate probabilities and maps "
            "(every gradient is float32's; run with --precision float32 for exact ones)."
        )
    if analysis.untrained:
        parts.insert(0, f"**{UNTRAINED_BANNER}** (random weights): this map explains a meaningless prediction.")
    return "\n\n".join(parts)


def _pct(share: float) -> str:
    return f"{round(share, 3) + 0.0:.1%}"  # + 0.0: never "-0.0%"


def conservation_line(analysis: Analysis, att: Attribution) -> str:
    """Where LRP's relevance went: the share of the explained score arriving at each stage's input
    and at the pixels, and what the biases and stabilisers took on the way (as Markdown)."""
    points = relevance_conservation(analysis=analysis, target=att.target, versus=att.versus).to_json()["points"]
    arrived = " → ".join(f"{name} {share['relevance']:.0%}" for name, share in points.items())
    taken = points["input"]
    return (
        f"Relevance conserved through the residual sums: of the explained score, {arrived} arrive "
        f"(biases took {_pct(taken['biases'])}, stabilisers {_pct(taken['stabilisers'])} by the pixels)."
    )
