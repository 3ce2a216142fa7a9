"""``python -m resnet_demo evaluate IMAGE``: how far to trust an explanation map.

For each ``--methods`` map at ``--stage``: the deletion and insertion AUCs and those of a
random map, with removed pixels showing the ``--baseline`` (:mod:`.faithfulness`: ``blur``
or ``mean``); the ranking of every cheap method at the stage by insertion AUC minus
deletion AUC; and the cascading randomisation sanity check with its rank correlations
and verdict (:mod:`.sanity`), with the time each part took. Prints a short report, or
JSON with ``--json``. Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..core.errors import UserError
from ..core.images import load_image
from ..core.model import STAGES, check_stage
from ..core.weights import check_arch, shared_model
from . import Analysis, analyze, get_method, resolve_class
from .baselines import BASELINES, check_baseline
from .cli import add_image_and_class_arguments, photo_report
from .faithfulness import MAX_STEPS, Faithfulness, MethodScore, faithfulness, rank_methods
from .sanity import SanityCheck, randomization_check

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
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _check(args: argparse.Namespace) -> None:
    """Every argument that needs no model, so that mistakes cost no loading."""
    check_arch(args.arch)
    if not 1 <= args.steps <= MAX_STEPS:
        raise UserError(f"--steps must be between 1 and {MAX_STEPS}.")
    check_stage(args.stage)
    check_baseline(args.baseline)
    for name in args.methods:
        get_method(name)


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
) -> dict[str, Any]:
    return {
        **photo_report(args, analysis, results[0]),
        "stage": args.stage,
        "steps": args.steps,
        "baseline": args.baseline,
        "score": "probability of the target class (with versus: p(target) / (p(target) + p(versus)))",
        "faithfulness": [_curves(r) for r in results],
        "ranking": None if ranking is None else [vars(r) for r in ranking],
        "sanity": {name: _sanity(c) for name, c in sanity.items()},
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
    print("Timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in report["timings"].items()))


def main(args: argparse.Namespace) -> int:
    """Run the ``evaluate`` command; bad input is a :class:`UserError` (one line, exit status 2)."""
    _check(args)
    t0 = time.perf_counter()
    image = load_image(args.image)  # a bad file is reported before 100 MB of weights load
    loaded = shared_model(arch=args.arch, weights=args.weights, fallback_to_random=args.fallback_random)
    # The classes before the analysis: a name that matches none costs no forward pass.
    categories = loaded.spec.categories
    target = None if args.target is None else resolve_class(categories=categories, query=args.target)
    versus = None if args.versus is None else resolve_class(categories=categories, query=args.versus)
    analysis = analyze(image=image, model=loaded)
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

    report = _report(args, analysis, results, ranking, sanity, timings)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report, analysis)
    return 0
