"""Where a fine-tune run starts: the model it trains with its optimizer, scaler and loss, and
how far it has come. Fresh (``cfg.weights`` with a new head, or the caller's builder: the
slim command starts from a pruned model) or resumed from a ``last.pth``, whose optimizer
and scaler state and progress are loaded here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.checkpoint_files import check_widths
from ..core.errors import UserError
from ..core.model import ResNet, build_model
from ..core.process_group import Dist
from ..core.weights import Preprocessing, read_pth, state_dict_fit_problem
from .build import build_finetune_model, make_optimizer, prepare_for_training
from .checkpoints import Progress, check_resume
from .config import FinetuneConfig
from .distill import make_criterion
from .distributed import log_main

__all__ = ["ModelBuilder", "RunStart", "start_run"]

# The starting model of a run, given the data's class names: (model, preprocessing).
ModelBuilder = Callable[[tuple[str, ...]], tuple[ResNet, Preprocessing]]


@dataclass
class RunStart:
    """What a run trains, on its device, and how far it has come."""

    model: ResNet
    ddp: nn.Module  # the model, or its DistributedDataParallel wrapper under several processes
    params: list[nn.Parameter]  # the trainable ones, for gradient clipping
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    teacher: ResNet | None  # the distillation teacher, if any
    preprocessing: Preprocessing  # what the run's checkpoints record
    memory_format: torch.memory_format
    progress: Progress
    resumed_from: Path | None  # the last.pth this run continues


def start_run(
    cfg: FinetuneConfig,
    *,
    d: Dist,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    class_names: tuple[str, ...],
    build: ModelBuilder | None = None,
) -> RunStart:
    """Build (or rebuild from ``cfg.resume``, checked against ``cfg`` and the data's
    ``class_names``) the model, optimizer, scaler and loss of a run on ``device``."""
    resume = read_pth(Path(cfg.resume)) if cfg.resume else None
    if resume is not None:
        check_resume(resume, cfg=cfg, class_names=class_names, warn=lambda m: log_main(d, m))
    torch.manual_seed(cfg.seed)  # the new head's init
    model, pre = _initial_model(cfg, resume, class_names, build)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=fmt)
    ddp: nn.Module = model
    if d.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    optimizer = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    criterion, teacher = make_criterion(cfg, class_names=class_names, device=device)
    progress, resumed_from = Progress(), None
    if resume is not None:
        name = Path(str(cfg.resume)).name
        try:  # torch checks the optimizer state's shape against the parameters; its errors are tracebacks
            optimizer.load_state_dict(resume["optimizer"])
            scaler.load_state_dict(resume["scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
            raise UserError(f"The optimizer state in {name} does not fit this run ({type(e).__name__}).") from e
        progress, resumed_from = Progress.from_checkpoint(resume), Path(str(cfg.resume))
    return RunStart(
        model=model,
        ddp=ddp,
        params=[p for p in model.parameters() if p.requires_grad],
        optimizer=optimizer,
        scaler=scaler,
        criterion=criterion,
        teacher=teacher,
        # The run's own sizes, with the starting weights' normalisation.
        preprocessing=Preprocessing(
            resize_size=cfg.eval_resize_size, crop_size=cfg.image_size, mean=pre.mean, std=pre.std
        ),
        memory_format=fmt,
        progress=progress,
        resumed_from=resumed_from,
    )


def _initial_model(
    cfg: FinetuneConfig, resume: dict[str, Any] | None, class_names: tuple[str, ...], build: ModelBuilder | None
) -> tuple[ResNet, Preprocessing]:
    """The model before training, with the preprocessing of its weights."""
    if resume is not None:
        # A resumed run overwrites every weight: no init weights to download, only the widths to build.
        name = Path(str(cfg.resume)).name
        widths = check_widths(resume.get("widths"), name=name, arch=cfg.arch)
        model = build_model(cfg.arch, num_classes=len(class_names), widths=widths)
        problem = state_dict_fit_problem(model, resume["model"])
        if problem is not None:
            raise UserError(f"The weights in {name} do not fit a {cfg.arch} of {len(class_names)} classes: {problem}.")
        model.load_state_dict(resume["model"])
        prepare_for_training(model, freeze=cfg.freeze)
        return model, Preprocessing.from_dict(resume["preprocessing"], name=name)
    if build is not None:
        return build(class_names)
    return build_finetune_model(arch=cfg.arch, weights=cfg.weights, num_classes=len(class_names), freeze=cfg.freeze)
