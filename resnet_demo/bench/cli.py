"""``python -m resnet_demo bench``: the explanation engine against reference pipelines
(:mod:`.explain`), with ``--train`` the fine-tune step against the PyTorch ImageNet
example (:mod:`.train`), or with ``--trust`` the faithfulness curves and the cost of
every cheap explanation map (:mod:`.trust`), with ``--slim`` a pruned and a distilled model
against the original (:mod:`.slim`), with ``--serve`` the app as its visitors see it (:mod:`.serve`), or with
``--transfer`` the segmentation and detection models and their Grad-CAM (:mod:`.transfer`)."""

from __future__ import annotations

import argparse
import importlib

import torch

from ..core.devices import configure_threads
from ..core.weights import ARCHES, DEFAULT_WEIGHTS
from .explain import DEFAULT_IMAGE, run

__all__ = ["configure_parser", "main"]


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
    parser.add_argument("--no-reference", action="store_true", help="skip the naive and pytorch-grad-cam rows")
    parser.add_argument(
        "--methods", action="store_true", help="also time on-demand Grad-CAM, Guided Grad-CAM, IG, Occlusion (slow)"
    )
    parser.add_argument("--compile", action="store_true", help="also time the engine under torch.compile (slow start)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown to FILE")
    parser.add_argument("--train", action="store_true", help="benchmark fine-tuning instead (resnet_demo.bench.train)")
    parser.add_argument(
        "--slim", action="store_true", help="benchmark pruning and distillation (resnet_demo.bench.slim)"
    )
    parser.add_argument("--device", default="auto", help="device for --train: auto (CUDA when there), cpu, cuda")
    parser.add_argument(
        "--trust", action="store_true", help="benchmark the trust checks instead (resnet_demo.bench.trust)"
    )
    parser.add_argument(
        "--serve", action="store_true", help="benchmark the app as visitors see it instead (resnet_demo.bench.serve)"
    )
    parser.add_argument("--clients", type=int, default=16, help="clients at once (the --serve throughput row)")
    parser.add_argument(
        "--transfer", action="store_true",
        help="benchmark the segmentation and detection models and their Grad-CAM (resnet_demo.bench.transfer)",
    )  # fmt: skip
    parser.add_argument(
        "--transfer-models", metavar="NAMES",
        help="--transfer: comma-separated models, NAME or NAME:BACKBONE "
        "(default deeplabv3,fcn,fasterrcnn,maskrcnn,retinanet)",
    )  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """Run the ``bench`` command."""
    args.arch = args.arch or ["resnet50"]
    slow = args.train or args.transfer  # each row takes seconds on a CPU
    args.repeats = (5 if args.train else 3 if args.transfer else 15) if args.repeats is None else args.repeats
    args.warmup = (1 if slow else 2) if args.warmup is None else args.warmup
    if args.train:
        # Imported on use: the fine-tune modules are not needed otherwise.
        return int(importlib.import_module("resnet_demo.bench.train").main(args) or 0)
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    configure_threads()
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    if args.transfer:  # its own photo unless --image names one
        return int(importlib.import_module("resnet_demo.bench.transfer").main(args) or 0)
    args.image = args.image or str(DEFAULT_IMAGE)
    if args.slim:
        return int(importlib.import_module("resnet_demo.bench.slim").main(args) or 0)
    if args.trust:
        return int(importlib.import_module("resnet_demo.bench.trust").main(args) or 0)
    if args.serve:  # the app runs in its own process, with its own threads
        return int(importlib.import_module("resnet_demo.bench.serve").main(args) or 0)
    return run(args)
