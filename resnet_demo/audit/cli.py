"""``python -m resnet_demo audit DATA``: every image of a set explained, each class's maps clustered.

Writes ``--out`` (default ``audit-<data name>``): ``audit.json``, ``images.csv``, the maps as
``.npy`` and ``report.html`` (see :mod:`.report`). Under ``torchrun --nproc-per-node N`` the
processes share the images and rank 0 writes the same folder one process would.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.model import STAGES
from ..core.process_group import distributed_run
from ..core.weights import ARCHES, DEFAULT_WEIGHTS, check_arch, shared_model
from ..explain import REGISTRY
from .run import BATCH_SIZE, audit
from .sources import check_data_path

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``audit`` command's arguments to ``parser``."""
    a = parser.add_argument
    a("data", help="a folder of class sub-folders (the labels), a flat folder of images, or a .zip of either")
    a("--arch", default="resnet50", metavar="ARCH", help=f"network depth: {', '.join(ARCHES)} (default resnet50)")
    a("--weights", default=DEFAULT_WEIGHTS, help="imagenet-v2 (default), imagenet-v1, random, or a .pth/.safetensors")
    a("--fallback-random", action="store_true", help="use random weights if the weights are unavailable")
    layer_methods = ", ".join(name for name, m in REGISTRY.items() if m.space == "layer")
    a("--method", default="gradcam", metavar="NAME", help=f"a layer method: {layer_methods} (default gradcam)")
    a("--stage", metavar="STAGE", help=f"{', '.join(STAGES)} (default: layer4 at 224 px, earlier for small crops)")
    a("--batch-size", type=int, default=BATCH_SIZE, help=f"images per batch per process (default {BATCH_SIZE})")
    a("--faithfulness", action="store_true", help="add each map's deletion and insertion areas (34 forwards each)")
    a("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    a("--out", help="output folder (default audit-<data name>)")
    a("--json", action="store_true", help="print audit.json instead of a text summary")


def main(args: argparse.Namespace) -> int:
    """Run the ``audit`` command; bad input is a :class:`UserError` (one line, exit status 2)."""
    check_arch(args.arch)
    check_data_path(args.data)  # before a model loads: a typo costs nothing
    out = Path(args.out) if args.out else Path(f"audit-{Path(args.data).stem}")
    with distributed_run(args.device) as d:
        # Under torchrun on CUDA the process group has made this process's GPU the current one.
        loaded = shared_model(
            arch=args.arch, weights=args.weights, fallback_to_random=args.fallback_random, device=args.device
        )
        result = audit(
            data=args.data,
            model=loaded,
            out=out,
            method=args.method,
            stage=args.stage,
            batch_size=args.batch_size,
            faithfulness=args.faithfulness,
            dist=d,
        )
    if result.summary is None:
        return 0
    if args.json:
        print(json.dumps(result.summary, indent=1))
        return 0
    s = result.summary
    if loaded.untrained:
        print(f"WARNING: {loaded.status}", file=sys.stderr)
    for note in s["notes"]:
        print(f"note: {note}", file=sys.stderr)
    acc = "" if s["accuracy"] is None else f", accuracy {s['accuracy']:.1%}"
    print(f"{s['images']} image(s), {s['method']} at {s['stage']}{acc}")
    for c in s["classes"]:
        acc = "" if c["accuracy"] is None else f" accuracy {c['accuracy']:.1%}"
        sizes = ", ".join(str(cl["size"]) for cl in c["clusters"])
        print(f"  {c['name']}: {c['images']} image(s){acc}, clusters of {sizes} (the odd one first)")
    print(f"Files in {out}/ (open report.html)")
    return 0
