"""Image sets for fine-tuning: ImageFolder layouts, a seeded stratified split, the
paper's augmentation, hostile-input-safe zip extraction and a sample set generator.

Layouts accepted (``load_image_set``):

* ``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg``: the split is the user's;
* ``root/<class>/*.jpg``: split per class with a seeded shuffle (stratified), so every
  class is in both halves and the split is the same on every run and every process;
* either of the above inside one wrapping folder (what zipping a folder gives).

Unreadable files are skipped and counted, never a crash; fewer than two classes, or
a class without a readable image, is a :class:`UserError` that says which.
"""

from __future__ import annotations

import math
import random
import shutil
import stat
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFilter
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .errors import UserError
from .images import ImageError, load_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "SAMPLE_CLASSES",
    "ImageListDataset",
    "ImageSet",
    "ZipLimits",
    "eval_transform",
    "load_image_set",
    "make_sample_dataset",
    "multi_view_transform",
    "open_rgb",
    "safe_extract_zip",
    "stratified_split",
    "train_transform",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_TRAIN_DIRS = ("train",)
_VAL_DIRS = ("val", "validation", "valid")

Sample = tuple[str, int]  # (file path, class index)


# ----------------------------------------------------------------------------- reading


def open_rgb(path: str | Path) -> PIL.Image.Image:
    """Open an image as the explanation side does (:func:`resnet_demo.images.load_image`):
    upright (EXIF), RGB, transparency on white, huge photos downscaled."""
    return load_image(path)


def _readable(path: Path) -> bool:
    # A real decode, not just verify(), so truncated files are caught here and not
    # mid-epoch; the small pixel budget makes JPEGs decode at 1/8 scale, cheaply.
    try:
        load_image(path, max_pixels=64 * 64)
        return True
    except ImageError:
        return False


def _is_hidden(name: str) -> bool:
    # .DS_Store, ._AppleDouble, .ipynb_checkpoints, __MACOSX: never classes, never images
    return name.startswith(".") or name.startswith("__")


def _is_image_name(name: str) -> bool:
    return not _is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def _class_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name)), key=lambda p: p.name)


def _scan(root: Path, class_names: Sequence[str]) -> tuple[list[Sample], dict[str, int], list[str]]:
    """Readable images per class (sorted, so the order never depends on the file system)."""
    samples: list[Sample] = []
    counts: dict[str, int] = {}
    skipped: list[str] = []
    for index, name in enumerate(class_names):
        folder = root / name
        files = (
            sorted(p for p in folder.rglob("*") if p.is_file() and _is_image_name(p.name)) if folder.is_dir() else []
        )
        n = 0
        for f in files:
            if _readable(f):
                samples.append((str(f), index))
                n += 1
            else:
                skipped.append(str(f))
        counts[name] = n
    return samples, counts, skipped


@dataclass(frozen=True)
class ImageSet:
    """A labelled image set, split into train and validation."""

    root: Path
    class_names: tuple[str, ...]
    train: list[Sample]
    val: list[Sample]
    skipped: list[str] = field(default_factory=list)  # unreadable files, left out
    split: str = "folders"  # "folders" (train/ and val/) or a description of the seeded split

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def counts(self, part: str = "train") -> dict[str, int]:
        samples = self.train if part == "train" else self.val
        out = dict.fromkeys(self.class_names, 0)
        for _, label in samples:
            out[self.class_names[label]] += 1
        return out

    def summary(self) -> str:
        """One paragraph for people: classes, counts, split, skipped files."""
        per_class = ", ".join(f"{name} ({n})" for name, n in self.counts("train").items())
        text = (
            f"{self.num_classes} classes, {len(self.train)} training and {len(self.val)} validation images "
            f"({self.split}). Training images per class: {per_class}."
        )
        if self.skipped:
            text += f" Skipped {len(self.skipped)} unreadable file(s)."
        return text


