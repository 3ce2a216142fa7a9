"""The Fine-tune tab's handlers: prepare the data, estimate the time, run and cancel.

Plain functions, so the tests call them directly. The settings are checked once, by
the core's :func:`~resnet_demo.finetune.validate_config` with the server's bounds.
:func:`follow_job` streams a running job to its page, for this tab and the Slim tab.
The events with several outputs return named tuples whose fields are the tab's component names.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import torch

from ..core.devices import resolve_device
from ..core.errors import UserError
from ..data import ImageSet, load_image_set, make_sample_dataset, safe_extract_zip
from ..finetune import (
    FinetuneConfig,
    FinetuneResult,
    StepTiming,
    TrainingDiverged,
    estimate_seconds,
    finetune,
    measure_step,
    validate_config,
)
from ..finetune.plots import TrainingHistory, format_duration, training_figure
from . import finetune_job as jobs
from .components import user_errors
from .messages import NO_DATA, NO_ZIP, job_failed, own_job_running
from .model_choice import app_message
from .session_folders import fresh_folder, offer, prune, session_dir, session_name

log = logging.getLogger("resnet_demo.ui.finetune")

UPDATE_EVERY_S = 1.0  # how often the curves are redrawn while training

_TIMINGS: dict[tuple[str, str, int, int, str], StepTiming] = {}  # measured steps, reused


class PreparedData(NamedTuple):
    """The session's data folder (the tab's state) and what it holds."""

    dataset: str
    data_summary: str  # Markdown


class FinetuneProgress(NamedTuple):
    """A fine-tune as it runs: its status and curves; the checkpoint and the "use" button once it ends."""

    status: str  # Markdown
    curves: Any  # a plotly figure
    checkpoint: str | None  # the checkpoint offered for download
    use_button: Any  # the "use this model" button's update: interactive once a checkpoint exists


def offered_fields(offered: Path | str | None) -> dict[str, Any]:
    """A run's checkpoint fields: the file offered for download (None while it runs) and the
    "use this model" button, interactive once there is a file. For this tab's run and the Slim tab's."""
    return {"checkpoint": str(offered) if offered else None, "use_button": gr.update(interactive=bool(offered))}


def _describe(images: ImageSet) -> str:
    return f"**Data ready.** {images.summary()}"


def _new_data_folder(request: gr.Request | None) -> Path:
    """A fresh data folder for this session, refused while its own fine-tune reads the current one."""
    session = session_name(request)
    job = jobs.current()
    if job is not None and job.owner == session:  # a slim run may be reading this data too
        raise UserError(own_job_running(job.kind.noun))
    prune(keep=job.owner if job is not None else None)
    return fresh_folder(session_dir(session), prefix="data")


@user_errors
def prepare_upload(zip_file: str | None, request: gr.Request | None = None) -> PreparedData:
    """Unpack an uploaded zip of class folders safely (the core refuses what is no zip, and every unsafe entry)."""
    if not zip_file:
        raise UserError(NO_ZIP)
    dest = _new_data_folder(request)
    dest.rmdir()  # safe_extract_zip creates it, and removes it again on any refusal
    safe_extract_zip(zip_file, dest)
    try:
        # Messages call the data by the zip's name: dest is a server folder named by the session.
        images = load_image_set(dest, name=Path(zip_file).name)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)  # refused data leaves nothing on the server's disk
        raise
    return PreparedData(dataset=str(dest), data_summary=_describe(images))


@user_errors
def generate_sample(request: gr.Request | None = None) -> PreparedData:
    """Write the sample set (coloured shapes on textured backgrounds) in a fresh folder of the session."""
    dest = _new_data_folder(request)
    make_sample_dataset(dest, num_classes=3, images_per_class=40, image_size=160)
    summary = _describe(load_image_set(dest)) + " (generated sample set: circle, square, triangle)"
    return PreparedData(dataset=str(dest), data_summary=summary)


def _device() -> str:
    return str(resolve_device("auto"))


def _settings(  # the tab's inputs in the order of its components
    dataset: str | None, arch: str, epochs: float, lr: float, batch_size: float, freeze: str, image_size: float,
    weights: str = "imagenet-v2",
) -> FinetuneConfig:  # fmt: skip
    """The tab's inputs as a config the server allows, or a :class:`UserError` saying what is not."""
    cfg = FinetuneConfig(
        data=str(dataset or ""),
        arch=arch,
        weights=weights,
        epochs=int(epochs or 0),  # an empty field is refused as 0, in the core's words
        lr=float(lr or 0),
        batch_size=int(batch_size or 0),
        freeze=freeze,
        image_size=int(image_size or 0),
        progress=False,
        workers=0 if _device() == "cpu" else None,  # on a CPU host the cores are for the model
    )
    validate_config(cfg, server=True)
    if not dataset or not Path(dataset).is_dir():
        raise UserError(NO_DATA)
    return cfg


