"""What the explanation engine returns: predictions, block statistics, feature-map grids,
explanation maps, and a preprocessed image. Plain frozen records, safe to share between threads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from ..core.features import FeatureGrid  # re-exported: part of what the engine returns
from ..core.images import CropBox
from ..core.weights import Preprocessing
from .classes import class_label

__all__ = ["Attribution", "FinishedMap", "BlockStat", "FeatureGrid", "Prediction", "Prepared", "top_predictions"]

# A finished map: the heat map (H, W) float32 in [0, 1], the raw map, and whether it holds no evidence.
FinishedMap = tuple[np.ndarray, np.ndarray, bool]


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    prob: float


@dataclass(frozen=True)
class BlockStat:
    """One bottleneck block, for the diagram: how much its branch F(x) adds to x."""

    name: str  # "layer3.0"
    stage: str  # "layer3"
    index: int  # position in its stage
    out_shape: tuple[int, int, int]  # (C, H, W)
    mean_activation: float  # mean of the block's output
    residual_ratio: float  # ||F(x)|| / ||x||, x being the shortcut (projected where the shape changes)
    residual_norm: float = 0.0  # ||F(x)||
    shortcut_norm: float = 0.0  # ||x||
    projection: bool = False  # the shortcut is a strided 1x1 projection, not the identity


@dataclass(frozen=True, eq=False)
class Attribution:
    """One explanation map for one class.

    ``heatmap`` is the map on the crop the model saw, (crop_h, crop_w) float32 in
    [0, 1]. ``raw`` is the map before upsampling and normalising: (h, w) at the
    stage's resolution for Grad-CAM, (3, H, W) per input channel for Guided
    Grad-CAM and Integrated Gradients, (H, W) for Occlusion. ``all_zero`` means the
    map has no positive evidence (e.g. Grad-CAM for a class the region argues
    against); its heatmap is then all zeros, never NaN. A contrastive map explains
    logit(target) - logit(versus); stage "fusion" is the maximum of a method's
    normalised maps of every stage (see :meth:`~resnet_demo.explain.Analysis.fusion`).
    """

    stage: str  # a stage, "input" for methods that attribute to pixels, or "fusion"
    target: int
    target_label: str
    method: str
    heatmap: np.ndarray
    raw: np.ndarray
    all_zero: bool
    seconds: float
    target_prob: float = 0.0
    versus: int | None = None  # the contrast class of a contrastive map ("why target and not versus"), else None
    versus_label: str | None = None

    def about(self) -> dict[str, Any]:
        """Which map this is (method, stage, the class and the contrast class, with their
        labels): the fields that every record made from a map starts with."""
        return {
            "method": self.method, "stage": self.stage, "target": self.target, "target_label": self.target_label,
            "versus": self.versus, "versus_label": self.versus_label,
        }  # fmt: skip


@dataclass(frozen=True, eq=False)
class Prepared:
    """An image loaded and preprocessed for one weights entry (see :func:`~resnet_demo.explain.prepare`).

    ``image`` is the whole image, or a display copy of it (``prepare(display_max=...)``):
    the tensor and the crop always come from the image at its loaded size, ``full_size``.
    """

    image: Image.Image  # the whole image, RGB, or its display copy
    tensor: Tensor  # (1, 3, crop, crop), normalised
    crop: Image.Image  # what the model saw
    crop_box: CropBox  # where that is in ``image`` (in the display copy's pixels for a copy)
    preprocessing: Preprocessing
    timings: dict[str, float]
    full_size: tuple[int, int] | None = None  # (W, H) of the image the model's crop came from; None: ``image``'s

    @property
    def reduced(self) -> bool:
        """Whether ``image`` is a smaller display copy rather than the image itself."""
        return self.full_size is not None and self.full_size != self.image.size


def top_predictions(probs: np.ndarray, categories: Sequence[str], k: int) -> list[Prediction]:
    """The ``k`` most probable classes of a (num_classes,) probability vector, best first (k is clamped)."""
    k = max(1, min(int(k), probs.shape[0]))
    order = np.argsort(-probs, kind="stable")[:k]
    return [Prediction(int(i), class_label(categories, int(i)), float(probs[i])) for i in order]
