"""Where a named object is in a photo: DeepLabV3's mask of one of its classes (the Pascal VOC classes),
for the pointing games of the explanation's metric cards ("does the cat map point at the cat?")."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..core.errors import UserError
from .segment import segment
from .weights import shared_transfer, transfer_spec

__all__ = ["object_classes", "object_mask"]

_BACKGROUND = "__background__"


def object_classes(*, backbone: str = "resnet50") -> tuple[str, ...]:
    """The classes DeepLabV3 segments (its VOC classes, background left out), without loading it."""
    spec = transfer_spec(task="segment", model="deeplabv3", backbone=backbone)
    return tuple(c for c in spec.categories if c != _BACKGROUND)


def _check_class(name: str, known: tuple[str, ...]) -> str:
    wanted = name.strip().lower() if isinstance(name, str) else ""
    if wanted not in known:
        raise UserError(f"The segmentation model does not know {str(name)[:40]!r}; it knows {', '.join(known)}.")
    return wanted


def object_mask(
    *,
    image: Image.Image,
    name: str,
    backbone: str = "resnet50",
    size: int | None = None,
    fallback_to_random: bool = False,
) -> np.ndarray:
    """The pixels of ``image`` (H, W) bool that DeepLabV3 labels ``name``, one of :func:`object_classes`.

    An unknown class, or a class the model finds nowhere in the photo, is a :class:`UserError`;
    the class is checked before the model loads.
    """
    wanted = _check_class(name, object_classes(backbone=backbone))
    loaded = shared_transfer(
        task="segment", model="deeplabv3", backbone=backbone, fallback_to_random=fallback_to_random
    )
    found = segment(loaded=loaded, image=image, size=size)
    mask = found.mask == loaded.spec.categories.index(wanted)
    if not mask.any():
        present = ", ".join(c.name for c in found.classes if c.name != _BACKGROUND) or "only background"
        raise UserError(f"The segmentation model finds no {wanted} in this photo (it finds {present}).")
    return mask
