"""How faithful is a map: deletion and insertion curves (Petsiuk et al., RISE, 2018).

A map claims which pixels matter for a class. *Deletion* replaces the pixels with a
baseline in the map's order, most important first, and follows the class score as it
falls; *insertion* starts from the baseline and reveals the pixels in the same order,
following the score as it rises. A faithful map makes deletion fall fast (small area
under the curve) and insertion rise fast (large area). The same curves for a random map
say what "no better than chance" looks like on this photo.

Choices, in one place:

* Score: the softmax probability of the target class. With ``versus`` (a contrastive
  map, "why A and not B") it is the probability of A in the two-way choice between A and
  B, p_A / (p_A + p_B) = sigmoid(logit_A - logit_B): a monotone function of the
  explained score logit_A - logit_B that stays in [0, 1], so every AUC is in [0, 1].
* Order: pixels by decreasing map value; equal values (the zeros of a ReLU map) in a
  random order drawn from ``seed``, so no corner of the image is favoured.
* Steps: ``steps + 1`` points, step i changing round(i * N / steps) of the N pixels,
  so the curve runs over the fraction 0 to 1; the AUC is the trapezoid rule over it.
* Baseline (:func:`faithfulness`, ``baseline=``; :data:`BASELINES`): ``"blur"`` (the
  default), the crop blurred by a Gaussian of sigma = 1/16 of its side, removes the edges
  and texture the network reads while keeping the colours in range and in place, so a
  "removed" pixel is not a black square of its own evidence; it is the baseline of RISE
  and the gentlest change to the photo. ``"mean"``, every pixel the crop's own mean
  colour (per channel), removes all spatial evidence, coarse shapes included: the
  stronger choice when a network still recognises the blurred photo (flat coloured
  shapes survive a blur), which would leave both curves flat.
* Batching: the photo and the baseline are shared by both curves (deletion starts where
  insertion ends), so a map costs ``2 * steps`` images, all forwarded in batches of
  ``batch_size`` under inference mode; several maps share one stream of batches.

:func:`faithfulness` scores one map of an :class:`~resnet_demo.explain.Analysis` (cached
per analysis); :func:`rank_methods` scores every quick method (:func:`~.methods.quick_methods`) at one stage and ranks them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..core.errors import InvalidValue, UserError
from ..core.model import check_stage
from .analysis import Analysis
from .analysis_cache import AnalysisCache
from .baselines import BASELINES, check_baseline, make_baseline
from .methods import get_method, quick_methods
from .results import Attribution

__all__ = [
    "MAX_STEPS",
    "AnalysisCache",
    "Curves",
    "Faithfulness",
    "MethodScore",
    "check_steps",
    "class_scores",
    "deletion_insertion",
    "describe",
    "faithfulness",
    "forward_of",
    "forward_scores",
    "map_digest",
    "pixel_ranks",
    "random_map",
    "rank_methods",
    "supports",
]

MAX_STEPS = 256  # more points than that only adds forwards, not information
Forward = Callable[[Tensor], Tensor]  # (B, 3, H, W) -> (B, classes) logits
Progress = Callable[[float], None]


@dataclass(frozen=True, eq=False)
class Curves:
    """Deletion and insertion curves of one map: scores at ``steps + 1`` fractions of the pixels."""

    fractions: np.ndarray  # (steps + 1,) from 0 to 1: the share of pixels removed or revealed
    deletion: np.ndarray  # (steps + 1,) score with the top pixels replaced by the baseline
    insertion: np.ndarray  # (steps + 1,) score with only the top pixels shown over the baseline
    deletion_auc: float  # in [0, 1]; lower is more faithful
    insertion_auc: float  # in [0, 1]; higher is more faithful

    @property
    def score(self) -> float:
        """Insertion AUC minus deletion AUC, in [-1, 1]: higher is more faithful."""
        return self.insertion_auc - self.deletion_auc


@dataclass(frozen=True, eq=False)
class Faithfulness:
    """The curves of one explanation map, and of a random map on the same photo for comparison."""

    method: str
    stage: str
    target: int
    target_label: str
    versus: int | None
    versus_label: str | None
    curves: Curves  # of the map
    random: Curves  # of a random map (seeded): what chance gives on this photo
    all_zero: bool  # the map had no positive evidence: its order is the random tie-break
    steps: int
    baseline: str  # a key of BASELINES: what the removed pixels showed
    seconds: float  # the forwards for these curves (0 for a cached result's random curves)

    @property
    def score(self) -> float:
        return self.curves.score

    @property
    def random_score(self) -> float:
        return self.random.score


@dataclass(frozen=True)
class MethodScore:
    """One row of :func:`rank_methods`: a method's map at a stage, scored by its curves."""

    method: str
    label: str
    score: float  # insertion AUC - deletion AUC: the ranking key
    insertion_auc: float
    deletion_auc: float
    all_zero: bool
    seconds: float  # computing the map (not its curves)


