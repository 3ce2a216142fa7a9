"""Metric cards: every number that says how far to trust one map, each with what it measures.

A :class:`MetricCard` is a metric's record: its name (the one the command line, the API
and the JSON use), what it measures in one sentence, its range, which direction is
better, its reference and its cost in forward passes. :func:`metric_cards`, the one entry
point, computes the cards asked for on one map of an :class:`~.analysis.Analysis`, each
with the value a random map scores on the same photo (seeded), so every number comes
with its chance level. Results are cached per analysis: asking again is free.

The metrics live in their own modules: :mod:`.road` (ROAD), :mod:`.confidence` (average
drop and increase in confidence), :mod:`.map_statistics` (sparseness, complexity),
:mod:`.sensitivity` (max-sensitivity, random logit), :mod:`.pointing` (pointing and
energy pointing games) and :mod:`.faithfulness` (deletion and insertion, whose curves
the "How far to trust this map" panel also draws).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np

from ..core.errors import UserError
from .analysis import Analysis
from .baselines import check_baseline
from .confidence import confidence
from .faithfulness import AnalysisCache, check_steps, faithfulness, forward_of, map_digest, random_map
from .map_statistics import complexity, max_complexity, sparseness
from .methods import get_method, method_options
from .pointing import chance, energy_pointing, pointing
from .results import Attribution
from .road import PERCENTILES, road
from .sensitivity import (
    check_radius,
    check_samples,
    check_similarity,
    max_sensitivity,
    random_logit,
    sensitivities,
    similarity,
)

__all__ = [
    "CARDS",
    "METRICS",
    "POINTING",
    "CardReport",
    "ComputedCard",
    "MetricCard",
    "Settings",
    "card_forwards",
    "metric_cards",
    "parse_metrics",
]


@dataclass(frozen=True)
class Settings:
    """The options of the metrics, with their defaults (checked by :meth:`checked`)."""

    n: int = 10  # perturbed photos of max-sensitivity: Quantus's own default is 200, the paper's 50
    radius: float = 0.05  # max-sensitivity's noise half-width, as a fraction of the photo's range
    similarity: str = "ssim"  # random logit's comparison: "ssim" or "spearman"
    steps: int = 16  # points of the deletion and insertion curves, less one
    baseline: str = "blur"  # what deletion and insertion show in removed pixels
    seed: int = 0  # of every random draw: noise, tie-breaks, the other class, the random map

    def checked(self) -> Settings:
        return Settings(
            n=check_samples(self.n),
            radius=check_radius(self.radius),
            similarity=check_similarity(self.similarity),
            steps=check_steps(self.steps),
            baseline=check_baseline(self.baseline),
            seed=int(self.seed),
        )


@dataclass(frozen=True)
class MetricCard:
    """What one metric is: the record shown beside its value."""

    name: str  # on the command line, in the API and as the JSON key
    label: str  # for people
    description: str  # what it measures, one sentence
    range: str
    better: Literal["higher", "lower"]
    reference: str
    # Forward passes for one map, given the settings and what recomputing the map costs (in forwards).
    forwards: Callable[[Settings, float], float] = field(repr=False, compare=False)

    def to_json(self, settings: Settings, map_forwards: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "description": self.description,
            "range": self.range,
            "better": self.better,
            "reference": self.reference,
            "cost_forwards": self.forwards(settings, map_forwards),
        }


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True, eq=False)
class ComputedCard:
    """A card with its value on one map, and what a random map scores on the same photo."""

    card: MetricCard
    value: float | None  # None: undefined for this map (e.g. the sensitivity of a map without evidence)
    random: float | None
    details: Mapping[str, Any]
    seconds: float

    @property
    def better_than_random(self) -> bool | None:
        """Whether the map beats the random map in the card's direction (None if either is undefined)."""
        if self.value is None or self.random is None:
            return None
        return self.value > self.random if self.card.better == "higher" else self.value < self.random

    def to_json(self, settings: Settings, map_forwards: float) -> dict[str, Any]:
        return {
            **self.card.to_json(settings, map_forwards),
            "value": self.value,
            "random_value": self.random,
            "better_than_random": self.better_than_random,
            "details": dict(self.details),
            "seconds": self.seconds,
        }


