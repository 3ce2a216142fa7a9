"""Concept relevance propagation (CRP; Achtibat et al., Nature Machine Intelligence 2023): which channels
of a stage carry the class's relevance, and where on the photo each one found it.

LRP (:mod:`.lrp`) hands the explained score down to a stage's output; the relevance summed
over a channel's positions is how much of the score that channel ("concept") carries. A
channel's conditional heat map is the LRP backward from the stage down to the pixels with
every other channel's relevance set to zero, as zennit-crp's ``CondAttribution`` computes
it. The rules below the stage are linear in the relevance they are given, so:

* the conditional maps of ALL channels of a stage add up to the plain LRP map;
* the k conditional backwards of one request run as one batch, on one forward.

:func:`concepts` gives the app its tiles: the k channels carrying the most relevance,
each with its share of the stage's relevance (of its magnitude, summed over the channels),
its conditional heat map and its feature map. The registry's ``crp`` map at a stage is the pixels' relevance conditioned
on those k channels together, so it takes part in the gallery and the ranking like any
other method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.errors import UserError
from ..core.model import STAGES, ResNet, check_stage
from .lrp import RelevancePass, finish_relevance_map
from .methods import Method, MethodCall, register

__all__ = [
    "CRP",
    "DEFAULT_CONCEPTS",
    "MAX_CONCEPTS",
    "Concept",
    "check_concepts",
    "concepts",
    "conditional_relevance",
]

DEFAULT_CONCEPTS = 6
MAX_CONCEPTS = 32
# Conditional backwards sent down at once: 32 relevances of ResNet-50's layer1 at 224 px are 100 MB.
_BATCH = 32


@dataclass(frozen=True, eq=False)
class Concept:
    """One channel of a stage as a concept: how much of the class's relevance it carries, and where."""

    channel: int  # the channel's index at the stage, as the feature maps number it
    share: float  # its relevance / Σ |relevance| over the stage's channels (the k shares add up to at most 1)
    relevance: float  # its relevance summed over its positions, in units of the explained score
    heatmap: np.ndarray  # (H, W) float32 in [0, 1] on the crop: its conditional relevance, positive part
    feature_map: np.ndarray  # (h, w) float32 in [0, 1]: its activation, scaled by its maximum


def _stage_channels(model: ResNet) -> dict[str, int]:
    return {str(info["module"]): int(info["num_chs"]) for info in model.feature_info}