_CACHE = AnalysisCache(limit=64)


# ----------------------------------------------------------------------------- the curves


def check_steps(steps: float) -> int:
    """``steps`` (the points of a curve, less one) as an int from 1 to :data:`MAX_STEPS`; else an
    :class:`InvalidValue` (a :class:`UserError`) saying so. A whole float (a slider's 16.0) counts.

    The one check of the steps: the app's slider, a crafted request and the engine's callers reach it unchecked."""
    whole = isinstance(steps, (int, float, np.integer, np.floating)) and not isinstance(steps, bool)
    # NaN and the infinities are not whole numbers: is_integer() is False for them.
    if not whole or not float(steps).is_integer() or not 1 <= steps <= MAX_STEPS:
        raise InvalidValue(f"The number of steps must be a whole number from 1 to {MAX_STEPS}, not {str(steps)[:20]}.")
    return int(steps)


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise UserError("The batch size must be at least 1.")


def pixel_ranks(heatmap: np.ndarray, seed: int) -> np.ndarray:
    """Each pixel's position in the map's order (0: most important), ties in a seeded random order. (N,)"""
    heat = np.nan_to_num(np.asarray(heatmap, dtype=np.float32).ravel(), nan=0.0, posinf=0.0, neginf=0.0)
    shuffled = np.random.default_rng(seed).permutation(heat.size)
    # A stable sort of the shuffled pixels keeps equal values in the shuffled order.
    order = shuffled[np.argsort(-heat[shuffled], kind="stable")]
    ranks = np.empty(heat.size, dtype=np.int64)
    ranks[order] = np.arange(heat.size)
    return ranks


def _counts(n: int, steps: int) -> np.ndarray:
    """Pixels changed at each step: round(i * n / steps) for i = 0..steps, in integers."""
    i = np.arange(steps + 1, dtype=np.int64)
    return (2 * i * n + steps) // (2 * steps)


def _auc(x: np.ndarray, y: np.ndarray) -> float:
    """Trapezoid rule; x runs over [0, 1] and y lies in [0, 1], so the area does too."""
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def class_scores(logits: Tensor, target: int, versus: int | None) -> Tensor:
    """(B,) the score of the module docstring: p(target), or p(target) in the choice target vs versus."""
    logits = logits.float()
    if versus is None:
        return torch.softmax(logits, dim=1)[:, target]
    return torch.sigmoid(logits[:, target] - logits[:, versus])


