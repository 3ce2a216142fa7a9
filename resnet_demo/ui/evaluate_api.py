"""The ``/evaluate`` API endpoint: how far to trust one map, as JSON (the trust panel's checks and,
when asked, its metric cards), for scripts."""

from __future__ import annotations

import time
from typing import Any

from ..core.errors import UserError
from ..core.model import STAGES
from ..explain import Analysis, analyze, cheap_methods
from ..explain.baselines import check_baseline
from ..explain.classes import resolve_class
from ..explain.faithfulness import MethodScore, faithfulness, rank_methods
from ..explain.metric_cards import parse_metrics
from ..explain.pointing import parse_box
from ..explain.sanity import randomization_check
from .components import user_errors
from .messages import NO_PHOTO
from .metric_cards_handlers import compute_cards
from .model_choice import resolve_model
from .trust_handlers import DEFAULT_BASELINE, DEFAULT_STEPS, check_time


def _class_arg(analysis: Analysis, value: str | int | float | None) -> int | None:
    """An API class argument: empty for none, else an index or (part of) a name."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float):
        value = int(value)
    return resolve_class(categories=analysis.categories, query=value)


def _scores_json(scores: list[MethodScore]) -> list[dict[str, Any]]:
    return [
        {"method": s.method, "label": s.label, "score": s.score, "insertion_auc": s.insertion_auc,
         "deletion_auc": s.deletion_auc, "all_zero": s.all_zero}
        for s in scores
    ]  # fmt: skip


@user_errors
def evaluate(
    image: str | None, arch: str, weights: str, checkpoint: str | None,  # the photo and the model, as /explain's
    stage: str, method: str, target: str | None, versus: str | None,  # the map: class and versus as free text
    baseline: str = DEFAULT_BASELINE,  # after the first eight, so that scripts passing them keep working
    metrics: str = "", box: str = "", object: str = "",  # noqa: A002  (the API's name) -- "": no cards
) -> dict[str, Any]:  # fmt: skip
    """API (``/evaluate``): how far to trust one map, as JSON-able data.

    ``target`` and ``versus`` are a class index or name ("" or None: the top class / no
    second class); ``baseline`` what removed pixels show ("blur" or "mean"). Returns the
    map's deletion and insertion AUCs against a random map's, every cheap method ranked,
    the randomisation check's correlations and verdict, and the seconds each part took. ``metrics``
    ("all" or a comma list of metric names) adds the map's metric cards under "metrics", the
    pointing games finding the object in ``box`` ("x0,y0,x1,y1", the photo's pixels) or the
    segmentation of the class ``object``.
    """
    if image is None:
        raise UserError(NO_PHOTO)
    # "" or None: the default, as for the class arguments; checked before any model loads.
    baseline = check_baseline(baseline or DEFAULT_BASELINE)
    if (metrics or "").strip():
        parse_metrics(metrics)
    parse_box(box)
    started = time.perf_counter()
    loaded = resolve_model(arch=arch, weights=weights, checkpoint=checkpoint)
    analysis = analyze(image=image, topk=5, model=loaded)
    t, v = _class_arg(analysis, target), _class_arg(analysis, versus)
    check_time(analysis, check="all", stage=stage, method=method, versus=v, steps=DEFAULT_STEPS)
    att = analysis.attribution(stage=stage, target=t, method=method, versus=v)
    timings = {"analysis": time.perf_counter() - started}
    mark = time.perf_counter()
    faith = faithfulness(analysis, attribution=att, steps=DEFAULT_STEPS, baseline=baseline)
    timings["faithfulness"], mark = time.perf_counter() - mark, time.perf_counter()
    layer_stage = att.stage if att.stage in STAGES else "layer4"  # input methods: rank at layer4
    # The cheap methods, as it always ranked: the one-shot check stays within a public server's time limit.
    ranking = rank_methods(
        analysis, stage=layer_stage, target=att.target, versus=att.versus, steps=DEFAULT_STEPS, baseline=baseline,
        methods=cheap_methods(),
    )  # fmt: skip
    timings["ranking"], mark = time.perf_counter() - mark, time.perf_counter()
    check = randomization_check(analysis, stage=stage, target=att.target, method=method)
    timings["sanity"], mark = time.perf_counter() - mark, time.perf_counter()
    cards = {}
    if (metrics or "").strip():
        report = compute_cards(analysis, att, metrics, box, object, baseline, DEFAULT_STEPS)
        cards = {"metrics": {"cards": report.to_json(), "skipped": dict(report.skipped)}}
        timings["metrics"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started
    return {
        **cards,
        "model": {"arch": analysis.arch, "weights": analysis.spec.label, "untrained": analysis.untrained},
        "map": {"method": att.method, "stage": att.stage, "target": att.target, "target_label": att.target_label,
                "versus": att.versus, "versus_label": att.versus_label},
        "faithfulness": {"steps": faith.steps, "baseline": faith.baseline,
                         "deletion_auc": faith.curves.deletion_auc, "insertion_auc": faith.curves.insertion_auc,
                         "random_deletion_auc": faith.random.deletion_auc,
                         "random_insertion_auc": faith.random.insertion_auc},
        "ranking": {"stage": layer_stage, "methods": _scores_json(ranking)},
        "sanity": {"steps": [{"randomized": s.name, "spearman": s.correlation} for s in check.steps],
                   "passed": check.passed, "verdict": check.verdict},
        "timings": timings,
    }  # fmt: skip
