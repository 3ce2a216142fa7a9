"""The settings of a fine-tune: :class:`FinetuneConfig`, and the one check of them.

:func:`validate_config` is the single place that says which settings are allowed. The
command line calls it through :func:`~resnet_demo.finetune.loop.finetune`; the app calls
it with ``server=True``, which adds the bounds a shared server needs. Its messages name
each setting in words, so they read well after a flag and in the app alike.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any

from ..core.checkpoint_files import MAX_SIDE, MIN_CROP
from ..core.errors import UserError
from ..core.weights import ARCHES, NAMED_WEIGHTS

__all__ = [
    "AMP_MODES",
    "EXTRA_EVALS",
    "FREEZE_MODES",
    "OPTIMIZERS",
    "RECIPE_FIELDS",
    "FinetuneConfig",
    "validate_config",
]

FREEZE_MODES: tuple[str, ...] = ("head", "layer4", "none")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adamw")
AMP_MODES: tuple[str, ...] = ("auto", "fp16", "bf16", "off")
EXTRA_EVALS: tuple[str, ...] = ("none", "ten-crop", "multi-scale")

# What a shared server allows: enough for a real fine-tune, not enough to hold the one
# training slot for hours or to run out of memory.
SERVER_MAX_EPOCHS = 100
SERVER_MAX_LR = 1.0
SERVER_MAX_BATCH_SIZE = 256


@dataclass
class FinetuneConfig:
    """Everything a run depends on. Stored in every checkpoint, so a run can be resumed
    and audited. Sizes marked "None: scaled" follow ``image_size`` in the paper's ratios."""

    # data and output
    data: str = ""  # folder of class sub-folders (or train/ and val/), or a .zip of one
    out: str = "finetune-out"  # folder for last.pth, best.pth, metrics.jsonl, summary.json
    val_fraction: float = 0.2  # held out per class when there is no val/ folder
    # model
    arch: str = "resnet50"  # resnet50, resnet101 or resnet152
    weights: str = "imagenet-v2"  # init: torchvision ImageNet weights; "random" or a .pth path also work
    freeze: str = "layer4"  # "head": fc only; "layer4": layer4 + fc; "none": every layer trains.
    # layer4 + head adapts the most class-specific features while a small set cannot spoil the rest.
    freeze_bn: bool | None = None  # None: BN in eval mode when the micro-batch is under 8 images
    # (statistics of a few images are noise); frozen layers always keep BN in eval mode
    # schedule and optimizer
    epochs: int = 10  # passes over the training images
    batch_size: int = 32  # images per micro-batch, per process
    accum_steps: int = 1  # micro-batches per optimizer step; effective batch = batch * accum * processes
    optimizer: str = "sgd"  # "sgd" (momentum, the paper's) or "adamw"
    lr: float = 0.01  # peak learning rate; 0.1 is the paper's from-scratch rate at batch 256,
    # fine-tuning wants ~10x less. For AdamW, try 1e-4.
    momentum: float = 0.9  # SGD momentum, as in the paper
    weight_decay: float = 1e-4  # the paper's; applied to conv and linear weights only, not BN or biases
    warmup_epochs: float = 1.0  # linear warmup, counted in optimizer steps (at most half the run)
    min_lr_ratio: float = 0.01  # cosine ends at lr * this, the floor
    label_smoothing: float = 0.1  # 0 turns it off; 0.1 is the usual value (Szegedy et al., 2016)
    clip_grad_norm: float = 1.0  # max global gradient norm; 0 turns clipping off
    # precision and speed
    amp: str = "auto"  # "auto": bf16 on CUDA GPUs that have it, else fp16 + GradScaler; fp32 on CPU.
    # "bf16" (CPU or CUDA), "fp16" (CUDA only), "off".
    channels_last: bool = True  # NHWC memory layout: faster convolutions on tensor cores and oneDNN
    device: str = "auto"  # "auto": cuda:LOCAL_RANK when CUDA is there, else cpu
    workers: int | None = None  # data loading processes; None: min(8, CPUs per process - 1)
    # augmentation and evaluation
    image_size: int = 224  # crop side, for training and evaluation
    scale_min: int | None = None  # short side drawn from [scale_min, scale_max]; None: scaled (256 at 224)
    scale_max: int | None = None  # None: scaled (480 at 224)
    random_resized_crop: bool = False  # Inception-style RandomResizedCrop instead of scale + crop
    color_jitter: float = 0.4  # brightness, contrast and saturation jitter; 0 turns it off
    eval_resize: int | None = None  # short side before the center crop; None: scaled (256 at 224)
    extra_eval: str = "none"  # also report "ten-crop" or "multi-scale" (ten crops at 3 sizes) at the end
    # knowledge distillation (finetune/distill.py)
    distill_from: str | None = None  # teacher: an arch (its ImageNet V2 weights) or a checkpoint of the same classes
    kd_temperature: float = 4.0  # softens both distributions; Hinton et al. used 1-20, 4 is the common choice
    kd_alpha: float = 0.5  # weight of the teacher's soft targets; 1 - alpha weighs the labels
    # bookkeeping
    seed: int = 0  # split, head init, data order and augmentation
    resume: str | None = None  # last.pth of an earlier run with this recipe, to continue it
    progress: bool = True  # tqdm bar on the terminal (rank 0)

    def scaled(self, size_at_224: int) -> int:
        """A size given for 224-pixel crops, scaled to ``image_size``."""
        return round(self.image_size * size_at_224 / 224)

    @property
    def scale_range(self) -> tuple[int, int]:
        """The short-side range of the training scale augmentation."""
        return (self.scale_min or self.scaled(256), self.scale_max or self.scaled(480))

    @property
    def eval_resize_size(self) -> int:
        """The short side before the evaluation center crop."""
        return self.eval_resize or self.scaled(256)

    def to_dict(self) -> dict[str, Any]:
        """Every field, as stored in checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, name: str = "the checkpoint") -> FinetuneConfig:
        """The config a checkpoint (``name``, for messages) stored; fields this version does not know
        are dropped. A file is input: a value of the wrong type is a :class:`UserError` naming it."""
        hints = typing.get_type_hints(cls)
        known = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
        for key, value in d.items():
            if key in known and not _fits(value, known[key]):
                shown = repr(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
                raise UserError(
                    f"{name} stores the setting {key!r:.40} as {shown:.40}, which is not a {_words(known[key])}."
                )
        return cls(**{k: v for k, v in d.items() if k in known})


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` (read from a file) is of the setting's type ``hint``: finite numbers, no bools for
    numbers, strings of a sane length, lists of such."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str) and len(value) <= 4096
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and len(value) <= 64 and all(_fits(v, item) for v in value)
    return False  # a type this check does not know: refuse rather than trust a file


def _words(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_words(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"list of {_words(typing.get_args(hint)[0])}s"
    names = {bool: "true/false value", int: "whole number", float: "finite number", str: "text", type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


# Fields that change the course of training; a resume with other values is not exact.
RECIPE_FIELDS = (
    "arch", "freeze", "freeze_bn", "epochs", "batch_size", "accum_steps", "optimizer", "lr", "momentum",
    "weight_decay", "warmup_epochs", "min_lr_ratio", "label_smoothing", "clip_grad_norm", "amp",
    "image_size", "scale_min", "scale_max", "random_resized_crop", "color_jitter", "val_fraction", "seed",
    "distill_from", "kd_temperature", "kd_alpha",
)  # fmt: skip


def _one_of(what: str, value: str, allowed: tuple[str, ...]) -> tuple[bool, str]:
    words = ", ".join(allowed[:-1]) + f" or {allowed[-1]}"
    return value in allowed, f"{what} must be {words}, not {value!r}."


def validate_config(cfg: FinetuneConfig, *, server: bool = False) -> None:
    """Raise :class:`UserError` for the first setting of ``cfg`` that is not allowed.

    ``server=True`` adds the app's bounds: 1 to 100 epochs, a learning rate of at most 1,
    at most 256 images per batch, and named starting weights (no file of the server's).
    Sizes stay within what a checkpoint may hold (:mod:`resnet_demo.core.checkpoint_files`), so
    every run writes one that loads. Each message names the setting in words.
    """
    checks = [
        _one_of("The model", cfg.arch, ARCHES),
        (
            cfg.freeze in FREEZE_MODES,
            "What trains must be head (the head only), layer4 (layer4 + head) or none (every layer), "
            f"not {cfg.freeze!r}.",
        ),
        _one_of("The optimizer", cfg.optimizer, OPTIMIZERS),
        _one_of("Mixed precision", cfg.amp, AMP_MODES),
        _one_of("The extra test", cfg.extra_eval, EXTRA_EVALS),
    ]
    if server:
        checks += [
            _one_of("The starting weights", cfg.weights, NAMED_WEIGHTS),
            (1 <= cfg.epochs <= SERVER_MAX_EPOCHS, f"Epochs must be between 1 and {SERVER_MAX_EPOCHS}."),
            (
                1 <= cfg.batch_size <= SERVER_MAX_BATCH_SIZE,
                f"The batch size must be between 1 and {SERVER_MAX_BATCH_SIZE}.",
            ),
            (
                0 < cfg.lr <= SERVER_MAX_LR,
                f"The learning rate must be above 0 and at most {SERVER_MAX_LR:g} (0.01 is a good start for SGD).",
            ),
        ]
    checks += [
        (cfg.epochs >= 1, "Epochs must be at least 1."),
        (cfg.batch_size >= 1, "The batch size must be at least 1."),
        (cfg.accum_steps >= 1, "Gradient accumulation must be at least 1 micro-batch per optimizer step."),
        (cfg.lr > 0, "The learning rate must be above 0 (0.01 is a good start for SGD)."),
        (
            cfg.image_size >= MIN_CROP,
            f"The image size must be at least {MIN_CROP} pixels: the network halves the image five times.",
        ),
        (cfg.image_size <= MAX_SIDE, f"The image size must be at most {MAX_SIDE} pixels."),
        (
            cfg.image_size <= cfg.eval_resize_size <= MAX_SIDE,
            f"The evaluation resize ({cfg.eval_resize_size} px; by default 256/224 of the image size) must be "
            f"between the image size and {MAX_SIDE} pixels.",
        ),
        (0 <= cfg.label_smoothing < 1, "Label smoothing must be at least 0 and below 1."),
        (cfg.clip_grad_norm >= 0, "The gradient clipping norm must be 0 (off) or above."),
        (cfg.warmup_epochs >= 0, "Warmup epochs must be 0 or more."),
        (
            0 < cfg.kd_temperature <= 100,
            "The distillation temperature must be above 0 and at most 100 (4 is the usual value).",
        ),
        (0 <= cfg.kd_alpha <= 1, "The distillation weight (alpha) must be from 0 to 1."),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
