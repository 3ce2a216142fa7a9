"""Slim: what channel pruning buys and what distillation costs (``python -m resnet_demo bench --slim``).

Rows, per architecture, all in one run:

* ``pruned 30% by bn-scale`` (and rounded to multiples of 8 channels) against the
  unpruned model: multiply-accumulates, and the CPU latency at batch 1, measured
  interleaved (:func:`resnet_demo.slim.report.latency_samples`: folded inference copies,
  the way the app runs a model), the ratio paired within each round, then the median.
  Goals: MACs at most 0.75x, latency at most 0.8x.
* on CUDA, the same latency on the GPU under AMP;
* one training step of the pruned student, one teacher forward (the unpruned model,
  frozen and folded, as ``--distill-from`` loads it), and one distillation step, at
  ``--batch-size``, interleaved with the order rotating; AMP on CUDA. Goal: the
  distillation step at most (student step + teacher forward) x 1.1, paired per repeat.
  These rows use a third of ``--repeats`` (at least 3): a training step is slow on a CPU.

The weights are ``--weights`` (random when unavailable; MACs and latency do not depend on
them, and a random model ranks channels as well as any for timing).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.complexity import model_complexity
from ..core.devices import resolve_device
from ..core.fold import inference_copy
from ..core.model import ResNet
from ..core.weights import load_model
from ..finetune import DistillationLoss, apply_step, clip_gradients, forward_backward, prepare_for_training
from ..finetune.build import resolve_amp
from ..slim import prune_model
from ..slim.report import latency_samples
from .report import cpu_description, device_name, markdown, text_table, time_interleaved, write_text

__all__ = ["bench_slim", "main"]

FRACTION, MACS_GOAL, LATENCY_GOAL, DISTILL_GOAL = 0.3, 0.75, 0.8, 1.1


def _training_step(
    model: ResNet, x: torch.Tensor, y: torch.Tensor, *, criterion: nn.Module, amp: torch.dtype | None,
    teacher: nn.Module | None = None,
) -> Callable[[], None]:  # fmt: skip
    """One step of the fine-tune routine's loop (forward, loss, backward, clipping, SGD) on ``model``."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(x.device.type, enabled=amp == torch.float16)

    def step() -> None:
        loss, _ = forward_backward(
            model, x, y, criterion=criterion, amp_dtype=amp, scaler=scaler, loss_divisor=1, teacher=teacher
        )
        float(loss)  # the loop reads the loss every step
        clip_gradients(optimizer, scaler, params, max_norm=1.0)
        apply_step(optimizer, scaler)

    return step


def _distill_rows(
    original: ResNet, pruned: ResNet, *, device: torch.device, batch_size: int, image_size: int, repeats: int, warmup: int
) -> dict[str, Any]:  # fmt: skip
    """Median seconds of the student step, the teacher forward and the distillation step, and the paired ratio."""
    amp = resolve_amp("auto", device)
    fmt = torch.channels_last
    x = torch.randn(batch_size, 3, image_size, image_size, device=device).contiguous(memory_format=fmt)  # (B, 3, H, W)
    y = torch.randint(0, original.fc.out_features, (batch_size,), device=device)
    teacher = inference_copy(original).to(device)
    ce = nn.CrossEntropyLoss(label_smoothing=0.1)
    kd = DistillationLoss(ce, temperature=4.0, alpha=0.5)

    def student() -> ResNet:
        return prepare_for_training(copy.deepcopy(pruned), freeze="none").to(device, memory_format=fmt).train()

    def teacher_forward() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            teacher(x)

    rows = {
        "student step": _training_step(student(), x, y, criterion=ce, amp=amp),
        "teacher forward": teacher_forward,
        "distillation step": _training_step(student(), x, y, criterion=kd, amp=amp, teacher=teacher),
    }
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    times = time_interleaved(rows, repeats=repeats, warmup=warmup, rotate=True, sync=sync)
    paired = zip(times["distillation step"], times["student step"], times["teacher forward"], strict=True)
    ratio = statistics.median(d / (s + t) for d, s, t in paired)
    return {
        "amp": str(amp).removeprefix("torch.") if amp else "float32",
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "ratio": ratio,
    }


