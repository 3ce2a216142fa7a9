"""``python -m resnet_demo explain IMAGE``: predictions, explanation maps and feature maps as files.

Writes into ``--out`` (default ``explain-<image name>``): the crop the model saw,
overlays of each map on that crop and on the whole image, the raw maps as ``.npy``,
the feature-map grid of every stage, and ``summary.json`` (predictions, target,
stages, map statistics, block statistics, timings, the precision that ran). Prints a short
summary, or the JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import UserError
from ..core.images import load_image
from ..core.model import STAGES, check_stage
from ..core.precision import PRECISIONS, resolve_precision
from ..core.render import check_opacity, overlay
from ..core.weights import ARCHES, DEFAULT_WEIGHTS, check_arch, shared_model
from . import METHODS, Analysis, Attribution, analyze, get_method, overlay_on_full, resolve_class
from .lrp import relevance_conservation
from .score_cams import DEFAULT_CHANNELS

__all__ = ["add_image_and_class_arguments", "configure_parser", "main"]


def add_image_and_class_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every command that explains one photo takes: the image, the model, the class and its contrast."""
    parser.add_argument("image", help="photo to explain (JPEG, PNG, GIF, WebP, TIFF, ...)")
    # No argparse choices: the core checks the name, in the sentence the app gives for the same mistake.
    parser.add_argument(
        "--arch", default="resnet50", metavar="ARCH", help=f"network depth: {', '.join(ARCHES)} (default resnet50)"
    )
    parser.add_argument(
        "--weights",
        default=DEFAULT_WEIGHTS,
        help="imagenet-v2 (default), imagenet-v1, random, or a .pth or .safetensors path",
    )
    parser.add_argument(
        "--fallback-random", action="store_true", help="use random weights if the weights are unavailable"
    )
    parser.add_argument("--target", help="class to explain: an index or (part of) a name (default: the top class)")
    parser.add_argument(
        "--versus", metavar="CLASS", help="contrast class: explain 'why TARGET and not CLASS' (index or name)"
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``explain`` command's arguments to ``parser``."""
    add_image_and_class_arguments(parser)
    parser.add_argument(
        "--stage",
        default="layer4",
        metavar="STAGE",
        help=f"stage to explain: {', '.join(STAGES)}; all: every stage the method supports; fusion: their maximum "
        "(default layer4)",
    )
    # No argparse ``choices``: an unknown name is a UserError, one line, like every bad input.
    parser.add_argument(
        "--method",
        default="gradcam",
        metavar="NAME",
        help=f"attribution method: {', '.join(METHODS)} (default gradcam)",
    )
    parser.add_argument("--noise-tunnel", type=int, default=0, metavar="N", help="smooth IG over N noisy copies")
    parser.add_argument(
        "--channels",
        type=int,
        default=DEFAULT_CHANNELS,
        metavar="N",
        help=f"Score-CAM / Ablation-CAM: weigh the N strongest channels, 0: all (default {DEFAULT_CHANNELS})",
    )
    # The newer methods' options: given ones only reach the method (its own defaults and ranges otherwise).
    for flag, meta, text in METHOD_FLAGS:
        parser.add_argument(flag, type=int, default=None, metavar=meta, help=text)
    parser.add_argument("--topk", type=int, default=5, help="how many predictions to list (default 5)")
    parser.add_argument("--opacity", type=float, default=0.5, help="heat-map opacity in the overlays (default 0.5)")
    parser.add_argument("--out", help="folder for the files (default explain-<image name>)")
    parser.add_argument("--json", action="store_true", help="print the JSON summary instead of text")
    parser.add_argument("--compile", action="store_true", help="torch.compile the forward (a minute to start)")
    parser.add_argument(
        "--precision",
        default="float32",
        metavar="NAME",
        help=f"the forward's format: {', '.join(PRECISIONS)} (default float32; bfloat16: faster where the CPU "
        "has it, approximate probabilities and maps; auto: float32 for now)",
    )


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None  # JSON has no Infinity


def _map_stats(att: Attribution) -> dict[str, Any]:
    raw = att.raw
    return {
        "raw_shape": list(raw.shape),
        "raw_min": float(raw.min()),
        "raw_max": float(raw.max()),
        "raw_mean": float(raw.mean()),
        "heatmap_mean": float(att.heatmap.mean()),
        "all_zero": att.all_zero,
        "seconds": att.seconds,
    }


def _write_maps(analysis: Analysis, atts: list[Attribution], out: Path, opacity: float) -> dict[str, dict[str, Any]]:
    maps: dict[str, dict[str, Any]] = {}
    for att in atts:
        stem = f"{att.method}_{att.stage}"
        files = {
            "overlay": f"overlay_{stem}.png",
            "overlay_full": f"overlay_full_{stem}.png",
            "raw": f"map_{stem}.npy",
        }
        overlay(image=analysis.crop, heatmap=att.heatmap, opacity=opacity).save(out / files["overlay"])
        overlay_on_full(analysis=analysis, attribution=att, opacity=opacity).save(out / files["overlay_full"])
        np.save(out / files["raw"], att.raw)
        maps[att.stage] = {**_map_stats(att), "files": files}
    return maps


def _write_features(analysis: Analysis, out: Path) -> dict[str, dict[str, Any]]:
    features = {}
    for stage in STAGES:
        grid = analysis.feature_maps(stage)
        grid.image.save(out / f"features_{stage}.png")
        features[stage] = {"shape": list(grid.shape), "channels": grid.channels, "file": f"features_{stage}.png"}
    return features


def photo_report(args: argparse.Namespace, analysis: Analysis, first: Any) -> dict[str, Any]:
    """What every JSON report on one photo starts with: the photo, the model, the class and its contrast.

    ``first`` is the first map reported (anything with ``target``, ``target_label``,
    ``versus`` and ``versus_label``: an Attribution, or a faithfulness result).
    """
    return {
        "image": str(args.image),
        "arch": analysis.arch,
        "weights": analysis.spec.name,
        "untrained": analysis.untrained,
        "target": {"index": first.target, "label": first.target_label, "prob": analysis.prob(first.target)},
        "versus": None if first.versus is None else {"index": first.versus, "label": first.versus_label},
    }


def _summary(
    args: argparse.Namespace, analysis: Analysis, atts: list[Attribution], skipped: list[str], out: Path
) -> dict[str, Any]:
    """Everything ``summary.json`` holds; writes the image and map files on the way."""
    analysis.crop.save(out / "crop.png")
    features = _write_features(analysis, out)
    maps = _write_maps(analysis, atts, out, args.opacity)
    return {
        **photo_report(args, analysis, atts[0]),
        "warning": analysis.warning,
        "crop_box": vars(analysis.crop_box),
        "predictions": [vars(p) for p in analysis.predictions],
        "method": args.method,
        "stages": [a.stage for a in atts],
        "skipped_stages": skipped,
        "maps": maps,
        "features": features,
        "blocks": [{**vars(b), "residual_ratio": _finite(b.residual_ratio)} for b in analysis.blocks],
        "timings": analysis.timings,
        "precision": analysis.precision,
        "out": str(out),
    }


def _print_text(analysis: Analysis, atts: list[Attribution], method: str, skipped: list[str], out: Path) -> None:
    if analysis.untrained:
        print(f"WARNING: {analysis.status}")
    if analysis.warning:
        print(f"WARNING: {analysis.warning}")
    print(f"{analysis.arch}, {analysis.spec.label}: top {len(analysis.predictions)}")
    for p in analysis.predictions:
        print(f"  {p.prob:7.2%}  {p.index:4d}  {p.label}")
    first = atts[0]
    contrast = "" if first.versus is None else f" versus class {first.versus} ({first.versus_label})"
    print(f"{METHODS[method]} for class {first.target} ({first.target_label}, {first.target_prob:.2%}){contrast}:")
    for att in atts:
        note = "  all zero: no positive evidence here" if att.all_zero else ""
        print(f"  {att.stage:<7} raw {tuple(att.raw.shape)}  {att.seconds * 1000:7.1f} ms{note}")
    if skipped:
        print(f"  (skipped {', '.join(skipped)}: {METHODS[method]} works at {', '.join(a.stage for a in atts)} only)")
    approximate = ", approximate" if analysis.precision != "float32" else ""
    print(f"Forward {analysis.timings['forward'] * 1000:.0f} ms in {analysis.precision}{approximate}. Files in {out}/")


# flag, metavar, help; each flag's value goes to the options named in METHOD_OPTIONS.
METHOD_FLAGS = [
    ("--samples", "N", "SmoothGrad: noisy copies (default 25)"),
    ("--sigma-pct", "P", "SmoothGrad: noise, percent of the input's range (default 15)"),
    ("--masks", "N", "RISE: random masks (default 300)"),
    ("--grid", "S", "RISE: mask cells per side (default 7)"),
    ("--concepts", "K", "CRP / DFF: concepts to find (default 6 / 5)"),
    ("--seed", "N", "SmoothGrad, RISE, DFF: the random seed (default 0)"),
]
METHOD_OPTIONS = {
    "samples": ("smoothgrad_samples",),
    "sigma_pct": ("smoothgrad_sigma_pct",),
    "masks": ("rise_masks",),
    "grid": ("rise_grid",),
    "concepts": ("crp_concepts", "dff_concepts"),
    "seed": ("seed",),
}


def conservation_text(conservation: dict[str, Any]) -> str:
    """LRP's conservation report as lines: per point, the relevance arriving and what biases and
    stabilisers took, as shares of the explained score."""
    lines = ["Relevance conservation (shares of the explained score: arrived / biases / stabilisers):"]
    for point, share in conservation["points"].items():
        lines.append(f"  {point:<7} {share['relevance']:7.1%} {share['biases']:7.1%} {share['stabilisers']:7.1%}")
    return "\n".join(lines)


def method_flags(args: argparse.Namespace) -> dict[str, int]:
    """The options the newer methods' flags set (those given only), by the registry's option names."""
    return {name: value for flag, names in METHOD_OPTIONS.items() if (value := getattr(args, flag)) is not None
            for name in names}  # fmt: skip


def main(args: argparse.Namespace) -> int:
    """Run the ``explain`` command; bad input is a :class:`UserError` (one line, exit status 2)."""
    if args.topk < 1:
        raise UserError("--topk must be at least 1.")
    check_arch(args.arch)  # before anything loads: the core's sentences, as the app gives them
    check_opacity(args.opacity)
    if args.stage not in ("all", "fusion"):
        check_stage(args.stage)
    if args.noise_tunnel < 0:
        raise UserError("--noise-tunnel must be 0 or more.")
    if args.channels < 0:
        raise UserError("--channels must be 0 (all) or more.")
    resolve_precision(name=args.precision, device=torch.device("cpu"))  # a bad name, before anything loads
    entry = get_method(args.method)
    if entry.space == "layer" and args.stage not in ("all", "fusion"):
        entry.check_stage(args.stage)  # before anything loads
    image = load_image(args.image)  # a bad file is reported before 100 MB of weights load
    loaded = shared_model(arch=args.arch, weights=args.weights, fallback_to_random=args.fallback_random)
    categories = loaded.spec.categories
    target = None if args.target is None else resolve_class(categories=categories, query=args.target)
    versus = None if args.versus is None else resolve_class(categories=categories, query=args.versus)
    # "all" means every stage the method supports; a stage named outright must be supported.
    stages = list(entry.supported_stages) if args.stage in ("all", "fusion") else [args.stage]
    skipped = [s for s in STAGES if s not in stages] if args.stage == "all" and entry.space == "layer" else []
    # The gradients of the top class at several stages come from the one pass; see analyze().
    gradients = entry.cheap and entry.class_specific and target is None and versus is None and len(stages) > 1
    analysis = analyze(
        image=image,
        model=loaded,
        topk=args.topk,
        gradcam_stages=stages if gradients else (),
        compile=args.compile,
        precision=args.precision,
    )
    options = {"noise_tunnel_samples": args.noise_tunnel, "channels": args.channels, **method_flags(args)}
    if args.stage == "fusion":
        atts = [analysis.fusion(target=target, method=args.method, versus=versus, **options)]
    else:
        # An input method makes one map whatever the stage; a layer method one per stage.
        found = analysis.attributions(stages=stages, target=target, method=args.method, versus=versus, **options)
        atts = list(found.values())

    out = Path(args.out) if args.out else Path(f"explain-{Path(args.image).stem}")
    out.mkdir(parents=True, exist_ok=True)
    summary = _summary(args, analysis, atts, skipped, out)
    if args.method == "lrp":  # where the explained score's relevance went, stage by stage
        first = atts[0]
        summary["conservation"] = relevance_conservation(
            analysis=analysis, target=first.target, versus=first.versus
        ).to_json()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_text(analysis, atts, args.method, skipped, out)
        if "conservation" in summary:
            print(conservation_text(summary["conservation"]))
    return 0
