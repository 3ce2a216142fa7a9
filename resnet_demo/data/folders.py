"""Labelled image folders: the layouts read, the seeded stratified split, the dataset.

Layouts accepted (:func:`load_image_set`):

* ``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg``: the split is the user's;
* ``root/<class>/*.jpg``: split per class with a seeded shuffle (stratified), so every
  class is in both halves and the split is the same on every run and every process;
* either of the above inside one wrapping folder (what zipping a folder gives).

Unreadable files are skipped and counted, never a crash; fewer than two classes, or
a class without a readable image, is a :class:`UserError` that says which. Messages
name folders from the data's own name down (``shapes.zip/train``), never by the
server's path: an upload is unpacked into a temporary folder that means nothing to its user.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
from torch.utils.data import Dataset

from ..core.class_names import clean_class_name
from ..core.errors import UserError
from ..core.images import ImageError, load_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageListDataset",
    "ImageSet",
    "Sample",
    "find_dataset_root",
    "is_hidden",
    "is_image_name",
    "load_image_set",
    "open_rgb",
    "stratified_split",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_TRAIN_DIRS = ("train",)
_VAL_DIRS = ("val", "validation", "valid")

Sample = tuple[str, int]  # (file path, class index)


def open_rgb(path: str | Path) -> PIL.Image.Image:
    """Open an image as the explanation side does (:func:`resnet_demo.core.images.load_image`):
    upright (EXIF), RGB, transparency on white, huge photos downscaled."""
    return load_image(path)


def is_hidden(name: str) -> bool:
    """Whether a file or folder name is system clutter, never a class or an image."""
    # .DS_Store, ._AppleDouble, .ipynb_checkpoints, __MACOSX
    return name.startswith(".") or name.startswith("__")


def is_image_name(name: str) -> bool:
    """Whether a file name is one of :data:`IMAGE_EXTENSIONS` and not hidden."""
    return not is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)


def _readable(path: Path) -> bool:
    # A real decode, not just verify(), so truncated files are caught here and not
    # mid-epoch; the small pixel budget makes JPEGs decode at 1/8 scale, cheaply.
    try:
        load_image(path, max_pixels=64 * 64)
        return True
    except ImageError:
        return False


def _class_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name)), key=lambda p: p.name)


def _classes(root: Path, where: str) -> dict[str, str]:
    """Class name -> its folder's name under ``root``, in folder order. A name is its folder's without
    the characters that reorder text (:func:`~resnet_demo.core.class_names.clean_class_name`)."""
    classes: dict[str, str] = {}
    for folder in _class_dirs(root):
        name = clean_class_name(folder.name)
        if not name.strip():
            raise UserError(f"A class folder in {where} is named with invisible direction marks only: rename it.")
        if name in classes:
            raise UserError(
                f"Two class folders in {where} are both named {name!r} once invisible direction marks are "
                f"removed: rename one."
            )
        classes[name] = folder.name
    return classes


def _scan(root: Path, classes: dict[str, str]) -> tuple[list[Sample], dict[str, int], list[str]]:
    """Readable images per class (sorted, so the order never depends on the file system); ``classes``
    maps each class name to its folder's name under ``root``."""
    samples: list[Sample] = []
    counts: dict[str, int] = {}
    skipped: list[str] = []
    for index, (name, folder_name) in enumerate(classes.items()):
        folder = root / folder_name
        files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_name(p.name)) if folder.is_dir() else []
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
        """How many classes the set has."""
        return len(self.class_names)

    def counts(self, part: str = "train") -> dict[str, int]:
        """Images per class in the ``"train"`` or ``"val"`` part."""
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


class _Names:
    """How messages call a folder under the data: its name, then the path below it."""

    def __init__(self, top: Path, name: str | None) -> None:
        self.top = top
        self.name = name or top.name or "the data"

    def __call__(self, folder: Path) -> str:
        below = folder.relative_to(self.top).as_posix() if folder.is_relative_to(self.top) else folder.name
        return self.name if below == "." else f"{self.name}/{below}"


