"""The process's OpenMP threads: each thread that ran parallel torch work keeps a team of its own,
and the server ends them after each piece of model work (more teams than cores slows every pass).

Threads are counted by name: a thread takes the name of the thread that starts it, so the team of
a thread renamed first carries that name, and threads that other tests' servers start or end at
the same time do not count."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from resnet_demo.core.devices import release_openmp_threads
from resnet_demo.ui.cancellation import cancellable

PREFIX = "omp-probe-"  # at most 15 characters in all, the kernel's limit


def _tasks() -> dict[int, str]:
    """Every thread of this process, OpenMP's own included (they have no Python object): id -> name."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError):  # ended meanwhile
            out[int(tid)] = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
    return out


def _helpers(*, named: str, besides: set[int]) -> int:
    """Threads whose name starts with ``named``, other than ``besides`` (the threads renamed themselves)."""
    return sum(1 for tid, name in _tasks().items() if name.startswith(named) and tid not in besides)


def _parallel_work_as(name: str) -> int:
    """A parallel torch operation on this thread, renamed ``name`` meanwhile (4M elements: far above
    the grain one thread does alone); returns how many threads of that name it started: its team."""
    me = threading.get_native_id()
    comm = Path(f"/proc/self/task/{me}/comm")
    kept_name, kept_threads = comm.read_text().strip(), torch.get_num_threads()
    # This thread's own OpenMP setting, whatever an earlier test left in it. Set before the renaming:
    # the first call on a thread starts a thread of torch's own, not OpenMP's.
    torch.set_num_threads(2)
    comm.write_text(name)
    try:
        torch.ones(1 << 22).add_(1.0)
        return _helpers(named=name, besides={me})
    finally:
        comm.write_text(kept_name)
        torch.set_num_threads(kept_threads)


@pytest.fixture
def gnu_openmp() -> None:
    if "libgomp" not in Path("/proc/self/maps").read_text():
        pytest.skip("torch's OpenMP runtime here is not GNU OpenMP")


def _on_a_new_thread(fn: Callable[[], Any]) -> Any:
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0]


@pytest.mark.parametrize("other_runtime", [False, True], ids=["torch's alone", "beside scikit-learn's"])
def test_release_ends_the_calling_threads_team_and_the_next_parallel_work_starts_one_again(
    gnu_openmp: None, other_runtime: bool
) -> None:
    if other_runtime:  # a second copy of GNU OpenMP in the process, loaded after the first release
        pytest.importorskip("sklearn.cluster")
        assert (
            len({line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "libgomp" in line})
            >= 2
        )

    def scenario() -> tuple[int, bool, int, int]:
        me, name = threading.get_native_id(), f"{PREFIX}new"
        started = _parallel_work_as(name)
        released = release_openmp_threads()
        left = _helpers(named=name, besides={me})
        again = _parallel_work_as(name)
        release_openmp_threads()
        return started, released, left, again

    started, released, left, again = _on_a_new_thread(scenario)
    assert started >= 1 and released
    assert left == 0  # the team's threads have ended
    assert again == started  # and the next parallel operation has a team again, as large


def test_a_model_handler_leaves_no_openmp_threads_on_the_servers_threads(gnu_openmp: None) -> None:
    workers: set[int] = set()

    def handler() -> int:
        workers.add(threading.get_native_id())
        return _parallel_work_as(f"{PREFIX}h")

    def steps() -> Iterator[int]:
        for i in range(2):
            workers.add(threading.get_native_id())
            yield _parallel_work_as(f"{PREFIX}s{i}")

    async def scenario() -> tuple[int, list[int]]:
        return await cancellable(handler)(), [step async for step in cancellable(steps)()]

    started, stepped = asyncio.run(scenario())
    assert started >= 1 and all(n >= 1 for n in stepped)  # each made a team...
    assert _helpers(named=PREFIX, besides=workers) == 0  # ...and none outlived its work
