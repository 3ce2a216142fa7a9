"""The explanation engine against reference pipelines (``python -m resnet_demo bench``).

Every row runs on the same preprocessed image, in one process, interleaved
repeat by repeat (so a noisy neighbour on a shared CPU slows all rows alike), and is
reported as its median time and as a ratio to the unit: torchvision's eager forward
of the same architecture under ``inference_mode``.

Rows: torchvision's forward (the unit); a naive pipeline (a forward for the
prediction, another for the feature maps, then captum's ``LayerGradCam`` once per
stage); pytorch-grad-cam's ``GradCAM`` on ``layer4`` (if installed); and this
engine's plain prediction, full explain (top-5, layer4 Grad-CAM, feature maps of all
stages, block statistics) and all-stage Grad-CAM, and both again with the forward in bfloat16
where the CPU has it natively (see :mod:`resnet_demo.core.precision`). ``--methods`` adds the
slow attribution methods, ``--compile`` the engine under ``torch.compile``.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm
from PIL import Image

from ..core.model import STAGES
from ..core.precision import native_bfloat16
from ..core.weights import LoadedModel, shared_model
from ..explain import Prepared, analyze, predict, prepare
from .report import cpu_description, markdown, print_json_report, text_table, time_interleaved, write_text

__all__ = ["DEFAULT_IMAGE", "GOALS", "Row", "bench_arch", "run"]

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_IMAGE = ROOT / "examples" / "cat.jpg"

# Goals, as ratios to the unit (resnet50; the same hold for 101/152).
GOALS = {
    "engine: full explain": 0.7,
    "engine: all-stage Grad-CAM": 1.6,
    "engine: plain prediction": 0.5,
    "engine: full explain, bfloat16": 0.8,
    "engine: all-stage Grad-CAM, bfloat16": 1.6,
}

_Rows = dict[str, Callable[[], Any]]


@dataclasses.dataclass
class Row:
    name: str
    median_s: float
    min_s: float
    ratio: float  # median / median of the unit
    min_ratio: float  # min / min of the unit: less sensitive to a busy neighbour on a shared CPU
    goal: float | None = None


def bench_model(arch: str, weights: str, size: int | None) -> LoadedModel:
    """The shared model (random weights when the named ones are missing), its crop set to ``size``."""
    lm = shared_model(arch=arch, weights=weights, fallback_to_random=True)
    if size is None:
        return lm
    pre = dataclasses.replace(
        lm.spec.preprocessing, crop_size=size, resize_size=round(size * lm.spec.preprocessing.resize_size / 224)
    )
    return dataclasses.replace(lm, spec=dataclasses.replace(lm.spec, preprocessing=pre))


def torchvision_twin(lm: LoadedModel, *, grad: bool) -> torch.nn.Module:
    """torchvision's own model with the same weights (its state_dict keys are ours)."""
    with torch.device("meta"):  # skip the random init: every tensor is replaced below
        tv = getattr(tvm, lm.spec.arch)(num_classes=lm.spec.num_classes)
    # Copies: the twin may be made trainable, and the shared model must stay as it is.
    tv.load_state_dict({k: v.clone() for k, v in lm.model.state_dict().items()}, assign=True)
    tv.eval().requires_grad_(grad)  # the naive pipeline keeps torchvision's default: trainable
    return tv


