"""Does the map point at the object: the pointing game (Zhang et al., 2018) and the energy pointing
game (Wang et al., Score-CAM, 2020).

The object is a mask on the crop the model saw, made from a box the user drew in the
photo's own pixels (:func:`box_mask`) or from a mask over the photo (:func:`photo_mask`,
e.g. a segmentation model's mask of one class): each crop pixel is inside when the point
of the photo at its centre is. The *pointing game* scores 1 when a pixel where the map
takes its maximum lies inside the object, else 0 (Quantus's ``PointingGame``); the
*energy pointing game* is the share of the map's sum inside the object, in [0, 1]
(Quantus's ``AttributionLocalisation`` on the map's positive part). A map that knows
nothing scores, on average, the object's share of the crop in both: what a random map
scores (:func:`chance`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..core.errors import UserError
from .results import Prepared

__all__ = ["Box", "box_mask", "chance", "check_box", "energy_pointing", "parse_box", "photo_mask", "pointing"]

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in the photo's own pixels


def parse_box(value: str | Sequence[float] | None) -> Box | None:
    """A box from "x0,y0,x1,y1" (commas or spaces) or four numbers; None or "" for no box. Not yet
    checked against a photo (see :func:`check_box`); anything else is a :class:`UserError`."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    parts = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        numbers = []
    if len(numbers) != 4 or not all(math.isfinite(v) for v in numbers):
        raise UserError("A box is four numbers x0,y0,x1,y1 in the photo's pixels, for example 10,20,110,140.")
    return numbers[0], numbers[1], numbers[2], numbers[3]


def check_box(box: Box, *, size: tuple[int, int]) -> Box:
    """``box`` if it lies inside a photo of ``size`` (W, H) with a positive area, else a :class:`UserError`."""
    x0, y0, x1, y1 = box
    w, h = size
    if x1 < x0 or y1 < y0:
        raise UserError(f"The box {_show(box)} is inverted: give the top-left corner first, then the bottom-right.")
    if x1 == x0 or y1 == y0:
        raise UserError(f"The box {_show(box)} has no area: its corners must differ in x and in y.")
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise UserError(f"The box {_show(box)} reaches outside the photo, which is {w}x{h} pixels.")
    return box


def _show(box: Box) -> str:
    return ",".join(f"{v:g}" for v in box)


def _centres(prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """The x (W,) and y (H,) in ``prepared.image``'s pixels of the centre of each crop pixel."""
    b = prepared.crop_box
    w, h = prepared.crop.size
    xs = b.left + (np.arange(w) + 0.5) * b.width / w
    ys = b.top + (np.arange(h) + 0.5) * b.height / h
    return xs, ys


def _nonempty(mask: np.ndarray, what: str) -> np.ndarray:
    if not mask.any():
        raise UserError(f"{what} lies outside the centre crop the model saw, so no map can point at it.")
    return mask


def box_mask(prepared: Prepared, box: Box) -> np.ndarray:
    """The crop pixels (H, W) bool inside ``box``, given in the photo's own pixels (checked here)."""
    full = prepared.full_size or prepared.image.size
    x0, y0, x1, y1 = check_box(box, size=full)
    scale = prepared.image.width / full[0]  # a display copy's pixels per photo pixel
    xs, ys = _centres(prepared)
    xs, ys = xs / scale, ys / scale
    inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    return _nonempty(inside, f"The box {_show(box)}")


def photo_mask(prepared: Prepared, mask: np.ndarray, *, what: str = "The object") -> np.ndarray:
    """A mask over ``prepared.image`` (its H, W) sampled onto the crop: (H, W) bool; outside the photo False."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != prepared.image.size[::-1]:
        raise ValueError(f"a mask of shape {mask.shape} does not cover a {prepared.image.size} photo")
    xs, ys = _centres(prepared)
    ix, iy = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    okx, oky = (ix >= 0) & (ix < mask.shape[1]), (iy >= 0) & (iy < mask.shape[0])
    picked = mask[np.clip(iy, 0, mask.shape[0] - 1)][:, np.clip(ix, 0, mask.shape[1] - 1)]
    return _nonempty(picked & oky[:, None] & okx[None, :], what)


def pointing(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """1.0 if a pixel where ``heatmap`` is largest lies in ``mask`` (both (H, W)), else 0.0."""
    heat = np.asarray(heatmap, dtype=np.float64)
    return float(np.any(mask & (heat == heat.max())))


def energy_pointing(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """The share of the map's positive sum inside ``mask``, in [0, 1] (0 for a map without evidence)."""
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0, None)
    total = heat.sum()
    return float(heat[mask].sum() / total) if total > 0 else 0.0


def chance(mask: np.ndarray) -> float:
    """What a map that knows nothing scores on average in both games: the object's share of the crop."""
    return float(np.mean(mask))
