"""The cost of trusting a map (``python -m resnet_demo bench --trust``).

Rows, timed interleaved in one process on one preprocessed photo, each a ratio to its
reference in the same run:

* every cheap method at every stage it supports, for the top class, from the photo
  (the forward included), against torchvision's eager forward (the unit), as the app
  runs it for a new photo: Grad-CAM's backward in the forward's own pass
  (``analyze(gradcam_stages=...)``), then every other method from the stored gradients;
* the same from an analysis made without it (its Grad-CAM reruns the network from the
  stem's stored output: a second forward, for callers that ask for maps later);
* one more cheap method at ``layer3`` on an analysis that already has Grad-CAM at every
  stage (what a user pays to switch method), against the unit;
* deletion and insertion curves of one map (16 steps each, 32 images), per image,
  against a batched forward of the same network and batch size (8), per image: the
  overhead of building the perturbed images;
* LRP and CRP's six concepts at layer4 and layer3 (:mod:`.relevance`), against the unit;
  DFF on an existing analysis against the unit, RISE's 1,000 masks against a batched forward
  of 1,000 images and SmoothGrad's 25 samples against 25 batched forward + backwards
  (:mod:`.perturbation`, timed in a round of their own);
* the metric cards of one map, whole and metric by metric (:mod:`.metrics`), against the unit. Ranking the cheap methods costs one such
  pair of curves per method (and one for the random map), so it needs no row of its own.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..core.model import STAGES
from ..core.weights import LoadedModel
from ..explain import Analysis, analyze, cheap_methods, get_method, prepare
from ..explain.baselines import blurred_baseline
from ..explain.faithfulness import deletion_insertion
from .explain import bench_model, torchvision_twin
from .metrics import bench_metric_cards
from .perturbation import bench_perturbation
from .relevance import goal_of, relevance_rows
from .report import TrustRow, cpu_description, markdown, print_json_report, text_table, time_interleaved, write_text

__all__ = ["GOALS", "TrustRow", "bench_arch", "main"]

STEPS, BATCH = 16, 8  # the defaults of the curves
UNIT = "unit"
BATCHED = "batched forward"
LATER = "every cheap method at every stage, asked after the forward"
# Goals, as ratios to each row's reference.
GOALS = {
    "every cheap method at every stage": 2.2,
    "one more cheap method at layer3": 0.05,
    "deletion + insertion, per image": 1.10,
}


def _methods_at(stage: str) -> list[str]:
    return [m for m in cheap_methods() if get_method(m).stages is None or stage in get_method(m).stages]


def _every_map(lm: LoadedModel, image: Any, *, same_pass: bool) -> Callable[[], Any]:
    def run() -> Any:
        a = analyze(image=image, model=lm, topk=5, gradcam_stages=STAGES if same_pass else ())
        for m in cheap_methods():
            stages = get_method(m).stages or STAGES
            a.attributions(stages=stages, method=m)
        return a

    return run


def _one_more(lm: LoadedModel, image: Any, rounds: int) -> tuple[str, Callable[[], Any]]:
    """A method that is not Grad-CAM, on analyses prepared (untimed) with Grad-CAM at every stage."""
    others = [m for m in _methods_at("layer3") if m != "gradcam"]
    method = "xgradcam" if "xgradcam" in others else (others[0] if others else "gradcam")
    pool: list[Analysis] = []
    for _ in range(rounds):
        a = analyze(image=image, model=lm, gradcam_stages=STAGES)
        a.attributions(stages=STAGES)
        pool.append(a if method != "gradcam" else a.fresh())  # Grad-CAM alone: a fresh cache, its cost
    return method, lambda: pool.pop().attribution(stage="layer3", method=method)


def _curve_rows(analysis: Analysis) -> dict[str, Callable[[], Any]]:
    model, image = analysis.model, analysis.input
    baseline = blurred_baseline(image)
    top = analysis.predictions[0].index
    heatmap = analysis.attribution(stage="layer4", target=top).heatmap
    batch = image.expand(BATCH, -1, -1, -1).contiguous(memory_format=torch.channels_last)  # (8, 3, H, W)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return model(x)

    def batched() -> Any:
        with torch.inference_mode():
            return forward(batch)

    def curves() -> Any:
        return deletion_insertion(
            forward=forward, image=image, baseline=baseline, heatmap=heatmap, target=top, steps=STEPS, batch_size=BATCH
        )

    return {BATCHED: batched, "deletion + insertion, per image": curves}


def bench_arch(args: argparse.Namespace, arch: str) -> list[TrustRow]:
    """Every row for ``arch``, timed; ratios to each row's reference."""
    lm = bench_model(arch, args.weights, args.size)
    photo = Image.open(args.image) if Path(args.image).exists() else Image.new("RGB", (320, 240), (120, 90, 60))
    image = prepare(image=photo, preprocessing=lm.spec.preprocessing)
    tv = torchvision_twin(lm, grad=False)
    analysis = analyze(image=image, model=lm)

    def unit() -> Any:
        with torch.inference_mode():
            return tv(image.tensor)

    method, one_more = _one_more(lm, image, args.warmup + args.repeats)
    rows: dict[str, Callable[[], Any]] = {
        UNIT: unit,
        "every cheap method at every stage": _every_map(lm, image, same_pass=True),
        LATER: _every_map(lm, image, same_pass=False),
        "one more cheap method at layer3": one_more,
        **_curve_rows(analysis),
        **relevance_rows(analysis),  # LRP, and CRP's default tiles at layer4 and layer3
    }
    times = time_interleaved(rows, repeats=args.repeats, warmup=args.warmup)
    # Per image: the curves forward 2 * STEPS images, the batched reference BATCH.
    per = {BATCHED: BATCH, "deletion + insertion, per image": 2 * STEPS}
    times = {k: [t / per.get(k, 1) for t in ts] for k, ts in times.items()}
    reference = {"deletion + insertion, per image": BATCHED}
    labels = {
        UNIT: f"torchvision {arch} eager forward (unit)",
        BATCHED: f"batched forward of {BATCH}, per image",
        "one more cheap method at layer3": f"one more cheap method ({method}) at layer3",
    }
    rows_out = []
    for name, ts in times.items():
        ref = reference.get(name, UNIT)
        rows_out.append(
            TrustRow(
                labels.get(name, name),
                statistics.median(ts),
                min(ts),
                labels.get(ref, ref),
                statistics.median(ts) / statistics.median(times[ref]),
                min(ts) / min(times[ref]),
                GOALS.get(name, goal_of(name)),
            )
        )
    # DFF, RISE and SmoothGrad against their own references (a batched forward of as many images),
    # timed apart: RISE's 1,000 masks would stretch every other row's interleaving.
    perturbation = bench_perturbation(
        loaded=lm, image=image, repeats=args.repeats, warmup=args.warmup, rise_masks=args.masks
    )
    # The metric cards: the whole card of one map, and every metric alone, against the unit.
    cards = bench_metric_cards(
        arch=arch, weights=args.weights, size=args.size, image=args.image, repeats=args.repeats, warmup=args.warmup
    )
    return rows_out + [r for r in [*perturbation, *cards] if r.name != labels[UNIT]]


