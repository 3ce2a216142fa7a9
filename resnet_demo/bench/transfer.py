"""Segmentation and detection models and their Grad-CAM (``python -m resnet_demo bench --transfer``).

Rows, per model, timed interleaved in one process on one synthetic 640x480 photo at the
model's own input size (``--size``: the short side; default the entry's, 520 for
segmentation and 800 for detection):

* the classifier's forward: this package's ResNet of the backbone's architecture
  (undilated: it is the classifier), under ``inference_mode``, on the very batch the
  model's backbone sees (the unit);
* the model's own forward (:func:`~resnet_demo.transfer.segment.segment` or
  :func:`~resnet_demo.transfer.detect.detect`), as the app runs it;
* its explanation (:func:`~resnet_demo.transfer.explain.explain_transfer`: one forward
  keeping the graph, one backward) at layer4, and at all five stages; without the
  feature grids, which are drawing, not explanation; then the five stages with them.

Each ratio is paired within a round (the two calls ran seconds apart under the same load),
then the median is taken. Goal: an explanation at most 2.5x the model's own forward.

Random weights (offline) detect nothing: every class score sits below the detectors'
own 0.05 cut. The benchmark then times a per-call copy whose cut is 0, for the forward
and the explanation alike; the shared model is never changed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..core.errors import UserError
from ..core.images import load_image
from ..core.model import STAGES, build_model
from ..core.shell import shell
from ..transfer.detect import detect, detector_batch
from ..transfer.explain import explain_transfer
from ..transfer.segment import prepare_segment, segment
from ..transfer.weights import MODELS, TransferModel, shared_transfer, transfer_spec
from .report import cpu_description, markdown, text_table, time_interleaved, write_text

__all__ = ["DEFAULT_MODELS", "GOAL", "TransferRow", "bench_transfer", "main", "parse_models", "synthetic_photo"]

DEFAULT_MODELS: tuple[str, ...] = ("deeplabv3", "fcn", "fasterrcnn", "maskrcnn", "retinanet")
GOAL = 2.5  # an explanation at most this many times the model's own forward
PHOTO_SIZE = (640, 480)  # (width, height)
OPEN_CUT_NOTE = "score cut 0.05 -> 0 in a copy"
# Why the cut is opened, and what that does to the cost of a forward.
OPEN_CUT_WHY = (
    "Random weights score every class below the detectors' own 0.05 cut, so the rows marked "
    f"'{OPEN_CUT_NOTE}' time a copy of the detector with the cut at 0 (forward and explanation alike), to have "
    "a detection to explain: the box head scores every proposal either way, but more boxes are kept (up to "
    "100; RetinaNet 300), and Mask R-CNN runs its mask head on each."
)

CLASSIFIER, FORWARD = "classifier forward", "model forward"
ONE_STAGE, STRIP, WITH_FEATURES = "explain: layer4", "explain: 5 stages", "explain: 5 stages + feature grids"


@dataclasses.dataclass
class TransferRow:
    name: str
    median_s: float
    vs_classifier: float  # median of the per-round ratios to the classifier's forward
    vs_forward: float | None  # the same, to the model's own forward (explanation rows)
    goal: float | None = None  # on vs_forward


def synthetic_photo(*, size: tuple[int, int] = PHOTO_SIZE, seed: int = 0) -> Image.Image:
    """A reproducible photo: shapes over noise, so that every model has edges and regions to work on."""
    width, height = size
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))  # (H, W, 3)
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 10, height // 8, width // 2, height * 7 // 8), fill=(200, 40, 40))
    draw.rectangle((width * 3 // 5, height // 5, width * 9 // 10, height * 4 // 5), fill=(30, 160, 60))
    return image


def parse_models(text: str | None) -> list[tuple[str, str, str]]:
    """``"deeplabv3,fasterrcnn"`` (or ``"fcn:resnet101"``) as (task, model, backbone) triples; None: the defaults."""
    names = [n.strip() for n in (text or ",".join(DEFAULT_MODELS)).split(",") if n.strip()]
    if not names:
        raise UserError("Name at least one model after --transfer-models, e.g. deeplabv3,fasterrcnn.")
    known = {m: task for task, models in MODELS.items() for m in models}
    out = []
    for name in names:
        model, _, backbone = name.partition(":")
        if model not in known:
            raise UserError(f"Unknown model {model!r:.40}; choose from {', '.join(known)}.")
        spec = transfer_spec(task=known[model], model=model, backbone=backbone or "resnet50")  # checks the pair
        out.append((spec.task, spec.model, spec.backbone))
    return out


def _open_cut(loaded: TransferModel) -> TransferModel:
    """A copy of a detector whose internal score cut is 0, sharing every weight: random weights then keep
    their (low-scoring) detections. The shared model and its heads stay as they are."""
    net = shell(loaded.model)  # its own modules: the cut set below stays on the copy
    # Faster / Mask R-CNN cut in their box head; RetinaNet in its own postprocess.
    (net.roi_heads if hasattr(net, "roi_heads") else net).score_thresh = 0.0
    return dataclasses.replace(loaded, model=net)


def _explainer(loaded: TransferModel, image: Image.Image, *, size: int | None, target: int | None,
               stages: Sequence[str], features: bool) -> Callable[[], Any]:  # fmt: skip
    # Detection explains the best detection whatever its score; segmentation ignores the threshold.
    return lambda: explain_transfer(loaded=loaded, image=image, target=target, stages=stages, threshold=0.0,
                                    size=size, features=features)  # fmt: skip


def _explains(loaded: TransferModel, image: Image.Image, size: int | None) -> bool:
    """Whether the detector has a best detection to explain on ``image`` (a forward, no backward)."""
    return bool(detect(loaded=loaded, image=image, threshold=0.0, size=size).items)


def _timed_model(loaded: TransferModel, image: Image.Image, size: int | None) -> tuple[TransferModel, int | None, str]:
    """The model to time (the shared one, or a detector with its score cut opened), its target, and a note.

    Segmentation's target is None: the largest class other than background, or background
    when that is all there is, so there is always a map. Detection's is the best detection.
    """
    if loaded.spec.task == "segment":
        return loaded, None, ""
    # A trained detector as it is first; random weights, or nothing found on this photo: the cut opened.
    tries = [] if loaded.untrained else [(loaded, "")]
    tries.append((_open_cut(loaded), OPEN_CUT_NOTE))
    for timed, note in tries:
        if _explains(timed, image, size):
            return timed, 0, note
    raise UserError(f"{loaded.spec.label} finds nothing to explain on this photo; try another --image.")


def bench_transfer(
    *, task: str, model: str, backbone: str = "resnet50", image: Image.Image, size: int | None = None,
    repeats: int, warmup: int, features: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Every row of the module docstring for one model: its label, the input the backbone saw, a note, and the rows."""
    shared = shared_transfer(task=task, model=model, backbone=backbone, fallback_to_random=True)
    loaded, target, note = _timed_model(shared, image, size)
    segments = task == "segment"
    # The batch the backbone sees: (1, 3, h, w), for detection resized, normalised and padded to 32.
    x = prepare_segment(loaded, image, size=size) if segments else detector_batch(loaded, image, size=size)
    classifier = build_model(backbone).eval()

    def forward() -> Any:
        if segments:
            return segment(loaded=loaded, image=image, size=size)
        return detect(loaded=loaded, image=image, threshold=0.0, size=size)

    def classify() -> Any:
        with torch.inference_mode():
            return classifier(x)

    rows = {CLASSIFIER: classify, FORWARD: forward,
            ONE_STAGE: _explainer(loaded, image, size=size, target=target, stages=("layer4",), features=False),
            STRIP: _explainer(loaded, image, size=size, target=target, stages=STAGES, features=False)}  # fmt: skip
    if features:
        rows[WITH_FEATURES] = _explainer(loaded, image, size=size, target=target, stages=STAGES, features=True)
    times = time_interleaved(rows, repeats=repeats, warmup=warmup, rotate=True)

    def paired(name: str, ref: str) -> float:
        return statistics.median(a / b for a, b in zip(times[name], times[ref], strict=True))

    out = [TransferRow(f"{CLASSIFIER} ({backbone})", statistics.median(times[CLASSIFIER]), 1.0, None)]
    for name, ts in times.items():
        if name != CLASSIFIER:
            explains = name != FORWARD
            out.append(TransferRow(name, statistics.median(ts), paired(name, CLASSIFIER),
                                   paired(name, FORWARD) if explains else None,
                                   GOAL if explains and name != WITH_FEATURES else None))  # fmt: skip
    return {"label": shared.spec.label, "input": list(x.shape[-2:]), "untrained": shared.untrained,
            "note": note, "rows": out}  # fmt: skip


