"""The app's files in Gradio's cache, kept bounded in number, bytes and age, swept on a timer.

Gradio writes every upload and every returned image into its cache and sweeps only by
age (``delete_cache``): on a busy server that is thousands of files an hour. The app
tracks the same files Gradio does (``blocks.temp_file_sets``) and removes the oldest
beyond the bounds, never one younger than :data:`MIN_AGE_S` (a page may still be
fetching it), nor a protected one (the example photos, a fine-tuned checkpoint a user
may still download).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_FILES = 400
MAX_BYTES = 96 * 1024**2
MAX_AGE_S = 3600.0
MIN_AGE_S = 10.0


@dataclass(frozen=True)
class Limits:
    """How many files, how many bytes, how old; and the age under which nothing is removed."""

    max_files: int = MAX_FILES
    max_bytes: int = MAX_BYTES
    max_age_s: float = MAX_AGE_S
    min_age_s: float = MIN_AGE_S


def tracked_files(blocks: Any) -> set[str]:
    """Every file of the app in Gradio's cache (uploads and outputs), as Gradio tracks them."""
    files: set[str] = set()
    for files_of_block in list(blocks.temp_file_sets):
        files.update(list(files_of_block))
    return files


def _protected(blocks: Any) -> set[str]:
    keep: set[str] = set()
    for block in list(blocks.blocks.values()):
        keep.update(getattr(block, "keep_in_cache", set()))
    return keep


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
    # Gradio puts each file in a folder of its own (named by its hash): remove it once empty.
    with contextlib.suppress(OSError):
        Path(path).parent.rmdir()


def sweep(blocks: Any, *, limits: Limits = Limits(), keep: Collection[str] = ()) -> int:  # noqa: B008 - frozen
    """Remove ``blocks``' cache files older than ``limits.max_age_s``, then the oldest beyond the count
    and byte bounds (only those older than ``limits.min_age_s``). The examples stay; so do the
    files in ``keep``, which do not count towards the bounds.

    Returns how many files went. Safe to call from any thread.
    """
    now = time.time()
    tracked, examples = tracked_files(blocks), _protected(blocks)
    aged: list[tuple[float, int, str]] = []  # (changed at, bytes, path)
    gone: list[str] = []
    for path in tracked - examples:
        try:
            st = os.stat(path)
        except OSError:
            # Removed by someone else (a session's checkpoint): stop tracking it. Not an upload:
            # Gradio tracks those a moment before it moves them into place.
            if path not in getattr(blocks, "upload_file_set", ()):
                gone.append(path)
            continue
        if path not in keep:
            aged.append((st.st_ctime, st.st_size, path))
    aged.sort()
    # The examples count towards the bounds, but stay; ``keep`` (a user's checkpoint) has its own.
    spared = _usage(tracked & examples)
    count, total = spared[0] + len(aged), spared[1] + sum(size for _t, size, _p in aged)
    for changed, size, path in aged:
        age = now - changed
        over = count > limits.max_files or total > limits.max_bytes
        if age > limits.max_age_s or (over and age > limits.min_age_s):
            _remove(path)
            gone.append(path)
            count, total = count - 1, total - size
        else:
            break  # the rest are newer still: none of them may go
    for files_of_block in list(blocks.temp_file_sets):
        files_of_block.difference_update(gone)
    return len(gone)


def remove_all(blocks: Any) -> int:
    """Remove every file of ``blocks`` in Gradio's cache, the examples' copies and the checkpoints offered
    for download included, and each folder one leaves empty: what the app leaves when it stops.

    Returns how many files it tracked. Gradio's own clean-up at shutdown spares the examples and every
    folder, and runs only when the server is closed, never when the process is killed."""
    tracked = tracked_files(blocks)
    for path in tracked:
        _remove(path)
    for files_of_block in list(blocks.temp_file_sets):
        files_of_block.difference_update(tracked)
    return len(tracked)


def disk_usage(blocks: Any) -> tuple[int, int]:
    """(files, bytes) the app has in Gradio's cache now."""
    return _usage(tracked_files(blocks))


def _usage(paths: Iterable[str]) -> tuple[int, int]:
    files = bytes_ = 0
    for path in paths:
        with contextlib.suppress(OSError):
            bytes_ += os.stat(path).st_size
            files += 1
    return files, bytes_
