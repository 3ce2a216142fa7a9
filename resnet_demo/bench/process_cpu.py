"""A process's CPU use, read from ``/proc``: how the benchmarks tell that the server has gone quiet."""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["cores_used", "cpu_seconds"]


def cpu_seconds(pid: int) -> float:
    """CPU seconds the process has used so far, all its threads (user + system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cores_used(pid: int, seconds: float) -> float:
    """Cores the process uses on average over the next ``seconds``."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds
