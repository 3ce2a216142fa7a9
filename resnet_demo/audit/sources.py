"""The images an audit reads: a folder of class sub-folders, a flat folder, or a zip of either.

The folder rules are the fine-tune's (:mod:`resnet_demo.data.folders`): hidden clutter is
ignored, one wrapping folder is looked through, ``train/`` and ``val/`` are read together,
and a zip is unpacked by :func:`resnet_demo.data.safe_extract_zip` (zip-slip, links and
bombs refused before anything is written). Unlike a fine-tune, an audit takes a flat folder
(no labels) and a single class; files that are not images are listed and skipped.

Paths are kept relative to the data (the folder, or the zip's root), so that nothing an
audit writes or says names the server's folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.class_names import clean_class_name
from ..core.errors import UserError
from ..data.folders import IMAGE_EXTENSIONS, find_dataset_root, is_hidden, is_image_name
from ..data.zips import ZipLimits, safe_extract_zip

__all__ = ["AuditItem", "AuditSet", "check_data_path", "open_audit_set"]

_SPLIT_DIRS = ("train", "val", "validation", "valid", "test")
ZIP_LIMITS = ZipLimits()  # the fine-tune's limits


@dataclass(frozen=True)
class AuditItem:
    """One image file to audit."""

    path: str  # relative to the data's root, "/"-separated: what the reports show
    file: Path  # where it is read from
    label: str | None  # its class folder's name, cleaned; None in a flat folder


@dataclass(frozen=True)
class AuditSet:
    """The image files of the data, in a fixed order (class, then path), and what was left out."""

    name: str  # what messages call the data: the folder's or the zip's name
    items: tuple[AuditItem, ...]
    classes: tuple[str, ...]  # the class folders' names; () for a flat folder
    not_images: tuple[str, ...] = field(default_factory=tuple)  # files skipped: not one of IMAGE_EXTENSIONS
    loose: tuple[str, ...] = field(default_factory=tuple)  # images beside the class folders, skipped

    @property
    def labelled(self) -> bool:
        """Whether the images come in class folders."""
        return bool(self.classes)


def _visible_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, hidden folders and files left out, sorted."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and not any(is_hidden(part) for part in p.relative_to(folder).parts)
    )


def _class_roots(root: Path) -> list[Path]:
    """The folders whose sub-folders are classes: ``train/`` and ``val/`` when split, else ``root``."""
    dirs = [p for p in root.iterdir() if p.is_dir() and not is_hidden(p.name)]
    splits = [p for p in dirs if p.name.lower() in _SPLIT_DIRS]
    if splits and len(splits) == len(dirs):
        return sorted(splits, key=lambda p: p.name)
    return [root]


def _scan(root: Path, name: str) -> AuditSet:
    class_dirs = [
        d
        for top in _class_roots(root)
        for d in sorted(top.iterdir(), key=lambda p: p.name)
        if d.is_dir() and not is_hidden(d.name)
    ]
    items: list[AuditItem] = []
    not_images: list[str] = []
    loose: list[str] = []

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    for f in sorted(p for p in root.iterdir() if p.is_file() and not is_hidden(p.name)):
        if not is_image_name(f.name):
            not_images.append(rel(f))
        elif class_dirs:
            loose.append(rel(f))
        else:
            items.append(AuditItem(rel(f), f, None))
    classes: dict[str, None] = {}
    for d in class_dirs:
        label = clean_class_name(d.name)
        if not label.strip():
            raise UserError(f"A class folder in {name} is named with invisible direction marks only: rename it.")
        classes[label] = None
        for f in _visible_files(d):
            if is_image_name(f.name):
                items.append(AuditItem(rel(f), f, label))
            else:
                not_images.append(rel(f))
    items.sort(key=lambda i: (i.label or "", i.path))
    return AuditSet(name, tuple(items), tuple(classes), tuple(not_images), tuple(loose))


def check_data_path(data: str | Path) -> Path:
    """``data`` if it is a folder or a ``.zip``: what a command checks before it loads a model."""
    data = Path(data)
    if (data.is_file() and data.suffix.lower() == ".zip") or data.is_dir():
        return data
    name = data.name or "the data"
    raise UserError(f"No folder or .zip named {name}: pass a folder of images (or of class sub-folders), or a zip.")


def open_audit_set(data: str | Path, *, unpack_to: Path, limits: ZipLimits = ZIP_LIMITS) -> AuditSet:
    """The images of ``data`` (a folder or a ``.zip``), a zip unpacked into ``unpack_to`` (new or empty).

    A missing path, a damaged or hostile zip, or data without a single image file is a
    :class:`UserError` in one sentence; files that are not images are listed in the result.
    """
    data = check_data_path(data)
    name = data.name or "the data"
    folder = safe_extract_zip(data, unpack_to, limits=limits) if data.is_file() else data
    found = _scan(find_dataset_root(folder, name=name), name)
    if not found.items:
        what = f" ({len(found.not_images)} file(s) that are not images were skipped)" if found.not_images else ""
        raise UserError(f"{name} holds no images{what}: add {', '.join(IMAGE_EXTENSIONS)} files.")
    return found
