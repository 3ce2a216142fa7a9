"""How reliable a metric's ranking of the methods is (Tomsett et al., "Sanity Checks for Saliency
Metrics", AAAI 2020).

A metric that ranks the explanation methods one way on one photo and another way on the
next says more about the photo than about the methods. For every photo of a folder, each
cheap method's map at one stage is scored by every metric; a metric's *reliability* is
the mean Spearman correlation between the methods' scores on every pair of photos
(inter-rater reliability with photos as raters): 1, the same ranking on every photo; 0,
no agreement; below 0, opposite rankings. The pointing games need an object per photo
and are left out.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import UserError
from ..core.weights import LoadedModel
from .analyze import analyze
from .faithfulness import supports
from .methods import cheap_methods
from .metric_cards import METRICS, POINTING, Settings, metric_cards, parse_metrics
from .sanity import spearman

__all__ = ["PHOTO_SUFFIXES", "Reliability", "photos_in", "reliability"]

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True, eq=False)
class Reliability:
    """Every metric's scores of every cheap method on every photo, and how consistently each ranks them."""

    stage: str
    methods: tuple[str, ...]
    photos: tuple[str, ...]  # file names
    values: dict[str, np.ndarray]  # metric -> (photos, methods), NaN where undefined
    agreement: dict[str, float | None]  # metric -> mean Spearman between photos (None: undefined everywhere)


def photos_in(folder: str | Path) -> list[Path]:
    """The photos of ``folder`` (by suffix, sorted); not a folder, or fewer than two photos, is a UserError."""
    path = Path(folder)
    if not path.is_dir():
        raise UserError(f"{path.name or str(path)!r} is not a folder of photos.")
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    if len(found) < 2:
        raise UserError(f"The reliability of a ranking needs at least two photos; {path.name!r} has {len(found)}.")
    return found


def _agreement(values: np.ndarray) -> float | None:
    """Mean Spearman correlation over pairs of rows that have every value (None if no pair has)."""
    rows = [r for r in values if np.all(np.isfinite(r))]
    pairs = list(itertools.combinations(rows, 2))
    return float(np.mean([spearman(a, b) for a, b in pairs])) if pairs else None


def reliability(
    *,
    photos: Sequence[str | Path],
    model: LoadedModel,
    metrics: str | Sequence[str] = "all",
    stage: str = "layer4",
    settings: Settings | None = None,
    progress: Callable[[float], None] | None = None,
) -> Reliability:
    """Score every cheap method's map at ``stage`` on every photo with ``metrics`` (the pointing games
    left out), and measure how consistently each metric ranks the methods across the photos."""
    names = [n for n in parse_metrics(metrics)[0] if n not in POINTING]
    if not names:
        raise UserError("The pointing games need an object in every photo; choose other metrics for reliability.")
    settings = (settings or Settings()).checked()
    methods = tuple(m for m in cheap_methods() if supports(m, stage, None))
    values = {n: np.full((len(photos), len(methods)), np.nan) for n in names}
    for i, photo in enumerate(photos):
        analysis = analyze(image=photo, model=model, topk=1)
        for j, method in enumerate(methods):
            att = analysis.attribution(stage=stage, method=method)
            cards = metric_cards(analysis, attribution=att, metrics=names, settings=settings).cards
            for n in names:
                if cards[n].value is not None:
                    values[n][i, j] = cards[n].value
            if progress is not None:
                progress((i * len(methods) + j + 1) / (len(photos) * len(methods)))
    return Reliability(
        stage=stage,
        methods=methods,
        photos=tuple(Path(p).name for p in photos),
        values=values,
        agreement={n: _agreement(values[n]) for n in names if n in METRICS},
    )
