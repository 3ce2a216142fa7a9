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
* ``metrics.jsonl``: one line per epoch; ``summary.json`` at the end.

Both checkpoints load in ``resnet_demo.weights.load_model(arch=..., weights=PATH)``
and carry their class names and preprocessing. Every file is written to a temporary
name and renamed, so a crash or Ctrl-C never leaves a half-written checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from .datasets import (
    ImageListDataset,
    ImageSet,
    eval_transform,
    load_image_set,
    make_sample_dataset,
    multi_view_transform,
    safe_extract_zip,
    train_transform,
)
from .devices import available_cores, resolve_device
from .errors import UserError
from .model import ResNet
from .weights import ARCHES, CHECKPOINT_FORMAT, Preprocessing, _safe_load, load_model

__all__ = [
    "FREEZE_MODES",
    "AverageMeter",
    "FinetuneConfig",
    "FinetuneResult",
    "TrainEvent",
    "TrainingDiverged",
    "accuracy",
    "apply_step",
    "build_finetune_model",
    "clip_gradients",
    "StepTiming",
    "configure_parser",
    "estimate_seconds",
    "measure_step",
    "finetune",
    "forward_backward",
    "get_lr",
    "main",
    "optimizer_steps_per_epoch",
]

FREEZE_MODES: tuple[str, ...] = ("head", "layer4", "none")
_TRAINABLE = {"head": ("fc",), "layer4": ("layer4", "fc"), "none": None}  # None: everything trains


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
    # bookkeeping
    seed: int = 0  # split, head init, data order and augmentation
    resume: str | None = None  # last.pth of an earlier run with this recipe, to continue it
    progress: bool = True  # tqdm bar on the terminal (rank 0)

    def scaled(self, size_at_224: int) -> int:
        return round(self.image_size * size_at_224 / 224)

    @property
    def scale_range(self) -> tuple[int, int]:
        return (self.scale_min or self.scaled(256), self.scale_max or self.scaled(480))

    @property
    def eval_resize_size(self) -> int:
        return self.eval_resize or self.scaled(256)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FinetuneConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# Fields that change the course of training; a resume with other values is not exact.
_RECIPE_FIELDS = (
    "arch", "freeze", "freeze_bn", "epochs", "batch_size", "accum_steps", "optimizer", "lr", "momentum",
    "weight_decay", "warmup_epochs", "min_lr_ratio", "label_smoothing", "clip_grad_norm", "amp",
    "image_size", "scale_min", "scale_max", "random_resized_crop", "color_jitter", "val_fraction", "seed",
)  # fmt: skip


@dataclass(frozen=True)
class TrainEvent:
    """What the plain callback receives. ``kind`` is "start", "step", "epoch" or "done"."""

    kind: Literal["start", "step", "epoch", "done"]
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


# ----------------------------------------------------------------------------- pure pieces


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
    return min(round(cfg.warmup_epochs * steps_per_epoch), (steps_per_epoch * cfg.epochs) // 2)


class AverageMeter:
    """Running average, as in pytorch/examples imagenet."""

    def __init__(self) -> None:
        self.sum = 0.0
        self.count = 0

    def update(self, value: float, n: int = 1) -> None:
        self.sum += value * n
        self.count += n

    @property
    def avg(self) -> float:
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
) -> tuple[Tensor, Tensor]:
    """One micro-batch: forward under autocast, backward of ``loss / loss_divisor``
    (so accumulated gradients average over the group). Returns (loss, logits), detached."""
    device_type = images.device.type
    with torch.autocast(device_type=device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = model(images)  # (B, num_classes)
        loss = criterion(logits, targets)
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


# ----------------------------------------------------------------------------- model


def _resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
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
    # The explanation side needs every activation and sum intact; training does not. In
    # place, as in torchvision, each block saves two fresh activation-sized tensors, which
    # is what kept this loop behind the reference loop on CPU (see docs/bench-train.md).
    model.set_inplace(True)
    trainable = _TRAINABLE[freeze]
    for name, p in model.named_parameters():
        p.requires_grad_(trainable is None or name.split(".")[0] in trainable)
    return model, loaded.spec.preprocessing


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


def _make_optimizer(model: nn.Module, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)


# ----------------------------------------------------------------------------- files


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary name in the same folder, flush to disk, then rename:
    readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_write_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owned: bool = False  # we initialised the process group, so we tear it down

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device_pref: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return _Dist(rank, world, local_rank, owned=False)
    use_cuda = resolve_device(device_pref).type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return _Dist(rank, world, local_rank, owned=True)


class _Shard(Sampler[int]):
    """Every world-th index from rank on, no padding, so summed metrics count each image once."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class _Skip(Sampler[int]):
    """A sampler's epoch order without its first ``skip`` indices: resume mid-epoch."""

    def __init__(self, sampler: DistributedSampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.sampler)[self.skip :])

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def _all_sum(values: list[float], device: torch.device, d: _Dist) -> list[float]:
    if d.world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# ----------------------------------------------------------------------------- data


