"""Object detection on a photo: boxes, labels and scores over a threshold, and masks for Mask R-CNN."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from ..core.errors import UserError
from ..core.shell import shell
from .weights import TransferModel

__all__ = [
    "Detection",
    "Detections",
    "check_threshold",
    "detect",
    "detections_of",
    "detector_batch",
    "raw_detections",
    "sized",
    "sized_transform",
]

MIN_SIZE, MAX_SIZE = 64, 1333  # torchvision evaluates at 800 (longest side at most 1333)


@dataclass(frozen=True)
class Detection:
    """One object found."""

    index: int  # its rank in the model's output, for explaining it
    label: str
    label_index: int
    score: float  # in [0, 1]
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) in the photo's pixels
    mask: np.ndarray | None = None  # (H, W) bool, Mask R-CNN only


@dataclass(frozen=True)
class Detections:
    """Every object over the threshold, highest score first; an empty tuple is an answer too."""

    items: tuple[Detection, ...]
    threshold: float
    photo_size: tuple[int, int]  # (width, height)


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float if it is a number in [0, 1] (NaN is not); else a :class:`UserError`."""
    number = isinstance(threshold, int | float) and not isinstance(threshold, bool)
    if not number or not 0.0 <= threshold <= 1.0:
        shown = f"{threshold:g}" if number else f"{threshold!r:.40}"
        raise UserError(f"The score threshold must be between 0 and 1, not {shown}.")
    return float(threshold)


def sized_transform(model: nn.Module, *, size: int | None) -> nn.Module | None:
    """A new transform for detector ``model`` that resizes the short side to ``size`` (torchvision's: 800);
    None for None (the model's own)."""
    if size is None:
        return None
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"The input size must be between {MIN_SIZE} and {MAX_SIZE} pixels, not {size}.")
    t = model.transform
    transform = GeneralizedRCNNTransform(size, round(size * 1333 / 800), t.image_mean, t.image_std)
    return transform.eval()  # in training mode it would skip mapping boxes back


def sized(model: nn.Module, size: int | None) -> nn.Module:
    """``model`` itself, or a shell whose transform resizes the short side to ``size`` (torchvision's: 800)."""
    transform = sized_transform(model, size=size)
    return model if transform is None else shell(model, replace={"transform": transform})


def raw_detections(model: nn.Module, image: Image.Image) -> dict[str, Tensor]:
    """The model's own output for the photo: boxes (N, 4), labels (N,), scores (N,), masks (N, 1, H, W)."""
    return model([TF.to_tensor(image.convert("RGB"))])[0]  # (3, H, W) in [0, 1]: the model normalises


def detector_batch(loaded: TransferModel, image: Image.Image, *, size: int | None = None) -> Tensor:
    """The batch the detector's backbone sees: the model's own transform (resize, normalise, pad to 32)."""
    with torch.inference_mode():
        return sized(loaded.model, size).transform([TF.to_tensor(image.convert("RGB"))])[0].tensors  # (1, 3, h, w)


def detections_of(
    out: dict[str, Tensor], *, categories: tuple[str, ...], threshold: float, photo_size: tuple[int, int]
) -> Detections:
    """The detections of the model's output ``out`` whose score is at least ``threshold``."""
    items = []
    boxes, scores = out["boxes"].detach(), out["scores"].detach()  # an explanation's run keeps the graph
    for i, (box, label, score) in enumerate(zip(boxes, out["labels"], scores, strict=True)):
        if float(score) < threshold:
            continue
        mask = (out["masks"][i, 0] > 0.5).detach().numpy() if "masks" in out else None  # (H, W)
        items.append(
            Detection(
                index=i,
                label=categories[int(label)],
                label_index=int(label),
                score=float(score),
                box=tuple(float(v) for v in box),  # type: ignore[arg-type]
                mask=mask,
            )
        )
    return Detections(items=tuple(items), threshold=threshold, photo_size=photo_size)


def detect(*, loaded: TransferModel, image: Image.Image, threshold: float = 0.5, size: int | None = None) -> Detections:
    """Detect the objects in ``image`` whose score is at least ``threshold``."""
    threshold = check_threshold(threshold)
    with torch.inference_mode():
        out = raw_detections(sized(loaded.model, size), image)
    return detections_of(out, categories=loaded.spec.categories, threshold=threshold, photo_size=image.size)
