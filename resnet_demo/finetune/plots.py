"""Live training curves for the app's Fine-tune tab, from the fine-tune callback's events.

Plain plotly and no gradio, so the figures are testable and usable in a notebook:
collect :class:`~resnet_demo.finetune.events.TrainEvent` objects in a
:class:`TrainingHistory`, then draw it with :func:`training_figure`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .events import TrainEvent

__all__ = ["TrainingHistory", "format_duration", "training_figure"]

FIGURE_HEIGHT = 340  # always set: plotly's autosize has rendered at zero height in hidden tabs
_TRAIN, _VAL = "#6366f1", "#f59e0b"  # training and validation curves keep one colour each across panels


@dataclass
class TrainingHistory:
    """Everything the curves and the status line need, updated event by event."""

    total_steps: int = 0
    epochs_total: int = 0
    start: dict[str, Any] = field(default_factory=dict)  # the "start" event's data
    steps: list[int] = field(default_factory=list)  # optimizer step numbers, 1-based
    loss: list[float] = field(default_factory=list)  # training loss of each step
    lr: list[float] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)  # the metrics rows
    done: dict[str, Any] | None = None  # the "done" event's data
    epoch: int = 0  # of the latest event, 0-based
    started_at: float | None = None  # time.monotonic() of the "start" event: set-up is over
    first_step: int = 0  # the step the run started from (a resumed run starts later)

    def add(self, event: TrainEvent) -> None:
        """Take in one event of the run."""
        self.total_steps = event.total_steps
        self.epoch = event.epoch
        if event.kind == "start":
            self.start = dict(event.data)
            self.started_at = time.monotonic()
            self.first_step = event.step
        elif event.kind == "step":
            self.steps.append(event.step)
            self.loss.append(float(event.data["loss"]))
            self.lr.append(float(event.data["lr"]))
        elif event.kind == "epoch":
            self.epochs.append(dict(event.data))
        elif event.kind == "done":
            self.done = dict(event.data)

    @property
    def step(self) -> int:
        """The latest optimizer step reported; 0 before the first."""
        return self.steps[-1] if self.steps else 0

    def seconds_left(self) -> float:
        """From the pace of the steps so far (evaluation included); inf before the first step."""
        done = self.step - self.first_step
        if self.started_at is None or done <= 0:
            return math.inf
        return (time.monotonic() - self.started_at) / done * (self.total_steps - self.step)


def format_duration(seconds: float) -> str:
    """'45 s', '3 min 20 s', '2 h 05 min': for people, not for parsing."""
    if not math.isfinite(seconds):
        return "unknown"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _line(x: list[int], y: list[float], *, name: str, color: str, per_epoch: bool) -> go.Scatter:
    # Per-step curves are dense, so thin lines; per-epoch points get markers.
    if per_epoch:
        return go.Scatter(x=x, y=y, name=name, mode="lines+markers", line={"color": color})
    return go.Scatter(x=x, y=y, name=name, mode="lines", line={"width": 1, "color": color})


def training_figure(history: TrainingHistory) -> go.Figure:
    """Three panels: loss (per step, and validation per epoch), top-1 accuracy per
    epoch (training and validation), and the learning rate per step."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Loss", "Top-1 accuracy (%)", "Learning rate"))
    fig.add_trace(
        _line(history.steps, history.loss, name="train loss (step)", color=_TRAIN, per_epoch=False), row=1, col=1
    )
    ends = [row["step"] for row in history.epochs]
    epoch_curves = [  # (metric, legend name, colour, panel)
        ("val_loss", "val loss (epoch)", _VAL, 1),
        ("train_top1", "train top-1", _TRAIN, 2),
        ("val_top1", "val top-1", _VAL, 2),
    ]
    if history.epochs:
        for key, name, color, col in epoch_curves:
            values = [r[key] for r in history.epochs]
            fig.add_trace(_line(ends, values, name=name, color=color, per_epoch=True), row=1, col=col)
    fig.add_trace(
        go.Scatter(x=history.steps, y=history.lr, name="learning rate", mode="lines", line={"color": "#10b981"}),
        row=1,
        col=3,
    )
    span = [0, max(history.total_steps, 1)]
    for col in (1, 2, 3):
        fig.update_xaxes(title_text="optimizer step", range=span, row=1, col=col)
    fig.update_yaxes(range=[0, 100], row=1, col=2)
    fig.update_yaxes(exponentformat="e", row=1, col=3)
    fig.update_layout(
        height=FIGURE_HEIGHT,
        margin={"l": 40, "r": 10, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.25},
        uirevision="finetune",  # keep the user's zoom while the curves grow
    )
    return fig
