"""Image transforms for fine-tuning: the paper's training augmentation, the
single-crop test and the ten-crop / multi-scale tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import PIL.Image
import torch
from torchvision.transforms import v2

from ..core.errors import UserError

__all__ = ["eval_transform", "multi_view_transform", "train_transform"]


def _normalize(mean: Sequence[float], std: Sequence[float]) -> list[Any]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def train_transform(
    *,
    crop_size: int,
    scale_range: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    random_resized_crop: bool = False,
    color_jitter: float = 0.4,
) -> v2.Compose:
    """The paper's augmentation: short side random in ``scale_range``, a random
    ``crop_size`` crop, horizontal flip, colour jitter. With ``random_resized_crop``
    the first two become Inception-style RandomResizedCrop."""
    lo, hi = scale_range
    if random_resized_crop:
        geometry: list[Any] = [v2.RandomResizedCrop(crop_size, antialias=True)]
    else:
        if lo < crop_size or hi < lo:
            raise UserError(f"The scale range {lo}..{hi} must start at the crop size {crop_size} or above.")
        geometry = [v2.RandomResize(lo, hi + 1, antialias=True), v2.RandomCrop(crop_size)]
    jitter = [v2.ColorJitter(color_jitter, color_jitter, color_jitter)] if color_jitter > 0 else []
    return v2.Compose([*geometry, v2.RandomHorizontalFlip(), *jitter, *_normalize(mean, std)])


def eval_transform(*, crop_size: int, resize_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Resize the short side (aspect kept), then one center crop: the single-crop test."""
    return v2.Compose([v2.Resize(resize_size, antialias=True), v2.CenterCrop(crop_size), *_normalize(mean, std)])


def multi_view_transform(
    *, crop_size: int, resize_sizes: Sequence[int], mean: Sequence[float], std: Sequence[float]
) -> Callable[[PIL.Image.Image], torch.Tensor]:
    """Ten crops (4 corners + center, and their mirror images) at each resize size.

    Returns a (V, 3, crop, crop) tensor; the caller averages the softmax over the V views.
    One size is the standard ten-crop test, several sizes the multi-scale test.
    """
    norm = v2.Compose(_normalize(mean, std))
    tens = [v2.Compose([v2.Resize(s, antialias=True), v2.TenCrop(crop_size)]) for s in resize_sizes]

    def views(image: PIL.Image.Image) -> torch.Tensor:
        return torch.stack([norm(crop) for t in tens for crop in t(image)])  # (V, 3, crop, crop)

    return views
