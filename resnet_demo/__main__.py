"""Command line: ``python -m resnet_demo {info,explain,evaluate,finetune,slim,transfer,bench} ...``.

Each command lives in its own module, which defines ``configure_parser(parser)`` and
``main(args) -> int``; this file only dispatches. A :class:`UserError` (bad file, bad
weights, bad option) is printed as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .core.errors import UserError

# command -> (module, one-line help). Modules are imported only when their command runs,
# so `info` never pays for the imports of `finetune`.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("resnet_demo.info", "parameters and multiply-accumulates, measured vs published"),
    "explain": ("resnet_demo.explain.cli", "predictions, explanation maps and feature maps of one image"),
    "finetune": ("resnet_demo.finetune.cli", "fine-tune on a folder or zip of class sub-folders"),
    "evaluate": ("resnet_demo.explain.evaluate_cli", "how far to trust a map: faithfulness curves, sanity check"),
    "slim": ("resnet_demo.slim.cli", "prune a fine-tuned model's channels and recover by fine-tuning (or distilling)"),
    "transfer": (
        "resnet_demo.transfer.cli",
        "the ResNet backbone in segmentation and detection: masks, boxes, Grad-CAM",
    ),
    "bench": ("resnet_demo.bench.cli", "benchmark the explanation engine against references"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m resnet_demo", description="ResNet Explorer command line.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:  # configure only the command that runs
            importlib.import_module(module).configure_parser(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in COMMANDS), None)
    args = build_parser(command).parse_args(argv)
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).main(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
