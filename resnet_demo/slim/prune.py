"""Structured channel pruning of the bottleneck blocks: a smaller network, not a masked one.

Inside every bottleneck block the outputs of conv1 and conv2 are inner channels: nothing
outside the block sees them, so removing some of them leaves every residual width and
every shortcut valid. Each such layer keeps its ``width - round(fraction * width)`` most
important output channels, ranked by

* ``bn-scale``: the magnitude of the BatchNorm scale gamma after the convolution (network
  slimming, Liu et al. 2017): a channel whose gamma is near 0 contributes near nothing;
* ``l1``: the L1 norm of the convolution's filter (Li et al. 2017, "Pruning Filters for
  Efficient ConvNets").

With ``round_to`` above 1, each kept width is rounded up to a multiple of it (never above
the layer's width): CPU (oneDNN) and GPU convolutions vectorise over blocks of 8 or 16
channels, so a width of 45 can run slower than 48.

The slimmer model is built with those widths and the kept slices copied into it: conv1's
kept filters and bn1's kept entries, conv2's kept filters restricted to conv1's kept
inputs, bn2's kept entries, and conv3 restricted to conv2's kept inputs. Every tensor of
the result is a new, smaller one; the source model is only read (it may be shared).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..core.errors import UserError
from ..core.model import STAGES, ResNet, Widths, arch_of, build_model

__all__ = [
    "MAX_FRACTION",
    "PRUNE_CRITERIA",
    "PrunePlan",
    "check_prune",
    "channel_scores",
    "plan_pruning",
    "prune_model",
]

PRUNE_CRITERIA: tuple[str, ...] = ("bn-scale", "l1")
MAX_FRACTION = 0.9  # keeps at least a tenth of every layer: beyond that, recovery fails more than it works
PRUNABLE_STAGES: tuple[str, ...] = STAGES[1:]  # layer1..layer4

# Which tensors of a block lose channels: the key after "layerN.i." -> (dimension, which
# kept set: 0 for conv1's outputs, 1 for conv2's). BatchNorm entries follow their conv.
_SLICES: dict[str, tuple[tuple[int, int], ...]] = {
    "conv1.weight": ((0, 0),),
    **{f"bn1.{k}": ((0, 0),) for k in ("weight", "bias", "running_mean", "running_var")},
    "conv2.weight": ((0, 1), (1, 0)),
    **{f"bn2.{k}": ((0, 1),) for k in ("weight", "bias", "running_mean", "running_var")},
    "conv3.weight": ((1, 1),),
}


@dataclass(frozen=True)
class PrunePlan:
    """What to keep: per block ("layer3.0"), the kept output channels of conv1 and of conv2,
    each in ascending order, and the resulting widths in running order."""

    keep: dict[str, tuple[Tensor, Tensor]]
    widths: Widths


def check_prune(*, fraction: float, criterion: str, skip: Sequence[str] = (), round_to: int = 1) -> None:
    """:class:`UserError` for a fraction outside [0, 0.9], an unknown criterion or stage, a bad rounding."""
    if not 0.0 <= fraction <= MAX_FRACTION:  # a NaN fails this too
        raise UserError(f"The pruning fraction must be from 0 to {MAX_FRACTION}, not {fraction}.")
    if not 1 <= round_to <= 64:
        raise UserError(f"Kept widths can be rounded to a multiple of 1 to 64 channels, not {round_to}.")
    if criterion not in PRUNE_CRITERIA:
        raise UserError(f"The pruning criterion must be {' or '.join(PRUNE_CRITERIA)}, not {criterion!r}.")
    unknown = [s for s in skip if s not in PRUNABLE_STAGES]
    if unknown:
        raise UserError(f"Stages to skip must be among {', '.join(PRUNABLE_STAGES)}, not {unknown[0]!r}.")


def channel_scores(conv: nn.Conv2d, bn: nn.BatchNorm2d, *, criterion: str) -> Tensor:
    """Importance of each output channel of ``conv`` (followed by ``bn``): (C_out,), higher is kept."""
    if criterion == "bn-scale":
        return bn.weight.detach().abs().float()
    return conv.weight.detach().abs().sum(dim=(1, 2, 3)).float()  # (C_out, C_in, k, k) -> (C_out,)


def _kept(scores: Tensor, fraction: float, round_to: int) -> Tensor:
    """Indices of the ``len - round(fraction * len)`` highest scores (rounded up to a multiple
    of ``round_to``, at most ``len``), in ascending channel order (ties go to the lower index,
    so the plan is deterministic)."""
    width = scores.numel()
    keep = max(1, width - round(fraction * width))
    keep = min(width, -(-keep // round_to) * round_to)
    order = torch.argsort(scores.cpu(), descending=True, stable=True)
    return order[:keep].sort().values


def plan_pruning(
    model: ResNet, *, fraction: float, criterion: str, skip: Sequence[str] = (), round_to: int = 1
) -> PrunePlan:
    """Rank every block's inner channels of ``model`` and choose which to keep (nothing is changed)."""
    check_prune(fraction=fraction, criterion=criterion, skip=skip, round_to=round_to)
    keep: dict[str, tuple[Tensor, Tensor]] = {}
    for stage_name, stage in model.stages.items():
        frac = 0.0 if stage_name in skip else fraction
        for i, block in enumerate(stage):
            k1 = _kept(channel_scores(block.conv1, block.bn1, criterion=criterion), frac, round_to)
            k2 = _kept(channel_scores(block.conv2, block.bn2, criterion=criterion), frac, round_to)
            keep[f"{stage_name}.{i}"] = (k1, k2)
    widths = tuple((k1.numel(), k2.numel()) for k1, k2 in keep.values())
    return PrunePlan(keep=keep, widths=widths)


def _slice(key: str, value: Tensor, plan: PrunePlan) -> Tensor:
    """A new tensor for state_dict entry ``key``: its kept channels where the plan cuts it, else a copy."""
    stage, _, rest = key.partition(".")
    index, _, local = rest.partition(".")
    cuts = _SLICES.get(local) if stage in PRUNABLE_STAGES else None
    if cuts is None:
        return value.detach().clone()
    kept = plan.keep[f"{stage}.{index}"]
    out = value.detach()
    for dim, which in cuts:
        out = out.index_select(dim, kept[which].to(out.device))  # index_select always copies
    return out


def prune_model(
    model: ResNet, *, fraction: float, criterion: str, skip: Sequence[str] = (), round_to: int = 1
) -> ResNet:
    """A new, smaller ResNet: every block's inner channels pruned by ``fraction`` (stages in
    ``skip`` kept whole; kept widths rounded up to multiples of ``round_to``), the kept
    weights copied in. ``model`` is only read.

    The result is on ``model``'s device, in its train/eval mode, out of place; a fraction
    of 0 gives an exact copy.
    """
    plan = plan_pruning(model, fraction=fraction, criterion=criterion, skip=skip, round_to=round_to)
    state = {k: _slice(k, v, plan) for k, v in model.state_dict().items()}
    # Built on the meta device and filled by assignment: no random init to throw away.
    with torch.device("meta"):
        slim = build_model(arch_of(model), num_classes=model.fc.out_features, widths=plan.widths)
    slim.load_state_dict(state, strict=True, assign=True)
    return slim.train(model.training)
