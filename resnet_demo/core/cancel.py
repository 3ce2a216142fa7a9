"""Cooperative cancellation: long computations stop when their caller asks, between two steps.

A caller that can be cancelled (a request of the app) runs its work inside :func:`cancel_scope`
with a :class:`threading.Event` that it sets to cancel. The work itself only calls
:func:`check_cancelled` now and then; it raises :class:`Cancelled` once the event is set. The
checks sit where every long computation passes often: between the stages of our ResNet's
forward (:meth:`resnet_demo.core.model.ResNet.forward_stages`), so that Score-CAM's batches,
Integrated Gradients' steps, occlusion's windows, the trust checks, compare and the student of
a slim run all stop within a fraction of a second; and, through :func:`add_cancel_points`,
before the stages of torchvision's models (the transfer tab's backbones and heads).

Outside a scope (the command line, the tests, a fine-tune's own thread) every check is a no-op.
The scope is a :class:`contextvars.ContextVar`, so each thread, and each request, sees its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

__all__ = ["Cancelled", "add_cancel_points", "cancel_scope", "check_cancelled"]

_STOP: ContextVar[threading.Event | None] = ContextVar("resnet_demo_stop", default=None)


class Cancelled(Exception):  # noqa: N818 - what happened, as KeyboardInterrupt says it
    """The caller cancelled: the work stopped where it was, and its partial result is gone."""


def check_cancelled() -> None:
    """Raise :class:`Cancelled` if this thread's caller has asked to stop; otherwise nothing.

    Cheap (one context-variable lookup), and skipped while ``torch.compile`` traces a forward,
    so that the compiled graph has no break at the check.
    """
    stop = _STOP.get()
    if stop is not None and stop.is_set() and not torch.compiler.is_compiling():
        raise Cancelled("cancelled")


@contextmanager
def cancel_scope(stop: threading.Event) -> Iterator[None]:
    """Within this block, :func:`check_cancelled` raises once ``stop`` is set (from any thread)."""
    token = _STOP.set(stop)
    try:
        yield
    finally:
        _STOP.reset(token)


def _check_hook(_module: nn.Module, _args: object) -> None:
    check_cancelled()


def add_cancel_points(*modules: nn.Module) -> None:
    """Make every call of each of ``modules`` check for cancellation first (a forward pre-hook
    that stays with the module: it does nothing outside a :func:`cancel_scope`).

    For models whose forward is not ours (torchvision's segmentation and detection models): their
    stages are called as modules, so a hook is the only way in.
    """
    for module in modules:
        module.register_forward_pre_hook(_check_hook)