@user_errors
def estimate_time(
    dataset: str | None,
    arch: str,
    epochs: float,
    batch_size: float,
    freeze: str,
    image_size: float = 224,
) -> str:
    """Say how long these settings will take here, from one measured training step."""
    # The learning rate does not change the time of a step: the default stands in for it.
    cfg = _settings(dataset, arch, epochs, FinetuneConfig().lr, batch_size, freeze, image_size)
    images = load_image_set(cfg.data)
    device = _device()
    key = (cfg.arch, cfg.freeze, cfg.batch_size, cfg.image_size, device)
    if key not in _TIMINGS:
        running = jobs.current()
        if running is not None:
            return (
                f"A {running.kind.noun} is in progress on this server; a step measured now would be wrong. "
                "Estimate after it ends."
            )
        _TIMINGS[key] = measure_step(
            arch=cfg.arch, freeze=cfg.freeze, batch_size=cfg.batch_size, image_size=cfg.image_size, device=device
        )
    timing = _TIMINGS[key]
    total = estimate_seconds(timing, epochs=cfg.epochs, train_images=len(images.train), val_images=len(images.val))
    where = "this server's GPU" if device == "cuda" else f"this server's CPU ({torch.get_num_threads()} threads)"
    text = (
        f"**Estimated time: about {format_duration(total)}** on {where}: "
        f"{cfg.epochs} epoch(s) of {len(images.train)} training and {len(images.val)} validation images at "
        f"{cfg.image_size} px, measured {timing.train_s:.3f} s per training image."
    )
    if device == "cpu" and total > 600:
        text += " That is long: train the head only, use fewer epochs, or a smaller image size."
    return text


def _status(history: TrainingHistory, job: jobs.Job) -> str:
    if not history.start:
        return job.kind.preparing
    parts = [f"**Epoch {min(history.epoch + 1, job.epochs)}/{job.epochs}**, step {history.step}/{history.total_steps}"]
    if history.loss:
        parts.append(f"training loss {history.loss[-1]:.3f}")
    if history.epochs:
        last = history.epochs[-1]
        parts.append(f"validation top-1 {last['val_top1']:.1f}% (loss {last['val_loss']:.3f})")
        parts.append(f"{last['images_per_s']:.1f} images/s")
    left = history.seconds_left()
    if math.isfinite(left):
        parts.append(f"about {format_duration(left)} left")
    return (
        " · ".join(parts) + f"  \n{history.start.get('images', '')} Device: {history.start.get('device')}, "
        f"{history.start.get('amp')}."
    )


def _final_status(result: FinetuneResult) -> str:
    s = result.summary
    best = s.get("best_val_top1")
    if result.cancelled:
        head = f"**Cancelled** after {s['steps_done']} step(s)."
        if result.best is None:
            head += " No epoch finished, so the checkpoint below holds the weights as they were when it stopped."
    else:
        head = f"**Done.** {s['epochs_done']} epoch(s), {s['steps_done']} steps."
    if best is not None:
        head += f" Best validation top-1: {best:.1f}% (center crop)."
    return head + " Download the checkpoint below, or press **Use this model** to explain with it."


