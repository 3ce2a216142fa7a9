"""Before and after: parameters, GMACs, measured CPU latency at batch 1 and validation top-1,
as ``slim.json`` and a Markdown table (``slim.md``).

Latency is measured in one run with the models interleaved (each round times every model
once, the order rotating), so a noisy neighbour on a shared CPU slows them alike; each
model runs as the app runs it, a folded, in-place, channels-last inference copy.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.complexity import model_complexity
from ..core.fold import inference_copy
from ..core.model import ResNet
from ..core.process_group import Dist
from ..core.weights import Preprocessing
from ..data import ImageListDataset, eval_transform, load_image_set
from ..finetune.build import resolve_amp
from ..finetune.checkpoints import atomic_write_text
from ..finetune.distributed import ShardSampler
from ..finetune.evaluate import evaluate
from ..finetune.loaders import default_workers, make_loader, run_data
from .config import SlimConfig

__all__ = [
    "ModelFigures",
    "SlimReport",
    "evaluate_top1",
    "latency_samples",
    "markdown_table",
    "measure_latency",
    "write_report",
]


@dataclass(frozen=True)
class ModelFigures:
    """One row of the report."""

    name: str  # "original", "pruned", "slim"
    label: str  # for people: "pruned 30% by bn-scale, before recovery"
    params: int
    macs: int  # multiply-accumulates of one image at the report's image size
    latency_ms: float | None  # median CPU forward at batch 1; None when not measured
    val_top1: float | None  # % on the validation images; None when not measured


@dataclass(frozen=True)
class SlimReport:
    """What ``slim.json`` holds."""

    arch: str
    prune: float
    criterion: str
    skip_stages: list[str]
    distill_from: str | None
    image_size: int
    cpu: str  # the CPU the latency was measured on
    threads: int
    rows: list[ModelFigures]
    widths: list[list[int]]  # the slim model's inner widths, one pair per block

    def ratio(self, key: str, *, of: str = "slim", to: str = "original") -> float | None:
        """``of``'s ``key`` over ``to``'s (e.g. the slim model's MACs over the original's)."""
        rows = {r.name: asdict(r) for r in self.rows}
        a, b = rows.get(of, {}).get(key), rows.get(to, {}).get(key)
        return a / b if a is not None and b else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratios"] = {k: self.ratio(k) for k in ("params", "macs", "latency_ms", "val_top1")}
        return d


def cpu_model_name() -> str:
    """The CPU's model name, as ``lscpu`` gives it, for the report's reader."""
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else "unknown CPU"


def measure_latency(
    models: Mapping[str, ResNet], *, image_size: int, repeats: int, warmup: int = 3
) -> dict[str, float]:
    """Median milliseconds of one forward of one image on the CPU, per model, interleaved
    (see :func:`latency_samples`)."""
    return {
        name: statistics.median(ms)
        for name, ms in latency_samples(models, image_size=image_size, repeats=repeats, warmup=warmup).items()
    }


def latency_samples(
    models: Mapping[str, ResNet], *, image_size: int, repeats: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Milliseconds of every timed batch-1 CPU forward of every model, in round order: the
    i-th times of two models ran in the same round, moments apart, so they can be paired.

    Every model runs as a folded inference copy (``model`` itself is only read), on the
    same random image, under ``inference_mode``.
    """
    copies = {name: inference_copy(m).cpu() for name, m in models.items()}  # copies: the models stay put
    x = torch.randn(1, 3, image_size, image_size).contiguous(memory_format=torch.channels_last)  # (1, 3, H, W)
    order = list(copies)
    samples: dict[str, list[float]] = {name: [] for name in order}
    with torch.inference_mode():
        for round_no in range(warmup + repeats):
            first = round_no % len(order)  # rotate, so that drift favours no model
            for name in order[first:] + order[:first]:
                start = time.perf_counter()
                copies[name](x)
                elapsed = time.perf_counter() - start
                if round_no >= warmup:
                    samples[name].append(1000 * elapsed)
    return samples


def evaluate_top1(
    models: Mapping[str, ResNet], *, cfg: SlimConfig, preprocessing: Preprocessing, device: torch.device
) -> dict[str, float]:
    """Validation top-1 (%) of each model on the run's validation images (the same split),
    with the run's evaluation transform, in one process."""
    d = Dist()
    with run_data(cfg.data, d) as root:
        images = load_image_set(root, val_fraction=cfg.val_fraction, seed=cfg.seed, name=Path(cfg.data).name)
        tf = eval_transform(
            crop_size=cfg.image_size, resize_size=cfg.eval_resize_size, mean=preprocessing.mean, std=preprocessing.std
        )
        ds = ImageListDataset(images.val, tf)
        loader = make_loader(
            ds,
            ShardSampler(len(ds), 0, 1),
            batch_size=cfg.batch_size,
            workers=default_workers(cfg, d),
            device=device,
            drop_last=False,
            seed=0,
        )
        amp = resolve_amp(cfg.amp, device)
        return {
            name: evaluate(m.to(device), loader, device=device, amp_dtype=amp, channels_last=cfg.channels_last, d=d)[
                "top1"
            ]
            for name, m in models.items()
        }


def build_report(
    *,
    cfg: SlimConfig,
    models: Mapping[str, ResNet],
    labels: Mapping[str, str],
    top1: Mapping[str, float],
    latency: Mapping[str, float],
) -> SlimReport:
    """The report of ``models`` (name -> model, "original" and "slim" at least) from measured figures."""
    rows = []
    for name, model in models.items():
        params, macs = model_complexity(model, image_size=cfg.image_size)
        rows.append(ModelFigures(name, labels[name], params, macs, latency.get(name), top1.get(name)))
    return SlimReport(
        arch=cfg.arch,
        prune=cfg.prune,
        criterion=cfg.criterion,
        skip_stages=list(cfg.skip_stages),
        distill_from=cfg.distill_from,
        image_size=cfg.image_size,
        cpu=cpu_model_name(),
        threads=torch.get_num_threads(),
        rows=rows,
        widths=[list(w) for w in models["slim"].widths()],
    )


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown_table(report: SlimReport) -> str:
    """The report as a Markdown table, with the ratios and the machine under it."""
    lines = [
        "| model | params | GMACs | CPU latency, batch 1 (ms) | val top-1 (%) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in report.rows:
        lines.append(
            f"| {r.label} | {r.params:,} | {r.macs / 1e9:.3f} | {_cell(r.latency_ms, '.1f')} | "
            f"{_cell(r.val_top1, '.1f')} |"
        )
    ratios = [(k, report.ratio(k)) for k in ("params", "macs", "latency_ms")]
    said = ", ".join(f"{k.removesuffix('_ms')} {v:.2f}x" for k, v in ratios if v is not None)
    lines += [
        "",
        f"Slim over original: {said}. MACs and latency at {report.image_size}x{report.image_size} px; "
        f"latency measured interleaved in one run on {report.cpu}, {report.threads} threads.",
    ]
    return "\n".join(lines) + "\n"


def write_report(report: SlimReport, out: Path) -> tuple[Path, Path]:
    """``slim.json`` and ``slim.md`` in ``out``, each written whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "slim.json", out / "slim.md"
    atomic_write_text(json.dumps(report.to_dict(), indent=2) + "\n", json_path)
    atomic_write_text(markdown_table(report), md_path)
    return json_path, md_path
