"""Drawing heat maps and feature maps with numpy and PIL: no matplotlib figure, no global state.

The colour maps are the published polynomial fits of Turbo (Google, 2019) and viridis
(matplotlib), evaluated once into 256-entry lookup tables.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw

from .errors import InvalidValue
from .images import CropBox

__all__ = ["TURBO", "VIRIDIS", "check_opacity", "colorize", "grid", "overlay", "overlay_box"]


def _turbo_lut() -> np.ndarray:
    # Polynomial approximation of Turbo by its author (A. Mikhailov, Google AI blog, 2019).
    t = np.linspace(0.0, 1.0, 256)
    v4 = np.stack([np.ones_like(t), t, t**2, t**3], axis=1)
    v2 = np.stack([t**4, t**5], axis=1)
    r = v4 @ [0.13572138, 4.61539260, -42.66032258, 132.13108234] + v2 @ [-152.94239396, 59.28637943]
    g = v4 @ [0.09140261, 2.19418839, 4.84296658, -14.18503333] + v2 @ [4.27729857, 2.82956604]
    b = v4 @ [0.10667330, 12.64194608, -60.58204836, 110.36276771] + v2 @ [-89.90310912, 27.34824973]
    return np.clip(np.rint(np.stack([r, g, b], axis=1) * 255.0), 0, 255).astype(np.uint8)


def _viridis_lut() -> np.ndarray:
    # Degree-6 least-squares fit of matplotlib's viridis (M. Zucker, "mattz", 2019).
    c = np.array(
        [
            [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
            [0.1050930431085774, 1.404613529898575, 1.384590162594685],
            [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
            [-4.634230498983486, -5.799100973351585, -19.33244095627987],
            [6.228269936347081, 14.17993336680509, 56.69055260068105],
            [4.776384997670288, -13.74514537774601, -65.35303263337234],
            [-5.435455855934631, 4.645852612178535, 26.3124352495832],
        ]
    )
    t = np.linspace(0.0, 1.0, 256)[:, None]
    rgb = sum(c[i] * t**i for i in range(7))
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


TURBO: np.ndarray = _turbo_lut()  # (256, 3) uint8, for heat maps
VIRIDIS: np.ndarray = _viridis_lut()  # (256, 3) uint8, for feature maps


def _lookup(lut: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``lut[codes]`` as (..., 3) uint8. Each RGB entry is packed into one 32-bit word first:
    gathering one word per pixel is several times faster than numpy's row gather."""
    packed = np.zeros((lut.shape[0], 4), dtype=np.uint8)
    packed[:, :3] = lut
    words = packed.view(np.uint32).ravel()[codes]  # (...,)
    return np.ascontiguousarray(words.view(np.uint8).reshape(*codes.shape, 4)[..., :3])


def colorize(values: np.ndarray, *, lut: np.ndarray = TURBO) -> np.ndarray:
    """Map values in [0, 1] (NaN counts as 0) to RGB uint8 through a lookup table."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    return _lookup(lut, np.clip(np.rint(v * 255.0), 0, 255).astype(np.intp))


def _resize_map(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float map to ``size`` (width, height) bilinearly, in float32."""
    h = np.asarray(heatmap, dtype=np.float32)
    if h.ndim != 2:
        raise ValueError(f"a heat map must be 2-D, got shape {h.shape}")
    if (h.shape[1], h.shape[0]) == size:
        return h
    return np.asarray(Image.fromarray(h).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)


def check_opacity(opacity: float) -> float:
    """``opacity`` as a float in [0, 1]; else :class:`InvalidValue` (a :class:`UserError`) saying so.

    The one check of an opacity: the app's slider and the command line's flag reach it unchecked."""
    try:
        value = float(opacity)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:
        # One spelling of the number, so that the app (JSON's -1) and the command line (-1.0) say the same.
        shown = f"{value:g}" if math.isfinite(value) else str(opacity)[:20]
        raise InvalidValue(f"Opacity must be between 0 and 1, not {shown}.")
    return value


