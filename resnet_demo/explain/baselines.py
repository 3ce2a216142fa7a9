"""What a "removed" pixel shows in the faithfulness curves: the baselines, by name.

``"blur"`` (the default), the crop blurred by a Gaussian of sigma = 1/16 of its side,
removes the edges and texture the network reads while keeping the colours in range and in
place; it is the baseline of RISE. ``"mean"``, every pixel the crop's own mean colour
(per channel), removes all spatial evidence, coarse shapes included: the stronger choice
when a network still recognises the blurred photo. See :mod:`.faithfulness`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from ..core.errors import UserError

__all__ = ["BASELINES", "blurred_baseline", "check_baseline", "make_baseline", "mean_baseline"]

# What replaces a "removed" pixel, by name (see the module docstring): the words are for people.
BASELINES: dict[str, str] = {
    "blur": "the crop blurred (Gaussian, sigma 1/16 of its side)",
    "mean": "the crop's mean colour",
}


def blurred_baseline(image: Tensor) -> Tensor:
    """The crop with its detail blurred away: a Gaussian of sigma = 1/16 of the side. (1, 3, H, W)"""
    side = min(image.shape[-2:])
    sigma = max(1.0, side / 16)
    kernel = min(2 * int(np.ceil(3 * sigma)) + 1, 2 * side - 1)  # reflect padding needs kernel // 2 < side
    return gaussian_blur(image, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def mean_baseline(image: Tensor) -> Tensor:
    """Every pixel the crop's mean colour, channel by channel: no spatial evidence left. (1, 3, H, W)"""
    return image.mean(dim=(-2, -1), keepdim=True).expand_as(image).contiguous()


_MAKERS: dict[str, Callable[[Tensor], Tensor]] = {"blur": blurred_baseline, "mean": mean_baseline}


def check_baseline(kind: str) -> str:
    """``kind`` if it names a baseline of :data:`BASELINES`, else a :class:`UserError` naming the choices."""
    if not isinstance(kind, str) or kind not in BASELINES:
        raise UserError(f"Unknown baseline {kind!r:.40}; choose one of {', '.join(BASELINES)}.")
    return kind


def make_baseline(image: Tensor, *, kind: str) -> Tensor:
    """The baseline ``kind`` (a key of :data:`BASELINES`) of ``image``, (1, 3, H, W) like it."""
    return _MAKERS[check_baseline(kind)](image)
