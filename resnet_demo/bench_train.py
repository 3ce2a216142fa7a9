"""Training throughput: this project's fine-tune step against the PyTorch ImageNet example.

``python -m resnet_demo bench --train`` or ``python -m resnet_demo.bench_train``.

Rows, each a full training step (forward, loss, backward, optimizer step) of the whole
network on the same synthetic batch at 224x224, 1000 classes:

* ``reference``: the loop of pytorch/examples ``imagenet/main.py``: torchvision's
  model, float32, NCHW, ``loss.backward(); optimizer.step()``, top-1/top-5 and
  ``loss.item()`` every step. The unit.
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
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from .devices import resolve_device
from .finetune import accuracy, apply_step, build_finetune_model, clip_gradients, forward_backward
from .weights import ARCHES

__all__ = ["Row", "bench_arch", "build_parser", "main", "markdown"]

# Goals from the issue: on CPU no slower than the reference; on a GPU, AMP at least 2x float32.
CPU_GOAL, GPU_AMP_GOAL = 1.0, 2.0


@dataclass
class Row:
    name: str
    images_per_s: float  # batch / median step time
    median_s: float
    min_s: float
    ratio: float  # images/s over the reference's: the median, over repeats, of the ratio within each repeat
    best_ratio: float  # the same from the fastest step of each row


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(warmup + repeats):
        # Interleaved, and in a rotating order, so drift and a noisy neighbour hit every row alike.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            step = steps[name]
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    ref_times = next(iter(times.values()))
    rows = []
    for name, ts in times.items():
        median = statistics.median(ts)
        # Paired within each repeat, where both rows ran seconds apart under the same load.
        ratio = statistics.median(r / t for r, t in zip(ref_times, ts, strict=True))
        rows.append(Row(name, batch_size / median, median, min(ts), ratio, min(ref_times) / min(ts)))
    return rows


def _environment(device: torch.device) -> dict[str, str | int]:
    return {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


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


def markdown(
    results: dict[str, list[Row]], env: dict[str, str | int], *, device: torch.device, batch_size: int, image_size: int
) -> str:
    """The results as a Markdown section, for docs/bench-train.md."""
    lines = [
        f"Measured with `python -m resnet_demo.bench_train` on {env['device']} ({env['threads']} threads), "
        f"torch {env['torch']}: one full training step per repeat (forward, loss, backward, SGD step) of the "
        f"whole network, batch {batch_size}, {image_size}x{image_size}, synthetic data; medians of interleaved "
        f"repeats; ratio = speed over the reference loop's: the median of the ratios within each repeat, "
        f"and the ratio of the fastest steps.",
        "",
    ]
    for arch, rows in results.items():
        lines += [
            f"**{arch}**",
            "",
            "| loop | images/s | median s/step | fastest s/step | ratio | ratio, fastest | goal |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            goal = _goal(r, rows, device)
            lines.append(
                f"| {r.name} | {r.images_per_s:.2f} | {r.median_s:.3f} | {r.min_s:.3f} | {r.ratio:.2f}x "
                f"| {r.best_ratio:.2f}x | {goal} |"
            )
        lines.append("")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m resnet_demo.bench_train", description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=ARCHES, action="append", help="architecture (repeatable; default resnet50)")
    p.add_argument("--batch-size", type=int, default=8, help="images per step (default 8)")
    p.add_argument("--size", type=int, default=None, help="image side (default 224)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per row (default 5); medians reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per row first (default 1)")
    p.add_argument("--device", default="auto", help="auto (CUDA when there), cpu, cuda")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--markdown", metavar="FILE", help="also write the results as Markdown to FILE")
    return p


def main(args: argparse.Namespace) -> int:
    """Run the benchmark. Reads ``arch`` (a name, a list or None), ``batch_size``,
    ``repeats`` and ``json``; ``size``, ``warmup``, ``device`` and ``markdown`` if present,
    so the ``bench`` command's namespace works as it is."""
    arches = args.arch if isinstance(args.arch, list) else [args.arch or "resnet50"]
    if args.repeats < 1 or args.batch_size < 1:
        raise SystemExit("--repeats and --batch-size must be at least 1")
    size = getattr(args, "size", None) or 224
    warmup = max(0, int(getattr(args, "warmup", 1)))
    wanted = getattr(args, "device", "auto")
    device = resolve_device(wanted)
    env = _environment(device)
    results = {
        arch: bench_arch(
            arch, device=device, batch_size=args.batch_size, image_size=size, repeats=args.repeats, warmup=warmup
        )
        for arch in arches
    }
    if args.json:
        print(
            json.dumps(
                {
                    "environment": env,
                    "batch_size": args.batch_size,
                    "size": size,
                    "results": {a: [asdict(r) for r in rows] for a, rows in results.items()},
                },
                indent=2,
            )
        )
    else:
        for arch, rows in results.items():
            print(
                f"{arch} training at {size}x{size}, batch {args.batch_size}, {device} ({env['device']}), "
                f"{env['threads']} threads, torch {env['torch']}"
            )
            print(f"{'loop':<52} {'images/s':>9} {'s/step':>8} {'ratio':>7} {'fastest':>8}  goal")
            for r in rows:
                print(
                    f"{r.name:<52} {r.images_per_s:>9.2f} {r.median_s:>8.3f} {r.ratio:>6.2f}x {r.best_ratio:>7.2f}x  {_goal(r, rows, device)}"
                )
            print()
    markdown_file = getattr(args, "markdown", None)
    if markdown_file:
        Path(markdown_file).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown_file).write_text(
            markdown(results, env, device=device, batch_size=args.batch_size, image_size=size)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