def _cells(row: TransferRow) -> list[str]:
    goal = "" if row.goal is None or row.vs_forward is None else (
        f"<= {row.goal:g}x model's forward: {'met' if row.vs_forward <= row.goal else 'MISSED'}"
    )  # fmt: skip
    forward = "" if row.vs_forward is None else f"{row.vs_forward:.2f}x"
    return [row.name, f"{row.median_s:.3f}", f"{row.vs_classifier:.2f}x", forward, goal]


_HEADER = ["row", "median s", "x classifier", "x model forward", "goal"]


def _title(r: dict[str, Any]) -> str:
    h, w = r["input"]
    return (
        f"{r['label']} at {h}x{w}"
        + (", random weights" if r["untrained"] else "")
        + (f" ({r['note']})" if r["note"] else "")
    )


def main(args: argparse.Namespace) -> int:
    """Run ``bench --transfer``: reads ``transfer_models``, ``image``, ``size``, ``repeats``, ``warmup``,
    ``json`` and ``markdown`` of the ``bench`` command's namespace."""
    image = load_image(Path(args.image)) if args.image else synthetic_photo()
    results = [
        bench_transfer(task=task, model=model, backbone=backbone, image=image, size=args.size,
                       repeats=args.repeats, warmup=args.warmup)
        for task, model, backbone in parse_models(args.transfer_models)
    ]  # fmt: skip
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_description()}
    photo = "the photo" if args.image else f"a synthetic {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} photo"
    if args.json:
        report = {
            "environment": env,
            "photo": list(image.size),
            "size": args.size,
            "goal": GOAL,
            "results": [{**r, "rows": [dataclasses.asdict(x) for x in r["rows"]]} for r in results],
        }
        print(json.dumps(report, indent=2))
    else:
        columns = list(zip(_HEADER, [34, 9, 13, 16, 0], strict=True))
        for r in results:
            print(f"{_title(r)}; {env['threads']} threads, torch {env['torch']} ({env['cpu']})")
            print("\n".join(text_table(columns, [_cells(x) for x in r["rows"]])))
            print()
        if any(r["note"] for r in results):
            print(OPEN_CUT_WHY)
    if args.markdown:
        intro = (
            f"Measured with `python -m resnet_demo bench --transfer` on {photo}, torch {env['torch']}, "
            f"{env['threads']} threads ({env['cpu']}), {args.repeats} interleaved runs per row; ratios paired "
            "per round, then the median; each model at its own input size (the backbone's batch in the title)."
            + (f" {OPEN_CUT_WHY}" if any(r["note"] for r in results) else "")
        )
        tables = {_title(r): [_cells(x) for x in r["rows"]] for r in results}
        write_text(args.markdown, markdown(intro, _HEADER, tables))
    return 0
