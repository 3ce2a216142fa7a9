"""One photo through a segmentation or detection model: its answer, Grad-CAM at a backbone stage, and the
check that the backbone is our ResNet. The command line and the app both call :func:`run_transfer`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from .backbone import backbone_stages, our_backbone
from .detect import Detections, detect, detector_batch
from .explain import TransferCam, detection_cam, segment_cam
from .segment import Segmentation, prepare_segment, segment
from .weights import TransferModel

__all__ = ["TransferResult", "backbone_check", "run_transfer"]


@dataclass(frozen=True)
class TransferResult:
    """What one photo gave: a segmentation or detections, a Grad-CAM map (None: nothing to explain) and,
    per stage, how far our ResNet's output is from the backbone's inside the torchvision model."""

    segmentation: Segmentation | None
    detections: Detections | None
    cam: TransferCam | None
    backbone_diff: dict[str, float]


def backbone_check(loaded: TransferModel, x: torch.Tensor) -> dict[str, float]:
    """Per stage, the largest difference between our ResNet with the mapped weights and the backbone inside
    the torchvision model on the batch ``x`` (normalised, at the model's input size), relative to the stage's
    largest value: frozen BatchNorm rounds differently, and activations grow with depth."""
    ours = our_backbone(loaded)
    with torch.inference_mode():
        theirs = backbone_stages(loaded, x)
        _, mine = ours.forward_stages(x, stop="layer4")
    return {name: float((theirs[name] - mine[name]).abs().max() / theirs[name].abs().max()) for name in theirs}


def run_transfer(
    *, loaded: TransferModel, image: Image.Image, threshold: float = 0.5, stage: str = "layer4", size: int | None = None
) -> TransferResult:
    """Segment or detect, explain the largest non-background class or the best detection at ``stage``,
    and compare the backbone with our ResNet on the same input."""
    if loaded.spec.task == "segment":
        seg = segment(loaded=loaded, image=image, size=size)
        shown = [c for c in seg.classes if c.index != 0] or list(seg.classes)  # an object before background
        cam = segment_cam(loaded=loaded, image=image, category=shown[0].index, stage=stage, size=size)
        check = backbone_check(loaded, prepare_segment(loaded, image, size=size))
        return TransferResult(seg, None, cam, check)
    found = detect(loaded=loaded, image=image, threshold=threshold, size=size)
    first = found.items[0].index if found.items else None
    cam = None if first is None else detection_cam(loaded=loaded, image=image, index=first, stage=stage, size=size)
    return TransferResult(None, found, cam, backbone_check(loaded, detector_batch(loaded, image, size=size)))
