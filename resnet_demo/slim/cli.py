"""``python -m resnet_demo slim``: prune a fine-tuned checkpoint, recover by fine-tuning, report.

Every fine-tune option works here too (the recovery is a fine-tune), with slim's
defaults; each defaults to None so that ``--resume`` takes the ones not given from the
checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..finetune.checkpoints import atomic_write_text
from ..finetune.cli import config_from_args
from ..finetune.cli import configure_parser as configure_finetune
from .config import SlimConfig
from .prune import MAX_FRACTION, PRUNABLE_STAGES, PRUNE_CRITERIA
from .report import markdown_table
from .run import slim

__all__ = ["configure_parser", "main"]

_DEFAULTS = SlimConfig()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``slim`` command's options: the pruning, then the recovery fine-tune's."""
    d = _DEFAULTS
    a = parser.add_argument
    a(
        "--prune",
        type=float,
        help=f"fraction of every block's inner channels removed, 0 to {MAX_FRACTION} (default {d.prune})",
    )
    a(
        "--criterion",
        choices=PRUNE_CRITERIA,
        help=f"channel ranking: BatchNorm scale or filter L1 norm (default {d.criterion})",
    )
    a(
        "--skip-stage",
        dest="skip_stages",
        action="append",
        choices=PRUNABLE_STAGES,
        help="keep this stage whole (repeatable)",
    )
    a("--round-to", type=int, help=f"round kept widths up to a multiple of this, e.g. 8 (default {d.round_to})")
    a(
        "--latency-repeats",
        type=int,
        help=f"timed batch-1 forwards per model in the report (default {d.latency_repeats})",
    )
    a("--no-plot", action="store_true", help="do not write the accuracy-vs-MACs figure (slim.html)")
    configure_finetune(parser, defaults=d, make_sample=False)
    for action in parser._actions:  # the one option that means something else here
        if action.dest == "weights":
            action.help = "the fine-tuned checkpoint to slim (best.pth or best.safetensors of a finetune run; it records its classes)"


def main(args: argparse.Namespace) -> int:
    """Run the ``slim`` command; 130 when the run was cancelled."""
    cfg = config_from_args(args, cls=SlimConfig)
    assert isinstance(cfg, SlimConfig)
    result = slim(cfg)
    if result.finetune.cancelled:
        return 130
    if result.report is None:  # another rank of a torchrun job: rank 0 reports
        return 0
    out = Path(cfg.out)
    if not args.no_plot:
        from .plots import accuracy_macs_figure  # here: plotly is only needed for this one file

        fig = accuracy_macs_figure(result.report)
        atomic_write_text(fig.to_html(include_plotlyjs="cdn", full_html=True), out / "slim.html")
    print(markdown_table(result.report), end="")
    print(
        f"wrote {out / 'slim.json'}, {out / 'slim.md'}{'' if args.no_plot else ', ' + str(out / 'slim.html')}\n"
        f"explain with it: python -m resnet_demo explain IMAGE --arch {cfg.arch} --weights {result.finetune.best}"
    )
    return 0
