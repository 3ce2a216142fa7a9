"""Handlers of the metric cards in "How far to trust this map": every metric of the map as one table
(its value beside a random map's), the figure comparing the methods on every metric, and the object
of the pointing games (a box on the photo, or the segmentation of a named class)."""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr

from ..core.errors import UserError
from ..explain import METHODS, Analysis, method_cost
from ..explain.baselines import check_baseline
from ..explain.faithfulness import check_steps, supports
from ..explain.metric_cards import CardReport, Settings, card_forwards, metric_cards, parse_metrics
from ..explain.plots import metric_cards_figure
from ..explain.pointing import box_mask, parse_box, photo_mask
from ..transfer.object_mask import object_mask
from .analysis_store import stored, stored_or_none
from .budget import within_budget
from .components import user_errors
from .explain_handlers import progress_for, versus_for
from .markdown_text import md_text
from .trust_handlers import BATCHED_IMAGE, DEFAULT_BASELINE, about, forward_s, map_stage, rankable, trust_classes

CARDS_LABEL = "Compute the metric cards"
CARD_HEADERS = ["Metric", "Value", "Random map", "Versus random", "Better", "Range", "Forwards", "What it measures"]


class CardsView(NamedTuple):
    """The metric cards of the tab's map (and of every quick method's, when asked)."""

    cards_table: list[list[Any]]  # one row per metric
    cards_plot: Any  # a plotly figure: the methods and a random map on every metric
    cards_note: str  # Markdown: what was skipped, and the reading of the table


def _object_on_crop(analysis: Analysis, box: str | None, name: str | None) -> Any:
    """The object's mask on the crop from a box or a segmentation class (None: neither given)."""
    picked = parse_box(box)
    name = (name or "").strip()
    if picked is not None and name:
        raise UserError("Give the object as a box or as a class to segment, not both.")
    if picked is not None:
        return box_mask(analysis.prepared, picked)
    if name:
        return photo_mask(analysis.prepared, object_mask(image=analysis.image, name=name), what=f"The {name}")
    return None


def compute_cards(
    analysis: Analysis, att: Any, metrics: Any, box: str | None, name: str | None, baseline: str, steps: int,
    progress: Any = None,
) -> CardReport:  # fmt: skip
    mask = _object_on_crop(analysis, box, name)
    settings = Settings(steps=steps, baseline=baseline)
    return metric_cards(
        analysis, attribution=att, metrics=metrics, object_mask=mask, settings=settings, progress=progress
    )


def _metric_names(metrics: Any) -> list[str]:
    """The panel's checkbox values (or the API's text) as metric names; "all" when nothing is ticked is an error."""
    return parse_metrics(metrics if isinstance(metrics, str) else list(metrics or []))[0]


def cards_seconds(analysis: Analysis, *, stage: str, method: str, metrics: Any, steps: int, maps: int = 1) -> float:
    """Seconds the metric cards of ``maps`` maps should take here, from the forwards their cards cost."""
    map_forwards = method_cost(method=method, arch=analysis.arch, stage=map_stage(method, stage)) / forward_s(analysis)
    forwards = card_forwards(_metric_names(metrics), settings=Settings(steps=steps), map_forwards=map_forwards)
    return maps * forwards * BATCHED_IMAGE * forward_s(analysis)


@user_errors
def cards_button(
    analysis: Analysis | str | None, stage: str, method: str, steps: int, metrics: Any, compare: bool
) -> Any:
    """The metric cards button's label with its expected time here (plain before a photo or a choice)."""
    analysis = stored_or_none(analysis)
    if analysis is None or not metrics:
        return gr.update(value=CARDS_LABEL)
    maps = len(rankable(stage, None)) if compare else 1
    seconds = cards_seconds(analysis, stage=stage, method=method, metrics=metrics, steps=check_steps(steps), maps=maps)
    return gr.update(value=f"{CARDS_LABEL} ({about(seconds)})")


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def card_rows(report: CardReport) -> list[list[Any]]:
    """The cards as table rows: value, the random map's value, better or worse than it, and what each means."""
    versus = {True: "better", False: "worse", None: "n/a"}
    rows = []
    for name, c in report.cards.items():
        record = c.card
        forwards = record.forwards(report.settings, report.map_forwards)
        rows.append([name, _cell(c.value), _cell(c.random), versus[c.better_than_random], record.better,
                     record.range, f"{forwards:.0f}", f"{record.description} ({record.reference})"])  # fmt: skip
    return rows


@user_errors
def metric_cards_panel(
    analysis: Analysis | str | None, stage: str, target: int | None, versus: int | None, method: str, steps: int,
    baseline: str, metrics: Any, box: str | None, object_class: str | None, compare: bool,
    progress: Any = gr.Progress(),  # noqa: B008  (Gradio's marker for a progress bar)
) -> CardsView:  # fmt: skip
    """The tab's map's metric cards as one table, and the figure comparing the methods (with ``compare``,
    every quick method at the stage) and a random map on every metric."""
    analysis = stored(analysis)
    steps, baseline, names = check_steps(steps), check_baseline(baseline or DEFAULT_BASELINE), _metric_names(metrics)
    t, v = trust_classes(analysis, target, versus)
    v = versus_for(method, v)
    others = [m for m in rankable(stage, v) if m != method and supports(m, stage, v)] if compare else []
    seconds = cards_seconds(analysis, stage=stage, method=method, metrics=names, steps=steps, maps=1 + len(others))
    within_budget(seconds=seconds, what=f"The metric cards of {METHODS[method]}")
    progress(0.0, desc="Computing the map…")
    att = analysis.attribution(stage=stage, target=t, method=method, versus=v)
    done = progress_for(progress, "Metric cards…")
    report = compute_cards(analysis, att, names, box, object_class, baseline, steps, progress=done)
    reports = [report]
    for other in others:
        other_att = analysis.attribution(stage=stage, target=att.target, method=other, versus=att.versus)
        reports.append(compute_cards(analysis, other_att, list(report.cards), box, object_class, baseline, steps))
    skipped = "; ".join(f"**{n}** skipped: it {why}" for n, why in report.skipped.items())
    note = (
        f"Metric cards of {METHODS[method]} at {att.stage} for {_subject_of_map(att)}: each value beside what a "
        "random map scores on this photo. " + (skipped + "." if skipped else "")
    )
    return CardsView(cards_table=card_rows(report), cards_plot=metric_cards_figure(reports), cards_note=note)


def _subject_of_map(att: Any) -> str:
    if att.versus is not None:
        return f"**{md_text(att.target_label)}** versus **{md_text(att.versus_label or '')}**"
    return f"**{md_text(att.target_label)}**"
