"""Hugging Face ZeroGPU: on that hardware a Space holds a GPU only while a function decorated with
``spaces.GPU`` runs, so the handlers that run a model are decorated there, and only there.

Elsewhere (a laptop, a CPU Space, a Space with a GPU of its own, the tests) :func:`on_gpu` returns
the handler itself, and the ``spaces`` package is never imported: it is optional.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import TypeVar

__all__ = ["GPU_SECONDS", "on_gpu", "zero_gpu"]

F = TypeVar("F", bound=Callable[..., object])

# The longest a decorated call may hold the GPU: the server's own time limit (.settings) refuses longer
# requests before they start; a shorter duration puts the Space's visitors earlier in ZeroGPU's queue.
GPU_SECONDS = 60


def zero_gpu() -> bool:
    """Whether this process runs on ZeroGPU hardware (Hugging Face sets ``SPACES_ZERO_GPU`` there)."""
    return bool(os.environ.get("SPACES_ZERO_GPU"))


def on_gpu(fn: F, *, seconds: int = GPU_SECONDS) -> F:
    """``fn`` decorated with ``spaces.GPU(duration=seconds)`` on ZeroGPU hardware; ``fn`` itself
    anywhere else, or where the ``spaces`` package is not installed."""
    if not zero_gpu():
        return fn
    try:
        spaces = importlib.import_module("spaces")
    except ImportError:
        return fn
    return spaces.GPU(duration=seconds)(fn)  # type: ignore[no-any-return]