def _curves_many(
    *,
    forward: Forward,
    image: Tensor,
    baseline: Tensor,
    heatmaps: Sequence[np.ndarray],
    target: int,
    versus: int | None,
    steps: int,
    batch_size: int,
    seed: int,
    progress: Progress | None = None,
) -> list[Curves]:
    """Curves of several maps of one photo from one stream of batches (see the module docstring)."""
    steps = check_steps(steps)
    _check_batch_size(batch_size)
    if image.dim() != 4 or image.shape[0] != 1 or image.shape != baseline.shape:
        raise ValueError(
            f"image and baseline must both be (1, C, H, W); got {tuple(image.shape)}, {tuple(baseline.shape)}"
        )
    h, w = image.shape[-2:]
    n = h * w
    for heat in heatmaps:
        if tuple(np.shape(heat)) != (h, w):
            raise ValueError(f"a heat map of shape {np.shape(heat)} does not fit a {h}x{w} image")
    counts = _counts(n, steps)
    ranks = torch.as_tensor(np.stack([pixel_ranks(m, seed) for m in heatmaps]), device=image.device)  # (M, N)
    # Jobs: (map, pixel count, deletion?). Job 0 is the photo, job 1 the baseline: shared by every curve.
    inner = [(m, int(k), d) for m in range(len(heatmaps)) for d in (True, False) for k in counts[1:-1]]
    jobs = [(0, 0, True), (0, n, True), *inner]
    layout = torch.channels_last if image.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    scores = torch.empty(len(jobs))
    with torch.inference_mode():
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            which = torch.tensor([m for m, _, _ in chunk], device=image.device)
            ks = torch.tensor([k for _, k, _ in chunk], device=image.device).unsqueeze(1)  # (b, 1)
            deleting = torch.tensor([d for _, _, d in chunk], device=image.device).unsqueeze(1)  # (b, 1)
            # Deletion shows the baseline on the top k pixels, insertion everywhere else.
            on_baseline = (ranks[which] < ks) == deleting  # (b, N)
            batch = torch.where(on_baseline.view(-1, 1, h, w), baseline, image)  # (b, C, H, W)
            logits = forward(batch.contiguous(memory_format=layout))  # (b, classes)
            scores[start : start + len(chunk)] = class_scores(logits, target, versus).cpu()
            if progress is not None:
                progress(min(1.0, (start + len(chunk)) / len(jobs)))
    return _assemble(scores.numpy().astype(np.float64), len(heatmaps), counts, n)


def _assemble(scores: np.ndarray, maps: int, counts: np.ndarray, n: int) -> list[Curves]:
    """Cut the stream of scores (photo, baseline, then per map its inner deletion and insertion points) into curves."""
    photo, base = scores[0], scores[1]
    inner = len(counts) - 2
    fractions = counts / n
    fractions.setflags(write=False)
    result = []
    for m in range(maps):
        at = 2 + 2 * inner * m
        deletion = np.concatenate([[photo], scores[at : at + inner], [base]])
        insertion = np.concatenate([[base], scores[at + inner : at + 2 * inner], [photo]])
        for curve in (deletion, insertion):
            curve.setflags(write=False)
        result.append(Curves(fractions, deletion, insertion, _auc(fractions, deletion), _auc(fractions, insertion)))
    return result


def deletion_insertion(
    *,
    forward: Forward,
    image: Tensor,
    baseline: Tensor,
    heatmap: np.ndarray,
    target: int,
    steps: int = 16,
    batch_size: int = 8,
    seed: int = 0,
    versus: int | None = None,
) -> Curves:
    """Deletion and insertion curves of ``heatmap`` for class ``target`` (see the module docstring).

    ``forward`` maps a (B, 3, H, W) batch to (B, classes) logits and is called under
    inference mode with at most ``batch_size`` images at a time; ``image`` and
    ``baseline`` are (1, 3, H, W) and ``heatmap`` is (H, W). With ``versus`` the score
    is p(target) / (p(target) + p(versus)). A pure function: the same inputs and seed
    give the same curves.
    """
    return _curves_many(
        forward=forward,
        image=image,
        baseline=baseline,
        heatmaps=[heatmap],
        target=target,
        versus=versus,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
    )[0]


# ----------------------------------------------------------------------------- on an analysis


