"""The cost of the metric cards (a part of ``python -m resnet_demo bench --trust``).

Rows, timed interleaved in one process on one preprocessed photo, each a ratio to
torchvision's eager forward of the same network and weights (the unit):

* the whole card of one map (every metric but reliability, default settings, a box around
  the crop's centre for the pointing games), from an analysis that has the map but no card
  yet: goal <= 60 forwards;
* each metric alone on such an analysis: goal <= its own cost in forwards (its card's
  ``cost_forwards``) x 1.1. Metrics that cost no forward (sparseness, complexity, the
  pointing games) have no goal; their time is reported against the unit all the same.

Each timed call starts from :meth:`~resnet_demo.explain.Analysis.fresh` (the same forward
pass, no cached map or card), so nothing is served from a cache; it includes the
layer4 Grad-CAM map (a closed form on the stored pass: milliseconds).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..explain import analyze, prepare
from ..explain.metric_cards import METRICS, Settings, card_forwards, metric_cards
from ..explain.pointing import box_mask
from .explain import bench_model, torchvision_twin
from .report import TrustRow, time_interleaved

__all__ = ["CARD_GOAL", "METRIC_GOAL", "bench_metric_cards"]

CARD_GOAL = 60.0  # the whole card, in forwards
METRIC_GOAL = 1.1  # a single metric, as a multiple of its own forwards
UNIT = "unit"
CARD = "the whole card of one map"


def bench_metric_cards(
    *,
    arch: str = "resnet50",
    weights: str = "imagenet-v2",
    size: int | None = None,
    image: str | Path | None = None,
    repeats: int = 3,
    warmup: int = 1,
) -> list[TrustRow]:
    """Time the whole card and every metric alone against torchvision's forward, interleaved (module docstring).

    ``weights`` falls back to random weights when missing; ``size`` sets the crop (None: the weights'
    own); ``image`` is a photo (None or missing: a plain 320x240 picture).
    """
    lm = bench_model(arch, weights, size)
    photo = (
        Image.open(image) if image is not None and Path(image).exists() else Image.new("RGB", (320, 240), (120, 90, 60))
    )
    prepared = prepare(image=photo, preprocessing=lm.spec.preprocessing)
    tv = torchvision_twin(lm, grad=False)
    analysis = analyze(image=prepared, model=lm)
    side = prepared.full_size or prepared.image.size
    box = (side[0] * 0.25, side[1] * 0.25, side[0] * 0.75, side[1] * 0.75)
    mask = box_mask(prepared, box)
    settings = Settings()

    def unit() -> Any:
        with torch.inference_mode():
            return tv(prepared.tensor)

    def cards(names: str | list[str]) -> Callable[[], Any]:
        def run() -> Any:
            fresh = analysis.fresh()
            att = fresh.attribution(stage="layer4", method="gradcam")
            return metric_cards(fresh, attribution=att, metrics=names, object_mask=mask, settings=settings)

        return run

    rows: dict[str, Callable[[], Any]] = {UNIT: unit, CARD: cards("all")}
    rows.update({name: cards([name]) for name in METRICS})
    times = time_interleaved(rows, repeats=repeats, warmup=warmup)
    unit_med, unit_min = statistics.median(times[UNIT]), min(times[UNIT])
    out = []
    for name, ts in times.items():
        forwards = card_forwards([name] if name in METRICS else list(METRICS), settings=settings, map_forwards=0.0)
        goal = CARD_GOAL if name == CARD else (METRIC_GOAL * forwards if name in METRICS and forwards else None)
        label = f"torchvision {arch} eager forward (unit)" if name == UNIT else (
            name if name == CARD else f"{name} alone ({forwards:.0f} forwards)")  # fmt: skip
        out.append(
            TrustRow(
                label,
                statistics.median(ts),
                min(ts),
                "unit",
                statistics.median(ts) / unit_med,
                min(ts) / unit_min,
                goal,
            )  # fmt: skip
        )
    return out
