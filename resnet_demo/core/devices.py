"""Where work runs: the device a setting names, and the CPU cores this process may use.

One rule each, for every caller (the app, the CLI, the trainer, the benchmarks).
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import torch

from .errors import UserError

__all__ = ["available_cores", "configure_threads", "resolve_device"]


def resolve_device(device: str, *, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Under ``torchrun`` pass the process's ``local_rank``: ``auto`` and a bare ``cuda``
    then mean that process's GPU. A GPU asked for where there is none, or a name
    torch does not know, is a :class:`UserError`.
    """
    device = str(device).strip().lower()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"Device {device} was asked for, but PyTorch sees no CUDA GPU here. Use cpu.")
    if device == "cuda":
        device = f"cuda:{local_rank}"
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise UserError(f"Unknown device {device!r}: use cpu, cuda, cuda:N or auto.") from e


def available_cores() -> int:
    """CPU cores this process may really use: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:  # containers often allow fewer CPUs than they show
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


_THREADS_LOCK = threading.Lock()
_threads_done = False


def configure_threads() -> int:
    """Lower torch's intra-op threads to the usable cores, once per process; returns the count.

    More threads than cores makes every convolution wait for descheduled threads. A
    count set lower on purpose (e.g. by a server running several workers) is kept.
    """
    global _threads_done
    with _THREADS_LOCK:
        if not _threads_done:
            cores = available_cores()
            if torch.get_num_threads() > cores:
                torch.set_num_threads(cores)
            _threads_done = True
    return torch.get_num_threads()