def find_dataset_root(path: str | Path) -> Path:
    """The folder that holds the class folders (or train/ and val/), looking through
    one wrapping folder with nothing else beside it."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"No folder at {root}: pass a folder of class sub-folders, or a .zip of one.")
    while True:
        entries = [p for p in root.iterdir() if not _is_hidden(p.name)]
        dirs = [p for p in entries if p.is_dir()]
        has_images = any(p.is_file() and _is_image_name(p.name) for p in entries)
        if len(dirs) == 1 and not has_images and _is_wrapper(dirs[0]):
            root = dirs[0]
            continue
        return root


def _is_wrapper(folder: Path) -> bool:
    """Holds folders and no images of its own: a wrapper, not a lone class folder."""
    if folder.name.lower() in _TRAIN_DIRS:
        return False
    entries = [p for p in folder.iterdir() if not _is_hidden(p.name)]
    return any(p.is_dir() for p in entries) and not any(p.is_file() and _is_image_name(p.name) for p in entries)


def _check_classes(counts: dict[str, int], skipped: list[str], where: Path) -> None:
    if len(counts) < 2:
        raise UserError(
            f"{where} has {len(counts)} class folder(s); fine-tuning needs at least 2. "
            f"Put each class's images in its own sub-folder, e.g. {where}/cats/1.jpg and {where}/dogs/1.jpg."
        )
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        note = f" ({len(skipped)} unreadable file(s) were skipped)" if skipped else ""
        raise UserError(
            f"Class folder(s) without a readable image in {where}: {', '.join(empty)}{note}. "
            f"Add images ({', '.join(IMAGE_EXTENSIONS)}) or remove the folder(s)."
        )


def stratified_split(samples: Sequence[Sample], *, val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split each class on its own with a seeded shuffle.

    Every class with at least two images gets at least one validation and one training
    image; a class with a single image keeps it for training.
    """
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s[1], []).append(s)
    rng = random.Random(seed)
    train: list[Sample] = []
    val: list[Sample] = []
    for label in sorted(by_class):
        items = sorted(by_class[label])
        rng.shuffle(items)
        n = len(items)
        n_val = 0 if n < 2 else min(n - 1, max(1, round(n * val_fraction)))
        val += items[:n_val]
        train += items[n_val:]
    return train, val


def load_image_set(path: str | Path, *, val_fraction: float = 0.2, seed: int = 0) -> ImageSet:
    """Scan an ImageFolder layout (see the module docstring) into an :class:`ImageSet`."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"The validation fraction must be between 0 and 1, not {val_fraction}.")
    root = find_dataset_root(path)
    subdirs = {p.name.lower(): p for p in _class_dirs(root)}
    train_dir = next((subdirs[n] for n in _TRAIN_DIRS if n in subdirs), None)
    val_dir = next((subdirs[n] for n in _VAL_DIRS if n in subdirs), None)
    if train_dir is not None and val_dir is not None:
        class_names = tuple(p.name for p in _class_dirs(train_dir))
        extra = sorted({p.name for p in _class_dirs(val_dir)} - set(class_names))
        if extra:
            raise UserError(
                f"{val_dir} has class folder(s) that {train_dir} lacks: {', '.join(extra)}. "
                f"Both must use the same class names."
            )
        train, counts, skipped = _scan(train_dir, class_names)
        _check_classes(counts, skipped, train_dir)
        val, _, val_skipped = _scan(val_dir, class_names)
        skipped += val_skipped
        if not val:
            raise UserError(f"{val_dir} has no readable images; add some, or remove it to split {train_dir} instead.")
        return ImageSet(root, class_names, train, val, skipped, "train/ and val/ folders")
    class_names = tuple(p.name for p in _class_dirs(root))
    samples, counts, skipped = _scan(root, class_names)
    _check_classes(counts, skipped, root)
    train, val = stratified_split(samples, val_fraction=val_fraction, seed=seed)
    if not val:
        raise UserError(f"{root} has too few images to hold any back for validation; add at least 2 per class.")
    return ImageSet(
        root, class_names, train, val, skipped, f"stratified split, {val_fraction:.0%} held out, seed {seed}"
    )


class ImageListDataset(Dataset):
    """(image, label) pairs from a list of files; the transform sees an RGB PIL image."""

    def __init__(self, samples: Sequence[Sample], transform: Callable[[PIL.Image.Image], Any]) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        return self.transform(open_rgb(path)), label


# ----------------------------------------------------------------------------- transforms


def _normalize(mean: Sequence[float], std: Sequence[float]) -> list[Any]:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def train_transform(
    *,
    crop_size: int,
    scale_range: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    random_resized_crop: bool = False,
    color_jitter: float = 0.4,
) -> v2.Compose:
    """The paper's augmentation: short side random in ``scale_range``, a random
    ``crop_size`` crop, horizontal flip, colour jitter. With ``random_resized_crop``
    the first two become Inception-style RandomResizedCrop."""
    lo, hi = scale_range
    if random_resized_crop:
        geometry: list[Any] = [v2.RandomResizedCrop(crop_size, antialias=True)]
    else:
        if lo < crop_size or hi < lo:
            raise UserError(f"The scale range {lo}..{hi} must start at the crop size {crop_size} or above.")
        geometry = [v2.RandomResize(lo, hi + 1, antialias=True), v2.RandomCrop(crop_size)]
    jitter = [v2.ColorJitter(color_jitter, color_jitter, color_jitter)] if color_jitter > 0 else []
    return v2.Compose([*geometry, v2.RandomHorizontalFlip(), *jitter, *_normalize(mean, std)])


def eval_transform(*, crop_size: int, resize_size: int, mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Resize the short side (aspect kept), then one center crop: the single-crop test."""
    return v2.Compose([v2.Resize(resize_size, antialias=True), v2.CenterCrop(crop_size), *_normalize(mean, std)])