@dataclass(frozen=True, eq=False)
class CardReport:
    """The cards computed for one map, and the metrics skipped with the reason."""

    method: str
    stage: str
    target: int
    target_label: str
    versus: int | None
    settings: Settings
    map_forwards: float  # what recomputing the map costs, in forwards
    cards: Mapping[str, ComputedCard]  # name -> card, in the order of METRICS
    skipped: Mapping[str, str]  # name -> why
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """The records as JSON-able data, keyed by the metric names (what ``evaluate --json`` and /evaluate give)."""
        return {name: c.to_json(self.settings, self.map_forwards) for name, c in self.cards.items()}


@dataclass(frozen=True, eq=False)
class _Job:
    analysis: Analysis
    attribution: Attribution
    settings: Settings
    mask: np.ndarray | None
    options: Mapping[str, int]


Result = tuple[float | None, float | None, dict[str, Any]]  # value, random map's value, details


# ----------------------------------------------------------------------------- the metrics


def _random(job: _Job, offset: int = 0) -> np.ndarray:
    return random_map(job.attribution.heatmap.shape, job.settings.seed + offset)


_CACHE = AnalysisCache(limit=128)


def _road(job: _Job) -> Result:
    a, s = job.attribution, job.settings
    image = job.analysis.input

    def run(heat: np.ndarray) -> Any:
        return road(
            forward=forward_of(job.analysis), image=image, heatmap=heat, target=a.target, versus=a.versus, seed=s.seed
        )

    mine = run(a.heatmap)
    key = ("road-random", a.target, a.versus, s.seed)
    chance_road = _CACHE.get(job.analysis, key) or _CACHE.put(job.analysis, key, run(_random(job)))
    details = {
        "percentiles": list(PERCENTILES),
        "most_relevant_first": mine.morf.tolist(),
        "least_relevant_first": mine.lerf.tolist(),
        "morf_area": mine.morf_area,
        "lerf_area": mine.lerf_area,
        "random_morf_area": chance_road.morf_area,
        "random_lerf_area": chance_road.lerf_area,
    }
    return mine.combined, chance_road.combined, details


def _confidence(job: _Job) -> Result:
    a, analysis = job.attribution, job.analysis
    mine, chance_conf = confidence(
        forward=forward_of(analysis),
        image=analysis.input,
        heatmaps=[a.heatmap, _random(job)],
        target=a.target,
        versus=a.versus,
        preprocessing=analysis.spec.preprocessing,
    )
    details = {
        "photo_score": mine.photo_score,
        "masked_score": mine.masked_score,
        "increase": mine.increase,
        "random_increase": chance_conf.increase,
    }
    return mine.drop, chance_conf.drop, details


def _sparseness(job: _Job) -> Result:
    return sparseness(job.attribution.heatmap), sparseness(_random(job)), {}


def _complexity(job: _Job) -> Result:
    heat = job.attribution.heatmap
    return complexity(heat), complexity(_random(job)), {"maximum": max_complexity(heat.size)}


def _max_sensitivity(job: _Job) -> Result:
    s = job.settings
    value = max_sensitivity(
        job.analysis, attribution=job.attribution, n=s.n, radius=s.radius, seed=s.seed, options=job.options
    )
    # A random map is a fresh draw for every photo, perturbed or not.
    others = np.stack([_random(job, 1 + i) for i in range(s.n)])
    chance_value = float(sensitivities(_random(job), others).max())
    return _finite(value), chance_value, {"n": s.n, "radius": s.radius}


def _random_logit(job: _Job) -> Result:
    s = job.settings
    value, other = random_logit(
        job.analysis, attribution=job.attribution, seed=s.seed, kind=s.similarity, options=job.options
    )
    chance_value = similarity(_random(job), _random(job, 1), kind=s.similarity)
    label = job.analysis.categories[other] if other < len(job.analysis.categories) else str(other)
    return value, chance_value, {"other_class": other, "other_label": label, "similarity": s.similarity}


def _pointing(job: _Job) -> Result:
    assert job.mask is not None
    return pointing(job.attribution.heatmap, job.mask), chance(job.mask), {"object_share": chance(job.mask)}


def _energy(job: _Job) -> Result:
    assert job.mask is not None
    return energy_pointing(job.attribution.heatmap, job.mask), chance(job.mask), {"object_share": chance(job.mask)}


def _curves(job: _Job, which: str) -> Result:
    s = job.settings
    f = faithfulness(job.analysis, attribution=job.attribution, steps=s.steps, seed=s.seed, baseline=s.baseline)
    mine, rand = (f.curves.deletion_auc, f.random.deletion_auc) if which == "deletion" else (
        f.curves.insertion_auc, f.random.insertion_auc)  # fmt: skip
    return mine, rand, {"steps": s.steps, "baseline": s.baseline}


