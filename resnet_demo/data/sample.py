"""The generated sample set: coloured shapes on textured backgrounds, one shape and
hue range per class, written as an ImageFolder for a fine-tune without data at hand."""

from __future__ import annotations

import colorsys
import math
import random
from collections.abc import Sequence
from pathlib import Path

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFilter
import torch

from ..core.errors import UserError

__all__ = ["SAMPLE_CLASSES", "make_sample_dataset"]

# Each class is a shape with its own hue range, so both shape and colour carry the
# class, and Grad-CAM on a fine-tuned model has a localised object to find.
SAMPLE_CLASSES: dict[str, float] = {
    "circle": 0.0,  # red
    "square": 0.6,  # blue
    "triangle": 0.33,  # green
    "star": 0.15,  # yellow-orange
    "cross": 0.8,  # magenta
    "ring": 0.5,  # cyan
}


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def _background(rng: random.Random, size: int) -> PIL.Image.Image:
    """Muted, textured: blurred noise, a few soft stripes and blobs."""
    base = _hsv(rng.random(), rng.uniform(0.0, 0.25), rng.uniform(0.35, 0.8))
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    noise = (torch.rand(size // 4 + 1, size // 4 + 1, 3, generator=g) * 90 - 45).to(torch.int16)
    pix = (torch.tensor(base, dtype=torch.int16) + noise).clamp(0, 255).to(torch.uint8).numpy()
    im = PIL.Image.fromarray(pix, "RGB").resize((size, size), PIL.Image.BILINEAR)
    draw = PIL.ImageDraw.Draw(im)
    for _ in range(rng.randint(2, 6)):
        colour = _hsv(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.3, 0.9))
        if rng.random() < 0.5:
            x = rng.uniform(-size, size)
            draw.line([(x, 0), (x + size * rng.uniform(-0.5, 0.5), size)], fill=colour, width=max(1, size // 20))
        else:
            cx, cy, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 10, size / 4)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    return im.filter(PIL.ImageFilter.GaussianBlur(radius=max(1.0, size / 64)))


def _shape_points(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def polar(k: int, radii: Sequence[float]) -> list[tuple[float, float]]:
        pts = []
        for j in range(k * len(radii)):
            a = angle + 2 * math.pi * j / (k * len(radii))
            rr = r * radii[j % len(radii)]
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts

    if shape == "square":
        return polar(4, [1.0])
    if shape == "triangle":
        return polar(3, [1.0])
    if shape == "star":
        return polar(5, [1.0, 0.45])
    if shape == "cross":
        w = 0.35
        base = [
            (w, 1),
            (w, w),
            (1, w),
            (1, -w),
            (w, -w),
            (w, -1),
            (-w, -1),
            (-w, -w),
            (-1, -w),
            (-1, w),
            (-w, w),
            (-w, 1),
        ]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in base]
    raise ValueError(shape)


def _draw_sample(rng: random.Random, shape: str, hue: float, size: int) -> PIL.Image.Image:
    im = _background(rng, size)
    draw = PIL.ImageDraw.Draw(im)
    r = size * rng.uniform(0.16, 0.3)
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    colour = _hsv(hue + rng.uniform(-0.04, 0.04), rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))
    outline = _hsv(hue, 0.9, 0.35)
    width = max(1, size // 64)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour, outline=outline, width=width)
    elif shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=max(2, int(r * 0.35)))
    else:
        draw.polygon(_shape_points(shape, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=colour, outline=outline)
    return im


def make_sample_dataset(
    root: str | Path,
    *,
    num_classes: int = 3,
    images_per_class: int = 40,
    image_size: int = 160,
    val_fraction: float | None = None,
    seed: int = 0,
) -> Path:
    """Write a small ImageFolder of coloured shapes on textured backgrounds.

    Classes are the first ``num_classes`` of :data:`SAMPLE_CLASSES`. With
    ``val_fraction`` the set is written as ``train/`` and ``val/``; without it, flat
    (``root/<class>/``), for the seeded split. Returns ``root``.
    """
    if not 2 <= num_classes <= len(SAMPLE_CLASSES):
        raise UserError(f"The sample set has 2 to {len(SAMPLE_CLASSES)} classes, not {num_classes}.")
    root = Path(root)
    rng = random.Random(seed)
    n_val = 0 if val_fraction is None else max(1, round(images_per_class * val_fraction))
    for shape, hue in list(SAMPLE_CLASSES.items())[:num_classes]:
        for i in range(images_per_class):
            part = "" if val_fraction is None else ("val" if i < n_val else "train")
            folder = root / part / shape if part else root / shape
            folder.mkdir(parents=True, exist_ok=True)
            _draw_sample(rng, shape, hue, image_size).save(folder / f"{shape}_{i:03d}.jpg", quality=90)
    return root