def forward_scores(
    *, forward: Forward, images: Tensor, target: int, versus: int | None = None, batch_size: int = 8
) -> np.ndarray:
    """The score of the module docstring for each of ``images`` (B, 3, H, W), forwarded ``batch_size`` at a
    time under inference mode in the photo's memory layout: (B,) float64. The batching every metric shares."""
    _check_batch_size(batch_size)
    scores = torch.empty(images.shape[0])
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].contiguous(memory_format=torch.channels_last)
            scores[start : start + batch.shape[0]] = class_scores(forward(batch), target, versus).cpu()
    return scores.numpy().astype(np.float64)


def forward_of(analysis: Analysis) -> Forward:
    """The analysis's shared inference network as a batch -> logits function (call it under inference mode)."""
    model = analysis.model
    return lambda batch: model(batch)  # the caller holds inference mode


def _inputs(analysis: Analysis, kind: str) -> tuple[Tensor, Tensor]:
    """The crop and its baseline ``kind``, (1, 3, H, W) each: each baseline computed once per analysis."""
    image = analysis.input
    baseline = _CACHE.get(analysis, ("baseline", kind))
    if baseline is None:
        with torch.inference_mode():
            baseline = _CACHE.put(analysis, ("baseline", kind), make_baseline(image, kind=kind))
    return image, baseline


def map_digest(heatmap: np.ndarray) -> bytes:
    """A key for a map's content: equal maps share their curves whichever method made them."""
    return hashlib.blake2b(np.ascontiguousarray(heatmap, dtype=np.float32).tobytes(), digest_size=16).digest()


def random_map(shape: tuple[int, int], seed: int) -> np.ndarray:
    """The seeded random map (uniform in [0, 1)) every trust check compares a map with: what chance scores."""
    return np.random.default_rng(seed + 1).random(shape, dtype=np.float32)  # apart from the tie-break's stream


def _evaluate(
    analysis: Analysis,
    atts: Sequence[Attribution],
    *,
    steps: int,
    seed: int,
    baseline: str,
    progress: Progress | None = None,
) -> list[Faithfulness]:
    """:class:`Faithfulness` of maps of one class (and versus) of ``analysis``: cached ones
    from the cache, the rest and the random map's curves from one stream of batches."""
    steps = check_steps(steps)
    check_baseline(baseline)
    target, versus = atts[0].target, atts[0].versus
    keys = [(map_digest(a.heatmap), target, versus, steps, seed, baseline) for a in atts]
    random_key = ("random", target, versus, steps, seed, baseline)
    found = {k: _CACHE.get(analysis, k) for k in keys}
    random = _CACHE.get(analysis, random_key)
    todo = list({k: a for k, a in zip(keys, atts, strict=True) if found[k] is None}.items())
    if todo or random is None:
        image, fill = _inputs(analysis, baseline)
        heatmaps = [a.heatmap for _, a in todo]
        if random is None:
            heatmaps.append(random_map(tuple(image.shape[-2:]), seed))
        t0 = time.perf_counter()
        curves = _curves_many(
            forward=forward_of(analysis),
            image=image,
            baseline=fill,
            heatmaps=heatmaps,
            target=target,
            versus=versus,
            steps=steps,
            batch_size=8,
            seed=seed,
            progress=progress,
        )
        seconds = (time.perf_counter() - t0) / len(heatmaps)
        if random is None:
            random = _CACHE.put(analysis, random_key, curves.pop())
        for (key, _), c in zip(todo, curves, strict=True):
            found[key] = _CACHE.put(analysis, key, (c, seconds))
    return [_record(att, *found[key], random, steps, baseline) for key, att in zip(keys, atts, strict=True)]


def _record(
    att: Attribution, curves: Curves, seconds: float, random: Curves, steps: int, baseline: str
) -> Faithfulness:
    return Faithfulness(
        **att.about(),
        curves=curves,
        random=random,
        all_zero=att.all_zero,
        steps=steps,
        baseline=baseline,
        seconds=seconds,
    )


