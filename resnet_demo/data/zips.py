"""Unpacking an uploaded zip of images, safely: hostile or absurd archives are refused
before anything is written (zip-slip, links, zip bombs), and sizes are counted again
while writing, since a header can lie."""

from __future__ import annotations

import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..core.errors import UserError
from .folders import IMAGE_EXTENSIONS, is_hidden, is_image_name

__all__ = ["ZipLimits", "safe_extract_zip"]


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
    return bool(parts) and is_image_name(parts[-1]) and not any(is_hidden(p) for p in parts[:-1])


def _images_to_extract(name: str, infos: list[zipfile.ZipInfo], limits: ZipLimits) -> list[zipfile.ZipInfo]:
    """The image entries of an archive, once every entry and every limit is checked."""
    if len(infos) > limits.max_entries:
        raise UserError(f"{name} lists {len(infos):,} entries, over the limit of {limits.max_entries:,}; refused.")
    for info in infos:
        problem = _entry_problem(info)
        if problem:
            raise UserError(f"{name} was refused: the entry {info.filename!r} {problem}.")
    images = [i for i in infos if not i.is_dir() and _is_zip_image(i.filename)]
    if not images:
        raise UserError(
            f"{name} holds no images ({', '.join(IMAGE_EXTENSIONS)}). Zip a folder of class sub-folders of images."
        )
    total = sum(i.file_size for i in images)
    if total > limits.max_total_bytes:
        raise UserError(
            f"{name} would unpack to {total / 1024**2:,.0f} MiB of images, over the limit of "
            f"{limits.max_total_bytes / 1024**2:,.0f} MiB; refused."
        )
    for i in images:
        if i.file_size >= limits.ratio_min_bytes and i.file_size > limits.max_ratio * max(i.compress_size, 1):
            raise UserError(
                f"{name} was refused as a possible zip bomb: {i.filename!r} expands "
                f"{i.file_size / max(i.compress_size, 1):,.0f}x (limit {limits.max_ratio:,.0f}x)."
            )
    return images


def _write_images(name: str, zf: zipfile.ZipFile, images: list[zipfile.ZipInfo], root: Path, limits: ZipLimits) -> None:
    written = 0
    for i in images:
        target = (root / i.filename.replace("\\", "/")).resolve()
        if not target.is_relative_to(root):  # belt and braces after _entry_problem
            raise UserError(f"{name} was refused: {i.filename!r} points outside the folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(i) as src, open(target, "wb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > limits.max_total_bytes:
                    raise UserError(
                        f"{name} unpacks to more than its headers say, over "
                        f"{limits.max_total_bytes / 1024**2:,.0f} MiB; refused."
                    )
                out.write(chunk)


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
        # An OSError's text names the server's path; its strerror alone does not.
        detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise UserError(f"{zip_path.name} is not a readable zip file ({detail}).") from e
    created: Path | None = None  # the outermost folder this call creates, removed on failure
    if not dest.exists():
        created = dest
        while not created.parent.exists():
            created = created.parent
    try:
        with zf:
            images = _images_to_extract(zip_path.name, zf.infolist(), limits)
            if dest.exists() and any(dest.iterdir()):
                raise ValueError(f"extraction folder {dest} is not empty")
            dest.mkdir(parents=True, exist_ok=True)
            _write_images(zip_path.name, zf, images, dest.resolve(), limits)
    except zipfile.BadZipFile as e:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise UserError(f"{zip_path.name} is damaged and could not be unpacked ({e}).") from e
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    return dest
