"""The time limit per request: refused up front with the reason, lifted by the launcher's flag,
and the heavy queue's waiting visitors told their place."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.utils import Status

from resnet_demo.core.errors import UserError
from resnet_demo.explain import analyze, check_budget, method_cost
from resnet_demo.ui import parse_args
from resnet_demo.ui.budget import BUDGET
from resnet_demo.ui.settings import TIME_BUDGET_S

from .conftest import EXAMPLES, time_limit


def test_check_budget_refuses_over_the_limit_only() -> None:
    check_budget(seconds=29.9, budget_s=30.0, what="Grad-CAM at layer4")
    check_budget(seconds=1e6, budget_s=0.0, what="Score-CAM at stem")  # 0: no limit
    with pytest.raises(UserError) as e:
        check_budget(seconds=71.6, budget_s=30.0, what="Score-CAM at layer3")
    assert str(e.value).startswith("Score-CAM at layer3 would take about 72 s on this server, over its limit of 30 s")
    assert "--time-budget 0" in str(e.value)


def test_the_flag_sets_the_limit_and_refuses_nonsense() -> None:
    assert parse_args([]).time_budget == TIME_BUDGET_S == 60.0
    assert parse_args(["--time-budget", "0"]).time_budget == 0.0
    assert parse_args(["--time-budget", "120"]).time_budget == 120.0
    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(SystemExit) as e:
            parse_args(["--time-budget", bad])
        assert e.value.code == 2


def _client(url: str, tmp: Path) -> Client:
    return Client(url, verbose=False, download_files=str(tmp), analytics_enabled=False)


def _expected_s(arch: str, method: str) -> dict[str, float]:
    """The server's own expectations for a map and for /evaluate of it, on the cat at layer3."""
    from resnet_demo.ui.model_choice import resolve_model
    from resnet_demo.ui.trust_handlers import expected_seconds

    analysis = analyze(
        image=EXAMPLES / "cat.jpg", model=resolve_model(arch=arch, weights="imagenet-v2", checkpoint=None)
    )
    map_s = method_cost(method=method, arch=arch, stage="layer3")
    checks = expected_seconds(analysis, stage="layer3", method=method, versus=None, steps=16)
    return {"explain": map_s, "evaluate": map_s + sum(checks.values())}


@pytest.mark.slow
def test_over_the_limit_is_refused_before_any_work_and_under_it_runs(app_url: str, tmp_path: Path) -> None:
    assert BUDGET.seconds == TIME_BUDGET_S == 60.0  # the app as the command line launches it
    client = _client(app_url, tmp_path)
    photo = handle_file(str(EXAMPLES / "cat.jpg"))
    slow, quick = _expected_s("resnet50", "scorecam"), _expected_s("resnet50", "gradcam")
    calls = {
        "explain": lambda method: client.predict(
            photo, "resnet50", "imagenet-v2", None, "layer3", method, 0.5, "crop", api_name="/explain"
        ),
        "evaluate": lambda method: client.predict(
            photo, "resnet50", "imagenet-v2", None, "layer3", method, "", "", api_name="/evaluate"
        ),
    }
    for endpoint, call in calls.items():
        assert slow[endpoint] > 2 * quick[endpoint], (endpoint, slow, quick)  # the premise: far apart
        # A limit between the two: Score-CAM is refused at once, with its cost; Grad-CAM runs.
        with time_limit((slow[endpoint] * quick[endpoint]) ** 0.5):
            t0 = time.monotonic()
            with pytest.raises(Exception, match=r"Score-CAM .*at layer3.* would take about \d+ s on this server"):
                call("scorecam")
            assert time.monotonic() - t0 < 10, f"/{endpoint} refused only after working"
            assert call("gradcam")  # under the limit: answered
    client.close()


@pytest.mark.slow
def test_waiting_visitors_are_told_their_place(app_url: str, tmp_path: Path, no_time_limit: None) -> None:
    first, second = _client(app_url, tmp_path / "a"), _client(app_url, tmp_path / "b")
    photo = handle_file(str(EXAMPLES / "cat.jpg"))
    # A long check holds the heavy queue ("checks": the trust checks, /evaluate, /compare, /transfer).
    long = first.submit(photo, "resnet50", "imagenet-v2", None, "layer3", "scorecam", "", "", api_name="/evaluate")
    deadline = time.monotonic() + 30
    while long.status().code != Status.PROCESSING and time.monotonic() < deadline:
        time.sleep(0.1)
    waiting = second.submit(photo, "segment", "deeplabv3", "resnet50", 0.5, 320, None, "layer4", api_name="/transfer")
    seen = []
    while time.monotonic() < deadline:
        status = waiting.status()
        seen.append((status.code, status.rank, status.queue_size))
        if status.code == Status.IN_QUEUE and status.rank is not None:
            break
        time.sleep(0.1)
    long.cancel()
    assert (Status.IN_QUEUE, 0, 1) in seen, f"the waiting visitor saw {seen[-5:]}"
    legend = waiting.result(timeout=120)[0]
    assert legend  # it ran once the long check stopped
    first.close()
    second.close()
