"""A slim run: prune a fine-tuned checkpoint, fine-tune the smaller model to recover, report.

The recovery is :func:`resnet_demo.finetune.finetune` itself, started from the pruned
model: the same recipe and safety (AMP on CUDA, cosine learning rate, clipping,
accumulation, DDP under torchrun, atomic checkpoints, resume, cancel, NaN stop), with
``--distill-from`` a teacher's soft targets in the loss. Its checkpoints record the
pruned widths, so they load wherever a checkpoint loads.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.devices import resolve_device
from ..core.model import ResNet
from ..core.weights import LoadedModel, Preprocessing, load_model
from ..finetune import FinetuneResult, TrainEvent, finetune, prepare_for_training
from ..finetune.checkpoints import checkpoint_arch, same_classes
from .config import SlimConfig, validate_slim
from .prune import prune_model
from .report import SlimReport, build_report, evaluate_top1, measure_latency, write_report

__all__ = ["SlimResult", "load_source", "slim"]


@dataclass(frozen=True)
class SlimResult:
    """The recovery run's result and the report (None when cancelled, or on ranks other than 0)."""

    finetune: FinetuneResult
    report: SlimReport | None


def load_source(cfg: SlimConfig, *, class_names: tuple[str, ...] | None = None) -> LoadedModel:
    """The fine-tuned checkpoint to slim: it must record its class names, and predict
    ``class_names`` (the data's) when given; :class:`UserError` with one sentence otherwise."""
    checkpoint_arch(cfg.weights, role="The checkpoint to slim")
    loaded = load_model(arch=cfg.arch, weights=cfg.weights)
    if class_names is not None:
        same_classes(
            loaded.spec.categories,
            class_names,
            what=f"The checkpoint to slim, {Path(cfg.weights).name},",
            remedy="slim a model on the data it was fine-tuned on.",
        )
    return loaded


def _pruned(cfg: SlimConfig, model: ResNet) -> ResNet:
    return prune_model(model, fraction=cfg.prune, criterion=cfg.criterion, skip=cfg.skip_stages, round_to=cfg.round_to)


def slim(
    config: SlimConfig,
    *,
    callback: Callable[[TrainEvent], None] | None = None,
    stop: threading.Event | None = None,
) -> SlimResult:
    """Prune ``config.weights`` by ``config.prune``, fine-tune it to recover, and write
    ``slim.json`` and ``slim.md`` beside the fine-tune's files in ``config.out``.

    ``callback`` and ``stop`` are the fine-tune's (progress events; cancel with a usable
    ``last.pth``). A resumed run (``config.resume``) continues the recovery.
    """
    cfg = dataclasses.replace(config)
    validate_slim(cfg)

    def build(class_names: tuple[str, ...]) -> tuple[ResNet, Preprocessing]:
        loaded = load_source(cfg, class_names=class_names)
        return prepare_for_training(_pruned(cfg, loaded.model), freeze=cfg.freeze), loaded.spec.preprocessing

    result = finetune(cfg, callback=callback, stop=stop, build=build)
    main_rank = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 alone reports
    if result.cancelled or result.best is None or not main_rank:
        return SlimResult(result, None)
    report = _report(cfg, result.best)
    write_report(report, Path(cfg.out))
    return SlimResult(result, report)


def _report(cfg: SlimConfig, best: Path) -> SlimReport:
    """Measure the original, the pruned model before recovery, and the recovered one."""
    source = load_source(cfg)
    after = load_model(arch=cfg.arch, weights=str(best))
    models = {"original": source.model, "pruned": _pruned(cfg, source.model), "slim": after.model}
    pct = f"{100 * cfg.prune:g}%"
    recovery = f"{cfg.epochs} epoch(s) of recovery"
    if cfg.distill_from:
        recovery += f", distilled from {Path(cfg.distill_from).name}"
    labels = {
        "original": f"original {cfg.arch} ({Path(cfg.weights).name})",
        "pruned": f"pruned {pct} by {cfg.criterion}, before recovery",
        "slim": f"slim: pruned {pct} + {recovery}",
    }
    device = resolve_device(cfg.device)
    top1 = evaluate_top1(models, cfg=cfg, preprocessing=after.spec.preprocessing, device=device)
    # The pruned model has the slim one's widths, hence its speed: two models are timed.
    latency = measure_latency(
        {k: models[k] for k in ("original", "slim")}, image_size=cfg.image_size, repeats=cfg.latency_repeats
    )
    return build_report(cfg=cfg, models=models, labels=labels, top1=top1, latency=latency)
