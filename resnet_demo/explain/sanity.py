"""The model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", 2018).

A map that explains a network's decision must change when the network forgets what it
learned. The cascading test re-initialises the layers from the top down (``fc``, then
``layer4``, ``layer3``, ``layer2``, ``layer1``, cumulatively), recomputes the map for the
same class, stage and photo after each step, and measures how much of the original
map's ranking survives: the Spearman rank correlation of the two maps. A map that stays
the same on a network with random weights shows the image (its edges), not the model.

The verdict reads the correlation once the map's own stage and everything above it are
random (``fc`` and ``layer4`` for a layer4 map, down to ``layer3`` for a layer3 map, every
step for the stem and for pixel maps): below :data:`THRESHOLD` (0.5: less than half of
the ranking survives, where recomputing with the same weights gives 1) the map depends on
the learned weights. An earlier stage's map is made of that stage's activations, which
the layers above it do not touch, so it is judged once its own weights are gone.

Everything runs on a private deep copy of the unfolded model, re-initialised in place
the way the model initialises itself (Kaiming normal convolutions, BatchNorm weight 1,
bias 0 and fresh running statistics, ``nn.Linear``'s default for ``fc``), from a seeded
generator; the shared model is only read. One copy lives at a time, with the folded
inference copy the engine makes of it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.errors import UserError
from .analysis import Analysis
from .analysis_cache import AnalysisCache
from .analyze import analyze
from .results import Attribution

__all__ = ["SANITY_STEPS", "THRESHOLD", "SanityCheck", "SanityStep", "randomization_check", "spearman", "verdict_step"]

SANITY_STEPS = ("fc", "layer4", "layer3", "layer2", "layer1")  # re-initialised in this order, cumulatively
THRESHOLD = 0.5  # rank correlation below which the map depends on the weights (see the module docstring)
PASSED = "the map depends on the learned weights"
FAILED = "the map does not depend on the learned weights: treat it as an edge detector"

_CACHE = AnalysisCache(limit=16)


@dataclass(frozen=True, eq=False)
class SanityStep:
    """The map after one more part of the network was re-initialised."""

    name: str  # the part re-initialised at this step: "fc", "layer4", ...
    randomized: tuple[str, ...]  # every part random at this step, top down
    heatmap: np.ndarray  # (H, W) in [0, 1], read-only
    correlation: float  # Spearman rank correlation with the original map, in [-1, 1]
    all_zero: bool  # the map lost all positive evidence (its correlation is then 0)


@dataclass(frozen=True, eq=False)
class SanityCheck:
    """The cascading randomisation of one map: a step per re-initialised part, and the verdict."""

    method: str
    stage: str
    target: int
    target_label: str
    original: np.ndarray  # (H, W) the map on the learned weights
    steps: tuple[SanityStep, ...]
    passed: bool  # the correlation at the verdict step (see verdict_step) is below ``threshold``
    verdict: str  # one line for people
    threshold: float
    seconds: float


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a flat array, equal values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # the last rank of each distinct value
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two maps of the same shape (ties: average ranks), in [-1, 1].

    A constant map has no ranking to agree with: its correlation is 0 (1 if both are the same constant).
    """
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"maps of shapes {np.shape(a)} and {np.shape(b)} cannot be compared")
    rx, ry = _average_ranks(x) - (x.size + 1) / 2.0, _average_ranks(y) - (y.size + 1) / 2.0
    norm = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if norm == 0.0:
        return 1.0 if np.array_equal(x, y) else 0.0
    return float(np.clip(float(rx @ ry) / norm, -1.0, 1.0))


def reinitialize(module: nn.Module, *, generator: torch.Generator) -> None:
    """Re-initialise ``module`` in place as :class:`~resnet_demo.core.model.ResNet` initialises itself."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.weight.fill_(1.0)
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                # nn.Linear's own default, kaiming_uniform_(a=sqrt(5)), is uniform(+-1/sqrt(fan_in)).
                bound = 1.0 / math.sqrt(m.in_features)
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)


def _cascade(
    analysis: Analysis, original: Attribution, *, seed: int, progress: Callable[[float], None] | None
) -> list[SanityStep]:
    """The steps of the check, on a private copy that dies with this call (the shared model is only read).

    Memory: the copy and the folded inference copy the engine makes of it (two while a
    step folds the newly randomised weights), never one per step.
    """
    private = copy.deepcopy(analysis.loaded.model)
    loaded = dataclasses.replace(analysis.loaded, model=private)
    generator = torch.Generator(device=next(private.parameters()).device).manual_seed(seed)
    steps: list[SanityStep] = []
    for i, name in enumerate(SANITY_STEPS):
        reinitialize(getattr(private, name), generator=generator)
        redo = analyze(image=analysis.prepared, model=loaded, topk=1)
        att = redo.attribution(stage=original.stage, target=original.target, method=original.method)
        correlation = 0.0 if att.all_zero else spearman(original.heatmap, att.heatmap)
        steps.append(SanityStep(name, SANITY_STEPS[: i + 1], att.heatmap, correlation, att.all_zero))
        if progress is not None:
            progress((i + 1) / len(SANITY_STEPS))
    return steps


def verdict_step(stage: str) -> int:
    """The index in :data:`SANITY_STEPS` of the step whose correlation gives the verdict for ``stage``."""
    return SANITY_STEPS.index(stage) if stage in SANITY_STEPS else len(SANITY_STEPS) - 1


def randomization_check(
    analysis: Analysis,
    *,
    stage: str = "layer4",
    target: int | None = None,
    method: str = "gradcam",
    progress: Callable[[float], None] | None = None,
    seed: int = 0,
) -> SanityCheck:
    """Re-initialise fc, layer4, layer3, layer2, layer1 cumulatively on a private copy and
    compare each recomputed map of ``method`` at ``stage`` for ``target`` with the original.

    Cached per analysis. ``progress`` gets the fraction done after each step. A map
    without positive evidence is a :class:`UserError`: there is no ranking to check.
    """
    original = analysis.attribution(stage=stage, target=target, method=method)
    key = (original.method, original.stage, original.target, seed)
    hit = _CACHE.get(analysis, key)
    if hit is not None:
        return hit
    if original.all_zero:
        raise UserError(
            f"The {original.method} map of {original.target_label!r} has no positive evidence at "
            f"{original.stage}, so there is nothing to check; choose another class or stage."
        )
    t0 = time.perf_counter()
    steps = _cascade(analysis, original, seed=seed, progress=progress)
    passed = steps[verdict_step(original.stage)].correlation < THRESHOLD
    result = SanityCheck(
        method=original.method,
        stage=original.stage,
        target=original.target,
        target_label=original.target_label,
        original=original.heatmap,
        steps=tuple(steps),
        passed=passed,
        verdict=PASSED if passed else FAILED,
        threshold=THRESHOLD,
        seconds=time.perf_counter() - t0,
    )
    return _CACHE.put(analysis, key, result)
