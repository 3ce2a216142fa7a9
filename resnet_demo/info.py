"""``python -m resnet_demo info``: the reproduction guide's params/FLOPs table, measured and compared."""

from __future__ import annotations

import argparse
import json

from .core.complexity import arch_report
from .core.errors import UserError
from .core.weights import ARCHES


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=ARCHES, action="append", help="one architecture (repeatable); default all")
    parser.add_argument("--image-size", type=int, default=224, help="input side in pixels (default 224)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def main(args: argparse.Namespace) -> int:
    if args.image_size < 32:
        raise UserError("--image-size must be at least 32: the network halves the image five times.")
    reports = [arch_report(a, image_size=args.image_size) for a in (args.arch or ARCHES)]
    if args.json:
        print(json.dumps([r.to_dict() for r in reports], indent=2))
        return 0
    print(f"Measured at {args.image_size}x{args.image_size}; MACs = multiply-accumulates (FlopCounterMode / 2).")
    header = (
        f"{'arch':<10} {'blocks':<12} {'params':>12} {'torchvision':>12} {'guide':>6} "
        f"{'GMACs':>7} {'torchvision':>11} {'guide':>5} {'diff vs guide':>13} {'top-1 V1/V2 (tv)':>17} {'guide':>5}"
    )
    print(header)
    print("-" * len(header))
    for r in reports:
        print(
            f"{r.arch:<10} {str(list(r.depths)):<12} {r.params:>12,} {r.tv_params:>12,} {r.guide_params_m:>5}M "
            f"{r.gmacs:>7.3f} {r.tv_gmacs:>11.3f} {r.guide_gmacs:>5} {r.gmacs - r.guide_gmacs:>+13.3f} "
            f"{r.tv_acc1_v1:>8.2f}/{r.tv_acc1_v2:<8.2f} {r.guide_top1:>5}"
        )
    return 0
