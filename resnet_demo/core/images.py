"""Loading any image a user may upload, and the exact preprocessing of a weights entry.

:func:`load_image` turns a path, bytes or a PIL image into a plain RGB image:
EXIF orientation applied, first frame of an animation, every PIL mode converted
(16-bit scaled to 8 bits, transparency composited on white), huge images
downscaled, decompression bombs and broken files refused with an :class:`ImageError`
that says what was wrong.

:func:`preprocess` applies the eval transform of the weights in use (resize the
short side, center crop, normalise) with torchvision's own functions, so the tensor
equals ``weights.transforms()(image)``, and returns the crop the model saw together
with where that crop lies in the original image.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError
from torchvision.transforms import InterpolationMode

from .errors import UserError
from .weights import Preprocessing

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "CropBox",
    "display_copy",
    "ImageError",
    "ImageSource",
    "load_image",
    "preprocess",
    "to_rgb",
]

# Larger photos are downscaled on load (JPEGs while decoding, so they never occupy
# full-size memory). 24 MP keeps every phone photo's aspect and far more detail than
# the 232-pixel resize uses; it only bounds memory and resize time.
DEFAULT_MAX_PIXELS = 24_000_000

ImageSource = str | Path | bytes | bytearray | Image.Image

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_HIGH_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


class ImageError(UserError):
    """An image could not be used. The message names the source and what was wrong."""


@dataclass(frozen=True)
class CropBox:
    """The region of the original image that the model saw, in original pixel coordinates.

    It may reach outside the image when the crop is larger than the resized image
    (torchvision pads with black then).
    """

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def scaled(self, factor: float) -> CropBox:
        """The same region in an image resized by ``factor`` (e.g. a display copy)."""
        return CropBox(self.left * factor, self.top * factor, self.width * factor, self.height * factor)


def _describe(source: ImageSource) -> str:
    # The file's own name only: on a server the rest of the path is the server's folder layout.
    if isinstance(source, (str, Path)):
        return Path(source).name or str(source)
    if isinstance(source, (bytes, bytearray)):
        return "the uploaded data"
    return "the image"


def _scale_high_bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float grey images to 8-bit "L", scaled, never clamped.

    PIL's ``convert("L")``/``convert("RGB")`` clamps such values at 255, which turns
    nearly every pixel of a 16-bit photo white.
    """
    a = np.asarray(image)
    if image.mode.startswith("I;16"):
        scaled = a.astype(np.float32) / 257.0  # 65535 -> 255: the full 16-bit range maps onto 8 bits
    else:
        a = a.astype(np.float64)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if image.mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = a * 255.0  # float images in [0, 1]
        elif lo >= 0.0 and hi <= 255.0:
            scaled = a  # already 8-bit values in a wide container
        elif lo >= 0.0 and hi <= 65535.0:
            scaled = a / 257.0  # 16-bit data opened as 32-bit "I" (older PIL, TIFF)
        else:
            # Values of no standard range (negative, or beyond 16 bits): stretch to 0..255.
            scaled = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


@functools.cache
def _lab_to_srgb() -> ImageCms.ImageCmsTransform:
    # PIL's plain LAB -> RGB conversion copies the channels; a colour transform is needed.
    return ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")


