"""What a fine-tune reports: the events its callback receives, the result it returns,
and the error it raises when training diverges."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..core.errors import UserError

__all__ = ["EventKind", "FinetuneResult", "TrainEvent", "TrainingDiverged"]

EventKind = Literal["start", "step", "epoch", "done"]


@dataclass(frozen=True)
class TrainEvent:
    """What the plain callback receives. ``kind`` is "start", "step", "epoch" or "done"."""

    kind: EventKind
    epoch: int  # 0-based
    step: int  # optimizer steps done so far, over the whole run
    total_steps: int
    data: dict[str, Any] = field(default_factory=dict)  # step: loss, lr, grad_norm; epoch: the metrics row


@dataclass(frozen=True)
class FinetuneResult:
    """Where the checkpoints are and how the run ended."""

    out: Path
    best: Path | None  # None when no epoch finished
    last: Path | None
    class_names: tuple[str, ...]
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]
    cancelled: bool = False


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the message says where the last good checkpoint is.

    ``problem`` is what happened and what to try, for anyone; ``str()`` adds where the
    last good checkpoint is on this machine, which only the command line's user can use.
    """

    def __init__(self, problem: str, *, last_good: Path | None) -> None:
        where = (
            f"The last good checkpoint, {last_good}, was left as it was."
            if last_good is not None
            else "No checkpoint had been written yet."
        )
        super().__init__(f"{problem} {where}")
        self.problem = problem
