"""``python -m resnet_demo bench``: the explanation engine against reference pipelines
(:mod:`.explain`), with ``--train`` the fine-tune step against the PyTorch ImageNet
example (:mod:`.train`), or with ``--trust`` the faithfulness curves and the cost of
every cheap explanation map (:mod:`.trust`), with ``--slim`` a pruned and a distilled model
against the original (:mod:`.slim`), with ``--serve`` the app as its visitors see it (:mod:`.serve`), or with
``--transfer`` the segmentation and detection models and their Grad-CAM (:mod:`.transfer`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core.devices import configure_threads
from ..core.errors import UserError
from ..core.images import load_image
from ..core.weights import ARCHES, DEFAULT_WEIGHTS
from .explain import DEFAULT_IMAGE, run

__all__ = ["MODES", "Mode", "configure_parser", "main"]


# Each mode imports its module when it runs: the fine-tune, app and detection modules are
# heavy, and `bench` alone needs none of them.
def _train(args: argparse.Namespace) -> int:
    from . import train

    return int(train.main(args) or 0)


def _trust(args: argparse.Namespace) -> int:
    from . import trust

    return int(trust.main(args) or 0)


def _slim(args: argparse.Namespace) -> int:
    from . import slim

    return int(slim.main(args) or 0)


def _serve(args: argparse.Namespace) -> int:
    from . import serve

    return int(serve.main(args) or 0)


def _audit(args: argparse.Namespace) -> int:
    from . import audit

    return int(audit.main(args) or 0)


def _transfer(args: argparse.Namespace) -> int:
    from . import transfer

    return int(transfer.main(args) or 0)


@dataclass(frozen=True)
class Mode:
    """One benchmark of the ``bench`` command, chosen by its flag (``--NAME``)."""

    help: str
    run: Callable[[argparse.Namespace], int]
    repeats: int = 15  # timed runs per row by default
    warmup: int = 2  # untimed runs per row first
    own_threads: bool = False  # sets up its own threads (the training loop): leave torch's alone
    own_image: bool = False  # picks its own photo unless --image names one


# flag -> mode; without a flag, the explanation engine against reference pipelines (.explain).
MODES: dict[str, Mode] = {
    "train": Mode("benchmark fine-tuning instead (resnet_demo.bench.train)", _train, 5, 1, own_threads=True),
    "slim": Mode("benchmark pruning and distillation (resnet_demo.bench.slim)", _slim),
    "trust": Mode("benchmark the trust checks instead (resnet_demo.bench.trust)", _trust),
    "audit": Mode("benchmark the audit's batched maps and clustering (resnet_demo.bench.audit)", _audit, 5, 1),
    "serve": Mode("benchmark the app as visitors see it instead (resnet_demo.bench.serve)", _serve),
    "transfer": Mode(
        "benchmark the segmentation and detection models and their Grad-CAM (resnet_demo.bench.transfer)",
        _transfer,
        3,
        1,
        own_image=True,
    ),  # fmt: skip
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``bench`` command's arguments to ``parser``."""
    parser.add_argument("--arch", choices=ARCHES, action="append", help="architecture (repeatable; default resnet50)")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="weights name or path (random if unavailable)")
    parser.add_argument(
        "--image", help="photo to explain (default examples/cat.jpg; --transfer: a synthetic 640x480 photo)"
    )
    parser.add_argument(
        "--size", type=int, default=None,
        help="crop size in pixels (default: the weights' 224); --transfer: input short side (default each model's own)",
    )  # fmt: skip
    parser.add_argument(
        "--repeats", type=int, default=None,
        help="timed runs per row (default 15, with --train 5, --transfer 3); medians reported",
    )  # fmt: skip
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed runs per row first (default 2, --train and --transfer 1)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable cores)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size (the --train benchmark)")
    parser.add_argument("--masks", type=int, default=1000, help="RISE's masks in the --trust benchmark (default 1000)")
    parser.add_argument("--no-reference", action="store_true", help="skip the naive and pytorch-grad-cam rows")
    parser.add_argument(
        "--methods", action="store_true", help="also time on-demand Grad-CAM, Guided Grad-CAM, IG, Occlusion (slow)"
    )
    parser.add_argument("--compile", action="store_true", help="also time the engine under torch.compile (slow start)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown to FILE")
    modes = parser.add_mutually_exclusive_group()
    for flag, mode in MODES.items():
        modes.add_argument(f"--{flag}", action="store_true", help=mode.help)
    parser.add_argument("--device", default="auto", help="device for --train: auto (CUDA when there), cpu, cuda")
    parser.add_argument("--clients", type=int, default=16, help="clients at once (the --serve throughput row)")
    parser.add_argument(
        "--transfer-models", metavar="NAMES",
        help="--transfer: comma-separated models, NAME or NAME:BACKBONE "
        "(default: bench.transfer.DEFAULT_MODELS, the first model of each family)",
    )  # fmt: skip


def _check(args: argparse.Namespace) -> None:
    """Every argument that needs no model, for every mode: a mistake costs no loading and is one line."""
    if args.repeats < 1:
        raise UserError("--repeats must be at least 1.")
    if args.warmup < 0:
        raise UserError("--warmup must be 0 or more.")
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1.")
    if args.trust:
        from ..explain.methods import check_range
        from ..explain.rise import MASKS_RANGE

        check_range(value=args.masks, low=MASKS_RANGE[0], high=MASKS_RANGE[1], what="masks", method="RISE")
    if args.image is not None:
        # A photo named but missing or unreadable is an error, not a silent synthetic photo.
        load_image(args.image)


def main(args: argparse.Namespace) -> int:
    """Run the ``bench`` command: the mode its flag names, or the explanation engine."""
    args.arch = args.arch or ["resnet50"]
    mode = next((m for flag, m in MODES.items() if getattr(args, flag)), None)
    args.repeats = (mode.repeats if mode else 15) if args.repeats is None else args.repeats
    args.warmup = (mode.warmup if mode else 2) if args.warmup is None else args.warmup
    _check(args)
    if mode is not None and mode.own_threads:
        return mode.run(args)
    configure_threads()
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    if mode is None or not mode.own_image:
        args.image = args.image or str(DEFAULT_IMAGE)
    return mode.run(args) if mode is not None else run(args)
