"""Images in: loading and preprocessing an image for a weights entry, once per image and entry."""

from __future__ import annotations

import time

from PIL import Image

from ..core.images import ImageSource, display_copy, load_image, preprocess
from ..core.weights import Preprocessing
from .results import Prepared

__all__ = ["prepare"]


def prepare(*, image: ImageSource | Prepared, preprocessing: Preprocessing, display_max: int | None = None) -> Prepared:
    """Load ``image`` (see :func:`~resnet_demo.core.images.load_image`) and preprocess it for a weights entry.

    With ``display_max``, the returned image is a display copy whose longer side is at most
    that many pixels (what a server keeps per user; the tensor and the crop still come
    from the full image). A :class:`Prepared` image for the same preprocessing is returned
    as it is; for another preprocessing it is preprocessed again from its image (from the
    display copy if it holds one: close to, not exactly, the full image's preprocessing).
    """
    if isinstance(image, Prepared):
        if image.preprocessing == preprocessing:
            return image
        return _preprocessed(image.image, preprocessing, load_s=0.0, display_max=display_max)
    t0 = time.perf_counter()
    full = load_image(image)
    return _preprocessed(full, preprocessing, load_s=time.perf_counter() - t0, display_max=display_max)


def _preprocessed(
    full: Image.Image, preprocessing: Preprocessing, *, load_s: float, display_max: int | None = None
) -> Prepared:
    t0 = time.perf_counter()
    tensor, crop, box = preprocess(full, preprocessing=preprocessing)
    shown = full if display_max is None else display_copy(full, max_side=display_max)
    if shown is not full:  # the crop's box, in the copy's pixels
        box = box.scaled(shown.width / full.width)
    timings = {"load": load_s, "preprocess": time.perf_counter() - t0}
    return Prepared(shown, tensor, crop, box, preprocessing, timings, full_size=full.size)
