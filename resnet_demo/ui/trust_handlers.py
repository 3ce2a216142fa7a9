"""Handlers of "How far to trust this map": deletion and insertion curves, the ranking of the
quick methods, the randomisation sanity check, the metric cards, and the ``/evaluate`` API endpoint.

Each check costs dozens of forward passes, so nothing runs until the user asks; the
buttons say beforehand how long each should take here, from the forward pass the
user's own analysis timed. Each panel's result is a named tuple whose fields are the
:class:`~.trust_panel.TrustPanel`'s component names.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr
import PIL.Image

from ..core.render import overlay
from ..explain import METHODS, REGISTRY, Analysis, cheap_methods, get_method, method_cost, quick_methods
from ..explain.baselines import BASELINES
from ..explain.faithfulness import Faithfulness, MethodScore, check_steps, faithfulness, rank_methods
from ..explain.plots import faithfulness_figure
from ..explain.sanity import SANITY_STEPS, SanityCheck, randomization_check, verdict_step
from .analysis_store import stored, stored_or_none
from .budget import within_budget
from .components import user_errors
from .explain_handlers import class_index, progress_for, versus_for
from .map_captions import subject
from .markdown_text import md_text

DEFAULT_STEPS = 16  # points per curve: the engine's default, and /evaluate's
DEFAULT_BASELINE = "blur"  # the engine's default: the gentlest change to the photo
# (label, engine name): short labels for the radio; BASELINES has the full words.
BASELINE_CHOICES = [("blur", "blur"), ("mean colour", "mean")]
# Copying, re-initialising and folding a model, per weight: about 0.2 s for ResNet-50's 25.6 M on
# the 2-core EPYC (a layer4 Grad-CAM sanity step at 224 px took 0.57 s against a 0.125 s forward).
_COPY_S_PER_PARAM = 8e-9
BATCHED_IMAGE = 0.5
RANK_HEADERS = ["#", "Method", "Insertion AUC (higher is better)", "Deletion AUC (lower is better)", "Score"]
FAITH_LABEL = "Deletion & insertion curves of this map"
RANK_LABEL = "Rank every quick method"
SANITY_LABEL = "Randomisation sanity check"
Tiles = list[tuple[PIL.Image.Image, str]]


class TrustButtons(NamedTuple):
    """The three buttons' updates: their labels with the expected time of each check here."""

    faith_button: Any
    rank_button: Any
    sanity_button: Any


class FaithfulnessView(NamedTuple):
    """The deletion and insertion curves of the tab's map."""

    faith_plot: Any  # a plotly figure
    faith_summary: str  # Markdown


class RankingView(NamedTuple):
    """Every quick method ranked on this photo."""

    ranking: list[list[Any]]  # the table's rows, best first
    rank_note: str  # Markdown


class SanityView(NamedTuple):
    """The randomisation check of the tab's map."""

    sanity: Tiles  # the map as the network is randomised, step by step
    verdict: str  # Markdown


class TrustResults(NamedTuple):
    """Everything the checks fill; empty (the defaults) when a new photo comes."""

    faith_plot: Any = None
    faith_summary: str = ""
    ranking: list[list[Any]] | None = None
    rank_note: str = ""
    sanity: Tiles | None = None
    verdict: str = ""
    cards_table: list[list[Any]] | None = None
    cards_plot: Any = None
    cards_note: str = ""


# ----------------------------------------------------------------------------- expected times


def forward_s(analysis: Analysis) -> float:
    """Seconds of one forward pass of this analysis's model here (the user's own pass timed it)."""
    return float(analysis.timings.get("forward", 0.1))


def _curve_images(steps: int, maps: int) -> int:
    # Each map adds 2 * (steps - 1) inner points; the photo, the baseline and the random map are shared.
    return 2 + 2 * (steps - 1) * (maps + 1)