def _naive(tv: torch.nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    """What a first version would do: a forward per question, captum per stage."""
    from captum.attr import LayerAttribution, LayerGradCam
    from torchvision.models.feature_extraction import create_feature_extractor

    nodes = {"maxpool": "stem", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4"}
    extractor = create_feature_extractor(tv, return_nodes=nodes)
    layers = [tv.maxpool, tv.layer1, tv.layer2, tv.layer3, tv.layer4]

    def run() -> Any:
        with torch.no_grad():
            probs = torch.softmax(tv(x), dim=1)
            top = int(probs.argmax())
            feats = extractor(x)
            _ = {k: v[0].mean(dim=(1, 2)).topk(16) for k, v in feats.items()}
        maps = []
        for layer in layers:
            attr = LayerGradCam(tv, layer).attribute(x, target=top, relu_attributions=True)
            maps.append(LayerAttribution.interpolate(attr, x.shape[-2:], interpolate_mode="bilinear"))
        return maps

    return run


def _reference_rows(lm: LoadedModel, x: torch.Tensor) -> _Rows:
    rows: _Rows = {"naive: 2 forwards + captum LayerGradCam x5": _naive(torchvision_twin(lm, grad=True), x)}
    try:
        from pytorch_grad_cam import GradCAM
    except ImportError:
        return rows
    tv = torchvision_twin(lm, grad=True)
    cam = GradCAM(model=tv, target_layers=[tv.layer4[-1]])
    rows["pytorch-grad-cam GradCAM (layer4)"] = lambda: cam(input_tensor=x, targets=None)
    return rows


def _engine_rows(lm: LoadedModel, prepared: Prepared, *, compile: bool = False) -> _Rows:
    """The engine's plain prediction and full explain (``compile``: under torch.compile)."""

    def full() -> Any:
        a = analyze(image=prepared, model=lm, topk=5, compile=compile)
        a.attribution(stage="layer4")
        return a.predictions, a.blocks, [a.feature_maps(s) for s in STAGES]

    suffix = ", torch.compile" if compile else ""
    return {
        f"engine: plain prediction{suffix}": lambda: predict(image=prepared, model=lm, topk=5, compile=compile),
        f"engine: full explain{suffix}": full,
    }


def _bfloat16_rows(lm: LoadedModel, prepared: Prepared) -> _Rows:
    """The full explain and the all-stage Grad-CAM with the forward in bfloat16: the maps below
    layer4 then take a float32 rerun from the stem, as the precision rule has it."""

    def full() -> Any:
        a = analyze(image=prepared, model=lm, topk=5, precision="bfloat16")
        a.attribution(stage="layer4")
        return a.predictions, a.blocks, [a.feature_maps(s) for s in STAGES]

    def all_stages() -> Any:
        a = analyze(image=prepared, model=lm, topk=5, precision="bfloat16")
        return a.attributions(stages=STAGES)

    return {"engine: full explain, bfloat16": full, "engine: all-stage Grad-CAM, bfloat16": all_stages}


def _method_rows(lm: LoadedModel, prepared: Prepared) -> _Rows:
    """The on-demand methods, each on a fresh copy of one analysis, so that every call computes its map."""
    shared = analyze(image=prepared, model=lm)
    rows: _Rows = {}
    for stage in ("layer3", "layer2", "layer1", "stem"):
        rows[f"engine: Grad-CAM {stage} on demand"] = lambda s=stage: shared.fresh().attribution(stage=s)
    rows["engine: Guided Grad-CAM (layer4)"] = lambda: shared.fresh().attribution(method="guided-gradcam")
    rows["engine: Integrated Gradients"] = lambda: shared.fresh().attribution(method="ig")
    rows["engine: Occlusion"] = lambda: shared.fresh().attribution(method="occlusion")
    return rows


def bench_arch(args: argparse.Namespace, arch: str) -> list[Row]:
    """Every row for ``arch``, timed; the first row is the unit."""
    lm = bench_model(arch, args.weights, args.size)
    image = Image.open(args.image) if Path(args.image).exists() else Image.new("RGB", (320, 240), (120, 90, 60))
    prepared = prepare(image=image, preprocessing=lm.spec.preprocessing)
    x = prepared.tensor
    tv = torchvision_twin(lm, grad=False)

    def unit() -> Any:
        with torch.inference_mode():
            return tv(x)

    def all_stages() -> Any:
        a = analyze(image=prepared, model=lm, topk=5, gradcam_stages=STAGES)
        return a.attributions(stages=STAGES)

    rows: _Rows = {f"torchvision {arch} eager forward (unit)": unit}
    if not args.no_reference:
        rows.update(_reference_rows(lm, x))
    rows.update(_engine_rows(lm, prepared))
    rows["engine: all-stage Grad-CAM"] = all_stages
    if native_bfloat16(device=next(lm.model.parameters()).device):
        rows.update(_bfloat16_rows(lm, prepared))
    else:  # emulated bfloat16 is slower than float32: nothing to learn from timing it
        print("bfloat16 rows left out: this CPU has no native bfloat16 (AVX-512 BF16 or AMX).", file=sys.stderr)
    if args.compile:
        t0 = time.perf_counter()
        predict(image=prepared, model=lm, compile=True)  # compiles; timed apart from the rows
        print(f"torch.compile warm-up for {arch}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        rows.update(_engine_rows(lm, prepared, compile=True))
    if args.methods:
        rows.update(_method_rows(lm, prepared))

    times = time_interleaved(rows, repeats=args.repeats, warmup=args.warmup)
    unit_times = next(iter(times.values()))
    return [
        Row(
            name,
            statistics.median(ts),
            min(ts),
            statistics.median(ts) / statistics.median(unit_times),
            min(ts) / min(unit_times),
            GOALS.get(name),
        )
        for name, ts in times.items()
    ]


def _cells(row: Row, *, markdown: bool) -> list[str]:
    """A row as table cells; the goal reads "<= 0.7x met" on the console, "<= 0.7x: met" in Markdown."""
    goal = ""
    if row.goal is not None and markdown:
        goal = f"<= {row.goal:.1f}x: {'met' if row.ratio <= row.goal else 'missed'}"
    elif row.goal is not None:
        goal = f"<= {row.goal:.1f}x {'met' if row.ratio <= row.goal else 'MISSED'}"
    ms = [f"{row.median_s * 1000:.1f}", f"{row.min_s * 1000:.1f}"]
    return [row.name, *ms, f"{row.ratio:.2f}x", f"{row.min_ratio:.2f}x", goal]


def _markdown(results: dict[str, list[Row]], env: dict[str, Any], *, size: int, repeats: int) -> str:
    intro = (
        f"Measured with `python -m resnet_demo bench` at {size}x{size}, batch 1, torch {env['torch']}, "
        f"{env['threads']} threads ({env['cpu']}), {repeats} interleaved runs per row. Ratio = median / "
        f"median of torchvision's eager forward of the same architecture under `inference_mode`; "
        f"min ratio = fastest / fastest, which a busy neighbour on the shared CPU disturbs less."
    )
    header = ["pipeline", "median ms", "min ms", "ratio", "min ratio", "goal"]
    tables = {arch: [_cells(r, markdown=True) for r in rows] for arch, rows in results.items()}
    return markdown(intro, header, tables)


def _print_text(results: dict[str, list[Row]], env: dict[str, Any], *, size: int) -> None:
    columns = [("pipeline", 44), ("median ms", 10), ("min ms", 9), ("ratio", 7), ("min ratio", 9), ("goal", 0)]
    for arch, rows in results.items():
        print(f"{arch} at {size}x{size}, {env['threads']} threads, torch {env['torch']}")
        print("\n".join(text_table(columns, [_cells(r, markdown=False) for r in rows])))
        print()


def run(args: argparse.Namespace) -> int:
    """The benchmark of the ``bench`` command's namespace: every ``--arch``, printed and written as asked."""
    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_description(),
        "python": platform.python_version(),
    }
    results = {arch: bench_arch(args, arch) for arch in args.arch}
    size = args.size or 224
    if args.json:
        print_json_report(env=env, size=size, goals=GOALS, results=results)
    else:
        _print_text(results, env, size=size)
    if args.markdown:
        write_text(args.markdown, _markdown(results, env, size=size, repeats=args.repeats))
    return 0
