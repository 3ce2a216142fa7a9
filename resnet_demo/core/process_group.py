"""The process group of a run under ``torchrun``: this process's rank, joining and leaving.

Shared by every engine that spreads work over processes (the fine-tune, the audit). One
process is the plain case: world size 1, rank 0, no process group.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .devices import resolve_device

__all__ = ["Dist", "distributed_run"]


@dataclass(frozen=True)
class Dist:
    """This process's place among the processes of a run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # we initialised the process group, so we tear it down

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0


def _setup(device_pref: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return Dist(rank, world, local_rank, owned=False)
    use_cuda = resolve_device(device_pref).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world, local_rank, owned=True)


@contextlib.contextmanager
def distributed_run(device_pref: str) -> Iterator[Dist]:
    """Join the ``torchrun`` process group when there is one (nccl on CUDA, else gloo),
    and leave it at the end if this call created it."""
    d = _setup(device_pref)
    try:
        yield d
    finally:
        if d.owned:
            dist.destroy_process_group()