def rankable(stage: str, versus: int | None, *, quick: bool = True) -> list[str]:
    """The methods the ranking scores at ``stage`` (with ``versus``, the class-specific ones): the quick
    ones, or with ``quick`` False the cheap ones only (what ``/evaluate`` ranks)."""
    out = []
    for name in quick_methods() if quick else cheap_methods():
        entry = REGISTRY[name]
        if (entry.stages is None or stage in entry.stages) and (versus is None or entry.class_specific):
            out.append(name)
    return out


def map_stage(method: str, stage: str) -> str:
    """The stage ``method``'s map is priced at: ``stage``, or its last one where it has none at ``stage``."""
    entry = get_method(method)
    return stage if entry.stages is None or stage in entry.stages else entry.stages[-1]


def expected_seconds(
    analysis: Analysis, *, stage: str, method: str, versus: int | None, steps: int, quick: bool = True
) -> dict[str, float]:
    """Seconds each check should take here: "faithfulness", "ranking" (of the quick methods, or with
    ``quick`` False of the cheap ones), "sanity"."""
    # A curve's image costs about half the analysis's timed forward (measured on the 2-core EPYC, ResNet-50:
    # 0.43 for the ranking, 0.6 for one map's curves): the images go through in batches, and the timed
    # forward of a new photo includes its first call's overheads.
    per_image = BATCHED_IMAGE * forward_s(analysis)
    map_s = method_cost(method=method, arch=analysis.arch, stage=map_stage(method, stage))
    # Each sanity step: a copy of the model and its folded inference copy (by the weights'
    # size), a forward and the map.
    params = sum(p.numel() for p in analysis.loaded.model.parameters())
    sanity = len(SANITY_STEPS) * (_COPY_S_PER_PARAM * params + 2 * forward_s(analysis) + map_s)
    ranked = rankable(stage, versus, quick=quick)
    # The cheap maps come from the analysis's one backward; the others (LRP, CRP, ...) cost their own.
    maps_s = sum(
        method_cost(method=m, arch=analysis.arch, stage=map_stage(m, stage)) for m in ranked if not REGISTRY[m].cheap
    )
    return {
        "faithfulness": _curve_images(steps, 1) * per_image,
        "ranking": _curve_images(steps, len(ranked)) * per_image + maps_s,
        "sanity": sanity,
    }


def check_time(analysis: Analysis, *, check: str, stage: str, method: str, versus: int | None, steps: int) -> None:
    """A trust check's expected time (``check``: a key of :func:`expected_seconds`, or "all" for
    the map and every check, as ``/evaluate`` runs them: its ranking of the cheap methods) against the
    server's limit, before any of it runs."""
    where = map_stage(method, stage)
    costs = expected_seconds(analysis, stage=stage, method=method, versus=versus, steps=steps, quick=check != "all")
    seconds = sum(costs.values()) if check == "all" else costs[check]
    what = {"faithfulness": "The faithfulness curves", "ranking": "The ranking", "sanity": "The randomisation check"}
    subject = f"{METHODS[method]} at {where}"
    within_budget(
        seconds=seconds + method_cost(method=method, arch=analysis.arch, stage=where),
        what=f"{what[check]} of {subject}" if check in what else f"{subject} with its three trust checks",
    )


def about(seconds: float) -> str:
    """ "~3 s", with a no-break space so that it stays on one line when the button's label wraps."""
    if seconds < 1:
        return "under\u00a01\u00a0s"
    return f"~{seconds:.0f}\u00a0s" if seconds < 90 else f"~{seconds / 60:.0f}\u00a0min"


@user_errors
def trust_buttons(
    analysis: Analysis | str | None, stage: str, method: str, versus: int | None, steps: int
) -> TrustButtons:
    """The three buttons' labels with their expected time here (plain labels before a photo)."""
    analysis = stored_or_none(analysis)
    if analysis is None:
        return TrustButtons(*(gr.update(value=label) for label in (FAITH_LABEL, RANK_LABEL, SANITY_LABEL)))
    versus_index = versus_for(method, class_index(versus, categories=analysis.categories))
    cost = expected_seconds(analysis, stage=stage, method=method, versus=versus_index, steps=check_steps(steps))
    return TrustButtons(
        faith_button=gr.update(value=f"{FAITH_LABEL} ({about(cost['faithfulness'])})"),
        rank_button=gr.update(value=f"{RANK_LABEL} ({about(cost['ranking'])})"),
        sanity_button=gr.update(value=f"{SANITY_LABEL} ({about(cost['sanity'])})"),
    )


