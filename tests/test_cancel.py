"""Cancel means stop: the check in the model's forward, the handler wrapper, and a cancelled
request over HTTP that leaves the server idle."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file

from resnet_demo.core.cancel import Cancelled, add_cancel_points, cancel_scope, check_cancelled
from resnet_demo.core.model import build_model
from resnet_demo.ui.cancellation import cancellable

from .conftest import EXAMPLES


def test_check_is_a_no_op_outside_a_scope_and_raises_inside_once_set() -> None:
    stop = threading.Event()
    check_cancelled()
    with cancel_scope(stop):
        check_cancelled()  # not set yet
        stop.set()
        with pytest.raises(Cancelled):
            check_cancelled()
    check_cancelled()  # the scope is over: the command line and other threads never see it


def test_the_scope_belongs_to_its_thread() -> None:
    stop, raised = threading.Event(), []
    stop.set()

    def other() -> None:
        try:
            check_cancelled()
        except Cancelled:
            raised.append(True)

    with cancel_scope(stop):
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
    assert raised == []


def _counting_stages(model: torch.nn.Module) -> list[str]:
    ran: list[str] = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        getattr(model, name).register_forward_hook(lambda *_a, n=name: ran.append(n))
    return ran


def test_forward_stops_between_stages() -> None:
    model = build_model("resnet50", num_classes=10).eval()
    ran = _counting_stages(model)
    stop = threading.Event()
    model.layer2.register_forward_hook(lambda *_a: stop.set())  # the visitor cancels during layer2
    with cancel_scope(stop), torch.no_grad(), pytest.raises(Cancelled):
        model(torch.randn(1, 3, 64, 64))
    assert ran == ["layer1", "layer2"]  # layer3 and layer4 never ran
    ran.clear()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)  # outside the scope: the whole forward
    assert ran == ["layer1", "layer2", "layer3", "layer4"]


def test_cancel_points_stop_a_module_that_is_not_ours() -> None:
    seq = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    add_cancel_points(seq[2])
    stop = threading.Event()
    seq[1].register_forward_hook(lambda *_a: stop.set())
    with cancel_scope(stop), pytest.raises(Cancelled):
        seq(torch.randn(1, 4))
    assert seq(torch.randn(1, 4)).shape == (1, 2)


def test_cancellable_waits_for_the_work_to_stop_then_lets_the_cancel_through() -> None:
    events: list[tuple[str, float]] = []

    def work(seconds: float, *, step: float) -> str:
        """A long computation that checks between steps, as the model's forward does."""
        events.append(("started", time.monotonic()))
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                check_cancelled()
                time.sleep(step)
            return "finished"
        finally:
            events.append(("stopped", time.monotonic()))

    wrapped = cancellable(work)
    assert wrapped.__wrapped__ is work and asyncio.iscoroutinefunction(wrapped)

    async def scenario() -> float:
        assert await wrapped(0.05, step=0.01) == "finished"  # uncancelled: the result comes back
        events.clear()
        task = asyncio.ensure_future(wrapped(60.0, step=0.05))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic()

    cancel_done = asyncio.run(scenario())
    kinds = [k for k, _ in events]
    assert kinds == ["started", "stopped"]
    stopped_at = events[1][1]
    assert stopped_at - events[0][1] < 1.0  # stopped at the next check, not after 60 s
    assert stopped_at <= cancel_done  # the cancel reached the caller only once the work had stopped


def test_cancellable_steps_stream_and_a_cancel_between_steps_stops_and_closes_the_work() -> None:
    events: list[str] = []

    def steps(n: int) -> Iterator[int]:
        """A handler in steps, each a computation that checks for a cancel as the model's forward does."""
        try:
            for i in range(n):
                end = time.monotonic() + (0.01 if i == 0 else 60.0)
                while time.monotonic() < end:
                    check_cancelled()
                    time.sleep(0.01)
                events.append(f"step {i}")
                yield i
        finally:
            events.append("closed")

    wrapped = cancellable(steps)
    assert wrapped.__wrapped__ is steps and inspect.isasyncgenfunction(wrapped)

    async def scenario() -> tuple[list[int], float]:
        seen = []
        stream = wrapped(3)
        seen.append(await stream.__anext__())  # the first step arrives before the second has run
        task = asyncio.ensure_future(stream.__anext__())  # the second: 60 s unless it stops
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await stream.aclose()
        return seen, time.monotonic()

    started = time.monotonic()
    seen, done = asyncio.run(scenario())
    assert seen == [0] and events == ["step 0", "closed"]  # the second step never finished; its finally ran
    assert done - started < 5.0  # stopped at the next check, not after 60 s

    async def whole() -> list[int]:
        return [v async for v in cancellable(steps)(1)]

    events.clear()
    assert asyncio.run(whole()) == [0] and events == ["step 0", "closed"]


# ----------------------------------------------------------------------------- over HTTP


def _cpu_seconds() -> float:
    """CPU time of this whole process (the server runs in it), every thread counted."""
    return time.process_time()


@pytest.mark.slow
def test_a_cancelled_request_leaves_the_server_idle(app_url: str, tmp_path: Path, no_time_limit: None) -> None:
    client = Client(app_url, verbose=False, download_files=str(tmp_path), analytics_enabled=False)
    photo = handle_file(str(EXAMPLES / "cat.jpg"))
    # Score-CAM at layer3 (1,024 forwards of the rest of the network): about a minute here.
    job = client.submit(photo, "resnet50", "imagenet-v2", None, "layer3", "scorecam", "", "", api_name="/evaluate")
    time.sleep(1.0)
    assert not job.done(), "the request finished before it could be cancelled"
    job.cancel()
    time.sleep(1.0)  # the work stops at its next check: within a second
    cpu0 = _cpu_seconds()
    time.sleep(5.0)
    busy = _cpu_seconds() - cpu0
    assert busy < 0.5, f"the server used {busy:.2f} CPU seconds in the 5 s after the cancel"
    # The slot is free: the next heavy request runs now, not after the cancelled one would have ended.
    t1 = time.monotonic()
    top5 = client.predict(photo, "resnet50", "imagenet-v2", api_name="/predict")
    assert len(top5["confidences"]) == 5 and time.monotonic() - t1 < 20
    client.close()