def multi_view_transform(
    *, crop_size: int, resize_sizes: Sequence[int], mean: Sequence[float], std: Sequence[float]
) -> Callable[[PIL.Image.Image], torch.Tensor]:
    """Ten crops (4 corners + center, and their mirror images) at each resize size.

    Returns a (V, 3, crop, crop) tensor; the caller averages the softmax over the V views.
    One size is the standard ten-crop test, several sizes the multi-scale test.
    """
    norm = v2.Compose(_normalize(mean, std))
    tens = [v2.Compose([v2.Resize(s, antialias=True), v2.TenCrop(crop_size)]) for s in resize_sizes]

    def views(image: PIL.Image.Image) -> torch.Tensor:
        return torch.stack([norm(crop) for t in tens for crop in t(image)])  # (V, 3, crop, crop)

    return views


# ----------------------------------------------------------------------------- zip files


@dataclass(frozen=True)
class ZipLimits:
    """What a zip may hold before it is refused as hostile or absurd."""

    max_entries: int = 20_000  # files + folders listed in the archive
    max_total_bytes: int = 2 * 1024**3  # uncompressed size of the images it holds
    max_ratio: float = 200.0  # uncompressed / compressed size of one entry; bombs reach 1000+
    ratio_min_bytes: int = 1024**2  # tiny files compress oddly; judge the ratio above this size


def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if "\x00" in name:
        return "has a NUL byte in its name"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]):
        return "is an absolute path"
    if ".." in parts:
        return "climbs out of the folder with '..'"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if info.flag_bits & 0x1:
        return "is encrypted"
    return None


def _is_zip_image(name: str) -> bool:
    # __MACOSX/ and other hidden folders hold metadata copies, not images
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and _is_image_name(parts[-1]) and not any(_is_hidden(p) for p in parts[:-1])


def safe_extract_zip(zip_path: str | Path, dest: str | Path, *, limits: ZipLimits = ZipLimits()) -> Path:
    """Extract the images of ``zip_path`` into ``dest`` (created, must be empty or new).

    Refuses the whole archive, before writing anything, when an entry is an absolute
    path, climbs out with ``..`` or is a link (zip-slip), or when the entry count, the
    total uncompressed size or one entry's compression ratio is over ``limits`` (zip
    bombs). Non-image entries are ignored. Sizes are counted again while extracting,
    since a header can lie. On any error, every folder it created is removed again.
    Returns ``dest``.
    """
    zip_path, dest = Path(zip_path), Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{zip_path.name} is not a readable zip file ({e}).") from e
    created: Path | None = None  # the outermost folder this call creates, removed on failure
    if not dest.exists():
        created = dest
        while not created.parent.exists():
            created = created.parent
    try:
        with zf:
            infos = zf.infolist()
            if len(infos) > limits.max_entries:
                raise UserError(
                    f"{zip_path.name} lists {len(infos):,} entries, over the limit of {limits.max_entries:,}; refused."
                )
            for info in infos:
                problem = _entry_problem(info)
                if problem:
                    raise UserError(f"{zip_path.name} was refused: the entry {info.filename!r} {problem}.")
            images = [i for i in infos if not i.is_dir() and _is_zip_image(i.filename)]
            if not images:
                raise UserError(
                    f"{zip_path.name} holds no images ({', '.join(IMAGE_EXTENSIONS)}). "
                    f"Zip a folder of class sub-folders of images."
                )
            total = sum(i.file_size for i in images)
            if total > limits.max_total_bytes:
                raise UserError(
                    f"{zip_path.name} would unpack to {total / 1024**2:,.0f} MiB of images, over the limit of "
                    f"{limits.max_total_bytes / 1024**2:,.0f} MiB; refused."
                )
            for i in images:
                if i.file_size >= limits.ratio_min_bytes and i.file_size > limits.max_ratio * max(i.compress_size, 1):
                    raise UserError(
                        f"{zip_path.name} was refused as a possible zip bomb: {i.filename!r} expands "
                        f"{i.file_size / max(i.compress_size, 1):,.0f}x (limit {limits.max_ratio:,.0f}x)."
                    )
            if dest.exists() and any(dest.iterdir()):
                raise ValueError(f"extraction folder {dest} is not empty")
            dest.mkdir(parents=True, exist_ok=True)
            root = dest.resolve()
            written = 0
            for i in images:
                target = (root / i.filename.replace("\\", "/")).resolve()
                if not target.is_relative_to(root):  # belt and braces after _entry_problem
                    raise UserError(f"{zip_path.name} was refused: {i.filename!r} points outside the folder.")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(i) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > limits.max_total_bytes:
                            raise UserError(
                                f"{zip_path.name} unpacks to more than its headers say, over "
                                f"{limits.max_total_bytes / 1024**2:,.0f} MiB; refused."
                            )
                        out.write(chunk)
    except zipfile.BadZipFile as e:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise UserError(f"{zip_path.name} is damaged and could not be unpacked ({e}).") from e
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    return dest


# ----------------------------------------------------------------------------- sample set

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
    import colorsys

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
