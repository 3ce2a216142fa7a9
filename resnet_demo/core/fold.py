"""An inference copy of a ResNet: every BatchNorm folded into the convolution before it.

In eval mode a BatchNorm is an affine map per channel, ``y = gamma * (x - mean) /
sqrt(var + eps) + beta``, so it can be merged into the preceding convolution's weight
and bias. The copy computes the same function (to float32 rounding) with about a
fifth fewer memory passes, and is laid out ``channels_last``, which oneDNN's CPU
convolutions run without reordering. The original model is never modified: the app
shares it between users.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .model import Bottleneck, ResNet

__all__ = ["fold_batchnorm", "inference_copy"]


def _fold_pair(parent: nn.Module, conv_name: str, bn_name: str) -> None:
    conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
    if isinstance(bn, nn.Identity):  # already folded
        return
    setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
    setattr(parent, bn_name, nn.Identity())


def fold_batchnorm(model: ResNet) -> ResNet:
    """Return an eval-mode copy of ``model`` with each BatchNorm folded into its convolution.

    Uses the running statistics, i.e. eval semantics, whatever mode ``model`` is in.
    The copy keeps the module names (a folded BatchNorm becomes ``nn.Identity``), so
    ``forward_intermediates`` and every other method work on it unchanged.
    """
    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        _fold_pair(folded, "conv1", "bn1")
        for module in folded.modules():
            if isinstance(module, Bottleneck):
                for i in (1, 2, 3):
                    _fold_pair(module, f"conv{i}", f"bn{i}")
                if module.downsample is not None:
                    _fold_pair(module.downsample, "0", "1")
    return folded


def inference_copy(model: ResNet, *, channels_last: bool = True) -> ResNet:
    """A folded, frozen, in-place copy of ``model`` for inference and attribution (never for training).

    Parameters do not require gradients; attribution takes gradients with respect to
    activations only, so weight gradients would be wasted work.
    """
    # In place: inference keeps no activation for later, and each block saves two tensors.
    folded = fold_batchnorm(model).set_inplace(True)
    if channels_last:
        folded = folded.to(memory_format=torch.channels_last)
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded
