"""ZeroGPU: the model's handlers are decorated with ``spaces.GPU`` on that hardware only, and the
``spaces`` package stays optional."""

from __future__ import annotations

import sys
import types

import pytest

from resnet_demo.core.devices import resolve_device
from resnet_demo.ui.demo import parse_args
from resnet_demo.ui.zerogpu import GPU_SECONDS, on_gpu


def handler(x: int) -> int:
    return x + 1


@pytest.fixture
def fake_spaces(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A stand-in ``spaces`` package whose GPU decorator records its duration and marks the function."""
    durations: list[int] = []

    def gpu(*, duration: int):
        durations.append(duration)

        def decorate(fn):
            def on_the_gpu(*args, **kwargs):
                return ("on the GPU", fn(*args, **kwargs))

            return on_the_gpu

        return decorate

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    return durations


def test_elsewhere_the_handler_is_itself(monkeypatch: pytest.MonkeyPatch, fake_spaces: list[int]) -> None:
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert on_gpu(handler) is handler and fake_spaces == []  # even with the package there


def test_on_zerogpu_the_handler_holds_the_gpu(monkeypatch: pytest.MonkeyPatch, fake_spaces: list[int]) -> None:
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert on_gpu(handler)(1) == ("on the GPU", 2) and fake_spaces == [GPU_SECONDS]


def test_on_zerogpu_without_the_package_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setitem(sys.modules, "spaces", None)  # import spaces raises ImportError
    assert on_gpu(handler) is handler


def test_the_app_runs_where_a_gpu_is_unless_told() -> None:
    assert parse_args([]).device == "auto"
    assert resolve_device("auto").type == ("cuda" if __import__("torch").cuda.is_available() else "cpu")
