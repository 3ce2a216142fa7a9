"""Fine-tune a ResNet on your own classes: ``python -m resnet_demo finetune --data DIR|ZIP``.

The recipe is the paper's, with today's care: ImageNet init and a new head, scale
augmentation, SGD with momentum (or AdamW), linear warmup then cosine annealing
stepped per optimizer step, label smoothing, gradient clipping, gradient
accumulation, mixed precision on CUDA and ``channels_last``.

One process, or several under ``torchrun`` (DistributedDataParallel, one process per
GPU, or gloo on CPU); rank 0 alone logs and writes files. The output folder holds

* ``last.pth``: the state after the latest epoch (or the cancel), with optimizer and
  scaler state, for ``--resume``;
* ``best.pth``: the model with the best validation top-1, without optimizer state;
* ``best.safetensors``: the same model as safetensors (a format that cannot run code),
  its class names, widths, preprocessing and recipe as JSON in the file's metadata;
* ``metrics.jsonl``: one line per epoch; ``summary.json`` at the end.

Every checkpoint loads in ``resnet_demo.core.weights.load_model(arch=..., weights=PATH)``
and carry their class names and preprocessing. Every file is written to a temporary
name and renamed, so a crash or Ctrl-C never leaves a half-written checkpoint.

``--distill-from`` adds knowledge distillation from a teacher (:mod:`.distill`: the loss,
in one place, and the teacher).

One concept per module: :mod:`.config` (the settings and their one check),
:mod:`.schedule` (learning rate per step), :mod:`.steps` (one optimizer step),
:mod:`.build` (model, optimizer, precision), :mod:`.loaders` (the run's data),
:mod:`.distributed` (processes), :mod:`.evaluate`, :mod:`.checkpoints` (files and
resume), :mod:`.events` (what a run reports), :mod:`.start` (where a run starts: model,
optimizer, loss and progress, fresh or resumed), :mod:`.loop` (the run), :mod:`.estimate`
(time before a run), :mod:`.cli` (the command) and :mod:`.plots` (training curves,
plotly, imported on its own so the command line never loads plotly).
"""

from __future__ import annotations

from .build import build_finetune_model, prepare_for_training, set_train_mode
from .config import FREEZE_MODES, FinetuneConfig, validate_config
from .distill import DistillationLoss, kd_loss, load_teacher
from .estimate import StepTiming, estimate_seconds, measure_step
from .events import FinetuneResult, TrainEvent, TrainingDiverged
from .loop import finetune
from .schedule import get_lr, optimizer_steps_per_epoch
from .start import ModelBuilder
from .steps import AverageMeter, accuracy, apply_step, clip_gradients, forward_backward

__all__ = [
    "FREEZE_MODES",
    "AverageMeter",
    "DistillationLoss",
    "FinetuneConfig",
    "FinetuneResult",
    "ModelBuilder",
    "StepTiming",
    "TrainEvent",
    "TrainingDiverged",
    "accuracy",
    "apply_step",
    "build_finetune_model",
    "clip_gradients",
    "estimate_seconds",
    "finetune",
    "forward_backward",
    "get_lr",
    "kd_loss",
    "load_teacher",
    "measure_step",
    "optimizer_steps_per_epoch",
    "prepare_for_training",
    "set_train_mode",
    "validate_config",
]
