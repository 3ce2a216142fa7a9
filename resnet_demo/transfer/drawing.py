"""Pictures of the results, for the command line and the app: coloured masks and boxes over the photo."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .detect import Detections
from .segment import Segmentation

__all__ = ["draw_detections", "draw_segmentation", "hex_colour", "palette"]


def palette(index: int) -> tuple[int, int, int]:
    """PASCAL VOC's colour for class ``index`` (its bits spread over R, G and B)."""
    rgb = [0, 0, 0]
    for shift in range(8):
        for channel in range(3):
            rgb[channel] |= ((index >> (3 * shift + channel)) & 1) << (7 - shift)
    return rgb[0], rgb[1], rgb[2]


def hex_colour(index: int) -> str:
    """:func:`palette` as ``#rrggbb``, for a legend."""
    return "#{:02x}{:02x}{:02x}".format(*palette(index))


def _fitted(mask: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """``mask`` (H, W) as an image of ``size`` (width, height): the photo's own, or its display copy's."""
    picture = Image.fromarray(mask)
    return picture if picture.size == size else picture.resize(size, Image.Resampling.NEAREST)


def draw_segmentation(image: Image.Image, result: Segmentation, *, opacity: float = 0.5) -> Image.Image:
    """Every pixel tinted with its class's colour, over the photo or a smaller copy of it."""
    mask = np.asarray(_fitted(result.mask, image.size))
    colours = np.array([palette(i) for i in range(256)], dtype=np.uint8)[mask]  # (H, W, 3)
    return Image.blend(image.convert("RGB"), Image.fromarray(colours), opacity)


def draw_detections(image: Image.Image, result: Detections) -> Image.Image:
    """Each detection's box with its label and score (and its mask, for Mask R-CNN), over the photo or a
    smaller copy of it: the boxes are in the photo's pixels (:attr:`Detections.photo_size`)."""
    drawn = image.convert("RGB")
    sx, sy = drawn.width / result.photo_size[0], drawn.height / result.photo_size[1]
    for d in result.items:
        colour = palette(d.label_index % 255 + 1)  # never index 0, which is black
        if d.mask is not None:
            tint = Image.blend(drawn, Image.new("RGB", drawn.size, colour), 0.4)
            drawn.paste(tint, mask=_fitted(d.mask.astype(np.uint8) * 255, drawn.size))
    draw = ImageDraw.Draw(drawn)
    for d in result.items:
        colour = palette(d.label_index % 255 + 1)
        x0, y0, x1, y1 = d.box[0] * sx, d.box[1] * sy, d.box[2] * sx, d.box[3] * sy
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=3)
        draw.text((x0 + 3, y0 + 2), f"{d.label} {d.score:.2f}", fill=colour)
    return drawn
