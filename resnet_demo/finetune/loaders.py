"""The data a run reads: its folder (unpacking a zip once per machine) and its data loaders."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from ..core.devices import available_cores
from ..core.errors import UserError
from ..core.process_group import Dist
from ..data import safe_extract_zip
from .config import FinetuneConfig

__all__ = ["default_workers", "make_loader", "run_data"]


def _prepare(data: str, d: Dist) -> tuple[Path, Path | None]:
    """The data folder, extracting a zip first. Returns (folder, temp folder to delete)."""
    path = Path(data).expanduser()
    if not data or not path.exists():
        # The name alone: the rest of the path is the server's (or a temp) folder layout.
        raise UserError(
            f"No data at {(path.name or data)!r}: pass --data with a folder of class sub-folders or a .zip of one."
        )
    if path.is_dir():
        return path, None
    # One extraction per machine, named by the zip, so every local rank finds the same folder.
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = Path(tempfile.gettempdir()) / f"resnet_demo_data_{key}"
    if d.local_rank == 0:
        shutil.rmtree(dest, ignore_errors=True)
        safe_extract_zip(path, dest)
    if d.world > 1:
        dist.barrier()
    return dest, dest


@contextlib.contextmanager
def run_data(data: str, d: Dist) -> Iterator[Path]:
    """The folder to read ``data`` from; an unpacked zip is removed again at the end,
    once every rank is done with it."""
    root, cleanup = _prepare(data, d)
    try:
        yield root
    finally:
        try:
            if cleanup is not None and d.world > 1:
                dist.barrier()  # every rank is done reading the unpacked zip
        finally:
            if cleanup is not None and d.local_rank == 0:
                shutil.rmtree(cleanup, ignore_errors=True)


def default_workers(cfg: FinetuneConfig, d: Dist) -> int:
    """Data loading processes: the setting, or min(8, CPUs per process - 1)."""
    if cfg.workers is not None:
        return cfg.workers
    return max(0, min(8, available_cores() // d.world - 1))


def make_loader(
    dataset: Any,
    sampler: Sampler[int],
    *,
    batch_size: int,
    workers: int,
    device: torch.device,
    drop_last: bool,
    seed: int,
) -> DataLoader:
    """A loader over ``sampler``'s order whose workers' augmentation is seeded by ``seed``."""
    # A fresh generator per epoch seeds the workers' augmentation, so epoch e draws
    # the same crops whether or not the run was resumed before it.
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
    )