def _unpremultiply_la(image: Image.Image) -> Image.Image:
    """Premultiplied "La" to "LA" (PIL converts "La" to nothing else)."""
    a = np.asarray(image, dtype=np.float32)  # (H, W, 2)
    lum, alpha = a[..., 0], a[..., 1]
    lum = np.divide(lum * 255.0, alpha, out=np.zeros_like(lum), where=alpha > 0)
    return Image.fromarray(np.clip(np.rint(np.stack([lum, alpha], axis=-1)), 0, 255).astype(np.uint8))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert an image of any PIL mode to RGB: alpha composited on white, high bit depths scaled."""
    if image.mode in _HIGH_BIT_MODES:
        image = _scale_high_bit(image)
    if image.mode == "La":
        image = _unpremultiply_la(image)
    if image.mode == "LAB":
        return ImageCms.applyTransform(image, _lab_to_srgb())
    try:
        if image.mode in _ALPHA_MODES or "transparency" in image.info:
            # P with a transparent palette entry, L/RGB with a tRNS colour, premultiplied
            # RGBa: PIL resolves all of them when converting to RGBA.
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        if image.mode == "RGB":
            return image
        return image.convert("RGB")
    except ValueError as e:  # a mode PIL cannot convert
        raise ImageError(f"Images in PIL mode {image.mode!r} are not supported ({e}). Save it as PNG or JPEG.") from e


def _first_frame(image: Image.Image) -> None:
    if getattr(image, "n_frames", 1) > 1:
        image.seek(0)


def _check_bomb(image: Image.Image, what: str) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        raise ImageError(
            f"{what} is {image.width}x{image.height} pixels, more than the safety limit of "
            f"{limit:,} pixels, so it was refused as a possible decompression bomb. "
            f"Resize it below that and try again."
        )


def _downscale(image: Image.Image, max_pixels: int) -> Image.Image:
    pixels = image.width * image.height
    if pixels <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / pixels)
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)


def _normalise(image: Image.Image, *, max_pixels: int) -> Image.Image:
    # A corrupt EXIF block must not lose the photo: keep it unrotated then.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image)
    return _downscale(to_rgb(image), max_pixels)


@contextlib.contextmanager
def _no_bomb_warning() -> Iterator[None]:
    """PIL's DecompressionBombWarning silenced: :func:`_check_bomb` refuses every image PIL warns about
    (the same limit) with a sentence, and the warning would be a second line on the command line's stderr.

    ``catch_warnings`` swaps the process's filter list: two threads opening photos at once may
    leave this one ignore-filter installed, which is harmless.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read ``source`` (a path, the file's bytes, or a PIL image) as an RGB image.

    EXIF orientation is applied, an animation gives its first frame, every mode becomes
    RGB (see :func:`to_rgb`), and an image over ``max_pixels`` is downscaled, keeping
    its aspect ratio. A file that is missing, not an image, truncated, or larger than
    PIL's decompression-bomb limit raises :class:`ImageError`.
    """
    if max_pixels < 1:
        raise ValueError("max_pixels must be positive")
    what = _describe(source)
    if isinstance(source, Image.Image):
        _check_bomb(source, what)
        _first_frame(source)
        return _normalise(source, max_pixels=max_pixels)

    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("The uploaded data is empty: no image was received.")
        fp: str | Path | io.BytesIO = io.BytesIO(bytes(source))
    else:
        path = Path(source).expanduser()
        # The name alone, as in every message here: the rest is the server's (or a temp) folder layout.
        if not path.exists():
            raise ImageError(f"No file at {what!r}. Check the path.")
        if path.is_dir():
            raise ImageError(f"{what} is a folder, not an image file.")
        fp = path

    try:
        with _no_bomb_warning(), Image.open(fp) as opened:
            _check_bomb(opened, what)
            _first_frame(opened)
            if opened.width * opened.height > max_pixels:
                # JPEG decodes at 1/2, 1/4 or 1/8 scale for free: a huge photo never
                # reaches memory at full size.
                scale = math.sqrt(max_pixels / (opened.width * opened.height))
                opened.draft(None, (math.ceil(opened.width * scale), math.ceil(opened.height * scale)))
            opened.load()
            image = _normalise(opened, max_pixels=max_pixels)
            if image is opened:
                image = opened.copy()  # detach from the file before it closes
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{what} was refused as a possible decompression bomb ({e}). Resize it and try again.") from e
    except UnidentifiedImageError as e:
        raise ImageError(
            f"{what} is not an image file PIL can read (supported: JPEG, PNG, GIF, WebP, BMP, TIFF and more)."
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        detail = str(e) or type(e).__name__
        hint = "it is truncated" if "truncated" in detail.lower() else "it is truncated or corrupt"
        raise ImageError(f"Could not read {what}: {hint} ({detail}). Try another copy of the file.") from e
    return image


def display_copy(image: Image.Image, *, max_side: int) -> Image.Image:
    """``image`` itself if its longer side is at most ``max_side`` pixels, else a copy shrunk to that.

    What a server keeps of a photo to draw on: a 24 MP phone photo is 72 MB as RGB,
    its 1024-pixel copy 2-3 MB.
    """
    if max_side < 1:
        raise ValueError("max_side must be positive")
    longer = max(image.size)
    if longer <= max_side:
        return image
    scale = max_side / longer
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)


def _crop_offset(resized: int, crop: int) -> int:
    """Where torchvision's center_crop starts, in resized pixels (negative: it pads)."""
    if crop > resized:
        return -((crop - resized) // 2)
    return int(round((resized - crop) / 2.0))


def preprocess(image: Image.Image, *, preprocessing: Preprocessing) -> tuple[torch.Tensor, Image.Image, CropBox]:
    """The eval transform of a weights entry, step by step, with torchvision's functions.

    Returns ``(tensor, crop, box)``: the normalised ``(1, 3, crop, crop)`` float tensor,
    equal to ``weights.transforms()(image)[None]``; the RGB crop the model saw; and
    where that crop lies in ``image``.
    """
    if image.mode != "RGB":
        image = to_rgb(image)
    interpolation = InterpolationMode(preprocessing.interpolation)
    c = preprocessing.crop_size
    resized = TF.resize(image, [preprocessing.resize_size], interpolation=interpolation, antialias=True)
    crop = TF.center_crop(resized, [c, c])
    x = TF.convert_image_dtype(TF.pil_to_tensor(crop), torch.float)
    x = TF.normalize(x, mean=list(preprocessing.mean), std=list(preprocessing.std))

    sx, sy = resized.width / image.width, resized.height / image.height
    box = CropBox(
        left=_crop_offset(resized.width, c) / sx,
        top=_crop_offset(resized.height, c) / sy,
        width=c / sx,
        height=c / sy,
    )
    return x.unsqueeze(0), crop, box
