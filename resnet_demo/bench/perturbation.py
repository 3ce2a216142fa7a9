"""The cost of the concept and perturbation methods (rows of ``python -m resnet_demo bench --trust``).

Timed interleaved in one process on one preprocessed photo, each a ratio to the reference
that does the same network work without the method's own arithmetic:

* DFF at a stage on an existing analysis (the factorisation of the stored stage output,
  nothing rerun at ``layer4``) against torchvision's eager forward (the unit);
* RISE with N masks against a batched forward of N copies of the photo, in RISE's own
  batch sizes: the masks, their sum and the softmax are the overhead;
* SmoothGrad with n samples against n forward + backward passes of the photo, in
  SmoothGrad's batch sizes: the noise and the sum are the overhead.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

from ..core.weights import LoadedModel
from ..explain import Analysis, analyze
from ..explain.results import Prepared
from ..explain.rise import rise_batch_size
from ..explain.smoothgrad import smoothgrad_batches
from .explain import torchvision_twin
from .report import TrustRow, time_interleaved

__all__ = ["PERTURBATION_GOALS", "bench_perturbation"]

# Goals, as ratios to each row's reference.
PERTURBATION_GOALS = {"dff": 0.3, "rise": 1.1, "smoothgrad": 1.1}
UNIT = "unit"


def _forwards(analysis: Analysis, count: int) -> Callable[[], Any]:
    """``count`` copies of the photo through the network, forwards only, in RISE's batch sizes."""
    x = analysis.input
    size = rise_batch_size(x)

    def run() -> Any:
        with torch.inference_mode():
            for start in range(0, count, size):
                batch = x.expand(min(size, count - start), -1, -1, -1).contiguous(memory_format=torch.channels_last)
                analysis.model(batch)

    return run


def _forward_backwards(analysis: Analysis, count: int) -> Callable[[], Any]:
    """``count`` forward + backward passes of the photo (gradient at the input), in SmoothGrad's batch sizes."""
    x = analysis.input
    target = analysis.predictions[0].index

    def run() -> Any:
        with torch.enable_grad():
            for size in smoothgrad_batches(count):
                batch = x.expand(size, -1, -1, -1).clone().requires_grad_(True)
                score = analysis.model(batch.contiguous(memory_format=torch.channels_last))[:, target].sum()
                torch.autograd.grad(score, batch)

    return run


def _method(analysis: Analysis, method: str, **options: int) -> Callable[[], Any]:
    # fresh(): the same stored pass without its cached maps, so every call computes the map.
    return lambda: analysis.fresh().attribution(method=method, stage="layer4", **options)


def bench_perturbation(
    *,
    loaded: LoadedModel,
    image: Prepared,
    repeats: int = 5,
    warmup: int = 1,
    dff_stage: str = "layer4",
    rise_masks: int = 1000,
    smoothgrad_samples: int = 25,
) -> list[TrustRow]:
    """The DFF, RISE and SmoothGrad rows for ``loaded`` on ``image`` (from :func:`~resnet_demo.explain.prepare`).

    Every row is timed ``repeats`` times after ``warmup`` untimed rounds, interleaved;
    ``ratio`` is the median over the median of the row's reference, ``goal`` its goal.
    """
    analysis = analyze(image=image, model=loaded)
    tv = torchvision_twin(loaded, grad=False)

    def unit() -> Any:
        with torch.inference_mode():
            return tv(image.tensor)

    forwards = f"batched forward of {rise_masks} images"
    passes = f"{smoothgrad_samples} batched forward + backwards"
    names = {
        "dff": f"DFF at {dff_stage} on an existing analysis",
        "rise": f"RISE, {rise_masks} masks",
        "smoothgrad": f"SmoothGrad, {smoothgrad_samples} samples",
    }
    rows: dict[str, Callable[[], Any]] = {
        UNIT: unit,
        names["dff"]: lambda: analysis.fresh().attribution(method="dff", stage=dff_stage),
        forwards: _forwards(analysis, rise_masks),
        names["rise"]: _method(analysis, "rise", rise_masks=rise_masks),
        passes: _forward_backwards(analysis, smoothgrad_samples),
        names["smoothgrad"]: _method(analysis, "smoothgrad", smoothgrad_samples=smoothgrad_samples),
    }
    times = time_interleaved(rows, repeats=repeats, warmup=warmup, rotate=True)
    reference = {names["dff"]: UNIT, names["rise"]: forwards, names["smoothgrad"]: passes, forwards: UNIT, passes: UNIT}
    goals = {names[k]: g for k, g in PERTURBATION_GOALS.items()}
    labels = {UNIT: f"torchvision {loaded.spec.arch} eager forward (unit)"}
    out = []
    for name, ts in times.items():
        ref = times[reference.get(name, UNIT)]
        out.append(
            TrustRow(
                labels.get(name, name),
                statistics.median(ts),
                min(ts),
                labels.get(reference.get(name, UNIT), reference.get(name, UNIT)),
                statistics.median(ts) / statistics.median(ref),
                min(ts) / min(ref),
                goals.get(name),
            )
        )
    return out
