"""Image sets for fine-tuning, one concept per module:

* :mod:`.folders`: ImageFolder layouts, the seeded stratified split, the dataset;
* :mod:`.transforms`: the paper's augmentation and the single-, ten- and multi-scale crop tests;
* :mod:`.zips`: unpacking an uploaded zip so that hostile archives cannot abuse it;
* :mod:`.sample`: the generated sample set of coloured shapes.
"""

from __future__ import annotations

from .folders import (
    IMAGE_EXTENSIONS,
    ImageListDataset,
    ImageSet,
    Sample,
    find_dataset_root,
    load_image_set,
    open_rgb,
    stratified_split,
)
from .sample import SAMPLE_CLASSES, make_sample_dataset
from .transforms import eval_transform, multi_view_transform, train_transform
from .zips import ZipLimits, safe_extract_zip

__all__ = [
    "IMAGE_EXTENSIONS",
    "SAMPLE_CLASSES",
    "ImageListDataset",
    "ImageSet",
    "Sample",
    "ZipLimits",
    "eval_transform",
    "find_dataset_root",
    "load_image_set",
    "make_sample_dataset",
    "multi_view_transform",
    "open_rgb",
    "safe_extract_zip",
    "stratified_split",
    "train_transform",
]