def find_dataset_root(path: str | Path, *, name: str | None = None) -> Path:
    """The folder that holds the class folders (or train/ and val/), looking through
    one wrapping folder with nothing else beside it. ``name`` is what messages call it."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(
            f"No folder named {_Names(root, name)(root)}: pass a folder of class sub-folders, or a .zip of one."
        )
    while True:
        entries = [p for p in root.iterdir() if not is_hidden(p.name)]
        dirs = [p for p in entries if p.is_dir()]
        has_images = any(p.is_file() and is_image_name(p.name) for p in entries)
        if len(dirs) == 1 and not has_images and _is_wrapper(dirs[0]):
            root = dirs[0]
            continue
        return root


def _is_wrapper(folder: Path) -> bool:
    """Holds folders and no images of its own: a wrapper, not a lone class folder."""
    if folder.name.lower() in _TRAIN_DIRS:
        return False
    entries = [p for p in folder.iterdir() if not is_hidden(p.name)]
    return any(p.is_dir() for p in entries) and not any(p.is_file() and is_image_name(p.name) for p in entries)


def _check_classes(counts: dict[str, int], skipped: list[str], where: str) -> None:
    if len(counts) < 2:
        raise UserError(
            f"{where} has {len(counts)} class folder(s); fine-tuning needs at least 2. "
            f"Put each class's images in its own sub-folder, e.g. cats/1.jpg and dogs/1.jpg."
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


def _load_split_folders(root: Path, train_dir: Path, val_dir: Path, names: _Names) -> ImageSet:
    """The user's own split: train/ and val/ with the same class folders."""
    classes = _classes(train_dir, names(train_dir))
    val_classes = _classes(val_dir, names(val_dir))
    extra = sorted(set(val_classes) - set(classes))
    if extra:
        raise UserError(
            f"{names(val_dir)} has class folder(s) that {names(train_dir)} lacks: {', '.join(extra)}. "
            f"Both must use the same class names."
        )
    class_names = tuple(classes)
    train, counts, skipped = _scan(train_dir, classes)
    _check_classes(counts, skipped, names(train_dir))
    # The same classes, by their folders' names under val/ (a class without one there has no images).
    val, _, val_skipped = _scan(val_dir, {name: val_classes.get(name, folder) for name, folder in classes.items()})
    skipped += val_skipped
    if not val:
        raise UserError(
            f"{names(val_dir)} has no readable images; add some, or remove it to split {names(train_dir)} instead."
        )
    return ImageSet(root, class_names, train, val, skipped, "train/ and val/ folders")


def load_image_set(path: str | Path, *, val_fraction: float = 0.2, seed: int = 0, name: str | None = None) -> ImageSet:
    """Scan an ImageFolder layout (see the module docstring) into an :class:`ImageSet`.

    ``name`` is what messages call ``path`` (an uploaded zip's file name, say); by default its folder name.
    """
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"The validation fraction must be between 0 and 1, not {val_fraction}.")
    names = _Names(Path(path), name)
    root = find_dataset_root(path, name=names.name)
    subdirs = {p.name.lower(): p for p in _class_dirs(root)}
    train_dir = next((subdirs[n] for n in _TRAIN_DIRS if n in subdirs), None)
    val_dir = next((subdirs[n] for n in _VAL_DIRS if n in subdirs), None)
    if train_dir is not None and val_dir is not None:
        return _load_split_folders(root, train_dir, val_dir, names)
    classes = _classes(root, names(root))
    class_names = tuple(classes)
    samples, counts, skipped = _scan(root, classes)
    _check_classes(counts, skipped, names(root))
    train, val = stratified_split(samples, val_fraction=val_fraction, seed=seed)
    if not val:
        raise UserError(f"{names(root)} has too few images to hold any back for validation; add at least 2 per class.")
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