def faithfulness(
    analysis: Analysis,
    *,
    attribution: Attribution,
    steps: int = 16,
    seed: int = 0,
    baseline: str = "blur",
    progress: Progress | None = None,
) -> Faithfulness:
    """Deletion and insertion curves of ``attribution`` (a map of ``analysis``) and of a random map.

    ``baseline`` names what a removed pixel shows (a key of :data:`BASELINES`: the crop
    blurred, or its mean colour); the score is the class probability (see the module
    docstring). Computed on request, then cached per analysis and baseline: asking again
    is free. ``progress`` gets the fraction of the forwards done, from 0 to 1 (not called
    on a cache hit).
    """
    if tuple(attribution.heatmap.shape) != analysis.crop.size[::-1]:  # (H, W)
        raise UserError("This map was not made for this analysis's image; explain the image again.")
    return _evaluate(analysis, [attribution], steps=steps, seed=seed, baseline=baseline, progress=progress)[0]


def supports(name: str, stage: str, versus: int | None) -> bool:
    """Whether method ``name`` makes a map at ``stage`` (and, with ``versus``, a contrastive one)."""
    entry = get_method(name)
    if entry.space == "layer" and entry.stages is not None and stage not in entry.stages:
        return False
    return versus is None or entry.class_specific  # a class-agnostic map has no "A and not B" version


def rank_methods(
    analysis: Analysis,
    *,
    stage: str,
    target: int | None = None,
    versus: int | None = None,
    steps: int = 16,
    baseline: str = "blur",
    progress: Progress | None = None,
    methods: Sequence[str] | None = None,
) -> list[MethodScore]:
    """Every quick method (or each of ``methods``) that supports ``stage`` (and ``versus``), ranked by
    insertion AUC minus deletion AUC on this photo, best first.

    One ``baseline`` (a key of :data:`BASELINES`) and one random-map curve serve all
    methods; the maps come from the analysis (so from its caches), their curves from one
    stream of batches. With ``versus``, class-agnostic methods (Eigen-CAM) are left out:
    they have no contrastive map. ``progress`` gets the fraction done, from 0 to 1.
    """
    stage = check_stage(stage)
    check_baseline(baseline)
    names = [m for m in (quick_methods() if methods is None else methods) if supports(m, stage, versus)]
    if not names:
        raise UserError(f"No method to rank supports {stage}{' with a second class' if versus is not None else ''}.")
    atts = []
    for i, name in enumerate(names):
        atts.append(analysis.attribution(stage=stage, target=target, method=name, versus=versus))
        if progress is not None:
            progress(0.1 * (i + 1) / len(names))  # the maps take a few forwards at most; the curves are the work

    def curve_progress(done: float) -> None:
        if progress is not None:
            progress(0.1 + 0.9 * done)

    results = _evaluate(analysis, atts, steps=steps, seed=0, baseline=baseline, progress=curve_progress)
    if progress is not None:
        progress(1.0)
    rows = [
        MethodScore(
            method=name,
            label=get_method(name).label,
            score=r.score,
            insertion_auc=r.curves.insertion_auc,
            deletion_auc=r.curves.deletion_auc,
            all_zero=r.all_zero,
            seconds=att.seconds,
        )
        for name, att, r in zip(names, atts, results, strict=True)
    ]
    return sorted(rows, key=lambda row: -row.score)


def describe(result: Faithfulness) -> str:
    """One line for people: the AUCs of the map against those of the random map."""
    c, r = result.curves, result.random
    better = "more" if c.score > r.score else "no more"
    what = f"{result.target_label}" + (f" vs {result.versus_label}" if result.versus is not None else "")
    return (
        f"{result.method} at {result.stage} for {what}: deletion AUC {c.deletion_auc:.3f} "
        f"(random {r.deletion_auc:.3f}), insertion AUC {c.insertion_auc:.3f} (random {r.insertion_auc:.3f}): "
        f"{better} faithful than a random map, with {BASELINES[result.baseline]} as the baseline"
    )