def _cells(row: TrustRow) -> list[str]:
    goal = "" if row.goal is None else f"<= {row.goal:g}x {'met' if row.ratio <= row.goal else 'MISSED'}"
    reference = "unit" if row.reference.endswith("(unit)") else row.reference
    return [
        row.name,
        f"{row.median_s * 1000:.1f}",
        f"{row.min_s * 1000:.1f}",
        f"{row.ratio:.3f}x",
        f"{row.min_ratio:.3f}x",
        reference,
        goal,
    ]


def main(args: argparse.Namespace) -> int:
    """Run the trust benchmark for every ``--arch`` of the ``bench`` command's namespace."""
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_description()}
    results = {arch: bench_arch(args, arch) for arch in args.arch}
    size = args.size or 224
    header = ["pipeline", "median ms", "min ms", "ratio", "min ratio", "reference", "goal"]
    if args.json:
        print_json_report(env=env, size=size, goals=GOALS, results=results)
    else:
        widths = [48, 10, 9, 9, 10, 38, 0]
        for arch, rows in results.items():
            print(f"{arch} at {size}x{size}, {env['threads']} threads, torch {env['torch']} ({env['cpu']})")
            print("\n".join(text_table(list(zip(header, widths, strict=True)), [_cells(r) for r in rows])))
            print()
    if args.markdown:
        intro = (
            f"Measured with `python -m resnet_demo bench --trust` at {size}x{size}, torch {env['torch']}, "
            f"{env['threads']} threads ({env['cpu']}), {args.repeats} interleaved runs per row; ratio = "
            "median / median of the reference row, per image for the per-image rows."
        )
        write_text(
            args.markdown, markdown(intro, header, {a: [_cells(r) for r in rows] for a, rows in results.items()})
        )
    return 0