_RUN: dict[str, Callable[[_Job], Result]] = {
    "road": _road,
    "confidence": _confidence,
    "sparseness": _sparseness,
    "complexity": _complexity,
    "max-sensitivity": _max_sensitivity,
    "random-logit": _random_logit,
    "pointing": _pointing,
    "energy-pointing": _energy,
    "deletion": lambda job: _curves(job, "deletion"),
    "insertion": lambda job: _curves(job, "insertion"),
}

_ROAD_IMAGES = 2 * len(PERCENTILES)
CARDS: tuple[MetricCard, ...] = (
    MetricCard(
        "road", "ROAD",
        "How much the class score falls when the map's most relevant pixels are removed and filled by noisy "
        "linear imputation, against removing its least relevant pixels: (LeRF - MoRF) / 2 over 10-90% removed.",
        "[-1, 1]", "higher", "Rong et al., ICML 2022",
        lambda s, m: 1 + 2 * _ROAD_IMAGES,  # the photo, the map's 18 images and the random map's 18 (kept)
    ),
    MetricCard(
        "confidence", "Average drop in confidence",
        "How far the class score drops, in percent, when the photo is shown only through the map "
        "(details say whether it increased instead).",
        "[0, 100]", "lower", "Chattopadhyay et al., WACV 2018 (Grad-CAM++)",
        lambda s, m: 3,
    ),
    MetricCard(
        "sparseness", "Sparseness (Gini index)",
        "How few pixels hold the map's evidence: 0 for a uniform map, towards 1 when one pixel holds it all.",
        "[0, 1]", "higher", "Chalasani et al., ICML 2020",
        lambda s, m: 0,
    ),
    MetricCard(
        "complexity", "Complexity (entropy)",
        "How spread out the map is: the entropy of the map as a distribution over its pixels, in nats.",
        "[0, ln(pixels)]", "lower", "Bhatt et al., IJCAI 2020",
        lambda s, m: 0,
    ),
    MetricCard(
        "max-sensitivity", "Max-sensitivity",
        "The largest relative change of the map, ||map - map'|| / ||map||, over n slightly noisy copies of the photo.",
        "[0, inf)", "lower", "Yeh et al., NeurIPS 2019",
        lambda s, m: s.n * (1 + m),
    ),
    MetricCard(
        "random-logit", "Random-logit test",
        "How similar the map stays when it explains a random other class instead (SSIM or rank correlation): "
        "a map that does not change explains the photo, not the decision.",
        "[-1, 1]", "lower", "Sixt et al., ICML 2020",
        lambda s, m: m,
    ),
    MetricCard(
        "pointing", "Pointing game",
        "Whether the map's maximum falls inside the object (a box or a segmented class): 1 if it does, else 0.",
        "{0, 1}", "higher", "Zhang et al., IJCV 2018",
        lambda s, m: 0,
    ),
    MetricCard(
        "energy-pointing", "Energy pointing game",
        "The share of the map's total energy that falls inside the object.",
        "[0, 1]", "higher", "Wang et al., CVPR-W 2020 (Score-CAM)",
        lambda s, m: 0,
    ),
    MetricCard(
        "deletion", "Deletion AUC",
        "The area under the class score as the map's most important pixels are replaced by the baseline, in order.",
        "[0, 1]", "lower", "Petsiuk et al., BMVC 2018 (RISE)",
        lambda s, m: 4 * s.steps - 2,  # shared with insertion: the map's and the random map's curves
    ),
    MetricCard(
        "insertion", "Insertion AUC",
        "The area under the class score as the map's most important pixels are revealed over the baseline, in order.",
        "[0, 1]", "higher", "Petsiuk et al., BMVC 2018 (RISE)",
        lambda s, m: 4 * s.steps - 2,
    ),
)  # fmt: skip
METRICS: dict[str, MetricCard] = {c.name: c for c in CARDS}
POINTING = ("pointing", "energy-pointing")  # the metrics that need the object
NO_OBJECT = "needs the object: a box around it or the name of its class"


