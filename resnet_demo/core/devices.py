"""Where work runs: the device a setting names, and the CPU cores this process may use.

One rule each, for every caller (the app, the CLI, the trainer, the benchmarks).
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import UserError

__all__ = ["available_cores", "configure_threads", "release_openmp_threads", "resolve_device"]


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


_OMP_PAUSE_SOFT = 1  # OpenMP 5's omp_pause_soft: the threads end, the library stays initialised


def _openmp_pauses() -> tuple[Callable[[int], int], ...]:
    """``omp_pause_resource_all`` of every GNU OpenMP runtime loaded: torch's, and the copies other
    wheels bring (scikit-learn's, for one), each with threads of its own. Found again after an import
    (what loads a library; reading the process's map of them takes 2 ms, too long for every call)."""
    return _pauses_found(len(sys.modules))


@functools.lru_cache(maxsize=1)
def _pauses_found(_imported: int) -> tuple[Callable[[int], int], ...]:
    torch.get_num_threads()  # loads torch's OpenMP runtime, if it has one
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libgomp" in line}
    except OSError:  # not Linux
        return ()
    return tuple(pause for path in sorted(paths) if (pause := _pause_of(path)) is not None)


@functools.cache
def _pause_of(path: str) -> Callable[[int], int] | None:
    pause = getattr(ctypes.CDLL(path), "omp_pause_resource_all", None)  # the loaded copy's own handle
    if pause is not None:
        pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
    return pause


def release_openmp_threads() -> bool:
    """End the OpenMP worker threads that the calling thread's parallel work started; they start
    again, in microseconds, at its next parallel operation. Returns whether any runtime took the call.

    Each Python thread that runs a parallel torch operation keeps a team of OpenMP threads of its
    own, for as long as it lives. Once a process holds more of them than it has cores, GNU OpenMP
    shortens its spin-wait between parallel regions to almost nothing, so each of the hundreds of
    regions of a forward pass waits on the kernel to wake its threads: a server whose requests run
    on several threads measured its ResNet-50 pass 25-30% slower than the same pass alone. A thread
    that ends its piece of model work with this call leaves one team in the process: the one at work.
    Every GNU OpenMP runtime loaded is asked (a library may bring its own copy beside torch's).
    """
    return any([pause(_OMP_PAUSE_SOFT) == 0 for pause in _openmp_pauses()])  # a list: every one is called
