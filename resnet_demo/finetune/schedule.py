"""The learning-rate schedule, in optimizer steps: linear warmup, then cosine annealing
down to a floor (nanoGPT's ``get_lr``), and how many steps an epoch has."""

from __future__ import annotations

import math

from .config import FinetuneConfig

__all__ = ["get_lr", "optimizer_steps_per_epoch", "warmup_steps_for"]


def get_lr(step: int, *, base_lr: float, total_steps: int, warmup_steps: int, min_lr: float) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup to ``base_lr``,
    then cosine annealing that reaches ``min_lr`` at ``total_steps`` and stays there."""
    if step < warmup_steps:
        return base_lr * (step + 1) / (warmup_steps + 1)
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (base_lr - min_lr)


def optimizer_steps_per_epoch(num_batches: int, accum_steps: int) -> int:
    """A trailing group of fewer than ``accum_steps`` micro-batches is still one step."""
    return math.ceil(num_batches / accum_steps)


def warmup_steps_for(cfg: FinetuneConfig, steps_per_epoch: int) -> int:
    """``cfg.warmup_epochs`` in optimizer steps, at most half the run."""
    return min(round(cfg.warmup_epochs * steps_per_epoch), (steps_per_epoch * cfg.epochs) // 2)
