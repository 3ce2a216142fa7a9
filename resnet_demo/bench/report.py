"""What both benchmarks share: interleaved timing, a description of the machine, and the
console and Markdown table writers.

Every table has the same shape: a name column first, numeric columns, and a free-text
goal column last.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "TrustRow",
    "cpu_description",
    "cpu_name",
    "device_name",
    "markdown",
    "text_table",
    "time_interleaved",
    "write_text",
]


def time_interleaved(
    rows: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int,
    rotate: bool = False,
    sync: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds of every timed call of every row, in round order.

    Each round calls every row once: ``warmup`` untimed rounds, then ``repeats`` timed
    ones. Interleaving makes contention (a noisy neighbour on a shared CPU) hit every
    row alike, and the i-th times of two rows ran seconds apart, so they can be paired.
    ``rotate`` starts each round one row later, so drift favours no row; ``sync`` runs
    before and after each call (e.g. waiting for a GPU).
    """
    names = list(rows)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + repeats):
        shift = r % len(names) if rotate else 0
        for name in names[shift:] + names[:shift]:
            if sync is not None:
                sync()
            t0 = time.perf_counter()
            rows[name]()
            if sync is not None:
                sync()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return times


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_description() -> str:
    """The CPU's name and the vector instructions torch uses on it, e.g. "AMD EPYC 7B13, AVX2"."""
    return f"{cpu_name()}, {torch.backends.cpu.get_cpu_capability()}"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def text_table(columns: Sequence[tuple[str, int]], rows: Iterable[Sequence[str]]) -> list[str]:
    """Console lines: a header, then a line per row of already formatted cells.

    ``columns`` are (title, width): the first column is left-aligned, the others
    right-aligned; the last column (the goal) follows two spaces, unpadded.
    """

    def line(cells: Sequence[str]) -> str:
        (first, first_width), *middle = columns[:-1]
        padded = [f"{cells[0]:<{first_width}}"] + [f"{c:>{w}}" for c, (_, w) in zip(cells[1:-1], middle, strict=True)]
        return " ".join(padded) + f"  {cells[-1]}"

    return [line([title for title, _ in columns]), *(line(cells) for cells in rows)]


def markdown(intro: str, header: Sequence[str], tables: Mapping[str, Iterable[Sequence[str]]]) -> str:
    """A Markdown section: ``intro``, then one table per architecture (``tables``: arch -> rows of cells).

    The first and last columns are left-aligned, the numeric ones between right-aligned.
    """
    rule = "|" + "|".join(["---", *["---:"] * (len(header) - 2), "---"]) + "|"
    lines = [intro, ""]
    for arch, rows in tables.items():
        lines += [f"**{arch}**", "", "| " + " | ".join(header) + " |", rule]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows]
        lines.append("")
    return "\n".join(lines)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path``, making its folder if needed."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def print_json_report(
    *, env: Mapping[str, Any], size: int, goals: Mapping[str, Any], results: Mapping[str, Sequence[Any]]
) -> None:
    """The benchmark as JSON on stdout: the machine, the crop size, the goals, and each arch's rows (dataclasses)."""
    report = {
        "environment": dict(env),
        "size": size,
        "goals": dict(goals),
        "results": {a: [dataclasses.asdict(r) for r in rows] for a, rows in results.items()},
    }
    print(json.dumps(report, indent=2))


@dataclasses.dataclass
class TrustRow:
    name: str
    median_s: float  # per call, or per image for the per-image rows
    min_s: float
    reference: str  # the row this one is a ratio to
    ratio: float  # median / median of the reference
    min_ratio: float  # min / min of the reference
    goal: float | None = None