def _prepare_data(data: str, d: _Dist) -> tuple[Path, Path | None]:
    """The data folder, extracting a zip first. Returns (folder, temp folder to delete)."""
    path = Path(data).expanduser()
    if not data or not path.exists():
        raise UserError(f"No data at {data!r}: pass --data with a folder of class sub-folders or a .zip of one.")
    if path.is_dir():
        return path, None
    # One extraction per machine, named by the zip, so every local rank finds the same folder.
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    dest = Path(tempfile.gettempdir()) / f"resnet_demo_data_{key}"
    if d.local_rank == 0:
        shutil.rmtree(dest, ignore_errors=True)
        safe_extract_zip(path, dest)
    if d.world > 1:
        dist.barrier()
    return dest, dest


def _workers(cfg: FinetuneConfig, d: _Dist) -> int:
    if cfg.workers is not None:
        return cfg.workers
    return max(0, min(8, available_cores() // d.world - 1))


# ----------------------------------------------------------------------------- evaluation


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool,
    d: _Dist,
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
    loss_sum, top1, top5, n = _all_sum([loss_sum, top1, top5, n], device, d)
    n = max(n, 1.0)
    return {"loss": loss_sum / n, "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n}


# ----------------------------------------------------------------------------- training


class _Stopped(Exception):
    """The stop event was set (the app's cancel button)."""


def _log(d: _Dist, message: str) -> None:
    if d.main:
        tqdm.write(message, file=sys.stderr)


def finetune(
    config: FinetuneConfig,
    *,
    callback: Callable[[TrainEvent], None] | None = None,
    stop: threading.Event | None = None,
) -> FinetuneResult:
    """Run the fine-tune that ``config`` describes; see the module docstring for the files.

    ``callback`` gets a :class:`TrainEvent` at the start, after every optimizer step,
    after every epoch and at the end (rank 0 only). Setting ``stop`` ends the run at the
    next step with a usable ``last.pth``; so does Ctrl-C (which is then re-raised).
    A NaN or infinite loss raises :class:`TrainingDiverged` and writes nothing more.
    """
    cfg = dataclasses.replace(config)
    _validate(cfg)
    d = _setup_distributed(cfg.device)
    cleanup: Path | None = None
    try:
        data_root, cleanup = _prepare_data(cfg.data, d)
        return _Run(cfg, d, data_root, callback, stop).run()
    finally:
        try:
            if cleanup is not None and d.world > 1:
                dist.barrier()  # every rank is done reading the unpacked zip
        finally:
            if cleanup is not None and d.local_rank == 0:
                shutil.rmtree(cleanup, ignore_errors=True)
            if d.owned:
                dist.destroy_process_group()


def _validate(cfg: FinetuneConfig) -> None:
    checks = [
        (cfg.arch in ARCHES, f"--arch must be one of {', '.join(ARCHES)}, not {cfg.arch!r}."),
        (cfg.freeze in FREEZE_MODES, f"--freeze must be one of {', '.join(FREEZE_MODES)}, not {cfg.freeze!r}."),
        (cfg.optimizer in ("sgd", "adamw"), f"--optimizer must be sgd or adamw, not {cfg.optimizer!r}."),
        (cfg.amp in ("auto", "fp16", "bf16", "off"), f"--amp must be auto, fp16, bf16 or off, not {cfg.amp!r}."),
        (cfg.extra_eval in ("none", "ten-crop", "multi-scale"), "--extra-eval must be none, ten-crop or multi-scale."),
        (cfg.epochs >= 1, "--epochs must be at least 1."),
        (cfg.batch_size >= 1, "--batch-size must be at least 1."),
        (cfg.accum_steps >= 1, "--accum-steps must be at least 1."),
        (cfg.lr > 0, "--lr must be positive."),
        (cfg.image_size >= 32, "--image-size must be at least 32: the network halves the image five times."),
        (0 <= cfg.label_smoothing < 1, "--label-smoothing must be in [0, 1)."),
        (cfg.clip_grad_norm >= 0, "--clip-grad-norm must be 0 (off) or positive."),
        (cfg.warmup_epochs >= 0, "--warmup-epochs must be 0 or more."),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


class _Run:
    """One fine-tune, split into steps small enough to read. Not reusable."""

    def __init__(
        self,
        cfg: FinetuneConfig,
        d: _Dist,
        data_root: Path,
        callback: Callable[[TrainEvent], None] | None,
        stop: threading.Event | None,
    ) -> None:
        self.cfg, self.d, self.stop = cfg, d, stop
        self.callback = callback if d.main else None
        self.out = Path(cfg.out)
        self.last_path, self.best_path = self.out / "last.pth", self.out / "best.pth"
        self.last_good: Path | None = None  # the newest checkpoint this run wrote or resumed from
        self.history: list[dict[str, Any]] = []
        self.best_top1 = -1.0
        self.best_state: dict[str, Tensor] | None = None
        self.epoch = self.batches_done = self.global_step = 0
        self.device = resolve_device(cfg.device, local_rank=d.local_rank)
        self.amp_dtype = _resolve_amp(cfg.amp, self.device)
        self.images = load_image_set(data_root, val_fraction=cfg.val_fraction, seed=cfg.seed)

    # -- setup

    def _emit(self, kind: Literal["start", "step", "epoch", "done"], **data: Any) -> None:
        if self.callback is not None:
            self.callback(TrainEvent(kind, self.epoch, self.global_step, self.total_steps, data))

    def _setup(self) -> None:
        cfg, d, images = self.cfg, self.d, self.images
        resume = _safe_load(Path(cfg.resume)) if cfg.resume else None
        if resume is not None:
            self._check_resume(resume, images)
        torch.manual_seed(cfg.seed)  # the new head's init
        # A resumed run overwrites every weight, so it needs no download of the init weights.
        model, pre = build_finetune_model(
            arch=cfg.arch,
            weights="random" if resume is not None else cfg.weights,
            num_classes=images.num_classes,
            freeze=cfg.freeze,
        )
        if resume is not None:
            model.load_state_dict(resume["model"])
            pre = Preprocessing.from_dict(resume["preprocessing"])
        self.preprocessing = Preprocessing(
            resize_size=cfg.eval_resize_size, crop_size=cfg.image_size, mean=pre.mean, std=pre.std
        )
        self.fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        model = model.to(self.device, memory_format=self.fmt)
        self.model = model
        self.ddp: nn.Module = model
        if d.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = _make_optimizer(model, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

        train_ds = ImageListDataset(
            images.train,
            train_transform(
                crop_size=cfg.image_size,
                scale_range=cfg.scale_range,
                mean=pre.mean,
                std=pre.std,
                random_resized_crop=cfg.random_resized_crop,
                color_jitter=cfg.color_jitter,
            ),
        )
        if len(train_ds) < cfg.batch_size * d.world:
            raise UserError(
                f"--batch-size {cfg.batch_size} x {d.world} process(es) is more than the {len(train_ds)} "
                f"training images; lower --batch-size."
            )
        self.train_ds = train_ds
        self.sampler = DistributedSampler(train_ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed)
        self.batches_per_epoch = len(self.sampler) // cfg.batch_size  # drop_last: BN hates a 1-image batch
        self.steps_per_epoch = optimizer_steps_per_epoch(self.batches_per_epoch, cfg.accum_steps)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.warmup_steps = warmup_steps_for(cfg, self.steps_per_epoch)
        self.bn_eval = cfg.freeze_bn if cfg.freeze_bn is not None else cfg.batch_size < 8
        self.workers = _workers(cfg, d)
        val_tf = eval_transform(crop_size=cfg.image_size, resize_size=cfg.eval_resize_size, mean=pre.mean, std=pre.std)
        self.val_loader = self._eval_loader(val_tf)

        if resume is not None:
            self.optimizer.load_state_dict(resume["optimizer"])
            self.scaler.load_state_dict(resume["scaler"])
            self.epoch, self.batches_done = int(resume["epoch"]), int(resume["batches_done"])
            self.global_step = int(resume["global_step"])
            self.best_top1 = float(resume["best_top1"])
            self.history = list(resume["metrics"])
            self.last_good = Path(cfg.resume)  # type: ignore[arg-type]

    def _check_resume(self, ckpt: Any, images: ImageSet) -> None:
        cfg = self.cfg
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "optimizer" not in ckpt:
            raise UserError(f"{cfg.resume} is not a last.pth of this fine-tune routine; resume from a run's last.pth.")
        if ckpt["arch"] != cfg.arch:
            raise UserError(f"{cfg.resume} is a {ckpt['arch']} run; resume it with --arch {ckpt['arch']}.")
        if tuple(ckpt["class_names"]) != images.class_names:
            raise UserError(
                f"{cfg.resume} was trained on classes {', '.join(ckpt['class_names'])}, but the data has "
                f"{', '.join(images.class_names)}; resume with the same data."
            )
        saved = ckpt.get("config", {})
        for k in ("freeze", "optimizer"):  # they shape the optimizer state, which must load as it was
            if k in saved and saved[k] != getattr(cfg, k):
                raise UserError(f"{cfg.resume} was trained with --{k} {saved[k]}; resume it with the same --{k}.")
        changed = [
            f"{k} {saved[k]!r} -> {getattr(cfg, k)!r}"
            for k in _RECIPE_FIELDS
            if k in saved and saved[k] != getattr(cfg, k)
        ]
        if changed:
            _log(self.d, f"warning: resuming with a changed recipe, so not an exact continuation: {'; '.join(changed)}")

    def _loader(
        self, dataset: Any, sampler: Sampler[int], batch_size: int, *, drop_last: bool, seed: int
    ) -> DataLoader:
        # A fresh generator per epoch seeds the workers' augmentation, so epoch e draws
        # the same crops whether or not the run was resumed before it.
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            drop_last=drop_last,
            generator=torch.Generator().manual_seed(seed),
        )

    def _eval_loader(self, transform: Callable[..., Any], batch_size: int | None = None) -> DataLoader:
        ds = ImageListDataset(self.images.val, transform)
        sampler = _Shard(len(ds), self.d.rank, self.d.world)
        return self._loader(ds, sampler, batch_size or self.cfg.batch_size, drop_last=False, seed=0)

    # -- checkpoints

    def _checkpoint(self, *, full: bool, val_top1: float | None, complete: bool = False) -> dict[str, Any]:
        ckpt: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "arch": self.cfg.arch,
            "class_names": list(self.images.class_names),
            "model": _cpu_state(self.model),
            "preprocessing": self.preprocessing.to_dict(),
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,  # the next epoch to run
            "batches_done": self.batches_done,  # micro-batches of that epoch already done
            "global_step": self.global_step,
            "total_steps": self.total_steps,
            "best_top1": self.best_top1,
            "val_top1": val_top1,
            "metrics": self.history,
            "complete": complete,
        }
        if full:
            ckpt["optimizer"] = self.optimizer.state_dict()
            ckpt["scaler"] = self.scaler.state_dict()
        return ckpt

    def _save_last(self, *, val_top1: float | None, complete: bool = False) -> None:
        if self.d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_save(self._checkpoint(full=True, val_top1=val_top1, complete=complete), self.last_path)
            self.last_good = self.last_path

    # -- the loop

    def run(self) -> FinetuneResult:
        cfg, d = self.cfg, self.d
        self.total_steps = 0
        self._setup()
        if d.main:
            self.out.mkdir(parents=True, exist_ok=True)
        start = {
            "images": self.images.summary(),
            "device": str(self.device),
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "float32",
            "processes": d.world,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup_steps": self.warmup_steps,
            "bn_eval": self.bn_eval,
            "trainable_params": sum(p.numel() for p in self.params),
        }
        _log(
            d,
            f"fine-tune {cfg.arch} ({cfg.freeze} trains) on {start['device']}, {start['amp']}, "
            f"{d.world} process(es): {start['images']}",
        )
        self._emit("start", **start)
        cancelled = False
        try:
            while self.epoch < cfg.epochs:
                self._train_epoch()
        except _Stopped:
            cancelled = True
            self._save_last(val_top1=None)
            _log(d, f"cancelled; checkpoint saved at {self.last_path}; continue with --resume {self.last_path}")
        except KeyboardInterrupt:
            self._save_last(val_top1=None)
            _log(d, f"interrupted; checkpoint saved at {self.last_path}; continue with --resume {self.last_path}")
            raise
        summary = self._finish(cancelled)
        self._emit("done", cancelled=cancelled, summary=summary)
        return FinetuneResult(
            out=self.out,
            best=self.best_path if self.best_path.exists() else None,
            last=self.last_path if self.last_path.exists() else None,
            class_names=self.images.class_names,
            metrics=self.history,
            summary=summary,
            cancelled=cancelled,
        )

    def _groups(self) -> list[int]:
        """Sizes of the accumulation groups of this epoch not done yet."""
        acc, n = self.cfg.accum_steps, self.batches_per_epoch
        return [min(acc, n - start) for start in range(0, n, acc) if start >= self.batches_done]

    def _train_epoch(self) -> None:
        cfg, d = self.cfg, self.d
        epoch = self.epoch
        self.sampler.set_epoch(epoch)
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # augmentation in the main process (workers=0)
        skip = self.batches_done * cfg.batch_size
        sampler: Sampler[int] = _Skip(self.sampler, skip) if skip else self.sampler
        loader = self._loader(self.train_ds, sampler, cfg.batch_size, drop_last=True, seed=cfg.seed * 100_003 + epoch)
        set_train_mode(self.model, freeze=cfg.freeze, bn_eval=self.bn_eval)
        losses, top1, grad_norms = AverageMeter(), AverageMeter(), AverageMeter()
        groups = self._groups()
        bar = tqdm(
            total=len(groups),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="step",
            disable=not (cfg.progress and d.main),
            leave=False,
            dynamic_ncols=True,
        )
        seen, t0 = 0, time.perf_counter()
        it = iter(loader)
        try:
            for size in groups:
                if self.stop is not None and self.stop.is_set():
                    raise _Stopped
                lr = get_lr(
                    self.global_step,
                    base_lr=cfg.lr,
                    total_steps=self.total_steps,
                    warmup_steps=self.warmup_steps,
                    min_lr=cfg.lr * cfg.min_lr_ratio,
                )
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                step_loss = torch.zeros((), device=self.device)
                step_correct = torch.zeros((), device=self.device)
                step_n = 0
                for j in range(size):
                    images, targets = next(it)
                    images = images.to(self.device, non_blocking=True, memory_format=self.fmt)  # (B, 3, H, W)
                    targets = targets.to(self.device, non_blocking=True)
                    # Gradients are all-reduced once per optimizer step, not once per micro-batch.
                    sync = j == size - 1 or not isinstance(self.ddp, nn.parallel.DistributedDataParallel)
                    ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()  # type: ignore[operator]
                    with ctx:
                        loss, logits = forward_backward(
                            self.ddp,
                            images,
                            targets,
                            criterion=self.criterion,
                            amp_dtype=self.amp_dtype,
                            scaler=self.scaler,
                            loss_divisor=size,
                        )
                    step_loss += loss.float() * targets.shape[0]
                    step_correct += accuracy(logits.float(), targets)[0]
                    step_n += targets.shape[0]
                # One sum over processes: every rank sees a NaN anywhere and stops together.
                local = torch.stack([step_loss, step_correct]).tolist()  # one device sync per step
                total_loss, total_correct, total_n = _all_sum([*local, float(step_n)], self.device, d)
                mean_loss = total_loss / total_n
                if not math.isfinite(mean_loss):
                    self._diverged(mean_loss, lr)
                grad_norm = clip_gradients(self.optimizer, self.scaler, self.params, max_norm=cfg.clip_grad_norm)
                if not math.isfinite(grad_norm) and not self.scaler.is_enabled():
                    self._diverged(grad_norm, lr, what="gradient norm")
                apply_step(self.optimizer, self.scaler)
                self.global_step += 1
                self.batches_done += size
                seen += step_n
                losses.update(mean_loss, int(total_n))
                top1.update(100.0 * total_correct / total_n, int(total_n))
                if math.isfinite(grad_norm):
                    grad_norms.update(grad_norm)
                bar.update(1)
                bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.2e}")
                self._emit("step", loss=mean_loss, lr=lr, grad_norm=grad_norm)
        finally:
            bar.close()
            del it  # stops the loader's worker processes now
        train_time = time.perf_counter() - t0
        self._sync_buffers()
        val = evaluate(
            self.model,
            self.val_loader,
            device=self.device,
            amp_dtype=self.amp_dtype,
            channels_last=cfg.channels_last,
            d=d,
        )
        images_per_s = _all_sum([seen / max(train_time, 1e-9)], self.device, d)[0]
        row = {
            "epoch": epoch + 1,
            "step": self.global_step,
            "train_loss": losses.avg,
            "train_top1": top1.avg,
            "val_loss": val["loss"],
            "val_top1": val["top1"],
            "val_top5": val["top5"],
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": images_per_s,
            "grad_norm": grad_norms.avg,
            "time_s": train_time,
        }
        self.history.append(row)
        self.epoch, self.batches_done = epoch + 1, 0
        improved = val["top1"] > self.best_top1
        if improved:
            self.best_top1 = val["top1"]
            self.best_state = _cpu_state(self.model)  # every rank keeps it, for the extra test
        if d.main:
            self._save_last(val_top1=val["top1"], complete=self.epoch == cfg.epochs)
            if improved:
                atomic_save(self._checkpoint(full=False, val_top1=val["top1"]), self.best_path)
            _atomic_write_text("".join(json.dumps(r) + "\n" for r in self.history), self.out / "metrics.jsonl")
        _log(
            d,
            f"epoch {epoch + 1}/{cfg.epochs}: train loss {losses.avg:.4f}, val loss {val['loss']:.4f}, "
            f"val top-1 {val['top1']:.1f}%, top-5 {val['top5']:.1f}%, {images_per_s:.1f} images/s",
        )
        self._emit("epoch", **row)

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm statistics, so all evaluate the model rank 0 saves."""
        if self.d.world > 1:
            for b in self.model.buffers():
                dist.broadcast(b, src=0)

    def _diverged(self, value: float, lr: float, *, what: str = "loss") -> None:
        where = (
            f"The last good checkpoint, {self.last_good}, was left as it was."
            if self.last_good is not None
            else "No checkpoint had been written yet."
        )
        raise TrainingDiverged(
            f"Training diverged: the {what} became {value} at epoch {self.epoch + 1}, optimizer step "
            f"{self.global_step + 1} (learning rate {lr:.3g}), so the run stopped without saving that state. "
            f"{where} Try a learning rate 10x lower."
        )

    def _finish(self, cancelled: bool) -> dict[str, Any]:
        cfg, d = self.cfg, self.d
        summary: dict[str, Any] = {
            "arch": cfg.arch,
            "class_names": list(self.images.class_names),
            "train_images": len(self.images.train),
            "val_images": len(self.images.val),
            "skipped_images": len(self.images.skipped),
            "split": self.images.split,
            "epochs_done": self.epoch,
            "steps_done": self.global_step,
            "cancelled": cancelled,
            "best_val_top1": self.best_top1 if self.history else None,
            "best": str(self.best_path) if self.best_path.exists() else None,
            "last": str(self.last_path) if self.last_path.exists() else None,
        }
        if self.history:
            best = max(self.history, key=lambda r: r["val_top1"])
            summary["center_crop"] = {k: best[f"val_{k}"] for k in ("loss", "top1", "top5")}
        if self.best_state is None and self.best_path.exists() and d.world == 1:
            self.best_state = _safe_load(self.best_path)["model"]  # resumed after the best epoch
        if cfg.extra_eval != "none" and not cancelled and self.best_state is not None:
            # Both results for the same (best) weights: the single crop and the multi-view test.
            self.model.load_state_dict(self.best_state)
            sizes = [cfg.eval_resize_size]
            if cfg.extra_eval == "multi-scale":
                sizes = [cfg.eval_resize_size, cfg.scaled(320), cfg.scaled(384)]
            tf = multi_view_transform(
                crop_size=cfg.image_size, resize_sizes=sizes, mean=self.preprocessing.mean, std=self.preprocessing.std
            )
            views = self._eval_loader(tf, batch_size=max(1, cfg.batch_size // (10 * len(sizes))))
            summary[cfg.extra_eval] = evaluate(
                self.model, views, device=self.device, amp_dtype=self.amp_dtype, channels_last=cfg.channels_last, d=d
            )
            _log(
                d,
                f"{cfg.extra_eval} test of best.pth: top-1 {summary[cfg.extra_eval]['top1']:.1f}% "
                f"(center crop {summary['center_crop']['top1']:.1f}%)",
            )
        if d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            _atomic_write_text(json.dumps(summary, indent=2) + "\n", self.out / "summary.json")
        return summary


# ----------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class StepTiming:
    """Measured seconds per image, for estimating a run before starting it."""

    train_s: float  # one training step, per image
    eval_s: float  # one evaluation forward, per image
    device: str


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
    amp = _resolve_amp("auto", dev)
    x = torch.randn(n, 3, image_size, image_size, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.zeros(n, dtype=torch.long, device=dev)
    criterion = nn.CrossEntropyLoss()

    def train_once() -> float:
        set_train_mode(model, freeze=freeze, bn_eval=False)
        t0 = time.perf_counter()
        forward_backward(model, x, y, criterion=criterion, amp_dtype=amp, scaler=scaler, loss_divisor=1)
        apply_step(optimizer, scaler)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t0

    train_once()
    train_s = train_once() / n
    model.eval()
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        eval_s = (time.perf_counter() - t0) / n
    return StepTiming(train_s=train_s, eval_s=eval_s, device=str(dev))


def estimate_seconds(timing: StepTiming, *, epochs: int, train_images: int, val_images: int) -> float:
    """Seconds for a run: every epoch trains on every image and evaluates every
    validation image; plus about 2 s per epoch for checkpoints and 10 s of set-up."""
    per_epoch = train_images * timing.train_s + val_images * timing.eval_s + 2.0
    return 10.0 + epochs * per_epoch


# ----------------------------------------------------------------------------- CLI

# CLI flag -> (config field, argparse kwargs). Defaults are None so that with
# --resume, every flag not given is taken from the checkpoint's config.
_DEFAULTS = FinetuneConfig()


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    a = parser.add_argument
    a("--data", help="folder of class sub-folders (or train/ and val/), or a .zip of one")
    a("--out", help=f"output folder (default {d.out})")
    a("--arch", choices=ARCHES, help=f"architecture (default {d.arch})")
    a("--weights", help=f"init weights: imagenet-v2, imagenet-v1, random or a .pth path (default {d.weights})")
    a("--freeze", choices=FREEZE_MODES, help=f"what trains: head, layer4 (+ head) or none frozen (default {d.freeze})")
    a("--freeze-bn", type=_bool, metavar="BOOL", help="BatchNorm in eval mode (default: when batch < 8)")
    a("--epochs", type=int, help=f"default {d.epochs}")
    a("--batch-size", type=int, help=f"images per micro-batch per process (default {d.batch_size})")
    a("--accum-steps", type=int, help=f"micro-batches per optimizer step (default {d.accum_steps})")
    a("--optimizer", choices=("sgd", "adamw"), help=f"default {d.optimizer}")
    a("--lr", type=float, help=f"peak learning rate (default {d.lr})")
    a("--momentum", type=float, help=f"SGD momentum (default {d.momentum})")
    a("--weight-decay", type=float, help=f"default {d.weight_decay}")
    a("--warmup-epochs", type=float, help=f"linear warmup length (default {d.warmup_epochs})")
    a("--min-lr-ratio", type=float, help=f"cosine floor as a fraction of --lr (default {d.min_lr_ratio})")
    a("--label-smoothing", type=float, help=f"default {d.label_smoothing}")
    a("--clip-grad-norm", type=float, help=f"max gradient norm, 0 = off (default {d.clip_grad_norm})")
    a("--amp", choices=("auto", "fp16", "bf16", "off"), help="mixed precision (default auto: CUDA only)")
    a("--channels-last", type=_bool, metavar="BOOL", help=f"NHWC memory layout (default {d.channels_last})")
    a("--device", help="auto, cpu, cuda, cuda:N (default auto)")
    a("--workers", type=int, help="data loading processes (default: CPUs per process - 1, at most 8)")
    a("--image-size", type=int, help=f"crop side (default {d.image_size})")
    a("--scale-min", type=int, help="short side range start for the random scale (default 256 at 224)")
    a("--scale-max", type=int, help="short side range end (default 480 at 224)")
    a("--random-resized-crop", type=_bool, metavar="BOOL", help="RandomResizedCrop instead of scale + crop")
    a("--color-jitter", type=float, help=f"default {d.color_jitter}")
    a("--eval-resize", type=int, help="short side before the eval center crop (default 256 at 224)")
    a("--extra-eval", choices=("none", "ten-crop", "multi-scale"), help="also report this test at the end")
    a("--val-fraction", type=float, help=f"held out per class without a val/ folder (default {d.val_fraction})")
    a("--seed", type=int, help=f"default {d.seed}")
    a("--resume", metavar="LAST_PTH", help="continue a run; options not given are taken from its checkpoint")
    a("--no-progress", dest="progress", action="store_const", const=False, help="no progress bar")
    a("--make-sample", metavar="DIR", help="write the generated sample set (coloured shapes) to DIR and exit")


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """Defaults, or the resumed checkpoint's config, overridden by the flags given."""
    base = _DEFAULTS
    if getattr(args, "resume", None):
        ckpt = _safe_load(Path(args.resume))
        if not isinstance(ckpt, dict) or "config" not in ckpt:
            raise UserError(f"{args.resume} is not a last.pth of this fine-tune routine.")
        base = FinetuneConfig.from_dict(ckpt["config"])
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(FinetuneConfig)
        if getattr(args, f.name, None) is not None
    }
    return dataclasses.replace(base, **given)


def main(args: argparse.Namespace) -> int:
    if getattr(args, "make_sample", None):
        root = make_sample_dataset(args.make_sample, num_classes=3, images_per_class=40, image_size=160)
        print(f"wrote 3 classes x 40 images to {root}\nfine-tune on it: python -m resnet_demo finetune --data {root}")
        return 0
    cfg = config_from_args(args)
    result = finetune(cfg)
    if result.cancelled:
        return 130
    best = result.summary.get("best_val_top1")
    print(
        f"done: best val top-1 {best:.1f}% -> {result.best}\n"
        f"explain it: python -m resnet_demo explain IMAGE --arch {cfg.arch} --weights {result.best}"
    )
    return 0