# ----------------------------------------------------------------------------- the panels


def trust_classes(analysis: Analysis, target: Any, versus: Any) -> tuple[int | None, int | None]:
    """The class pickers' values as class indices of ``analysis`` (None: the top class / no second class)."""
    categories = analysis.categories
    return class_index(target, categories=categories), class_index(versus, categories=categories)


def faithfulness_summary(analysis: Analysis, result: Faithfulness) -> str:
    """The AUCs of the map against the random map's, as Markdown (class names escaped)."""
    c, r = result.curves, result.random
    stage = "the pixels" if result.stage == "input" else result.stage
    verdict = "scores above" if c.score > r.score else "**does not score above**"
    lines = [
        f"**{METHODS[result.method]}** at **{stage}** for {_subject_of(analysis, result)}, {result.steps} steps, "
        f"removed pixels showing {BASELINES[result.baseline]}: "
        f"the map {verdict} a random map on this photo (insertion − deletion: {c.score:.3f} against {r.score:.3f}).",
        f"- Deletion AUC **{c.deletion_auc:.3f}** (random map {r.deletion_auc:.3f}); lower is better.\n"
        f"- Insertion AUC **{c.insertion_auc:.3f}** (random map {r.insertion_auc:.3f}); higher is better.",
    ]
    if result.all_zero:
        lines.append("⚠️ The map is all zero, so its order is the random tie-break: it is a random map too.")
    if analysis.untrained:
        lines.append("The weights are random (UNTRAINED): these curves measure a meaningless prediction.")
    return "\n\n".join(lines)


def _subject_of(analysis: Analysis, result: Faithfulness) -> str:
    if result.versus is not None:
        return f"**{md_text(result.target_label)}** versus **{md_text(result.versus_label or '')}**"
    return f"class **{md_text(result.target_label)}** ({analysis.prob(result.target):.1%})"


@user_errors
def faithfulness_panel(
    analysis: Analysis | str | None,
    stage: str,
    target: int | None,
    versus: int | None,
    method: str,
    steps: int,
    baseline: str = DEFAULT_BASELINE,
    progress: Any = gr.Progress(),  # noqa: B008  (Gradio's marker for a progress bar)
) -> FaithfulnessView:
    """The tab's current map: its deletion and insertion curves against a random map's."""
    analysis = stored(analysis)
    steps = check_steps(steps)  # before the map: a bad value costs nothing
    t, v = trust_classes(analysis, target, versus)
    v = versus_for(method, v)
    check_time(analysis, check="faithfulness", stage=stage, method=method, versus=v, steps=steps)
    progress(0.0, desc="Computing the map…")
    att = analysis.attribution(
        stage=stage, target=t, method=method, versus=v, progress=progress_for(progress, f"{METHODS[method]}…")
    )
    progress(0.05, desc="Deletion and insertion curves…")
    result = faithfulness(analysis, attribution=att, steps=steps, baseline=baseline)
    return FaithfulnessView(
        faith_plot=faithfulness_figure(result), faith_summary=faithfulness_summary(analysis, result)
    )


def ranking_rows(scores: list[MethodScore], random: Faithfulness | None) -> list[list[Any]]:
    """The ranking as table rows, best first; the random map last, for reference."""
    rows: list[list[Any]] = [
        [str(i + 1), s.label + (" (all zero)" if s.all_zero else ""), *_aucs(s.insertion_auc, s.deletion_auc)]
        for i, s in enumerate(scores)
    ]
    if random is not None:
        rows.append(["–", "random map (chance)", *_aucs(random.random.insertion_auc, random.random.deletion_auc)])
    return rows


