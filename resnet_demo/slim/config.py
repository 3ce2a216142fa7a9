"""The settings of a slim run: the fine-tune recipe, plus what to prune and how to measure it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import UserError
from ..core.weights import NAMED_WEIGHTS
from ..finetune import FinetuneConfig, validate_config
from .prune import check_prune

__all__ = ["SlimConfig", "validate_slim"]


@dataclass
class SlimConfig(FinetuneConfig):
    """A :class:`~resnet_demo.finetune.FinetuneConfig` (the recovery fine-tune's recipe, with
    ``weights`` the fine-tuned checkpoint to slim) and the pruning. Stored in every checkpoint."""

    out: str = "slim-out"  # folder for last.pth, best.pth, metrics.jsonl, summary.json, slim.json, slim.md
    weights: str = ""  # the fine-tuned checkpoint to slim (a .pth that records its class names)
    freeze: str = "none"  # every block lost channels, so every block retrains
    epochs: int = 5  # recovery: the pruned model starts close, a few epochs usually suffice
    prune: float = 0.3  # fraction of the inner channels (conv1 and conv2 outputs) removed per block
    criterion: str = "bn-scale"  # "bn-scale" (Liu et al. 2017) or "l1" (filter norm, Li et al. 2017)
    skip_stages: list[str] = field(default_factory=list)  # stages kept whole, e.g. ["layer1", "layer4"]
    round_to: int = 1  # kept widths rounded up to a multiple of this; 8 suits oneDNN and tensor cores
    latency_repeats: int = 20  # timed batch-1 forwards per model in the report (medians)


def validate_slim(cfg: SlimConfig, *, server: bool = False) -> None:
    """The fine-tune checks, the pruning's, and a checkpoint file to start from."""
    check_prune(fraction=cfg.prune, criterion=cfg.criterion, skip=cfg.skip_stages, round_to=cfg.round_to)
    if not cfg.resume:
        if not cfg.weights or cfg.weights in NAMED_WEIGHTS:
            raise UserError(
                "Slim needs the fine-tuned checkpoint to slim (--weights PATH, a .pth or .safetensors written by finetune), "
                "not named weights."
            )
        if not Path(cfg.weights).expanduser().is_file():
            raise UserError(f"The checkpoint to slim, {Path(cfg.weights).name[:80]!r}, does not exist.")
    if cfg.latency_repeats < 1:
        raise UserError("The latency repeats must be at least 1.")
    # The starting weights are a checkpoint here, never named ones: the server rule on them does not apply.
    validate_config(cfg, server=False)
    if server:
        validate_config(_named(cfg), server=True)


def _named(cfg: SlimConfig) -> FinetuneConfig:
    """``cfg`` with named starting weights, for the server's bounds on everything else."""
    return FinetuneConfig.from_dict({**cfg.to_dict(), "weights": NAMED_WEIGHTS[0]})
