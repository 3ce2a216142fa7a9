"""What a fine-tune reports: the events its callback receives, the result it returns,
and the error it raises when training diverges."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import UserError

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
    """The loss became NaN or infinite; the message says where the last good checkpoint is."""
