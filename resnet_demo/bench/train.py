"""Training throughput: this project's fine-tune step against the PyTorch ImageNet example
(``python -m resnet_demo bench --train``).

Rows, each a full training step (forward, loss, backward, optimizer step) of the whole
network on the same synthetic batch at 224x224, 1000 classes:

* ``reference``: the loop of pytorch/examples ``imagenet/main.py``: torchvision's
  model, float32, NCHW, ``loss.backward(); optimizer.step()``, top-1/top-5 and
  ``loss.item()`` every step. The unit.
* ``reference, float32, channels_last``: the same loop in NHWC;
* ``fine-tune, float32``: :mod:`resnet_demo.finetune`'s step (its forward/backward,
  gradient clipping and GradScaler-aware step), NCHW;
* ``fine-tune, float32, channels_last``: the same in NHWC, the fine-tune default;
* on CUDA also ``fine-tune, AMP (...), channels_last``: the default on a GPU.

Rows run interleaved, one step each per repeat in a rotating order, so a noisy
neighbour on a shared CPU slows all rows alike; medians are reported as images/s and as ratios to the reference.
Data loading is left out: both loops would read the same files the same way.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torchvision.models as tvm
from torch import nn

from ..core.devices import resolve_device
from ..finetune import accuracy, apply_step, build_finetune_model, clip_gradients, forward_backward
from .report import device_name, markdown, text_table, time_interleaved, write_text

__all__ = ["Row", "bench_arch", "main"]

# Goals: on CPU no slower than the reference; on a GPU, AMP at least 2x float32.
CPU_GOAL, GPU_AMP_GOAL = 1.0, 2.0


@dataclass
class Row:
    name: str
    images_per_s: float  # batch / median step time
    median_s: float
    min_s: float
    ratio: float  # images/s over the reference's: the median, over repeats, of the ratio within each repeat
    best_ratio: float  # the same from the fastest step of each row


def _reference_step(
    arch: str, device: torch.device, x: torch.Tensor, y: torch.Tensor, *, channels_last: bool = False
) -> Callable[[], None]:
    """One iteration of pytorch/examples imagenet/main.py's train(), data already on the device."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = getattr(tvm, arch)().to(device, memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    model.train()
    criterion = nn.CrossEntropyLoss().to(device)
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        output = model(x)
        loss = criterion(output, y)
        acc1, acc5 = accuracy(output, y, topk=(1, 5))
        loss.item(), acc1.item(), acc5.item()  # the example's meters read these every step
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def _finetune_step(
    arch: str, device: torch.device, x: torch.Tensor, y: torch.Tensor, *, channels_last: bool, amp: torch.dtype | None
) -> Callable[[], None]:
    """The fine-tune routine's step with everything trainable (--freeze none)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model, _ = build_finetune_model(arch=arch, weights="random", num_classes=1000, freeze="none")
    model = model.to(device, memory_format=fmt)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    xf = x.contiguous(memory_format=fmt)

    def step() -> None:
        loss, logits = forward_backward(model, xf, y, criterion=criterion, amp_dtype=amp, scaler=scaler, loss_divisor=1)
        correct = accuracy(logits.float(), y)[0]
        torch.stack([loss.float(), correct]).tolist()  # the fine-tune loop's one sync per step
        clip_gradients(optimizer, scaler, params, max_norm=1.0)
        apply_step(optimizer, scaler)

    return step


def bench_arch(
    arch: str, *, device: torch.device, batch_size: int, image_size: int, repeats: int, warmup: int
) -> list[Row]:
    """Median images/s of every row for ``arch``; the first row is the reference."""
    torch.manual_seed(0)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)  # (B, 3, H, W)
    y = torch.randint(0, 1000, (batch_size,), device=device)
    steps: dict[str, Callable[[], None]] = {
        "reference (pytorch/examples imagenet), float32": _reference_step(arch, device, x, y),
        "reference, float32, channels_last": _reference_step(arch, device, x, y, channels_last=True),
        "fine-tune, float32": _finetune_step(arch, device, x, y, channels_last=False, amp=None),
        "fine-tune, float32, channels_last": _finetune_step(arch, device, x, y, channels_last=True, amp=None),
    }
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        name = f"fine-tune, AMP {str(dtype).removeprefix('torch.')}, channels_last"
        steps[name] = _finetune_step(arch, device, x, y, channels_last=True, amp=dtype)
        steps["fine-tune, AMP float16 + GradScaler, channels_last"] = _finetune_step(
            arch, device, x, y, channels_last=True, amp=torch.float16
        )
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    # Rotating order: drift and a noisy neighbour hit every row alike.
    times = time_interleaved(steps, repeats=repeats, warmup=warmup, rotate=True, sync=sync)
    ref_times = next(iter(times.values()))
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        # Paired within each repeat, where both rows ran seconds apart under the same load.
        ratio = statistics.median(r / t for r, t in zip(ref_times, ts, strict=True))
        rows.append(Row(name, batch_size / median, median, min(ts), ratio, min(ref_times) / min(ts)))
    return rows


def _goal(row: Row, rows: list[Row], device: torch.device) -> str:
    if row.name.startswith("reference"):
        return ""
    if "AMP" in row.name:
        fp32 = next(r for r in rows if r.name == "fine-tune, float32, channels_last")
        speedup = row.images_per_s / fp32.images_per_s
        return f"{speedup:.2f}x float32: goal >= {GPU_AMP_GOAL:.0f}x {'met' if speedup >= GPU_AMP_GOAL else 'MISSED'}"
    if device.type == "cpu":
        return f"goal >= {CPU_GOAL:.1f}x {'met' if row.ratio >= CPU_GOAL else 'MISSED'}"
    return ""


def _cells(row: Row, rows: list[Row], device: torch.device, *, fastest_s: bool) -> list[str]:
    """One row's cells; ``fastest_s`` adds the fastest step's seconds (the Markdown table has room)."""
    times = [f"{row.median_s:.3f}"] + ([f"{row.min_s:.3f}"] if fastest_s else [])
    return [
        row.name,
        f"{row.images_per_s:.2f}",
        *times,
        f"{row.ratio:.2f}x",
        f"{row.best_ratio:.2f}x",
        _goal(row, rows, device),
    ]


def _markdown(
    results: dict[str, list[Row]], env: dict[str, str | int], *, device: torch.device, batch_size: int, image_size: int
) -> str:
    """The results as a Markdown section, for docs/bench-train.md."""
    intro = (
        f"Measured with `python -m resnet_demo bench --train` on {env['device']} ({env['threads']} threads), "
        f"torch {env['torch']}: one full training step per repeat (forward, loss, backward, SGD step) of the "
        f"whole network, batch {batch_size}, {image_size}x{image_size}, synthetic data; medians of interleaved "
        f"repeats; ratio = speed over the reference loop's: the median of the ratios within each repeat, "
        f"and the ratio of the fastest steps."
    )
    header = ["loop", "images/s", "median s/step", "fastest s/step", "ratio", "ratio, fastest", "goal"]
    tables = {arch: [_cells(r, rows, device, fastest_s=True) for r in rows] for arch, rows in results.items()}
    return markdown(intro, header, tables)


def _print_text(
    results: dict[str, list[Row]], env: dict[str, str | int], *, device: torch.device, batch_size: int, size: int
) -> None:
    columns = [("loop", 52), ("images/s", 9), ("s/step", 8), ("ratio", 7), ("fastest", 8), ("goal", 0)]
    for arch, rows in results.items():
        print(
            f"{arch} training at {size}x{size}, batch {batch_size}, {device} ({env['device']}), "
            f"{env['threads']} threads, torch {env['torch']}"
        )
        cells = [_cells(r, rows, device, fastest_s=False) for r in rows]
        print("\n".join(text_table(columns, cells)))
        print()


def main(args: argparse.Namespace) -> int:
    """Run the benchmark from the ``bench --train`` namespace: reads ``arch`` (a name, a list or
    None), ``batch_size``, ``repeats`` and ``json``; ``size``, ``warmup``, ``device`` and
    ``markdown`` if present."""
    arches = args.arch if isinstance(args.arch, list) else [args.arch or "resnet50"]
    if args.repeats < 1 or args.batch_size < 1:
        raise SystemExit("--repeats and --batch-size must be at least 1")
    size = getattr(args, "size", None) or 224
    warmup = max(0, int(getattr(args, "warmup", 1)))
    device = resolve_device(getattr(args, "device", None) or "auto")
    env: dict[str, str | int] = {
        "torch": torch.__version__,
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    results = {
        arch: bench_arch(
            arch, device=device, batch_size=args.batch_size, image_size=size, repeats=args.repeats, warmup=warmup
        )
        for arch in arches
    }
    if args.json:
        report = {
            "environment": env,
            "batch_size": args.batch_size,
            "size": size,
            "results": {a: [asdict(r) for r in rows] for a, rows in results.items()},
        }
        print(json.dumps(report, indent=2))
    else:
        _print_text(results, env, device=device, batch_size=args.batch_size, size=size)
    markdown_file = getattr(args, "markdown", None)
    if markdown_file:
        write_text(markdown_file, _markdown(results, env, device=device, batch_size=args.batch_size, image_size=size))
    return 0