def overlay(*, image: Image.Image, heatmap: np.ndarray, opacity: float = 0.5) -> Image.Image:
    """Blend a heat map (values in [0, 1]) over ``image`` in Turbo colours.

    The map is resized to the image bilinearly; ``opacity`` 0 returns the image,
    1 the colour map alone. The result has the image's size and is RGB.
    """
    opacity = check_opacity(opacity)
    image = image.convert("RGB")
    colour = Image.fromarray(colorize(np.clip(_resize_map(heatmap, image.size), 0.0, 1.0)))
    return Image.blend(image, colour, opacity)


def overlay_box(
    *,
    image: Image.Image,
    heatmap: np.ndarray,
    box: CropBox,
    opacity: float = 0.5,
    max_side: int | None = None,
    dim_outside: float = 0.45,
) -> Image.Image:
    """Place a heat map of the crop back onto the whole image at ``box``.

    The part of the image the model never saw is dimmed by ``dim_outside`` and the
    crop is outlined. With ``max_side`` the result is downscaled first so that its
    longer side is at most that many pixels.
    """
    opacity = check_opacity(opacity)
    image = image.convert("RGB")
    scale = 1.0
    if max_side is not None and max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.Resampling.BILINEAR
        )
    left, top, width, height = box.left * scale, box.top * scale, box.width * scale, box.height * scale
    out = image.point(lambda v: round(v * (1.0 - dim_outside)))  # a lookup table: fast on any size

    # The crop's pixels, clipped to the image (a padded crop reaches beyond it).
    x0, y0 = max(0, math.floor(left)), max(0, math.floor(top))
    x1, y1 = min(image.width, math.ceil(left + width)), min(image.height, math.ceil(top + height))
    if x1 > x0 and y1 > y0:
        full_w, full_h = max(1, round(width)), max(1, round(height))
        heat = np.clip(_resize_map(heatmap, (full_w, full_h)), 0.0, 1.0)
        ox, oy = round(left), round(top)
        hx0, hy0 = min(max(0, x0 - ox), full_w - 1), min(max(0, y0 - oy), full_h - 1)
        region = heat[hy0 : hy0 + (y1 - y0), hx0 : hx0 + (x1 - x0)]
        # A row or column lost to rounding repeats the map's edge.
        region = np.pad(region, ((0, (y1 - y0) - region.shape[0]), (0, (x1 - x0) - region.shape[1])), mode="edge")
        blended = Image.blend(image.crop((x0, y0, x1, y1)), Image.fromarray(colorize(region)), opacity)
        out.paste(blended, (x0, y0))
    ImageDraw.Draw(out).rectangle(
        [round(left), round(top), round(left + width) - 1, round(top + height) - 1], outline=(255, 255, 255), width=2
    )
    return out


@functools.lru_cache(maxsize=64)
def _grid_layout(n: int, h: int, w: int, tile: int, pad: int) -> np.ndarray:
    """For each pixel of the grid image, which map value it shows (n*h*w: the white background).

    Nearest-neighbour upscaling by index, so a 7x7 map still shows its 49 cells.
    """
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    layout = np.full((rows * (tile + pad) + pad, cols * (tile + pad) + pad), n * h * w, dtype=np.intp)
    ys, xs = (np.arange(tile) * h) // tile, (np.arange(tile) * w) // tile
    local = ys[:, None] * w + xs[None, :]  # (tile, tile) positions within one map
    for i in range(n):
        r, c = divmod(i, cols)
        y, x = pad + r * (tile + pad), pad + c * (tile + pad)
        layout[y : y + tile, x : x + tile] = i * h * w + local
    layout.setflags(write=False)
    return layout


def grid(maps: np.ndarray, *, tile: int = 96, pad: int = 2, lut: np.ndarray = VIRIDIS) -> Image.Image:
    """Tile ``maps`` (N, H, W) into a near-square RGB grid on white, each map scaled by its own maximum."""
    maps = np.asarray(maps, dtype=np.float32)
    n, h, w = maps.shape
    peaks = maps.reshape(n, -1).max(axis=1, initial=0.0)[:, None, None]
    norm = np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0)
    codes = np.append(np.clip(np.rint(norm.ravel() * 255.0), 0, 255).astype(np.intp), 256)
    palette = np.vstack([lut, [255, 255, 255]]).astype(np.uint8)  # entry 256: the background
    return Image.fromarray(_lookup(palette, codes[_grid_layout(n, h, w, tile, pad)]))