def _aucs(insertion: float, deletion: float) -> list[str]:
    # Strings: three decimals in every row, where numbers would drop trailing zeros.
    return [f"{insertion:.3f}", f"{deletion:.3f}", f"{insertion - deletion:+.3f}"]


@user_errors
def ranking_panel(
    analysis: Analysis | str | None,
    stage: str,
    target: int | None,
    versus: int | None,
    steps: int,
    baseline: str = DEFAULT_BASELINE,
    progress: Any = gr.Progress(),  # noqa: B008
) -> RankingView:
    """Every quick method at the tab's stage and class, ranked on this photo."""
    analysis = stored(analysis)
    steps = check_steps(steps)
    t, v = trust_classes(analysis, target, versus)
    check_time(analysis, check="ranking", stage=stage, method="gradcam", versus=v, steps=steps)
    scores = rank_methods(
        analysis, stage=stage, target=t, versus=v, steps=steps, baseline=baseline,
        progress=progress_for(progress, "Ranking…"),
    )  # fmt: skip
    best = analysis.attribution(stage=stage, target=t, method=scores[0].method, versus=v)
    # Cached by the ranking: free.
    reference = faithfulness(analysis, attribution=best, steps=steps, baseline=baseline)
    note = (
        f"At **{stage}** for {subject(analysis, best)}, removed pixels showing {BASELINES[baseline]}; "
        "score = insertion AUC − deletion AUC."
    )
    if v is not None:
        note += ' Methods that ignore the class are left out of a "versus" ranking.'
    return RankingView(ranking=ranking_rows(scores, reference), rank_note=note)


def sanity_tiles(analysis: Analysis, check: SanityCheck, *, opacity: float) -> list[tuple[PIL.Image.Image, str]]:
    """The original map, then the map after each randomisation step with its rank correlation."""
    # Short captions: six tiles share a row.
    tiles = [(overlay(image=analysis.crop, heatmap=check.original, opacity=opacity), "original")]
    for step in check.steps:
        caption = f"+ {step.name}: " + ("all zero" if step.all_zero else f"ρ = {step.correlation:.2f}")
        tiles.append((overlay(image=analysis.crop, heatmap=step.heatmap, opacity=opacity), caption))
    return tiles


def sanity_verdict(check: SanityCheck, *, versus_dropped: bool = False) -> str:
    """The one-line verdict in bold, and how it was reached."""
    step = check.steps[verdict_step(check.stage)]
    after = step.correlation
    where = "the pixels" if check.stage == "input" else check.stage
    lines = [
        f"**{check.verdict[:1].upper()}{check.verdict[1:]}.**",
        f"With {' and '.join(step.randomized)} random, the {METHODS[check.method]} map at {where} for class "
        f"**{md_text(check.target_label)}** keeps a rank correlation of {after:.2f} with the original "
        f"(below {check.threshold:.1f}: the map depends on the learned weights).",
    ]
    if versus_dropped:
        lines.append('The check explains the class alone, not the "versus" map.')
    return "\n\n".join(lines)


@user_errors
def sanity_panel(
    analysis: Analysis | str | None,
    method: str,
    stage: str,
    target: int | None,
    versus: int | None,
    opacity: float,
    progress: Any = gr.Progress(),  # noqa: B008
) -> SanityView:
    """The randomisation check of the tab's current map."""
    analysis = stored(analysis)
    t, v = trust_classes(analysis, target, versus)
    check_time(analysis, check="sanity", stage=stage, method=method, versus=None, steps=DEFAULT_STEPS)
    check = randomization_check(
        analysis, stage=stage, target=t, method=method,
        progress=progress_for(progress, "Randomising the network, top down…"),
    )  # fmt: skip
    verdict = sanity_verdict(check, versus_dropped=v is not None)
    return SanityView(sanity=sanity_tiles(analysis, check, opacity=float(opacity)), verdict=verdict)
