"""``python -m resnet_demo transfer IMAGE --task segment|detect``: the ResNet backbone at work in
torchvision's segmentation and detection models.

Writes into ``--out`` (default ``transfer-<image name>``): the mask (``mask.png``, class
indices; ``segmentation.png``, coloured over the photo) or the boxes (``detections.png``,
with Mask R-CNN's masks), the Grad-CAM map of every backbone stage (or ``--stage``) as
``gradcam_<stage>.npy`` and over the photo, each stage's feature maps
(``features_<stage>.png``), and ``summary.json`` (classes and pixel shares, or boxes,
labels and scores; what was explained; the backbone check; the entry's published metrics
and what its head reads). Nothing detected is an answer, not an error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..core.images import load_image
from ..core.model import STAGES, check_stage
from ..core.render import overlay
from .backbone import READS
from .detect import Detections, check_threshold
from .drawing import draw_detections, draw_segmentation
from .explain import TransferExplanation, explain_transfer, target_index
from .segment import Segmentation
from .weights import BACKBONES, MODELS, TASKS, TransferSpec, shared_transfer, transfer_spec

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``transfer`` command's arguments to ``parser``."""
    # No argparse ``choices``: an unknown name is a UserError, one line, like every bad input.
    parser.add_argument("image", help="photo (JPEG, PNG, GIF, WebP, TIFF, ...)")
    parser.add_argument("--task", required=True, metavar="TASK", help=f"{' or '.join(TASKS)}")
    parser.add_argument(
        "--model",
        metavar="NAME",
        help=f"segment: {', '.join(MODELS['segment'])} (default deeplabv3); "
        f"detect: {', '.join(MODELS['detect'])} (default fasterrcnn)",
    )
    parser.add_argument(
        "--backbone", default="resnet50", metavar="ARCH", help=f"{', '.join(BACKBONES)} (default resnet50)"
    )
    parser.add_argument("--threshold", type=float, default=0.5, help="detection: the lowest score shown (default 0.5)")
    parser.add_argument(
        "--target",
        metavar="CLASS|N",
        help="what to explain: segment, a class name or index "
        "(default the largest class other than background); detect, a detection's index as "
        "listed (default the best)",
    )
    parser.add_argument(
        "--stage", default="all", metavar="STAGE", help=f"Grad-CAM maps to write: all, or one of {', '.join(STAGES)}"
    )
    parser.add_argument("--size", type=int, help="input short side (default the entry's: 520 segment, 800 detect)")
    parser.add_argument("--out", help="folder for the files (default transfer-<image name>)")
    parser.add_argument("--json", action="store_true", help="print the JSON summary instead of text")


def _segment_files(image: Image.Image, result: Segmentation, out: Path) -> dict[str, Any]:
    Image.fromarray(result.mask).save(out / "mask.png")
    draw_segmentation(image, result).save(out / "segmentation.png")
    return {"classes": [{"index": c.index, "name": c.name, "share": c.share} for c in result.classes]}


def _detect_files(image: Image.Image, result: Detections, out: Path) -> dict[str, Any]:
    draw_detections(image, result).save(out / "detections.png")
    rows = [{"index": d.index, "label": d.label, "score": d.score, "box": list(d.box)} for d in result.items]
    return {"threshold": result.threshold, "detections": rows}


def _map_files(image: Image.Image, result: TransferExplanation, stages: list[str], out: Path) -> dict[str, Any]:
    maps = {}
    for stage in stages:
        cam = result.cams.get(stage)
        if cam is not None:
            np.save(out / f"gradcam_{stage}.npy", cam.heatmap)
            overlay(image=image, heatmap=cam.heatmap).save(out / f"gradcam_{stage}.png")
            maps[stage] = {"all_zero": cam.all_zero, "shape": list(cam.heatmap.shape)}
        grid = result.features[stage]
        grid.image.save(out / f"features_{stage}.png")
    explained = None if result.target is None else {"index": result.target, "what": result.target_text, "maps": maps}
    return {"gradcam": explained}


def main(args: argparse.Namespace) -> int:
    """Run the ``transfer`` command; a bad input raises :class:`UserError`."""
    spec = transfer_spec(task=args.task, model=args.model, backbone=args.backbone)  # names checked before loading
    if args.stage != "all":
        check_stage(args.stage)
    check_threshold(args.threshold)
    target = target_index(spec, args.target)
    image = load_image(args.image)  # a bad file is reported before 170 MB of weights load
    loaded = shared_transfer(task=spec.task, model=spec.model, backbone=spec.backbone)
    result = explain_transfer(
        loaded=loaded, image=image, target=target, threshold=args.threshold, size=args.size, check=True
    )
    out = Path(args.out or f"transfer-{Path(args.image).stem}")
    out.mkdir(parents=True, exist_ok=True)
    if result.segmentation is not None:
        answer = _segment_files(image, result.segmentation, out)
    else:
        assert result.detections is not None
        answer = _detect_files(image, result.detections, out)
    stages = list(STAGES) if args.stage == "all" else [args.stage]
    summary = {
        "model": spec.label,
        "task": spec.task,
        "published": spec.metrics,
        "head_reads": list(READS[spec.model]),
        "dilated": spec.dilated,
        "frozen_batchnorm": spec.frozen_batchnorm,
        **answer,
        **_map_files(image, result, stages, out),
        "backbone_relative_diff": result.backbone_diff,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    _print_summary(spec, summary, out)
    return 0


def _print_summary(spec: TransferSpec, summary: dict[str, Any], out: Path) -> None:
    print(f"{spec.label}: files in {out}")
    if spec.task == "segment":
        print(", ".join(f"{c['name']} {c['share']:.1%}" for c in summary["classes"]))
    elif not summary["detections"]:
        print(f"Nothing detected with a score of at least {summary['threshold']:.2f}.")
    for row in summary.get("detections", []):
        print(f"{row['index']:>3} {row['label']:>14} {row['score']:.2f}  box {[round(v) for v in row['box']]}")
    if summary["gradcam"] is not None:
        print(f"Grad-CAM of {summary['gradcam']['what']} at {', '.join(summary['gradcam']['maps'])}")
    worst = max(summary["backbone_relative_diff"].values())
    print(f"backbone = our {spec.backbone}: largest relative stage difference {worst:.1e}")
