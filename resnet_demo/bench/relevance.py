"""The cost of relevance: LRP and CRP's concepts against torchvision's eager forward, in one run.

Rows, timed interleaved on one preprocessed photo, each as a ratio to the unit (torchvision's
eager forward of the same network and crop, as :mod:`.trust` uses it):

* ``lrp``: one LRP map as the app asks for it (the forward with z⁺, the relevance down to
  the pixels, the heat map), on an analysis whose maps are not cached;
* ``crp (k = 6) at <stage>``: the six concept tiles of a stage (the forward, the relevance
  down to the stage, six conditional backwards in one batch, the tiles' maps).

``python -m resnet_demo bench --trust`` adds :func:`relevance_rows` to its own rows; or
:func:`bench_relevance` times them on their own, with their unit.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..core.weights import LoadedModel
from ..explain import Analysis, Prepared, analyze
from ..explain.crp import DEFAULT_CONCEPTS, concepts
from .explain import torchvision_twin
from .report import TrustRow, time_interleaved

__all__ = ["CRP_STAGES", "GOALS", "bench_relevance", "goal_of", "relevance_rows"]

CRP_STAGES: tuple[str, ...] = ("layer4", "layer3")  # layer4: every concept's backward runs the whole network
# Goals, as ratios to torchvision's eager forward.
GOALS = {"lrp": 3.0, "crp": 8.0}


def _crp_name(stage: str) -> str:
    return f"crp (k = {DEFAULT_CONCEPTS}) at {stage}"


def relevance_rows(analysis: Analysis, *, stages: Sequence[str] = CRP_STAGES) -> dict[str, Callable[[], Any]]:
    """Row name -> a call timing it, on ``analysis``'s photo: LRP, and CRP's default tiles at each of ``stages``.

    Every call works on a fresh copy of the analysis (its forward shared, no map cached),
    so it pays what a first request pays.
    """
    rows: dict[str, Callable[[], Any]] = {"lrp": lambda: analysis.fresh().attribution(method="lrp")}
    for stage in stages:
        rows[_crp_name(stage)] = lambda stage=stage: concepts(analysis=analysis.fresh(), stage=stage)
    return rows


def goal_of(name: str) -> float | None:
    """The goal of a row of :func:`relevance_rows`, as a ratio to the unit."""
    return GOALS["lrp"] if name == "lrp" else GOALS["crp"] if name.startswith("crp") else None


def bench_relevance(
    *,
    loaded: LoadedModel,
    image: Prepared,
    repeats: int = 5,
    warmup: int = 1,
    stages: Sequence[str] = CRP_STAGES,
) -> list[TrustRow]:
    """Time :func:`relevance_rows` interleaved with torchvision's eager forward of ``loaded`` on ``image``.

    The first row is the unit; every row's ratio is its median (and min) over the unit's.
    """
    arch = loaded.spec.arch
    tv = torchvision_twin(loaded, grad=False)
    analysis = analyze(image=image, model=loaded)
    unit_name = f"torchvision {arch} eager forward (unit)"

    def unit() -> Any:
        with torch.inference_mode():
            return tv(image.tensor)

    times = time_interleaved(
        {unit_name: unit, **relevance_rows(analysis, stages=stages)}, repeats=repeats, warmup=warmup, rotate=True
    )
    ref = times[unit_name]
    return [
        TrustRow(
            name,
            statistics.median(ts),
            min(ts),
            unit_name,
            statistics.median(ts) / statistics.median(ref),
            min(ts) / min(ref),
            goal_of(name),
        )
        for name, ts in times.items()
    ]
