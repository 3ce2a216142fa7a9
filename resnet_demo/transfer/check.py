"""The check that a segmentation or detection model's backbone is our ResNet, on the user's photo."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from .backbone import backbone_stages, our_backbone
from .weights import TransferModel

__all__ = ["backbone_check"]


def backbone_check(loaded: TransferModel, x: Tensor, *, theirs: Mapping[str, Tensor] | None = None) -> dict[str, float]:
    """Per stage, the largest difference between our ResNet with the mapped weights and the backbone inside
    the torchvision model on the batch ``x`` (normalised, at the model's input size), relative to the stage's
    largest value: frozen BatchNorm rounds differently, and activations grow with depth.

    ``theirs``: the torchvision backbone's stage outputs for ``x`` when a run already has them (an
    explanation records them on its way); otherwise they are computed here.
    """
    ours = our_backbone(loaded)
    with torch.inference_mode():
        reference = backbone_stages(loaded, x) if theirs is None else theirs
        _, mine = ours.forward_stages(x, stop="layer4")
        return {
            name: float((reference[name] - mine[name]).abs().max() / reference[name].abs().max().clamp_min(1e-12))
            for name in mine
        }
