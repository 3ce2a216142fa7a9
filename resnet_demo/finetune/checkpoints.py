"""The files a fine-tune writes, and reading ``last.pth`` back to resume.

Every file is written to a temporary name in the same folder and renamed, so a crash
or Ctrl-C never leaves half a file. The checkpoint layout is the one
:func:`resnet_demo.weights.load_model` reads (``CHECKPOINT_FORMAT``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint_files import check_class_names, check_tensors, is_state_dict
from ..errors import UserError
from ..weights import ARCHES, CHECKPOINT_FORMAT, Preprocessing
from .config import RECIPE_FIELDS, FinetuneConfig

__all__ = ["Progress", "atomic_save", "atomic_write_text", "check_resume", "cpu_state", "make_checkpoint"]


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write; renamed onto ``path`` once written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary name in the same folder, flush to disk, then rename:
    readers see the old file or the new one, never half of one."""
    with _replacing(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(text: str, path: Path) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary name and a rename."""
    with _replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def cpu_state(model: nn.Module) -> dict[str, Tensor]:
    """A CPU copy of the model's state_dict, detached from training."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}


@dataclass
class Progress:
    """How far a run has come: what a checkpoint stores and a resume continues from."""

    epoch: int = 0  # the next epoch to run
    batches_done: int = 0  # micro-batches of that epoch already done
    global_step: int = 0  # optimizer steps done, over the whole run
    best_top1: float = -1.0  # best validation top-1 so far
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one row per finished epoch

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> Progress:
        """The progress a ``last.pth`` recorded."""
        return cls(
            epoch=int(ckpt["epoch"]),
            batches_done=int(ckpt["batches_done"]),
            global_step=int(ckpt["global_step"]),
            best_top1=float(ckpt["best_top1"]),
            metrics=list(ckpt["metrics"]),
        )


def make_checkpoint(
    *,
    cfg: FinetuneConfig,
    class_names: tuple[str, ...],
    model: nn.Module,
    preprocessing: Preprocessing,
    progress: Progress,
    total_steps: int,
    val_top1: float | None,
    complete: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """The checkpoint dict: model, classes, preprocessing and recipe, which is all that
    ``best.pth`` needs; ``last.pth`` also passes ``optimizer`` and ``scaler`` to resume."""
    ckpt: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "arch": cfg.arch,
        "class_names": list(class_names),
        "model": cpu_state(model),
        "preprocessing": preprocessing.to_dict(),
        "config": cfg.to_dict(),
        "epoch": progress.epoch,
        "batches_done": progress.batches_done,
        "global_step": progress.global_step,
        "total_steps": total_steps,
        "best_top1": progress.best_top1,
        "val_top1": val_top1,
        "metrics": progress.metrics,
        "complete": complete,
    }
    if optimizer is not None and scaler is not None:
        ckpt["optimizer"] = optimizer.state_dict()
        ckpt["scaler"] = scaler.state_dict()
    return ckpt


def check_resume(ckpt: Any, *, cfg: FinetuneConfig, class_names: tuple[str, ...], warn: Callable[[str], None]) -> None:
    """Raise :class:`UserError` unless ``ckpt`` is a ``last.pth`` this run can continue;
    ``warn`` hears of recipe changes that make the continuation inexact."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "optimizer" not in ckpt:
        raise UserError(f"{cfg.resume} is not a last.pth of this fine-tune routine; resume from a run's last.pth.")
    name = Path(str(cfg.resume)).name
    if ckpt.get("arch") not in ARCHES or not is_state_dict(ckpt.get("model")) or not isinstance(ckpt.get("config"), dict):
        raise UserError(f"{name} is not a usable last.pth: its arch, model or config is missing or malformed.")
    check_class_names(ckpt.get("class_names"), name=name, head_size=None)
    check_tensors(ckpt["model"], name=name)
    if ckpt["arch"] != cfg.arch:
        raise UserError(f"{cfg.resume} is a {ckpt['arch']} run; resume it with --arch {ckpt['arch']}.")
    if tuple(ckpt["class_names"]) != class_names:
        raise UserError(
            f"{cfg.resume} was trained on classes {', '.join(ckpt['class_names'])}, but the data has "
            f"{', '.join(class_names)}; resume with the same data."
        )
    saved = ckpt["config"]
    for k in ("freeze", "optimizer"):  # they shape the optimizer state, which must load as it was
        if k in saved and saved[k] != getattr(cfg, k):
            raise UserError(f"{cfg.resume} was trained with --{k} {saved[k]}; resume it with the same --{k}.")
    changed = [
        f"{k} {saved[k]!r} -> {getattr(cfg, k)!r}" for k in RECIPE_FIELDS if k in saved and saved[k] != getattr(cfg, k)
    ]
    if changed:
        warn(f"warning: resuming with a changed recipe, so not an exact continuation: {'; '.join(changed)}")
