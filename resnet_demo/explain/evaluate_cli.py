"""``python -m resnet_demo evaluate IMAGE``: how far to trust an explanation map.

For each ``--methods`` map at ``--stage``: the deletion and insertion AUCs and those of a
random map, with removed pixels showing the ``--baseline`` (:mod:`.faithfulness`: ``blur``
or ``mean``); the ranking of every cheap method at the stage by insertion AUC minus
deletion AUC; and the cascading randomisation sanity check with its rank correlations
and verdict (:mod:`.sanity`), with the time each part took. ``--metrics all|NAME,...`` adds
each map's metric cards (:mod:`.metric_cards`), the pointing games looking for the object in
``--box x0,y0,x1,y1`` (the photo's pixels) or DeepLabV3's mask of ``--object CLASS``
(:mod:`resnet_demo.transfer.object_mask`). ``evaluate --reliability DIR`` (no photo) scores
every cheap method on every photo of DIR and says how consistently each metric ranks them
(:mod:`.reliability`). Prints a short report, or JSON with ``--json``. Bad input is one line
on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from ..core.errors import UserError
from ..core.images import load_image
from ..core.model import STAGES, check_stage
from ..core.weights import check_arch, shared_model
from ..transfer.object_mask import object_mask
from . import Analysis, analyze, get_method, resolve_class
from .baselines import BASELINES, check_baseline
from .cli import add_image_and_class_arguments, photo_report
from .faithfulness import MAX_STEPS, Faithfulness, MethodScore, faithfulness, rank_methods
from .metric_cards import METRICS, CardReport, Settings, metric_cards, parse_metrics
from .pointing import box_mask, parse_box, photo_mask
from .reliability import Reliability, photos_in, reliability
from .sanity import SanityCheck, randomization_check
from .sensitivity import MAX_SAMPLES, SIMILARITIES

__all__ = ["configure_parser", "main"]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` command's arguments to ``parser``."""
    add_image_and_class_arguments(parser)
    # Checked against the registry by the command, so a bad name is one line, not a usage screen.
    parser.add_argument(
        "--methods", nargs="+", default=["gradcam"], metavar="METHOD", help="maps to evaluate (default gradcam)"
    )
    parser.add_argument("--stage", default="layer4", help=f"stage to explain: {', '.join(STAGES)} (default layer4)")
    parser.add_argument("--steps", type=int, default=16, help="points of each deletion/insertion curve (default 16)")
    # No argparse choices: the core checks the name, so a typo is one line like every other option's.
    parser.add_argument(
        "--baseline",
        default="blur",
        metavar="NAME",
        help="what removed pixels show: " + "; ".join(f"{k}: {v}" for k, v in BASELINES.items()) + " (default blur)",
    )
    parser.add_argument("--no-sanity", action="store_true", help="skip the randomisation sanity check")
    parser.add_argument("--no-rank", action="store_true", help="skip the ranking of the cheap methods")
    parser.add_argument(
        "--metrics",
        metavar="all|NAME,...",
        help="metric cards of each map: all, or a comma list of " + ", ".join(METRICS),
    )
    parser.add_argument(
        "--box", metavar="x0,y0,x1,y1", help="the object, for the pointing metrics: a box in the photo's pixels"
    )
    parser.add_argument(
        "--object", metavar="CLASS", help="the object, for the pointing metrics: a class DeepLabV3 segments"
    )
    parser.add_argument(
        "--n", type=float, default=10, help=f"perturbed photos of max-sensitivity, 1 to {MAX_SAMPLES} (default 10)"
    )
    parser.add_argument(
        "--similarity", default="ssim", help=f"random-logit similarity: {', '.join(SIMILARITIES)} (default ssim)"
    )
    parser.add_argument(
        "--reliability",
        metavar="DIR",
        help="instead of one photo: how consistently each metric ranks the cheap methods across the photos of DIR",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    for action in parser._actions:
        if action.dest == "image":
            action.nargs = "?"  # --reliability takes a folder instead


def _check(args: argparse.Namespace) -> None:
    """Every argument that needs no model, so that mistakes cost no loading."""
    check_arch(args.arch)
    if (args.image is None) == (args.reliability is None):
        raise UserError("Give a photo to evaluate, or --reliability with a folder of photos, not both.")
    if args.box is not None and args.object is not None:
        raise UserError("Give the object as --box or as --object, not both.")
    if args.metrics is not None or args.reliability is not None:
        parse_metrics(args.metrics or "all")
        _settings(args).checked()
    parse_box(args.box)
    if not 1 <= args.steps <= MAX_STEPS:
        raise UserError(f"--steps must be between 1 and {MAX_STEPS}.")
    check_stage(args.stage)
    check_baseline(args.baseline)
    for name in args.methods:
        get_method(name)


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(n=args.n, similarity=args.similarity, steps=args.steps, baseline=args.baseline)


def _object(args: argparse.Namespace, analysis: Analysis) -> Any:
    """The object's mask on the crop, from --box or --object; None without either."""
    if args.box is not None:
        return box_mask(analysis.prepared, parse_box(args.box))
    if args.object is not None:
        mask = object_mask(image=analysis.image, name=args.object, fallback_to_random=args.fallback_random)
        return photo_mask(analysis.prepared, mask, what=f"The {args.object.strip().lower()}")
    return None


def _cards(report: CardReport) -> dict[str, Any]:
    return {"method": report.method, "stage": report.stage, "cards": report.to_json(), "skipped": dict(report.skipped)}


def _curves(r: Faithfulness) -> dict[str, Any]:
    def one(c: Any) -> dict[str, Any]:
        return {
            "deletion_auc": c.deletion_auc,
            "insertion_auc": c.insertion_auc,
            "score": c.score,
            "fractions": c.fractions.tolist(),
            "deletion": c.deletion.tolist(),
            "insertion": c.insertion.tolist(),
        }

    return {
        "method": r.method,
        "stage": r.stage,
        "all_zero": r.all_zero,
        "map": one(r.curves),
        "random_map": one(r.random),
        "seconds": r.seconds,
    }


def _sanity(check: SanityCheck | str) -> dict[str, Any]:
    if isinstance(check, str):
        return {"skipped": check}
    steps = [
        {"randomized": list(s.randomized), "correlation": s.correlation, "all_zero": s.all_zero} for s in check.steps
    ]
    return {
        "method": check.method,
        "stage": check.stage,
        "steps": steps,
        "passed": check.passed,
        "verdict": check.verdict,
        "threshold": check.threshold,
        "seconds": check.seconds,
    }


def _report(
    args: argparse.Namespace,
    analysis: Analysis,
    results: list[Faithfulness],
    ranking: list[MethodScore] | None,
    sanity: dict[str, SanityCheck | str],
    timings: dict[str, float],
    cards: list[CardReport] | None = None,
) -> dict[str, Any]:
    extra = {} if cards is None else {"metrics": [_cards(c) for c in cards]}
    return {
        **photo_report(args, analysis, results[0]),
        "stage": args.stage,
        "steps": args.steps,
        "baseline": args.baseline,
        "score": "probability of the target class (with versus: p(target) / (p(target) + p(versus)))",
        "faithfulness": [_curves(r) for r in results],
        "ranking": None if ranking is None else [vars(r) for r in ranking],
        "sanity": {name: _sanity(c) for name, c in sanity.items()},
        **extra,
        "timings": timings,
    }


def _print_text(report: dict[str, Any], analysis: Analysis) -> None:
    if analysis.untrained:
        print(f"WARNING: {analysis.status}")
    t, v = report["target"], report["versus"]
    versus = f" and not {v['index']} ({v['label']})" if v else ""
    print(f"{analysis.arch}, {analysis.spec.label}: class {t['index']} ({t['label']}, {t['prob']:.2%}){versus}")
    print(
        f"Faithfulness at {report['stage']}, {report['steps']} steps; removed pixels show "
        f"{BASELINES[report['baseline']]}. Deletion AUC: lower is better; insertion AUC: higher is better."
    )
    print(f"  {'method':<22}{'deletion':>9}{'insertion':>10}{'score':>8}   random map: deletion insertion")
    for f in report["faithfulness"]:
        m, r = f["map"], f["random_map"]
        note = "  (all zero: no positive evidence)" if f["all_zero"] else ""
        print(
            f"  {f['method']:<22}{m['deletion_auc']:9.3f}{m['insertion_auc']:10.3f}{m['score']:8.3f}"
            f"   {r['deletion_auc']:20.3f}{r['insertion_auc']:10.3f}{note}"
        )
    if report["ranking"] is not None:
        print(f"Cheap methods at {report['stage']}, best first (score = insertion AUC - deletion AUC):")
        for i, row in enumerate(report["ranking"], 1):
            print(
                f"  {i:2d}. {row['method']:<20}{row['score']:7.3f}  (deletion {row['deletion_auc']:.3f}, "
                f"insertion {row['insertion_auc']:.3f})"
            )
    for name, s in report["sanity"].items():
        if "skipped" in s:
            print(f"Sanity check of {name}: skipped: {s['skipped']}")
            continue
        steps = ", ".join(f"+{st['randomized'][-1]} {st['correlation']:.2f}" for st in s["steps"])
        print(f"Sanity check of {name} (rank correlation with the original map as layers turn random):")
        print(f"  {steps}: {s['verdict']}")
    for entry in report.get("metrics", []):
        _print_cards(entry)
    print("Timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in report["timings"].items()))


def _number(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _print_cards(entry: dict[str, Any]) -> None:
    print(f"Metric cards of {entry['method']} at {entry['stage']}:")
    print(f"  {'metric':<17}{'value':>10}{'random map':>12}  {'vs random':<10}{'better':<8}{'forwards':>9}  range")
    for name, c in entry["cards"].items():
        verdict = {True: "better", False: "worse", None: "n/a"}[c["better_than_random"]]
        print(
            f"  {name:<17}{_number(c['value']):>10}{_number(c['random_value']):>12}  {verdict:<10}{c['better']:<8}"
            f"{c['cost_forwards']:>9.0f}  {c['range']}"
        )
    for name, why in entry["skipped"].items():
        print(f"  {name}: skipped: {why}")


def _reliability_report(result: Reliability) -> dict[str, Any]:
    return {
        "stage": result.stage,
        "methods": list(result.methods),
        "photos": list(result.photos),
        "statistic": "mean Spearman correlation of the methods' scores between every pair of photos",
        "reliability": result.agreement,
        "values": {
            m: [[None if np.isnan(v) else float(v) for v in row] for row in a] for m, a in result.values.items()
        },
    }


def _run_reliability(args: argparse.Namespace) -> int:
    photos = photos_in(args.reliability)
    loaded = shared_model(arch=args.arch, weights=args.weights, fallback_to_random=args.fallback_random)
    result = reliability(
        photos=photos, model=loaded, metrics=args.metrics or "all", stage=args.stage, settings=_settings(args)
    )
    report = _reliability_report(result)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"How consistently each metric ranks {len(result.methods)} cheap methods at {result.stage} across "
        f"{len(result.photos)} photos (mean Spearman between photos; 1: the same ranking everywhere):"
    )
    for name, value in result.agreement.items():
        print(f"  {name:<17}{_number(value):>8}")
    return 0


def main(args: argparse.Namespace) -> int:
    """Run the ``evaluate`` command; bad input is a :class:`UserError` (one line, exit status 2)."""
    _check(args)
    if args.reliability is not None:
        return _run_reliability(args)
    t0 = time.perf_counter()
    image = load_image(args.image)  # a bad file is reported before 100 MB of weights load
    loaded = shared_model(arch=args.arch, weights=args.weights, fallback_to_random=args.fallback_random)
    # The classes before the analysis: a name that matches none costs no forward pass.
    categories = loaded.spec.categories
    target = None if args.target is None else resolve_class(categories=categories, query=args.target)
    versus = None if args.versus is None else resolve_class(categories=categories, query=args.versus)
    analysis = analyze(image=image, model=loaded)
    mask = _object(args, analysis)  # a bad box or class costs no map
    timings = {"analyze": time.perf_counter() - t0}

    t0 = time.perf_counter()
    atts = [analysis.attribution(stage=args.stage, target=target, method=m, versus=versus) for m in args.methods]
    timings["maps"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = [faithfulness(analysis, attribution=a, steps=args.steps, baseline=args.baseline) for a in atts]
    timings["faithfulness"] = time.perf_counter() - t0
    ranking = None
    if not args.no_rank:
        t0 = time.perf_counter()
        ranking = rank_methods(
            analysis, stage=args.stage, target=target, versus=versus, steps=args.steps, baseline=args.baseline
        )
        timings["ranking"] = time.perf_counter() - t0
    sanity: dict[str, SanityCheck | str] = {}
    if not args.no_sanity:
        t0 = time.perf_counter()
        for att in atts:
            try:  # the check explains the class itself (not a contrast); an empty map has nothing to check
                sanity[att.method] = randomization_check(
                    analysis, stage=args.stage, target=att.target, method=att.method
                )
            except UserError as e:
                sanity[att.method] = str(e)
        timings["sanity"] = time.perf_counter() - t0

    cards = None
    if args.metrics is not None:
        t0 = time.perf_counter()
        cards = [
            metric_cards(analysis, attribution=a, metrics=args.metrics, object_mask=mask, settings=_settings(args))
            for a in atts
        ]
        timings["metrics"] = time.perf_counter() - t0
    report = _report(args, analysis, results, ranking, sanity, timings, cards)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report, analysis)
    return 0
