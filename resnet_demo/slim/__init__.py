"""Slim: structured channel pruning and knowledge distillation of a fine-tuned ResNet.

``python -m resnet_demo slim --arch resnet50 --weights best.pth --data DIR --prune 0.3``
removes 30% of the inner channels of every bottleneck block (ranked by BatchNorm scale
or filter L1 norm), fine-tunes the smaller model to recover (optionally distilled from a
teacher), and reports params, GMACs, CPU latency and validation top-1 before and after.

One concept per module: :mod:`.prune` (ranking channels and building the smaller model
from the kept slices), :mod:`.config` (the settings), :mod:`.run` (prune, then the
fine-tune routine to recover), :mod:`.report` (the measurements, ``slim.json`` and
``slim.md``), :mod:`.cli` (the command) and :mod:`.plots` (accuracy versus MACs, plotly,
imported on its own). The distillation loss lives with the fine-tune routine
(:mod:`resnet_demo.finetune.distill`), which uses it too.
"""

from __future__ import annotations

from .config import SlimConfig, validate_slim
from .prune import MAX_FRACTION, PRUNE_CRITERIA, PrunePlan, channel_scores, check_prune, plan_pruning, prune_model
from .report import ModelFigures, SlimReport, markdown_table, measure_latency, write_report
from .run import SlimResult, load_source, slim

__all__ = [
    "MAX_FRACTION",
    "PRUNE_CRITERIA",
    "ModelFigures",
    "PrunePlan",
    "SlimConfig",
    "SlimReport",
    "SlimResult",
    "channel_scores",
    "check_prune",
    "load_source",
    "markdown_table",
    "measure_latency",
    "plan_pruning",
    "prune_model",
    "slim",
    "validate_slim",
    "write_report",
]
