"""The files a fine-tune writes (``last.pth``, ``best.pth`` and ``best.safetensors``), and reading
``last.pth`` back to resume.

Every file is written to a temporary name in the same folder and renamed, so a crash
or Ctrl-C never leaves half a file. The checkpoint layout is the one
:func:`resnet_demo.core.weights.load_model` reads (``CHECKPOINT_FORMAT``).
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

from ..core.checkpoint_files import check_class_names, check_tensors, is_state_dict, read_pth
from ..core.errors import UserError
from ..core.model import ResNet
from ..core.safetensors_files import write_safetensors
from ..core.weights import ARCHES, CHECKPOINT_FORMAT, Preprocessing
from .config import RECIPE_FIELDS, FinetuneConfig

__all__ = [
    "Progress",
    "atomic_save",
    "atomic_save_safetensors",
    "atomic_write_text",
    "check_resume",
    "checkpoint_arch",
    "cpu_state",
    "make_checkpoint",
    "same_classes",
]


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


def atomic_save_safetensors(*, checkpoint: dict[str, Any], path: Path) -> None:
    """``checkpoint`` (one without optimizer state) written as safetensors, as :func:`atomic_save` writes:
    a temporary name in the same folder, flushed to disk, then renamed."""
    with _replacing(path) as tmp:
        write_safetensors(obj=checkpoint, path=tmp)
        with open(tmp, "rb+") as f:
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
    model: ResNet,
    preprocessing: Preprocessing,
    progress: Progress,
    total_steps: int,
    val_top1: float | None,
    complete: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, Any]:
    """The checkpoint dict: model, its inner widths, classes, preprocessing and recipe, which
    is all that ``best.pth`` needs; ``last.pth`` also passes ``optimizer`` and ``scaler`` to resume.

    The widths (one (conv1, conv2) output pair per block) let a channel-pruned model be
    built before its weights load; plain lists, so ``weights_only`` loading reads them."""
    ckpt: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "arch": cfg.arch,
        "class_names": list(class_names),
        "model": cpu_state(model),
        "widths": [list(pair) for pair in model.widths()],
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


def checkpoint_arch(source: str, *, role: str) -> str:
    """The architecture a checkpoint file records; :class:`UserError` (``role`` names the file's
    part, e.g. "The teacher") unless it is a checkpoint of this project with class names."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise UserError(f"{role} {path.name[:80]!r} is not an existing checkpoint file.")
    obj = read_pth(path)
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT or "class_names" not in obj:
        raise UserError(
            f"{role} {path.name} has no class names: use a checkpoint written by finetune or slim, which records them."
        )
    if obj.get("arch") not in ARCHES:
        raise UserError(f"{role} {path.name} does not say which of {', '.join(ARCHES)} it is.")
    return str(obj["arch"])


def _few(names: tuple[str, ...]) -> str:
    return ", ".join(n[:40] for n in names[:3]) + (", ..." if len(names) > 3 else "")


def same_classes(theirs: tuple[str, ...], ours: tuple[str, ...], *, what: str, remedy: str) -> None:
    """:class:`UserError` unless ``what`` (e.g. "The teacher x.pth") predicts the classes ``ours``, in order."""
    if tuple(theirs) != tuple(ours):
        raise UserError(
            f"{what} predicts {len(theirs)} classes ({_few(theirs)}), not the {len(ours)} of the data "
            f"({_few(ours)}): {remedy}"
        )


def _check_progress(ckpt: dict[str, Any], *, name: str) -> None:
    """The progress fields of a ``last.pth`` (input like any file): counts, the best accuracy, the
    metrics rows, and the optimizer's and scaler's states as dicts."""
    for key in ("epoch", "batches_done", "global_step"):
        value = ckpt.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**40:
            raise UserError(f"{name} is not a usable last.pth: its {key} is not a count.")
    best = ckpt.get("best_top1")
    if not isinstance(best, (int, float)) or isinstance(best, bool) or not -1.0 <= best <= 100.0:
        raise UserError(f"{name} is not a usable last.pth: its best_top1 is not an accuracy.")
    if not isinstance(ckpt.get("metrics"), list) or not all(isinstance(r, dict) for r in ckpt["metrics"]):
        raise UserError(f"{name} is not a usable last.pth: its metrics are not a list of rows.")
    if not isinstance(ckpt.get("optimizer"), dict) or not isinstance(ckpt.get("scaler"), dict):
        raise UserError(f"{name} is not a usable last.pth: its optimizer or scaler state is missing.")


def check_resume(ckpt: Any, *, cfg: FinetuneConfig, class_names: tuple[str, ...], warn: Callable[[str], None]) -> None:
    """Raise :class:`UserError` unless ``ckpt`` is a ``last.pth`` this run can continue;
    ``warn`` hears of recipe changes that make the continuation inexact."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "optimizer" not in ckpt:
        raise UserError(f"{cfg.resume} is not a last.pth of this fine-tune routine; resume from a run's last.pth.")
    name = Path(str(cfg.resume)).name
    if (
        ckpt.get("arch") not in ARCHES
        or not is_state_dict(ckpt.get("model"))
        or not isinstance(ckpt.get("config"), dict)
    ):
        raise UserError(f"{name} is not a usable last.pth: its arch, model or config is missing or malformed.")
    check_class_names(ckpt.get("class_names"), name=name, head_size=None)
    check_tensors(ckpt["model"], name=name)
    _check_progress(ckpt, name=name)
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