def _failure(error: BaseException, *, kind: jobs.JobKind) -> UserError:
    """What the page says when the run raised: the core's sentence, or a short apology for a bug."""
    if isinstance(error, TrainingDiverged):  # without the server's path of the last good checkpoint
        return UserError(error.problem)
    if isinstance(error, UserError):  # e.g. ImageNet weights unavailable: what to do in the app
        return UserError(app_message(error))
    log.error("%s failed", kind.noun, exc_info=error)
    return UserError(job_failed(error, noun=kind.noun))


def follow_job(
    job: jobs.Job, *, history: TrainingHistory, progress: Callable[..., Any] | None
) -> Iterator[tuple[str, Any]]:
    """Stream a started ``job`` to its page as (status, training curves): at once, then every
    :data:`UPDATE_EVERY_S` while it runs, and at its last event.

    Each event goes into ``history`` (the caller's, for its final figure), the job's step count
    (for the busy message others get) and the progress bar. When the run raised, raises a
    :class:`UserError` with the page's sentence after its last event.
    """
    yield _status(history, job), training_figure(history)
    last_yield = time.monotonic()
    for event in job.events_until_done():
        history.add(event)
        job.total_steps, job.step = history.total_steps, history.step
        if progress is not None and history.total_steps:
            progress((history.step, history.total_steps), desc=job.kind.doing, unit="steps")
        if time.monotonic() - last_yield >= UPDATE_EVERY_S or history.done is not None:
            last_yield = time.monotonic()
            yield _status(history, job), training_figure(history)
    if job.error is not None:
        raise _failure(job.error, kind=job.kind) from job.error


@user_errors
def run_finetune(
    dataset: str | None,
    arch: str,
    epochs: float,
    lr: float,
    batch_size: float,
    freeze: str,
    image_size: float = 224,
    weights: str = "imagenet-v2",
    request: gr.Request | None = None,
    progress: Callable[..., Any] | None = gr.Progress(),  # noqa: B008 - how Gradio asks for a progress bar
) -> Iterator[FinetuneProgress]:
    """Start the fine-tune and stream its status and curves, then the checkpoint and the "use" button.

    Raises ``gr.Error`` for bad settings, when another fine-tune runs, or when this one
    fails (a diverged loss names the last good checkpoint). If the browser goes away,
    the run is stopped at its next step and the server's fine-tune slot is freed.
    """
    cfg = _settings(dataset, arch, epochs, lr, batch_size, freeze, image_size, weights)
    session = session_name(request)
    with jobs.claim(owner=session, epochs=cfg.epochs, kind=jobs.FINETUNE) as job:
        cfg = dataclasses.replace(cfg, out=str(fresh_folder(session_dir(session), prefix="run")))
        job.start(lambda: finetune(cfg, callback=job.events.put, stop=job.stop))
        history = TrainingHistory(epochs_total=cfg.epochs)
        try:
            for status, curves in follow_job(job, history=history, progress=progress):
                yield FinetuneProgress(status=status, curves=curves, **offered_fields(None))
        except UserError:  # the run failed: nothing of it is worth keeping
            shutil.rmtree(cfg.out, ignore_errors=True)
            raise
        result = job.result
        assert result is not None
        # Only the checkpoint offered for download stays on disk (in Gradio's cache, served
        # without a copy); the resumable last.pth and the logs go now.
        path = result.best or result.last
        offered = offer(session, path, kind=job.kind.key) if path is not None else None
        shutil.rmtree(cfg.out, ignore_errors=True)
        yield FinetuneProgress(status=_final_status(result), curves=training_figure(history), **offered_fields(offered))


@user_errors
def cancel_finetune(request: gr.Request | None = None) -> str:
    """Ask this session's running fine-tune to stop; its checkpoint is kept and offered."""
    if not jobs.cancel(owner=session_name(request)):
        return "Nothing is running."
    return "Cancelling after the current step; the checkpoint of the work done so far will be offered."
