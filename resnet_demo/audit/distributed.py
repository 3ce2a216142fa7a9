"""Several processes under ``torchrun``: each audits every world-th image, rank 0 gathers and writes.

The processes step through their shares in lockstep, one batch each per step, and rank 0
gathers every step's results (:func:`gather_to_main`) and writes them at once: no shared
file system is needed, and rank 0's memory holds one step of results, whatever the set.
One process is the plain case: world size 1, rank 0, no process group.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..core.devices import resolve_device

__all__ = ["Dist", "distributed_run", "gather_to_main"]


@dataclass(frozen=True)
class Dist:
    """This process's place among the processes of a run."""

    rank: int = 0
    world: int = 1
    owned: bool = False  # this call initialised the process group, so it tears it down

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the files."""
        return self.rank == 0


@contextlib.contextmanager
def distributed_run(device: str) -> Iterator[Dist]:
    """Join the ``torchrun`` process group when there is one (nccl on CUDA, else gloo), and leave it
    at the end if this call created it; without ``torchrun``, one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Dist()
        return
    rank = int(os.environ["RANK"])
    owned = not dist.is_initialized()
    if owned:
        cuda = resolve_device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        yield Dist(rank, world, owned)
    finally:
        if owned:
            dist.destroy_process_group()


def gather_to_main(payload: Any, d: Dist) -> list[Any]:
    """Every process's ``payload`` on rank 0, in rank order; ``[]`` elsewhere; ``[payload]`` alone."""
    if d.world == 1:
        return [payload]
    found: list[Any] | None = [None] * d.world if d.main else None
    dist.gather_object(payload, found, dst=0)
    return found or []
