"""Command line: ``python -m resnet_demo {info,explain,evaluate,finetune,slim,transfer,audit,bench} ...``.

Each command lives in its own module, which defines ``configure_parser(parser)`` and
``main(args) -> int``; this file only dispatches. A :class:`UserError` (bad file, bad
weights, bad option, and argparse's own errors: see :class:`OneLineParser`) is printed as one
line and exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

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
    "audit": ("resnet_demo.audit.cli", "audit a whole image set: every image explained, each class's maps clustered"),
    "bench": ("resnet_demo.bench.cli", "benchmark the explanation engine against references"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse's own mistakes (a missing argument, an option of the wrong type) as a :class:`UserError`,
    so that ``main`` reports them like every other bad input: one line on stderr, exit status 2.

    ``add_subparsers`` makes each command's parser of this class too (its ``parser_class``
    defaults to the parent's class). ``--help`` is not an error: it prints and exits 0.
    """

    def error(self, message: str) -> NoReturn:
        # argparse's messages are one line today; joining keeps the promise if one ever is not.
        raise UserError(f"{' '.join(message.split())} (see {self.prog} --help)")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m resnet_demo", description="ResNet Explorer command line.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:  # configure only the command that runs
            importlib.import_module(module).configure_parser(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in COMMANDS), None)
    try:
        args = build_parser(command).parse_args(argv)
        return int(importlib.import_module(COMMANDS[args.command][0]).main(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
