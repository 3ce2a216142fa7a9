"""Several processes under ``torchrun`` (the process group: :mod:`resnet_demo.core.process_group`):
the samplers that share the data out, sums over processes, and rank 0 alone speaking.

One process is the plain case of all of it: world size 1, rank 0, no process group.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler, Sampler
from tqdm import tqdm

from ..core.process_group import Dist

__all__ = ["ShardSampler", "SkipSampler", "all_sum", "log_main", "sync_buffers"]


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
