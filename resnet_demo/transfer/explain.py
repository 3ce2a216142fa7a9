"""Grad-CAM at a backbone stage of a segmentation or detection model.

The target is a scalar of the model's output: for a segmentation class, the sum of that
class's logits over the pixels predicted as it (pytorch-grad-cam's
``SemanticSegmentationTarget``); for one detection, its score. The gradient is taken at
the stage's output through a per-call shell of the model whose backbone marks that output
as the leaf to differentiate: nothing is hooked, and the shared model's weights, which
need no gradient, stay as they are.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..errors import UserError
from ..model import STAGES
from .backbone import backbone_of
from .detect import check_threshold, raw_detections, shell, sized
from .segment import prepare_segment, segment_logits
from .weights import TransferModel

__all__ = ["TransferCam", "detection_cam", "grad_cam", "segment_cam"]


@dataclass(frozen=True)
class TransferCam:
    """A Grad-CAM map at one backbone stage."""

    stage: str
    target: str  # for people: "class 'dog' over its 1,234 pixels", "detection 0: 'dog' 0.91"
    heatmap: np.ndarray  # (h, w) float32 in [0, 1], the stage's resolution
    all_zero: bool  # every weighted channel was negative: no evidence at this stage


class _Tap(nn.Module):
    """The backbone's IntermediateLayerGetter, run with ``stage``'s output made a leaf that records gradients."""

    def __init__(self, getter: nn.Module, stage: str) -> None:
        super().__init__()
        self.getter = getter
        self.name = "maxpool" if stage == "stem" else stage
        self.activation: Tensor | None = None

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        out: OrderedDict[str, Tensor] = OrderedDict()
        for name, module in self.getter.items():
            x = module(x)  # (B, C, H, W)
            if name == self.name:
                x = x.detach().requires_grad_()  # what comes before needs no gradient
                self.activation = x
            if name in self.getter.return_layers:
                out[self.getter.return_layers[name]] = x
        return out


def _tapped(loaded: TransferModel, stage: str) -> tuple[nn.Module, _Tap]:
    if stage not in STAGES:
        raise UserError(f"Unknown stage {stage!r:.40}; choose one of {', '.join(STAGES)}.")
    tap = _Tap(backbone_of(loaded), stage).eval()
    if loaded.spec.task == "segment":
        return shell(loaded.model, backbone=tap), tap
    return shell(loaded.model, backbone=shell(loaded.model.backbone, body=tap)), tap


def grad_cam(activation: Tensor, target: Tensor) -> tuple[np.ndarray, bool]:
    """Grad-CAM of ``target`` at ``activation`` (1, C, h, w): ReLU of the gradient-weighted channel sum,
    scaled to [0, 1]; an all-zero map (and True) when no channel has positive evidence."""
    (grad,) = torch.autograd.grad(target, activation)  # (1, C, h, w)
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    cam = torch.relu((weights * activation).sum(1))[0].detach()  # (h, w)
    top = float(cam.max())
    if top <= 0.0:
        return np.zeros(tuple(cam.shape), dtype=np.float32), True  # guard 0/0: nothing to show
    return (cam / top).numpy().astype(np.float32), False


def segment_cam(
    *, loaded: TransferModel, image: Image.Image, category: int, stage: str = "layer4", size: int | None = None
) -> TransferCam:
    """Grad-CAM at ``stage`` for segmentation class ``category``: the target is the sum of that class's
    logits over the pixels predicted as it."""
    names = loaded.spec.categories
    if not 0 <= category < len(names):
        raise UserError(f"Unknown class {category}; the classes are 0 to {len(names) - 1}.")
    model, tap = _tapped(loaded, stage)
    x = prepare_segment(loaded, image, size=size)  # (1, 3, h, w)
    with torch.enable_grad():
        logits = segment_logits(model, x)[0]  # (K, h, w)
        region = logits.detach().argmax(0) == category  # (h, w)
        count = int(region.sum())
        if count == 0:
            raise UserError(f"No pixel of this photo is predicted as {names[category]!r}; choose a class it found.")
        assert tap.activation is not None
        heatmap, zero = grad_cam(tap.activation, logits[category][region].sum())
    return TransferCam(stage, f"class {names[category]!r} over its {count:,} pixels", heatmap, zero)


def detection_cam(
    *,
    loaded: TransferModel,
    image: Image.Image,
    index: int,
    stage: str = "layer4",
    size: int | None = None,
    threshold: float = 0.0,
) -> TransferCam:
    """Grad-CAM at ``stage`` for detection ``index`` (its rank in the model's output): the target is its score."""
    check_threshold(threshold)
    model, tap = _tapped(loaded, stage)
    with torch.enable_grad():
        out = raw_detections(sized(model, size), image)
        scores = out["scores"]  # (N,)
        if not 0 <= index < len(scores) or scores[index].item() < threshold:
            raise UserError(f"There is no detection {index} over the threshold; the photo has {len(scores)} in all.")
        assert tap.activation is not None
        heatmap, zero = grad_cam(tap.activation, scores[index])
    name = loaded.spec.categories[int(out["labels"][index])]
    return TransferCam(stage, f"detection {index}: {name!r} {scores[index].item():.2f}", heatmap, zero)
