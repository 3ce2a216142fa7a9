"""One optimizer step, in pieces the trainer and the training benchmark share:
forward and backward of a micro-batch, gradient clipping, the step itself, and the
meters that average what the steps report."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["AverageMeter", "accuracy", "apply_step", "clip_gradients", "forward_backward"]


class AverageMeter:
    """Running average, as in pytorch/examples imagenet."""

    def __init__(self) -> None:
        self.sum = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        """Add ``value``, weighing it as ``n`` items."""
        self.sum += value * n
        self.count += n

    @property
    def avg(self) -> float:
        """The average so far; NaN before the first update."""
        return self.sum / self.count if self.count else float("nan")


def accuracy(output: Tensor, target: Tensor, topk: Sequence[int] = (1,)) -> list[Tensor]:
    """Number of correct predictions among the top k, for each k (pytorch/examples)."""
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, dim=1).indices.t()  # (maxk, B)
    correct = pred.eq(target.view(1, -1))
    return [correct[: min(k, maxk)].reshape(-1).float().sum() for k in topk]


def forward_backward(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    *,
    criterion: nn.Module,
    amp_dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler,
    loss_divisor: int,
    teacher: nn.Module | None = None,
) -> tuple[Tensor, Tensor]:
    """One micro-batch: forward under autocast, backward of ``loss / loss_divisor``
    (so accumulated gradients average over the group). Returns (loss, logits), detached.

    With a ``teacher`` (knowledge distillation), it sees the same batch without gradients,
    and the loss is ``criterion(logits, targets, teacher_logits)``.
    """
    device_type = images.device.type
    with torch.autocast(device_type=device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = model(images)  # (B, num_classes)
        if teacher is None:
            loss = criterion(logits, targets)
        else:
            with torch.no_grad():  # not inference_mode: the KL term keeps these logits for its backward
                teacher_logits = teacher(images)  # (B, num_classes)
            loss = criterion(logits, targets, teacher_logits)
    scaler.scale(loss / loss_divisor).backward()
    return loss.detach(), logits.detach()


def clip_gradients(
    optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: Sequence[Tensor], *, max_norm: float
) -> float:
    """Unscale (under fp16) and clip to ``max_norm`` (0: no clipping); returns the norm before clipping."""
    if scaler.is_enabled():
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf")))


def apply_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Step once (the scaler skips the step when fp16 gradients overflowed), then clear gradients."""
    scaler.step(optimizer)  # and no optimizer.step() after it: that would step twice
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
