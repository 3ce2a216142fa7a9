"""The process's OpenMP threads: each thread that ran parallel torch work keeps a team of its own,
and the server ends them after each piece of model work (more teams than cores slows every pass)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from resnet_demo.core.devices import release_openmp_threads
from resnet_demo.ui.cancellation import cancellable


def _threads() -> int:
    """Threads of this process, OpenMP's own included (they have no Python object)."""
    return len(os.listdir("/proc/self/task"))


def _parallel_work() -> int:
    """A parallel torch operation (4M elements: far above the grain one thread does alone); returns how
    many threads it added to the process, its OpenMP team's."""
    before = _threads()
    torch.ones(1 << 22).add_(1.0)
    return _threads() - before


@pytest.fixture
def two_threads() -> Iterator[None]:
    if "libgomp" not in Path("/proc/self/maps").read_text():
        pytest.skip("torch's OpenMP runtime here is not GNU OpenMP")
    kept = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield
    finally:
        torch.set_num_threads(kept)


def _on_a_new_thread(fn: Callable[[], Any]) -> Any:
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0]


def test_release_ends_the_calling_threads_team_and_the_next_parallel_work_starts_one_again(
    two_threads: None,
) -> None:
    def scenario() -> tuple[int, bool, int, int]:
        before = _threads()
        started = _parallel_work()
        released = release_openmp_threads()
        after = _threads()
        again = _parallel_work()
        release_openmp_threads()
        return started, released, after - before, again

    started, released, left, again = _on_a_new_thread(scenario)
    assert started >= 1 and released
    assert left == 0  # the team's threads have ended
    assert again == started  # and the next parallel operation has a team again, as large


def test_a_model_handler_leaves_no_openmp_threads_on_the_servers_threads(two_threads: None) -> None:
    seen: list[int] = []

    def handler() -> int:
        seen.append(_threads())  # the pool's thread is running: only the team is still to come
        return _parallel_work()

    def steps() -> Iterator[int]:
        for _ in range(2):
            seen.append(_threads())
            yield _parallel_work()

    async def scenario() -> tuple[int, list[int]]:
        return await cancellable(handler)(), [step async for step in cancellable(steps)()]

    started, stepped = asyncio.run(scenario())
    after = _threads()
    assert started >= 1 and all(n >= 1 for n in stepped)  # each made a team (none was left to reuse)...
    assert after == max(seen)  # ...and none outlived its work: the pool's threads alone remain
