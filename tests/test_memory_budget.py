"""The server's peak memory with every tab in use, beside its documented budget: ``python app.py``
in a process of its own, driven by several visitors at once who mix new photos, the trust checks,
segmentation and detection (three transfer models: one more than the cache keeps), and a cancel."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client, handle_file

from resnet_demo.ui.settings import MEMORY_BUDGET_MB

from .conftest import EXAMPLES, app_py

pytestmark = pytest.mark.slow

PHOTOS = sorted(EXAMPLES.glob("*.jpg"))


def _status_mb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(line for line in f if line.startswith(f"{field}:"))
    return int(line.split()[1]) / 1024


class _Sampler:
    """The process's resident memory every 50 ms: the trace, for the report."""

    def __init__(self, pid: int) -> None:
        self.pid, self.trace, self._stop = pid, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(0.05):
            self.trace.append((time.monotonic() - t0, _status_mb(self.pid, "VmRSS")))

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _visitor(url: str, folder: Path, plan: list[tuple[str, tuple[Any, ...]]]) -> list[str]:
    client = Client(url, verbose=False, download_files=str(folder), analytics_enabled=False)
    done = []
    try:
        for endpoint, args in plan:
            if endpoint == "cancel":  # a long check, cancelled 2 s in: its memory must go with it
                job = client.submit(*args, api_name="/evaluate")
                time.sleep(2.0)
                job.cancel()
            else:
                client.predict(*args, api_name=endpoint)
            done.append(endpoint)
    finally:
        client.close()
    return done


def test_peak_memory_with_every_tab_in_use_stays_within_the_budget(tmp_path: Path) -> None:
    cat = handle_file(str(EXAMPLES / "cat.jpg"))

    def explain(photo: Path) -> tuple[str, tuple[Any, ...]]:
        return "/explain", (handle_file(str(photo)), "resnet50", "imagenet-v2", None, "layer4", "gradcam", 0.5, "crop")

    def transfer(task: str, model: str, size: int = 0) -> tuple[str, tuple[Any, ...]]:
        # 0: the model's own input size (520 px short side for segmentation, 800 for detection).
        return "/transfer", (cat, task, model, "resnet50", 0.5, size, None, "layer4")

    evaluate = (cat, "resnet50", "imagenet-v2", None, "layer4", "gradcam", "", "")
    plans = [
        [explain(p) for p in PHOTOS],
        # The third model is there to be one more than the cache keeps: its weights count, not its size
        # (each task's full-size peak is the other two's, fcn's at 520 px is deeplabv3's within 0.2 GB).
        [transfer("segment", "deeplabv3"), transfer("detect", "fasterrcnn"), transfer("segment", "fcn", 320)],
        [("/evaluate", evaluate), ("cancel", (*evaluate[:5], "ablationcam", "", ""))],
        # /compare first: ResNet-101 and -152 stay loaded, so at least one full-size transfer runs beside them.
        [("/compare", (cat, "imagenet-v2")), transfer("detect", "fasterrcnn")],
    ]
    # The server notices a visitor who closed at its next heartbeat (Gradio's: every 15 s) and the stop
    # waits up to 5 s on connections it has not seen close: a half-second beat spares that wait.
    with app_py(tmp_path, "--time-budget", "0", env={"GRADIO_HEARTBEAT_INTERVAL": "0.5"}) as (proc, url, _log):
        start_mb = _status_mb(proc.pid, "VmRSS")
        with _Sampler(proc.pid) as sampler, ThreadPoolExecutor(len(plans)) as pool:
            done = list(pool.map(lambda ip: _visitor(url, tmp_path / f"v{ip[0]}", ip[1]), enumerate(plans)))
        peak_mb = _status_mb(proc.pid, "VmHWM")  # the kernel's own peak, between two samples too
        end_mb = _status_mb(proc.pid, "VmRSS")
    assert [len(d) for d in done] == [len(p) for p in plans]
    print(
        f"peak resident memory {peak_mb:.0f} MB (budget {MEMORY_BUDGET_MB} MB); at start {start_mb:.0f} MB, "
        f"at the end {end_mb:.0f} MB; sampled peak {max(mb for _t, mb in sampler.trace):.0f} MB"
    )
    assert peak_mb <= MEMORY_BUDGET_MB, f"peak {peak_mb:.0f} MB over the budget of {MEMORY_BUDGET_MB} MB"
