"""``python -m resnet_demo bench``: the explanation engine against reference pipelines.

Every row runs on the same preprocessed image, in one process, interleaved
repeat by repeat (so a noisy neighbour on a shared CPU slows all rows alike), and is
reported as its median time and as a ratio to the unit: torchvision's eager forward
of the same architecture under ``inference_mode``.

Rows: torchvision's forward (the unit); a naive pipeline (a forward for the
prediction, another for the feature maps, then captum's ``LayerGradCam`` once per
stage); pytorch-grad-cam's ``GradCAM`` on ``layer4`` (if installed); and this
engine's plain prediction, full explain (top-5, layer4 Grad-CAM, feature maps of all
stages, block statistics) and all-stage Grad-CAM. ``--methods`` adds the slow
attribution methods; ``--train`` runs the fine-tuning benchmark instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
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

from .devices import configure_threads
from .explain import STAGES, analyze, predict, prepare
from .weights import ARCHES, DEFAULT_WEIGHTS, LoadedModel, shared_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = ROOT / "examples" / "cat.jpg"

# Goals from the issue, as ratios to the unit (resnet50; the same hold for 101/152).
GOALS = {"engine: full explain": 0.7, "engine: all-stage Grad-CAM": 1.6, "engine: plain prediction": 0.5}


@dataclasses.dataclass
class Row:
    name: str
    median_s: float
    min_s: float
    ratio: float  # median / median of the unit
    min_ratio: float  # min / min of the unit: less sensitive to a busy neighbour on a shared CPU
    goal: float | None = None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=ARCHES, action="append", help="architecture (repeatable; default resnet50)")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help="weights name or path (random if unavailable)")
    parser.add_argument("--image", default=str(DEFAULT_IMAGE), help="photo to explain (default examples/cat.jpg)")
    parser.add_argument("--size", type=int, default=None, help="crop size in pixels (default: the weights' 224)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed runs per row (default 15, with --train 5); medians reported"
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs per row first (default 2, --train 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: the usable cores)")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size (the --train benchmark)")
    parser.add_argument("--no-reference", action="store_true", help="skip the naive and pytorch-grad-cam rows")
    parser.add_argument(
        "--methods", action="store_true", help="also time on-demand Grad-CAM, Guided Grad-CAM, IG, Occlusion (slow)"
    )
    parser.add_argument("--compile", action="store_true", help="also time the engine under torch.compile (slow start)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown to FILE")
    parser.add_argument("--train", action="store_true", help="benchmark fine-tuning instead (resnet_demo.bench_train)")


def _loaded(arch: str, weights: str, size: int | None) -> LoadedModel:
    lm = shared_model(arch=arch, weights=weights, fallback_to_random=True)
    if size is None:
        return lm
    pre = dataclasses.replace(
        lm.spec.preprocessing, crop_size=size, resize_size=round(size * lm.spec.preprocessing.resize_size / 224)
    )
    return dataclasses.replace(lm, spec=dataclasses.replace(lm.spec, preprocessing=pre))


def _torchvision_twin(lm: LoadedModel, *, grad: bool) -> torch.nn.Module:
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


def _grad_cam_lib(tv: torch.nn.Module, x: torch.Tensor) -> Callable[[], Any] | None:
    try:
        from pytorch_grad_cam import GradCAM
    except ImportError:
        return None
    cam = GradCAM(model=tv, target_layers=[tv.layer4[-1]])
    return lambda: cam(input_tensor=x, targets=None)


def _timed(rows: dict[str, Callable[[], Any]], *, repeats: int, warmup: int) -> dict[str, list[float]]:
    for fn in rows.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeats):
        for name, fn in rows.items():  # interleaved: contention hits every row alike
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def bench_arch(args: argparse.Namespace, arch: str) -> list[Row]:
    lm = _loaded(arch, args.weights, args.size)
    image = Image.open(args.image) if Path(args.image).exists() else Image.new("RGB", (320, 240), (120, 90, 60))
    prepared = prepare(image=image, preprocessing=lm.spec.preprocessing)
    x = prepared.tensor
    tv = _torchvision_twin(lm, grad=False)

    def unit() -> Any:
        with torch.inference_mode():
            return tv(x)

    def plain() -> Any:
        return predict(image=prepared, loaded=lm, topk=5)

    def full() -> Any:
        a = analyze(image=prepared, loaded=lm, topk=5)
        a.attribution(stage="layer4")
        grids = [a.feature_maps(s) for s in STAGES]
        return a.predictions, a.blocks, grids

    def all_stages() -> Any:
        a = analyze(image=prepared, loaded=lm, topk=5, gradcam_stages=STAGES)
        return a.attributions(stages=STAGES)

    rows: dict[str, Callable[[], Any]] = {f"torchvision {arch} eager forward (unit)": unit}
    if not args.no_reference:
        tv_grad = _torchvision_twin(lm, grad=True)
        rows["naive: 2 forwards + captum LayerGradCam x5"] = _naive(tv_grad, x)
        lib = _grad_cam_lib(_torchvision_twin(lm, grad=True), x)
        if lib is not None:
            rows["pytorch-grad-cam GradCAM (layer4)"] = lib
    rows["engine: plain prediction"] = plain
    rows["engine: full explain"] = full
    rows["engine: all-stage Grad-CAM"] = all_stages
    if args.compile:
        t0 = time.perf_counter()
        predict(image=prepared, loaded=lm, compile=True)  # compiles; timed apart from the rows
        print(f"torch.compile warm-up for {arch}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        rows["engine: plain prediction, torch.compile"] = lambda: predict(image=prepared, loaded=lm, compile=True)

        def full_compiled() -> Any:
            a = analyze(image=prepared, loaded=lm, topk=5, compile=True)
            a.attribution(stage="layer4")
            return a.predictions, a.blocks, [a.feature_maps(s) for s in STAGES]

        rows["engine: full explain, torch.compile"] = full_compiled
    if args.methods:
        shared = analyze(image=prepared, loaded=lm)
        for stage in ("layer3", "layer2", "layer1", "stem"):
            rows[f"engine: Grad-CAM {stage} on demand"] = lambda s=stage: _fresh(shared).attribution(stage=s)
        rows["engine: Guided Grad-CAM (layer4)"] = lambda: _fresh(shared).attribution(method="guided-gradcam")
        rows["engine: Integrated Gradients"] = lambda: _fresh(shared).attribution(method="ig")
        rows["engine: Occlusion"] = lambda: _fresh(shared).attribution(method="occlusion")

    times = _timed(rows, repeats=args.repeats, warmup=args.warmup)
    unit = next(iter(times.values()))
    return [
        Row(name, statistics.median(ts), min(ts), statistics.median(ts) / statistics.median(unit),
            min(ts) / min(unit), GOALS.get(name))
        for name, ts in times.items()
    ]


def _fresh(analysis: Any) -> Any:
    """A copy of an analysis with an empty cache, so that each timed call computes its map."""
    clone = object.__new__(type(analysis))
    clone.__dict__.update(analysis.__dict__)
    clone._cache, clone._raw_gradcam, clone._block_acts = {}, {}, {}
    return clone


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": f"{_cpu_name()}, {torch.backends.cpu.get_cpu_capability()}",
        "python": platform.python_version(),
    }


def markdown(results: dict[str, list[Row]], env: dict[str, Any], *, size: int, repeats: int) -> str:
    lines = [
        f"Measured with `python -m resnet_demo bench` at {size}x{size}, batch 1, torch {env['torch']}, "
        f"{env['threads']} threads ({env['cpu']}), {repeats} interleaved runs per row. Ratio = median / "
        f"median of torchvision's eager forward of the same architecture under `inference_mode`; "
        f"min ratio = fastest / fastest, which a busy neighbour on the shared CPU disturbs less.",
        "",
    ]
    for arch, rows in results.items():
        lines += [
            f"**{arch}**",
            "",
            "| pipeline | median ms | min ms | ratio | min ratio | goal |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            goal = "" if r.goal is None else f"<= {r.goal:.1f}x: {'met' if r.ratio <= r.goal else 'missed'}"
            lines.append(
                f"| {r.name} | {r.median_s * 1000:.1f} | {r.min_s * 1000:.1f} | {r.ratio:.2f}x "
                f"| {r.min_ratio:.2f}x | {goal} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    args.arch = args.arch or ["resnet50"]
    args.repeats = (5 if args.train else 15) if args.repeats is None else args.repeats
    args.warmup = (1 if args.train else 2) if args.warmup is None else args.warmup
    if args.train:
        return int(importlib.import_module("resnet_demo.bench_train").main(args) or 0)
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    configure_threads()
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    env = _environment()
    results = {arch: bench_arch(args, arch) for arch in args.arch}
    size = args.size or 224
    if args.json:
        report = {
            "environment": env,
            "size": size,
            "goals": GOALS,
            "results": {a: [dataclasses.asdict(r) for r in rows] for a, rows in results.items()},
        }
        print(json.dumps(report, indent=2))
    else:
        for arch, rows in results.items():
            print(f"{arch} at {size}x{size}, {env['threads']} threads, torch {env['torch']}")
            print(f"{'pipeline':<44} {'median ms':>10} {'min ms':>9} {'ratio':>7} {'min ratio':>9}  goal")
            for r in rows:
                goal = "" if r.goal is None else f"<= {r.goal:.1f}x {'met' if r.ratio <= r.goal else 'MISSED'}"
                print(
                    f"{r.name:<44} {r.median_s * 1000:>10.1f} {r.min_s * 1000:>9.1f} {r.ratio:>6.2f}x "
                    f"{r.min_ratio:>8.2f}x  {goal}"
                )
            print()
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown(results, env, size=size, repeats=args.repeats))
    return 0
