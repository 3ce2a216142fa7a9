"""How long a fine-tune will take here, from one measured step, before starting it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from .build import build_finetune_model, resolve_amp, set_train_mode
from .steps import apply_step, forward_backward

__all__ = ["StepTiming", "estimate_seconds", "measure_step"]


@dataclass(frozen=True)
class StepTiming:
    """Measured seconds per image, for estimating a run before starting it."""

    train_s: float  # one training step, per image
    eval_s: float  # one evaluation forward, per image
    device: str


def _synchronize(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)  # CUDA runs asynchronously: wait, or the clock stops too early


def measure_step(*, arch: str, freeze: str, batch_size: int, image_size: int, device: str = "cpu") -> StepTiming:
    """Time one training step and one evaluation forward of ``arch`` on random data.

    Random weights (no download) and at most 4 images, scaled per image: on a CPU the
    cost is close to linear in the batch. The first step is not timed, since it pays
    for one-off kernel selection.
    """
    dev = torch.device(device)
    n = max(1, min(batch_size, 4))
    model, _ = build_finetune_model(arch=arch, weights="random", num_classes=10, freeze=freeze)
    model = model.to(dev, memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(dev.type, enabled=False)
    amp = resolve_amp("auto", dev)
    x = torch.randn(n, 3, image_size, image_size, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.zeros(n, dtype=torch.long, device=dev)
    criterion = nn.CrossEntropyLoss()

    def train_once() -> float:
        set_train_mode(model, freeze=freeze, bn_eval=False)
        t0 = time.perf_counter()
        forward_backward(model, x, y, criterion=criterion, amp_dtype=amp, scaler=scaler, loss_divisor=1)
        apply_step(optimizer, scaler)
        _synchronize(dev)
        return time.perf_counter() - t0

    train_once()
    train_s = train_once() / n
    model.eval()
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(x)
        _synchronize(dev)
        eval_s = (time.perf_counter() - t0) / n
    return StepTiming(train_s=train_s, eval_s=eval_s, device=str(dev))


def estimate_seconds(timing: StepTiming, *, epochs: int, train_images: int, val_images: int) -> float:
    """Seconds for a run: every epoch trains on every image and evaluates every
    validation image; plus about 2 s per epoch for checkpoints and 10 s of set-up."""
    per_epoch = train_images * timing.train_s + val_images * timing.eval_s + 2.0
    return 10.0 + epochs * per_epoch
