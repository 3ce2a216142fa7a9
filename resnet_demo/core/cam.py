"""Grad-CAM from a stage's activations and gradients, and the one way every class-activation map is finished.

Both engines draw their maps through this module, so that the Explain tab (a classifier)
and the Transfer tab (a segmentation or detection backbone) show the same map for the same
activations and gradients. In order:

1. :func:`gradcam_weights`: the channel weights, the spatial mean of the gradient
   (Selvaraju et al., 2017);
2. :func:`weighted_cam`: the weighted sum of the channels, then ReLU: the step the whole
   CAM family shares, whatever its weights;
3. :func:`finish_cam`: non-finite values to 0, then the optional bilinear upsampling
   (:func:`upsample`), then the all-zero test, then the scaling to [0, 1] by the maximum
   of the upsampled map. Upsampling before scaling makes the drawn map reach exactly 1.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["FinishedCam", "finish_cam", "gradcam", "gradcam_weights", "upsample", "weighted_cam"]


class FinishedCam(NamedTuple):
    """A map ready to draw; a plain tuple (heatmap, raw, all_zero) to the engines that unpack it."""

    heatmap: np.ndarray  # (H, W) float32 in [0, 1]: ``size``, or the map's own size without one
    raw: np.ndarray  # (h, w) float32: the map before upsampling and scaling, non-finite values as 0
    all_zero: bool  # no position had positive evidence: the heat map is all zeros, never NaN


def gradcam_weights(*, gradients: Tensor) -> Tensor:
    """Grad-CAM's channel weights: the spatial mean of (1, C, h, w) ``gradients``. (1, C, 1, 1)"""
    return gradients.mean(dim=(2, 3), keepdim=True)


def weighted_cam(*, weights: Tensor, activations: Tensor) -> Tensor:
    """ReLU(sum_k weights_k A_k) for (1, C, h, w) ``activations``: (1, 1, h, w).

    ``weights`` is (1, C, 1, 1), one weight per channel, or (1, C, h, w), one per
    channel and position (HiResCAM, LayerCAM). Only the positive part is evidence for
    the target, as in every paper of the family.
    """
    return torch.relu((weights * activations).sum(dim=1, keepdim=True))


def gradcam(*, activations: Tensor, gradients: Tensor) -> Tensor:
    """The Grad-CAM map of (1, C, h, w) ``activations`` and the target's ``gradients`` at them: (1, 1, h, w), >= 0."""
    return weighted_cam(weights=gradcam_weights(gradients=gradients), activations=activations)


def upsample(*, cam: Tensor, size: tuple[int, int]) -> Tensor:
    """A (1, 1, h, w) map bilinearly resized to ``size`` (height, width): (1, 1, H, W).

    Half-pixel centres (``align_corners=False``), as captum's ``LayerAttribution.interpolate``
    resizes (the classifier's maps were drawn with it, and must not move).
    """
    return F.interpolate(cam, size=size, mode="bilinear", align_corners=False)


def finish_cam(*, cam: Tensor, size: tuple[int, int] | None = None) -> FinishedCam:
    """A (1, 1, h, w) map (after its ReLU) made a heat map: upsampled to ``size`` (None: kept as is),
    then scaled by its maximum to [0, 1]. A map without positive evidence stays all zeros."""
    raw = torch.nan_to_num(cam.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    up = (raw if size is None else upsample(cam=raw, size=size))[0, 0]
    peak = float(up.max())
    # Either test flags a map with no positive position; the peak's also catches a downsampling
    # to a size that misses the map's only positive positions.
    all_zero = not bool((raw > 0).any()) or peak <= 0.0
    heat = torch.zeros_like(up) if all_zero else (up / peak).clamp_(0.0, 1.0)
    return FinishedCam(
        heat.cpu().numpy().astype(np.float32, copy=False),  # float32 already: no copy
        raw[0, 0].cpu().numpy().astype(np.float32, copy=False),
        all_zero,
    )
