"""Average drop and increase in confidence (Chattopadhyay et al., Grad-CAM++, WACV 2018).

The photo is shown through the map: every pixel's colour (in [0, 1], before the weights'
normalisation) multiplied by the map's value there, so only what the map marks stays
visible. If the map holds the evidence, the class score barely drops. With Y the score
on the photo and O the score on the masked photo (the probability of the class, as in
:mod:`.faithfulness`):

* drop = max(0, Y - O) / Y x 100, in [0, 100]: lower is better (the paper's average
  drop, here for one photo);
* increase = whether O > Y: the masked photo convinced the network more than the photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..core.weights import Preprocessing
from .faithfulness import Forward, forward_scores

__all__ = ["Confidence", "confidence", "masked_by"]


@dataclass(frozen=True)
class Confidence:
    """The score of the class on the photo and on the photo masked by one map."""

    photo_score: float  # Y
    masked_score: float  # O

    @property
    def drop(self) -> float:
        """max(0, Y - O) / Y, in percent: lower is better (0 when the photo scores 0)."""
        if self.photo_score <= 0:
            return 0.0
        return 100.0 * max(0.0, self.photo_score - self.masked_score) / self.photo_score

    @property
    def increase(self) -> bool:
        """The masked photo scores higher than the photo."""
        return self.masked_score > self.photo_score


def masked_by(image: Tensor, heatmaps: np.ndarray, *, preprocessing: Preprocessing) -> Tensor:
    """``image`` (1, 3, H, W), normalised, with its colours multiplied by each of ``heatmaps`` (M, H, W):
    (M, 3, H, W), normalised again."""
    mean = torch.tensor(preprocessing.mean, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    maps = torch.as_tensor(np.asarray(heatmaps, dtype=np.float32), device=image.device).unsqueeze(1)  # (M, 1, H, W)
    colours = image * std + mean  # (1, 3, H, W) in [0, 1]
    return (colours * maps - mean) / std


def confidence(
    *,
    forward: Forward,
    image: Tensor,
    heatmaps: Sequence[np.ndarray],
    target: int,
    preprocessing: Preprocessing,
    versus: int | None = None,
) -> list[Confidence]:
    """The photo's score and each map's masked score for class ``target``: one batch of 1 + M images."""
    masked = masked_by(image, np.stack(heatmaps), preprocessing=preprocessing)
    batch = torch.cat([image, masked.to(image.dtype)])
    scores = forward_scores(forward=forward, images=batch, target=target, versus=versus)
    return [Confidence(float(scores[0]), float(s)) for s in scores[1:]]
