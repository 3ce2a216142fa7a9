"""Several processes under ``torchrun``: each audits every world-th image, rank 0 gathers and writes.

The processes step through their shares in lockstep, one batch each per step, and rank 0
gathers every step's results (:func:`gather_to_main`) and writes them at once: no shared
file system is needed, and rank 0's memory holds one step of results, whatever the set.
One process is the plain case: world size 1, rank 0, no process group
(:mod:`resnet_demo.core.process_group`).
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

from ..core.process_group import Dist

__all__ = ["gather_to_main"]


def gather_to_main(payload: Any, d: Dist) -> list[Any]:
    """Every process's ``payload`` on rank 0, in rank order; ``[]`` elsewhere; ``[payload]`` alone."""
    if d.world == 1:
        return [payload]
    found: list[Any] | None = [None] * d.world if d.main else None
    dist.gather_object(payload, found, dst=0)
    return found or []
