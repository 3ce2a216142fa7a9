"""Validation: loss, top-1 and top-5 over a loader, single-crop or multi-view."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..core.process_group import Dist
from .distributed import all_sum
from .steps import accuracy

__all__ = ["evaluate"]


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    d: Dist,
) -> dict[str, float]:
    """Loss, top-1 and top-5 (%) over the loader, summed over processes.

    Batches of shape (B, V, 3, H, W) are multi-view: the softmax is averaged over V.
    """
    model.eval()
    loss_sum = top1 = top5 = n = 0.0
    nll = nn.NLLLoss(reduction="sum")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for images, targets in loader:
        targets = targets.to(device, non_blocking=True)
        views = images.shape[1] if images.ndim == 5 else 1
        flat = images.reshape(-1, *images.shape[-3:]).to(device, non_blocking=True, memory_format=fmt)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(flat)  # (B*V, C)
        probs = logits.float().softmax(dim=1).view(targets.shape[0], views, -1).mean(dim=1)  # (B, C)
        loss_sum += float(nll(probs.clamp_min(1e-12).log(), targets))
        c1, c5 = accuracy(probs, targets, topk=(1, 5))
        top1, top5, n = top1 + float(c1), top5 + float(c5), n + targets.shape[0]
    loss_sum, top1, top5, n = all_sum([loss_sum, top1, top5, n], device, d)
    n = max(n, 1.0)
    return {"loss": loss_sum / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n}
