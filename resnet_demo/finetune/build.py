"""The model and optimizer of a fine-tune: a pretrained backbone with a new head and
its frozen parts, BatchNorm modes, weight-decay groups, and the mixed-precision type."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..core.errors import UserError
from ..core.model import ResNet
from ..core.weights import Preprocessing, load_model
from .config import FinetuneConfig

__all__ = ["build_finetune_model", "make_optimizer", "prepare_for_training", "resolve_amp", "set_train_mode"]

# freeze mode -> the top-level modules that train; None: everything trains
_TRAINABLE: dict[str, tuple[str, ...] | None] = {"head": ("fc",), "layer4": ("layer4", "fc"), "none": None}


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for an ``amp`` setting on ``device``; None: float32, no autocast."""
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "fp16":
            return torch.float16
        if amp == "bf16":
            if not torch.cuda.is_bf16_supported():
                raise UserError("--amp bf16: this GPU has no bfloat16; use --amp fp16.")
            return torch.bfloat16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "fp16":
        raise UserError("--amp fp16 needs a CUDA GPU; on a CPU use --amp bf16 or --amp off.")
    return torch.bfloat16 if amp == "bf16" else None  # auto on CPU: fp32, CPU autocast rarely pays


def build_finetune_model(*, arch: str, weights: str, num_classes: int, freeze: str) -> tuple[ResNet, Preprocessing]:
    """Pretrained backbone, a new ``fc`` for ``num_classes``, frozen parts set."""
    loaded = load_model(arch=arch, weights=weights)
    model = loaded.model
    model.fc = nn.Linear(model.fc.in_features, num_classes)  # init follows torch.manual_seed
    return prepare_for_training(model, freeze=freeze), loaded.spec.preprocessing


def prepare_for_training(model: ResNet, *, freeze: str) -> ResNet:
    """In-place activations, and gradients for what trains under ``freeze`` only; returns ``model``."""
    # The explanation side needs every activation and sum intact; training does not. In
    # place, as in torchvision, each block saves two fresh activation-sized tensors, which
    # is what kept this loop behind the reference loop on CPU (see docs/bench-train.md).
    model.set_inplace(True)
    trainable = _TRAINABLE[freeze]
    for name, p in model.named_parameters():
        p.requires_grad_(trainable is None or name.split(".")[0] in trainable)
    return model


def set_train_mode(model: nn.Module, *, freeze: str, bn_eval: bool) -> None:
    """train() for what trains; BatchNorm in eval mode in frozen parts, or everywhere with ``bn_eval``."""
    model.train()
    trainable = _TRAINABLE[freeze]
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            frozen = trainable is not None and name.split(".")[0] not in trainable
            if frozen or bn_eval:
                m.eval()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decay on BN scales and biases only pulls them to 0 for nothing; decay the weights alone.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over the parameters that train, decaying weights only."""
    groups = _param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)
