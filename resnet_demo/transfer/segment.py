"""Semantic segmentation of a photo: a class per pixel, at the photo's size, with each class's share."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor

from ..core.errors import UserError
from .weights import TransferModel

__all__ = ["SegmentClass", "Segmentation", "prepare_segment", "segment", "segment_logits", "segmentation_of"]

MIN_SIZE, MAX_SIZE = 32, 1024  # below 32 px layer4 is a single pixel; above 1024 a CPU takes minutes
# The longest side the model sees, as torchvision's detectors cap theirs: a 20:1 panorama at a 520 px short
# side would otherwise be 10,400 px long, and its explanation would need tens of GB.
MAX_LONG_SIDE = 1333


@dataclass(frozen=True)
class SegmentClass:
    """One class found in the photo."""

    index: int
    name: str
    share: float  # fraction of the photo's pixels, in [0, 1]


@dataclass(frozen=True)
class Segmentation:
    """The classes of every pixel of the photo."""

    mask: np.ndarray  # (H, W) uint8 class indices, the photo's size
    classes: tuple[SegmentClass, ...]  # the classes found, largest share first
    input_size: tuple[int, int]  # (height, width) the model saw


def _check_size(size: int) -> int:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"The input size must be between {MIN_SIZE} and {MAX_SIZE} pixels, not {size}.")
    return size


def prepare_segment(loaded: TransferModel, image: Image.Image, *, size: int | None = None) -> Tensor:
    """The entry's eval transform: short side resized to ``size`` (default: the entry's), normalised; the
    long side at most :data:`MAX_LONG_SIDE` (the short side then shrinks with it)."""
    spec = loaded.spec
    short = _check_size(spec.resize_size if size is None else size)  # type: ignore[arg-type]
    resized = TF.resize(
        image.convert("RGB"), [short], interpolation=TF.InterpolationMode.BILINEAR, max_size=MAX_LONG_SIDE
    )
    x = TF.to_tensor(resized)
    return TF.normalize(x, list(spec.mean), list(spec.std)).unsqueeze(0)  # (1, 3, h, w)


def segment_logits(model: torch.nn.Module, x: Tensor) -> Tensor:
    """The main head's logits at the input's size: (1, K, h, w)."""
    return model(x)["out"]


def _classes(mask: np.ndarray, categories: tuple[str, ...]) -> tuple[SegmentClass, ...]:
    counts = np.bincount(mask.ravel(), minlength=len(categories))
    found = [SegmentClass(int(i), categories[i], float(counts[i] / mask.size)) for i in np.flatnonzero(counts)]
    return tuple(sorted(found, key=lambda c: -c.share))


def segmentation_of(pred: Tensor, *, image: Image.Image, categories: tuple[str, ...]) -> Segmentation:
    """The segmentation for the predicted classes ``pred`` (h, w) at the model's input size: the mask resized
    to the photo, and the classes found."""
    small = Image.fromarray(pred.detach().to(torch.uint8).numpy())
    mask = np.asarray(small.resize(image.size, Image.Resampling.NEAREST), dtype=np.uint8)  # (H, W)
    return Segmentation(mask=mask, classes=_classes(mask, categories), input_size=tuple(pred.shape[-2:]))


def segment(*, loaded: TransferModel, image: Image.Image, size: int | None = None) -> Segmentation:
    """Segment ``image``: the predicted class of every pixel (resized to the photo), and the classes found."""
    x = prepare_segment(loaded, image, size=size)  # (1, 3, h, w)
    with torch.inference_mode():
        pred = segment_logits(loaded.model, x).argmax(1)[0]  # (h, w)
    return segmentation_of(pred, image=image, categories=loaded.spec.categories)