def check_concepts(k: int, *, stage: str, channels: int) -> int:
    """``k`` itself when 1 <= k <= :data:`MAX_CONCEPTS` and the stage has that many channels; else a
    :class:`UserError`."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= MAX_CONCEPTS:
        raise UserError(f"The number of concepts must be a whole number from 1 to {MAX_CONCEPTS}; got {k!r:.20}.")
    if int(k) > channels:
        raise UserError(f"{stage} has {channels} channels, fewer than the {int(k)} concepts asked for.")
    return int(k)


def _stage_relevance(run: RelevancePass, *, stage: str, target: int, versus: int | None) -> Tensor:
    """LRP's relevance at ``stage``'s output, (1, C, h, w): from the score down to there only."""
    _, r = run.dense(target=target, versus=versus)
    r = run.unpool(r)
    return r if stage == "layer4" else run.down(r, start="layer4", stop=stage)


def _conditional(run: RelevancePass, at_stage: Tensor, *, stage: str, channels: Sequence[int]) -> Tensor:
    """The pixels' relevance with only each channel's relevance at ``stage`` sent down: (n, 3, H, W), batched."""
    maps = []
    for start in range(0, len(channels), _BATCH):
        chosen = torch.as_tensor(list(channels[start : start + _BATCH]), device=at_stage.device)
        masked = torch.zeros(  # in the layout of the rest, or every step converts it
            (len(chosen), *at_stage.shape[1:]), dtype=at_stage.dtype, device=at_stage.device
        ).contiguous(memory_format=torch.channels_last)
        rows = torch.arange(len(chosen), device=at_stage.device)
        masked[rows, chosen] = at_stage[0, chosen]  # one channel's relevance per batch row
        maps.append(run.down(masked, start=stage))
    return torch.cat(maps)


def conditional_relevance(
    *, model: ResNet, image: Tensor, stage: str, target: int, channels: Sequence[int], versus: int | None = None
) -> Tensor:
    """The conditional LRP maps of ``channels`` at ``stage`` for a (1, 3, H, W) ``image``: (n, 3, H, W).

    ``model`` is a folded ResNet (as :func:`.lrp.relevance` takes it). Over every channel of
    the stage they add up to :func:`.lrp.relevance`'s pixels.
    """
    check_stage(stage)
    run = RelevancePass(model, image)
    at_stage = _stage_relevance(run, stage=stage, target=target, versus=versus)
    return _conditional(run, at_stage, stage=stage, channels=channels)


@dataclass(frozen=True, eq=False)
class _Found:
    channels: list[int]  # strongest first
    relevance: list[float]  # per channel, summed over its positions
    shares: list[float]
    maps: Tensor  # (k, 3, H, W): their conditional relevance
    activation: Tensor  # (1, C, h, w): the stage's output


def _top_concepts(run: RelevancePass, *, stage: str, target: int, versus: int | None, k: int) -> _Found:
    at_stage = _stage_relevance(run, stage=stage, target=target, versus=versus)  # (1, C, h, w)
    per_channel = at_stage[0].sum(dim=(1, 2)).double()  # (C,)
    top = torch.topk(per_channel, k).indices.tolist()  # sorted, most relevance first
    # Of the relevance's magnitude: well defined even when no channel carries positive relevance
    # (a class the photo argues against), and the k shares add up to at most 1.
    magnitude = float(per_channel.abs().sum())
    shares = [float(per_channel[c]) / magnitude if magnitude > 0 else 0.0 for c in top]
    maps = _conditional(run, at_stage, stage=stage, channels=top)
    return _Found(top, [float(per_channel[c]) for c in top], shares, maps, run.outputs[stage])


def _check_request(model: ResNet, stage: str, k: int) -> int:
    check_stage(stage)
    return check_concepts(k, stage=stage, channels=_stage_channels(model)[stage])


def _feature_map(act: Tensor) -> np.ndarray:
    act = act.detach().float().clamp(min=0.0)  # (h, w): a ReLU's output
    peak = float(act.max())
    scaled = act / peak if peak > 0 else torch.zeros_like(act)
    return scaled.cpu().numpy().astype(np.float32)


def concepts(
    *, analysis: Any, stage: str, target: int | None = None, k: int = DEFAULT_CONCEPTS, versus: int | None = None
) -> list[Concept]:
    """The ``k`` channels of ``stage`` that carry the most LRP relevance of ``target`` (None: the top class).

    ``analysis`` is an :class:`~resnet_demo.explain.Analysis`; ``versus`` makes the
    relevance that of logit(target) - logit(versus). Strongest first; each with its share
    of the stage's relevance (relevance / Σ |relevance| over the channels), its conditional heat map on the crop and its
    feature map. A bad stage, ``k`` or class is a :class:`UserError`, before any work.
    One forward, one backward to the stage, and the k conditional backwards in one batch.
    """
    k = _check_request(analysis.model, stage, k)
    call = analysis.method_call(method="crp", stages=(stage,), target=target, versus=versus, crp_concepts=k)
    run = RelevancePass(call.model, call.image)
    found = _top_concepts(run, stage=stage, target=call.target, versus=call.versus, k=k)
    size = (found.maps.shape[-2], found.maps.shape[-1])
    return [
        Concept(
            channel=c,
            share=share,
            relevance=rel,
            heatmap=finish_relevance_map(found.maps[i : i + 1], size)[0],
            feature_map=_feature_map(found.activation[0, c]),
        )
        for i, (c, share, rel) in enumerate(zip(found.channels, found.shares, found.relevance, strict=True))
    ]


def _crp(call: MethodCall) -> dict[str, Tensor]:
    k = call.options["crp_concepts"]
    for stage in call.stages:
        _check_request(call.model, stage, k)
    run = RelevancePass(call.model, call.image)
    call.progress(0.3)
    maps = {}
    for i, stage in enumerate(call.stages):
        found = _top_concepts(run, stage=stage, target=call.target, versus=call.versus, k=k)
        maps[stage] = found.maps.sum(dim=0, keepdim=True)  # (1, 3, H, W): the k concepts together
        call.progress(0.3 + 0.7 * (i + 1) / len(call.stages))
    return maps


# Forward passes for one map at a stage: (the forward with z⁺ and the relevance down to the stage,
# then one backward from the stage to the pixels per concept). Measured on ResNet-50 at 224 px, AMD EPYC
# (shared, one thread's CPU time against the engine's own forward).
_COST = {
    "stem": (3.75, 0.09),
    "layer1": (3.6, 0.38),
    "layer2": (3.0, 0.7),
    "layer3": (2.7, 0.95),
    "layer4": (2.8, 0.96),
}


CRP = register(
    Method(
        name="crp",
        label="CRP concepts",
        space="layer",
        cost=lambda stage, options: _COST[stage][0] + _COST[stage][1] * options["crp_concepts"],
        compute=_crp,
        finish=finish_relevance_map,
        options={"crp_concepts": DEFAULT_CONCEPTS},
        stages=STAGES,
        question="what",
    )
)