def _gpu_latency(models: dict[str, ResNet], *, device: torch.device, image_size: int, repeats: int) -> dict[str, float]:
    """Median milliseconds of one batch-1 forward on the GPU under AMP, interleaved."""
    amp = resolve_amp("auto", device)
    x = torch.randn(1, 3, image_size, image_size, device=device).contiguous(memory_format=torch.channels_last)
    copies = {k: inference_copy(m).to(device) for k, m in models.items()}

    def forward(m: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode(), torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
                m(x)

        return run

    times = time_interleaved(
        {k: forward(m) for k, m in copies.items()}, repeats=repeats, warmup=5, rotate=True,
        sync=lambda: torch.cuda.synchronize(device),
    )  # fmt: skip
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def bench_slim(
    arch: str, *, weights: str, device: torch.device, batch_size: int, image_size: int, repeats: int, warmup: int
) -> dict[str, Any]:  # fmt: skip
    """Every figure of the module docstring for ``arch``."""
    torch.manual_seed(0)
    original = load_model(arch=arch, weights=weights, fallback_to_random=True).model
    models = {
        "original": original,
        f"pruned {FRACTION:.0%} bn-scale": prune_model(original, fraction=FRACTION, criterion="bn-scale"),
        f"pruned {FRACTION:.0%} bn-scale, round-to 8": prune_model(
            original, fraction=FRACTION, criterion="bn-scale", round_to=8
        ),
    }
    macs = {k: model_complexity(m, image_size=image_size)[1] for k, m in models.items()}
    samples = latency_samples(models, image_size=image_size, repeats=repeats, warmup=warmup)
    base = samples["original"]
    result: dict[str, Any] = {
        "macs": macs,
        "cpu_latency_ms": {k: statistics.median(v) for k, v in samples.items()},
        # Paired within each round, where both models ran moments apart under the same load.
        "cpu_latency_ratio": {
            k: statistics.median(a / b for a, b in zip(v, base, strict=True)) for k, v in samples.items()
        },
    }
    if device.type == "cuda":
        result["gpu_latency_ms"] = _gpu_latency(models, device=device, image_size=image_size, repeats=repeats)
    student = models[f"pruned {FRACTION:.0%} bn-scale"]
    result["distill"] = _distill_rows(
        original, student, device=device, batch_size=batch_size, image_size=image_size,
        repeats=max(3, repeats // 3), warmup=1,
    )  # fmt: skip
    return result


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _cells(r: dict[str, Any]) -> list[list[str]]:
    """Table rows: model, MACs ratio, CPU latency and ratio (GPU latency and ratio), goal."""
    names = list(r["macs"])
    base = names[0]
    rows = []
    for n in names:
        macs_ratio = r["macs"][n] / r["macs"][base]
        lat_ratio = r["cpu_latency_ratio"][n]
        goal = "" if n == base else (
            f"MACs <= {MACS_GOAL}x {_met(macs_ratio <= MACS_GOAL)}; latency <= {LATENCY_GOAL}x "
            f"{_met(lat_ratio <= LATENCY_GOAL)}"
        )  # fmt: skip
        gpu = r.get("gpu_latency_ms")
        gpu_cells = [f"{gpu[n]:.2f}", f"{gpu[n] / gpu[base]:.2f}x"] if gpu else ["—", "—"]
        rows.append([n, f"{r['macs'][n] / 1e9:.3f}", f"{macs_ratio:.2f}x", f"{r['cpu_latency_ms'][n]:.1f}",
                     f"{lat_ratio:.2f}x", *gpu_cells, goal])  # fmt: skip
    d = r["distill"]
    s = d["median_s"]
    rows.append([
        f"distillation step ({d['amp']})", "", "", "", "", "", "",
        f"{s['distillation step']:.3f} s vs student {s['student step']:.3f} s + teacher {s['teacher forward']:.3f} s: "
        f"{d['ratio']:.2f}x, goal <= {DISTILL_GOAL}x {_met(d['ratio'] <= DISTILL_GOAL)}",
    ])  # fmt: skip
    return rows


_HEADER = ["model", "GMACs", "MACs ratio", "CPU ms", "CPU ratio", "GPU ms", "GPU ratio", "goal"]


def main(args: argparse.Namespace) -> int:
    """Run ``bench --slim``: reads ``arch``, ``weights``, ``size``, ``batch_size``, ``repeats``,
    ``warmup``, ``device``, ``json`` and ``markdown``."""
    device = resolve_device(args.device or "auto")
    size = args.size or 224
    results = {
        arch: bench_slim(
            arch, weights=args.weights, device=device, batch_size=args.batch_size, image_size=size,
            repeats=args.repeats, warmup=args.warmup,
        )
        for arch in args.arch
    }  # fmt: skip
    where = f"CPU {cpu_description()}, {torch.get_num_threads()} threads" + (
        f"; GPU {device_name(device)}" if device.type == "cuda" else ""
    )
    if args.json:
        print(json.dumps({"machine": where, "size": size, "batch_size": args.batch_size, "results": results}, indent=2))
    else:
        columns = [("model", 34), ("GMACs", 6), ("MACs", 6), ("CPU ms", 7), ("CPU", 6), ("GPU ms", 7), ("GPU", 6),
                   ("goal", 0)]  # fmt: skip
        for arch, r in results.items():
            print(f"{arch} at {size}x{size}, latency at batch 1, distillation at batch {args.batch_size}; {where}")
            print("\n".join(text_table(columns, _cells(r))))
    if args.markdown:
        intro = (
            f"Measured with `python -m resnet_demo bench --slim` on {where}, torch {torch.__version__}: "
            f"{size}x{size} images; latency = median batch-1 forward of the folded inference copy, models "
            f"interleaved in one run; distillation step at batch {args.batch_size}, paired per repeat."
        )
        write_text(args.markdown, markdown(intro, _HEADER, {a: _cells(r) for a, r in results.items()}))
    return 0
