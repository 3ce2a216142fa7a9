"""Knowledge distillation (Hinton et al., 2015): a teacher's softened predictions as a second target.

The loss, in one place for ``finetune --distill-from`` and ``slim --distill-from``:

    loss = A * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - A) * CE(student, labels)

T (``kd_temperature``) softens both distributions so the teacher's ranking of the wrong
classes carries information; the T^2 keeps the gradient of the soft part on the scale of
the hard part as T changes. The teacher runs in eval mode without gradients, on the same
augmented batch as the student, as a folded inference copy (its BatchNorms merged into
the convolutions: the same function, fewer memory passes).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.fold import inference_copy
from ..core.model import ResNet
from ..core.weights import ARCHES, load_model
from .checkpoints import checkpoint_arch, same_classes
from .config import FinetuneConfig

__all__ = ["DistillationLoss", "kd_loss", "load_teacher", "make_criterion"]


def kd_loss(
    student: Tensor, teacher: Tensor, targets: Tensor, *, temperature: float, alpha: float, criterion: nn.Module
) -> Tensor:
    """``alpha * T^2 * KL(p_teacher || p_student) + (1 - alpha) * criterion(student, targets)``.

    ``student`` and ``teacher`` are logits (B, C); the KL divergence is averaged over the
    batch, in float32 whatever autocast chose. With ``alpha`` 0 the result is
    ``criterion(student, targets)`` itself: the fine-tune loss, bit for bit.
    """
    hard = criterion(student, targets)
    if alpha == 0:
        return hard
    t = float(temperature)
    log_p_student = F.log_softmax(student.float() / t, dim=1)  # (B, C)
    log_p_teacher = F.log_softmax(teacher.float() / t, dim=1)  # (B, C)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return alpha * t * t * kl + (1 - alpha) * hard


class DistillationLoss(nn.Module):
    """:func:`kd_loss` as a criterion: ``loss(student_logits, targets, teacher_logits)``."""

    def __init__(self, criterion: nn.Module, *, temperature: float, alpha: float) -> None:
        super().__init__()
        self.criterion, self.temperature, self.alpha = criterion, temperature, alpha

    def forward(self, student: Tensor, targets: Tensor, teacher: Tensor) -> Tensor:
        return kd_loss(
            student, teacher, targets, temperature=self.temperature, alpha=self.alpha, criterion=self.criterion
        )


def load_teacher(source: str, *, class_names: tuple[str, ...], device: torch.device, channels_last: bool) -> ResNet:
    """The teacher on ``device``, in eval mode, frozen and folded. ``source`` is an architecture
    (its ImageNet V2 weights) or a checkpoint that records its architecture and classes;
    :class:`UserError` unless it predicts exactly ``class_names``, in that order."""
    if source in ARCHES:
        loaded = load_model(arch=source, weights="imagenet-v2")
    else:
        loaded = load_model(arch=checkpoint_arch(source, role="The teacher"), weights=source)
    same_classes(
        loaded.spec.categories,
        class_names,
        what=f"The teacher {Path(source).name}",
        remedy="distill from a model fine-tuned on the same classes, in the same order.",
    )
    teacher = inference_copy(loaded.model, channels_last=channels_last)
    return teacher.to(device)


def make_criterion(
    cfg: FinetuneConfig, *, class_names: tuple[str, ...], device: torch.device
) -> tuple[nn.Module, ResNet | None]:
    """The loss of a run and its teacher: cross-entropy alone (``cfg.label_smoothing``), or
    with ``cfg.distill_from`` the distillation loss around it (``kd_temperature``,
    ``kd_alpha``) and the loaded teacher."""
    ce = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    if not cfg.distill_from:
        return ce, None
    teacher = load_teacher(cfg.distill_from, class_names=class_names, device=device, channels_last=cfg.channels_last)
    return DistillationLoss(ce, temperature=cfg.kd_temperature, alpha=cfg.kd_alpha), teacher