def parse_metrics(value: str | Sequence[str]) -> tuple[list[str], bool]:
    """The metric names asked for, in :data:`METRICS` order, and whether they were "all" (a
    comma-separated string or a list); an unknown or empty choice is a :class:`UserError`."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(v).strip() for v in items if str(v).strip()]
    if not names:
        raise UserError(f"Choose at least one metric: all, or some of {', '.join(METRICS)}.")
    if "all" in names:
        return list(METRICS), True
    for name in names:
        if name not in METRICS:
            raise UserError(f"Unknown metric {name!r:.40}; choose all, or some of {', '.join(METRICS)}.")
    return [m for m in METRICS if m in names], False


def _map_forwards(attribution: Attribution, options: Mapping[str, int]) -> float:
    entry = get_method(attribution.method)
    opts = method_options(entry, dict(options))
    if entry.space == "input":
        return entry.cost("input", opts)
    stages = entry.supported_stages if attribution.stage == "fusion" else (attribution.stage,)
    return sum(entry.cost(s, opts) for s in stages)


def card_forwards(names: Sequence[str], *, settings: Settings, map_forwards: float) -> float:
    """Forward passes that computing ``names`` for one map costs (deletion and insertion counted once)."""
    picked = [n for n in names if n != "insertion" or "deletion" not in names]
    return float(sum(METRICS[n].forwards(settings, map_forwards) for n in picked))


def _mask_key(mask: np.ndarray | None) -> bytes | None:
    return (
        None
        if mask is None
        else hashlib.blake2b(np.packbits(mask).tobytes() + bytes(str(mask.shape), "ascii")).digest()
    )


def metric_cards(
    analysis: Analysis,
    *,
    attribution: Attribution,
    metrics: str | Sequence[str] = "all",
    object_mask: np.ndarray | None = None,
    settings: Settings | None = None,
    options: Mapping[str, int] | None = None,
    progress: Callable[[float], None] | None = None,
) -> CardReport:
    """The cards of ``metrics`` ("all", or names of :data:`METRICS`) for ``attribution``, a map of ``analysis``.

    ``object_mask`` (H, W) bool on the crop (:func:`~.pointing.box_mask`, :func:`~.pointing.photo_mask`)
    is the object the pointing games look for; "all" without it skips them and says so, naming
    them without it is a :class:`UserError`. ``settings`` holds the metrics' options (checked
    before anything is computed); ``options`` the method's own (as given to
    :meth:`Analysis.attribution`), for the metrics that recompute the map. ``progress`` gets
    the fraction done.
    """
    started = time.perf_counter()
    names, everything = parse_metrics(metrics)
    settings = (settings or Settings()).checked()
    options = dict(options or {})
    if tuple(attribution.heatmap.shape) != analysis.crop.size[::-1]:
        raise UserError("This map was not made for this analysis's image; explain the image again.")
    skipped: dict[str, str] = {}
    if object_mask is None:
        wanted = [n for n in names if n in POINTING]
        if wanted and not everything:
            raise UserError(f"The {' and '.join(wanted)} metric {NO_OBJECT}.")
        skipped = {n: NO_OBJECT for n in wanted}
        names = [n for n in names if n not in POINTING]
    elif object_mask.shape != attribution.heatmap.shape or not object_mask.any():
        raise UserError("The object's mask does not cover the crop the model saw.")
    map_forwards = _map_forwards(attribution, options)
    job = _Job(analysis, attribution, settings, object_mask, options)
    base_key = (
        map_digest(attribution.heatmap), attribution.method, attribution.stage, attribution.target,
        attribution.versus, tuple(sorted(options.items())), tuple(getattr(settings, f.name) for f in fields(settings)),
        _mask_key(object_mask),
    )  # fmt: skip
    total = max(1.0, card_forwards(names, settings=settings, map_forwards=map_forwards))
    done = 0.0
    cards: dict[str, ComputedCard] = {}
    for name in names:
        key = (name, *base_key)
        card = _CACHE.get(analysis, key)
        if card is None:
            t0 = time.perf_counter()
            value, rand, details = _RUN[name](job)
            made = ComputedCard(METRICS[name], _finite(value), _finite(rand), details, time.perf_counter() - t0)
            card = _CACHE.put(analysis, key, made)
        cards[name] = card
        done += METRICS[name].forwards(settings, map_forwards)
        if progress is not None:
            progress(min(1.0, done / total))
    return CardReport(
        method=attribution.method,
        stage=attribution.stage,
        target=attribution.target,
        target_label=attribution.target_label,
        versus=attribution.versus,
        settings=settings,
        map_forwards=map_forwards,
        cards=cards,
        skipped=skipped,
        seconds=time.perf_counter() - started,
    )
