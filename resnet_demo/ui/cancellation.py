"""Cancel means stop: a handler wrapped in :func:`cancellable` stops its work when the visitor
cancels (the page's Stop, ``Job.cancel()`` of gradio_client, or a newer event with
``trigger_mode="always_last"`` replacing it), and frees its queue slot only once the work has
stopped.

Gradio runs a plain handler in a worker thread and, on cancel, cancels only the asyncio task
awaiting it: the thread runs on to the end, holding a core and its memory, while the freed slot
lets the next heavy request start beside it. The wrapper is a coroutine instead. It runs the
handler in a thread of its own inside :func:`resnet_demo.core.cancel.cancel_scope`; when its task
is cancelled it sets the scope's event, so the work raises at its next check (between two stages
of a forward), and it waits for the thread to end before letting the cancellation through.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..core.cancel import cancel_scope
from ..core.devices import release_openmp_threads
from .analysis_store import give_back_memory

__all__ = ["cancellable"]

F = TypeVar("F", bound=Callable[..., Any])

TRIM_AFTER_S = 1.0  # work longer than this gives its freed memory back (gc and malloc_trim: ~50 ms)
# Enough for every request that may run at once (Gradio's own pool has 40 threads); the heavy
# queues' concurrency limits keep the busy ones few. Its threads live on, and each that ran a model
# would keep OpenMP threads of its own, which slow every later pass (see release_openmp_threads):
# each piece of work ends its thread's OpenMP threads.
_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="resnet-demo-request")


def cancellable(fn: F) -> F:
    """``fn`` as a coroutine that Gradio awaits (or, for a generator, an async generator that it
    iterates): the same signature (Gradio reads it for its ``gr.Request`` and ``gr.Progress``
    arguments), the same result or steps, and cancellation that stops it. Work that ran longer
    than :data:`TRIM_AFTER_S` hands its freed memory back to the system."""
    if inspect.isgeneratorfunction(fn):
        return _cancellable_steps(fn)  # type: ignore[return-value]

    @functools.wraps(fn)
    async def run(*args: Any, **kwargs: Any) -> Any:
        stop = threading.Event()
        started = time.perf_counter()

        def work() -> Any:
            try:
                with cancel_scope(stop):
                    return fn(*args, **kwargs)
            finally:
                release_openmp_threads()  # see _POOL
                _trim_after(started)

        # The caller's context goes with the work (Gradio keeps the request's state in context variables).
        return await _until_stopped(contextvars.copy_context().run, work, stop=stop)

    return run  # type: ignore[return-value]


_DONE = object()  # a generator's end, as a step's value


def _cancellable_steps(fn: Callable[..., Iterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """:func:`cancellable` for a generator: each step runs in a worker thread, in one context, and
    a cancel between or during steps stops the work and closes the generator."""

    @functools.wraps(fn)
    async def steps(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        stop = threading.Event()
        started = time.perf_counter()
        context = contextvars.copy_context()  # one for every step: a step sees what the last one set
        work = fn(*args, **kwargs)  # makes the generator; runs nothing yet

        def step() -> Any:
            try:
                with cancel_scope(stop):
                    return next(work, _DONE)
            finally:
                release_openmp_threads()  # the next step may run on another of the pool's threads

        def finish() -> None:
            try:
                work.close()  # its own finally blocks, if it stopped early
            finally:
                release_openmp_threads()
                _trim_after(started)

        try:
            while (value := await _until_stopped(context.run, step, stop=stop)) is not _DONE:
                yield value
        finally:
            stop.set()
            await _until_stopped(context.run, finish, stop=stop)

    return steps


async def _until_stopped(run: Callable[..., Any], *args: Any, stop: threading.Event) -> Any:
    """``run(*args)`` in a worker thread, awaited; on cancel, set ``stop`` and wait for the thread to end
    (the queue slot is freed when this task ends: not before the work has stopped)."""
    done = asyncio.get_running_loop().run_in_executor(_POOL, run, *args)
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        stop.set()
        while not done.done():
            try:
                await asyncio.wait([done])
            except asyncio.CancelledError:  # cancelled twice: still wait for the thread
                continue
        if not done.cancelled():
            done.exception()  # its Cancelled, or what it finished with: retrieved, so asyncio does not log it
        raise


def _trim_after(started: float) -> None:
    # Long work (a transfer at full size: ~2 GB of activations) leaves its freed heap with glibc,
    # which keeps it: handed back, the next one starts from the same level.
    if time.perf_counter() - started > TRIM_AFTER_S:
        give_back_memory()
