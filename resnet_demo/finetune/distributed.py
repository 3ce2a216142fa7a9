"""Several processes under ``torchrun``: the process group, the samplers that share the
data out, sums over processes, and rank 0 alone speaking.

One process is the plain case of all of it: world size 1, rank 0, no process group.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler, Sampler
from tqdm import tqdm

from ..core.devices import resolve_device

__all__ = ["Dist", "ShardSampler", "SkipSampler", "all_sum", "distributed_run", "log_main", "sync_buffers"]


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


class ShardSampler(Sampler[int]):
    """Every world-th index from rank on, no padding, so summed metrics count each image once."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SkipSampler(Sampler[int]):
    """A sampler's epoch order without its first ``skip`` indices: resume mid-epoch."""

    def __init__(self, sampler: DistributedSampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def all_sum(values: list[float], device: torch.device, d: Dist) -> list[float]:
    """``values`` summed over every process (in float64); themselves with one process."""
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def sync_buffers(model: nn.Module, d: Dist) -> None:
    """Give every rank rank 0's BatchNorm statistics, so all evaluate the model rank 0 saves."""
    if d.world > 1:
        for b in model.buffers():
            dist.broadcast(b, src=0)


def log_main(d: Dist, message: str) -> None:
    """One line on stderr from rank 0, without breaking a progress bar."""
    if d.main:
        tqdm.write(message, file=sys.stderr)
