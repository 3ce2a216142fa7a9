"""The app's "Fine-tune" tab: a zip of class folders (or a generated sample set) in,
a checkpoint for the Explain tab out, with live curves, a cancel button and an honest
time estimate on CPU.

:func:`build_finetune_tab` lays the tab out and wires its own events; the handlers
below it are plain functions, testable without a browser. One fine-tune runs at a
time per server (a module-level lock); it runs in a thread of the server process,
with its own event queue, so the Explain tab keeps answering meanwhile.
"""

from __future__ import annotations

import logging
import math
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from ..datasets import ImageSet, load_image_set, make_sample_dataset, safe_extract_zip
from ..devices import resolve_device
from ..errors import UserError
from ..finetune import (
    FREEZE_MODES,
    FinetuneConfig,
    FinetuneResult,
    StepTiming,
    TrainEvent,
    estimate_seconds,
    finetune,
    measure_step,
)
from ..finetune_plots import TrainingHistory, format_duration, training_figure
from ..weights import ARCHES
from .components import user_errors

__all__ = [
    "FinetuneTab",
    "build_finetune_tab",
    "cancel_finetune",
    "estimate_time",
    "generate_sample",
    "prepare_upload",
    "run_finetune",
]

log = logging.getLogger("resnet_demo.ui.finetune")

# Everything this tab writes lives under one folder per browser session, in the system
# temp folder (which Gradio may serve files from). Folders idle this long are removed.
WORK_ROOT = Path(tempfile.gettempdir()) / "resnet_demo_finetune"
STALE_AFTER_S = 6 * 3600
IMAGE_SIZES = (128, 160, 192, 224)
FREEZE_CHOICES = [
    ("Head only (fastest)", "head"),
    ("layer4 + head", "layer4"),
    ("Everything (slowest)", "none"),
]
UPDATE_EVERY_S = 1.0  # how often the curves are redrawn while training


# ----------------------------------------------------------------------------- state


@dataclass
class _Job:
    """The one fine-tune of this server."""

    owner: str  # session hash of the user who started it
    stop: threading.Event
    events: queue.Queue[TrainEvent]
    started: float
    total_steps: int = 0
    step: int = 0
    epochs: int = 0
    result: FinetuneResult | None = None
    error: BaseException | None = None


_LOCK = threading.Lock()  # held for the whole run: one fine-tune at a time
_JOB: _Job | None = None
_TIMINGS: dict[tuple[str, str, int, int, str], StepTiming] = {}  # measured steps, reused


def _session(request: gr.Request | None) -> str:
    session = getattr(request, "session_hash", None)
    return "".join(c for c in str(session or "local") if c.isalnum())[:64] or "local"


def _session_dir(session: str) -> Path:
    path = WORK_ROOT / session
    path.mkdir(parents=True, exist_ok=True)
    path.touch()  # marks it as in use, for _prune
    return path


def _prune() -> None:
    """Remove other sessions' folders idle for hours (a Space's disk is small)."""
    if not WORK_ROOT.exists():
        return
    now = time.time()
    busy = _JOB.owner if _JOB is not None else None
    for d in WORK_ROOT.iterdir():
        if d.is_dir() and d.name != busy and now - d.stat().st_mtime > STALE_AFTER_S:
            shutil.rmtree(d, ignore_errors=True)


def _fresh(parent: Path, prefix: str) -> Path:
    """A new sub-folder; this session's earlier ones of that kind are removed first."""
    for old in parent.glob(f"{prefix}-*"):
        shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=parent))


def _describe(images: ImageSet) -> str:
    return f"**Data ready.** {images.summary()}"


# ----------------------------------------------------------------------------- handlers


def _not_while_training(session: str) -> None:
    if _JOB is not None and _JOB.owner == session:
        raise gr.Error("Your fine-tune is running on the current data; wait for it to end, or cancel it first.")


@user_errors
def prepare_upload(zip_file: str | None, request: gr.Request | None = None) -> tuple[str, str]:
    """Unpack an uploaded zip of class folders safely; returns (data folder, summary)."""
    if not zip_file:
        raise gr.Error("Upload a .zip of class folders (e.g. cats/1.jpg, dogs/1.jpg), or generate the sample set.")
    if not str(zip_file).lower().endswith(".zip"):
        raise gr.Error("That is not a .zip file. Zip a folder that holds one sub-folder of images per class.")
    session = _session(request)
    _not_while_training(session)
    _prune()
    dest = _fresh(_session_dir(session), "data")
    dest.rmdir()  # safe_extract_zip creates it, and removes it again on any refusal
    safe_extract_zip(zip_file, dest)
    return str(dest), _describe(load_image_set(dest))


@user_errors
def generate_sample(request: gr.Request | None = None) -> tuple[str, str]:
    """Write the sample set (coloured shapes on textured backgrounds); returns (folder, summary)."""
    session = _session(request)
    _not_while_training(session)
    _prune()
    dest = _fresh(_session_dir(session), "data")
    make_sample_dataset(dest, num_classes=3, images_per_class=40, image_size=160)
    return str(dest), _describe(load_image_set(dest)) + " (generated sample set: circle, square, triangle)"


def _device() -> str:
    return str(resolve_device("auto"))


def _check_settings(arch: str, epochs: float, lr: float, batch_size: float, freeze: str, image_size: float) -> None:
    if arch not in ARCHES:
        raise gr.Error(f"Choose a model: {', '.join(ARCHES)}.")
    if freeze not in FREEZE_MODES:
        raise gr.Error("Choose what to train: head only, layer4 + head, or everything.")
    if not epochs or not 1 <= int(epochs) <= 100:
        raise gr.Error("Epochs must be between 1 and 100.")
    if lr is None or not 0 < float(lr) <= 1:
        raise gr.Error("The learning rate must be above 0 and at most 1 (0.01 is a good start for SGD).")
    if not batch_size or not 1 <= int(batch_size) <= 256:
        raise gr.Error("The batch size must be between 1 and 256.")
    if int(image_size) < 32:
        raise gr.Error("The image size must be at least 32 pixels.")


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
    _check_settings(arch, epochs, 0.01, batch_size, freeze, image_size)
    if not dataset or not Path(dataset).is_dir():
        raise gr.Error("Prepare the data first: upload a zip or generate the sample set.")
    images = load_image_set(dataset)
    device = _device()
    key = (arch, freeze, int(batch_size), int(image_size), device)
    if key not in _TIMINGS:
        if _JOB is not None:
            return "A fine-tune is running on this server; a step measured now would be wrong. Estimate after it ends."
        _TIMINGS[key] = measure_step(
            arch=arch, freeze=freeze, batch_size=int(batch_size), image_size=int(image_size), device=device
        )
    timing = _TIMINGS[key]
    total = estimate_seconds(timing, epochs=int(epochs), train_images=len(images.train), val_images=len(images.val))
    where = "this server's GPU" if device == "cuda" else f"this server's CPU ({torch.get_num_threads()} threads)"
    text = (
        f"**Estimated time: about {format_duration(total)}** on {where}: "
        f"{int(epochs)} epoch(s) of {len(images.train)} training and {len(images.val)} validation images at "
        f"{int(image_size)} px, measured {timing.train_s:.3f} s per training image."
    )
    if device == "cpu" and total > 600:
        text += " That is long: train the head only, use fewer epochs, or a smaller image size."
    return text


def _busy_message() -> str:
    job = _JOB
    if job is None:
        return "A fine-tune is starting on this server. One runs at a time; try again in a minute."
    done = f"step {job.step} of {job.total_steps}" if job.total_steps else "starting"
    return (
        f"A fine-tune is already running on this server ({done}, for {format_duration(time.time() - job.started)}). "
        f"One runs at a time; try again when it ends. The Explain tab works meanwhile."
    )


def _status(history: TrainingHistory, job: _Job) -> str:
    if not history.start:
        return "Loading the pretrained weights and reading the images…"
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


def run_finetune(
    dataset: str | None,
    arch: str,
    epochs: float,
    lr: float,
    batch_size: float,
    freeze: str,
    image_size: float = 224,
    request: gr.Request | None = None,
    progress: Callable[..., Any] | None = gr.Progress(),  # noqa: B008 - how Gradio asks for a progress bar
) -> Iterator[tuple[Any, ...]]:
    """Start the fine-tune and stream (status, curves, checkpoint file, use-button update).

    Raises ``gr.Error`` for bad settings, when another fine-tune runs, or when this one
    fails (a diverged loss names the last good checkpoint). If the browser goes away,
    the run is stopped at its next step and the lock is released.
    """
    global _JOB
    _check_settings(arch, epochs, lr, batch_size, freeze, image_size)
    if not dataset or not Path(dataset).is_dir():
        raise gr.Error("Prepare the data first: upload a zip or generate the sample set.")
    if not _LOCK.acquire(blocking=False):
        raise gr.Error(_busy_message())
    session = _session(request)
    thread: threading.Thread | None = None
    job: _Job | None = None
    try:
        out = _fresh(_session_dir(session), "run")
        cfg = FinetuneConfig(
            data=str(dataset),
            out=str(out),
            arch=arch,
            epochs=int(epochs),
            lr=float(lr),
            batch_size=int(batch_size),
            freeze=freeze,
            image_size=int(image_size),
            progress=False,
            workers=0 if _device() == "cpu" else None,  # on a CPU host the cores are for the model
        )
        job = _Job(owner=session, stop=threading.Event(), events=queue.Queue(), started=time.time(), epochs=cfg.epochs)
        _JOB = job

        def work() -> None:
            try:
                job.result = finetune(cfg, callback=job.events.put, stop=job.stop)
            except BaseException as e:  # noqa: BLE001 - handed to the generator, which reports it
                job.error = e

        thread = threading.Thread(target=work, name="finetune", daemon=True)
        thread.start()
        history = TrainingHistory(epochs_total=cfg.epochs)
        no_file, disabled = None, gr.update(interactive=False)
        yield _status(history, job), training_figure(history), no_file, disabled
        last_yield = time.monotonic()
        while thread.is_alive() or not job.events.empty():
            try:
                history.add(job.events.get(timeout=0.2))
            except queue.Empty:
                continue
            job.total_steps, job.step = history.total_steps, history.step
            if progress is not None and history.total_steps:
                progress((history.step, history.total_steps), desc="fine-tuning", unit="steps")
            if time.monotonic() - last_yield >= UPDATE_EVERY_S or history.done is not None:
                last_yield = time.monotonic()
                yield _status(history, job), training_figure(history), no_file, disabled
        thread.join()
        if job.error is not None:
            if isinstance(job.error, UserError):
                raise gr.Error(str(job.error))
            log.error("fine-tune failed", exc_info=job.error)
            raise gr.Error(f"The fine-tune failed on the server ({type(job.error).__name__}). Please try again.")
        result = job.result
        assert result is not None
        path = result.best or result.last
        ready = gr.update(interactive=path is not None)
        yield _final_status(result), training_figure(history), str(path) if path else None, ready
    finally:
        if thread is not None and thread.is_alive():
            job.stop.set()  # type: ignore[union-attr]  # the page went away: stop at the next step
            thread.join()
        _JOB = None
        _LOCK.release()


@user_errors
def cancel_finetune(request: gr.Request | None = None) -> str:
    """Ask this session's running fine-tune to stop; its checkpoint is kept and offered."""
    job = _JOB
    if job is None:
        return "Nothing is running."
    if job.owner != _session(request):
        raise gr.Error("The fine-tune running now was started by someone else; only they can cancel it.")
    job.stop.set()
    return "Cancelling after the current step; the checkpoint of the work done so far will be offered."


# ----------------------------------------------------------------------------- layout


@dataclass
class FinetuneTab:
    """The tab's components, for the app to wire "use this model" to the Explain tab."""

    data_zip: gr.File
    sample_button: gr.Button
    dataset: gr.State  # the prepared data folder (str) of this session
    data_summary: gr.Markdown
    arch: gr.Radio  # the architecture of the checkpoint: set the Explain tab's model to it
    epochs: gr.Slider
    lr: gr.Number
    batch_size: gr.Slider
    freeze: gr.Radio
    image_size: gr.Dropdown
    estimate_button: gr.Button
    estimate: gr.Markdown
    start_button: gr.Button
    cancel_button: gr.Button
    status: gr.Markdown
    curves: gr.Plot
    checkpoint: gr.File  # the finished checkpoint (best.pth), to download
    use_button: gr.Button  # "use this model": interactive once a checkpoint exists


INTRO = """### Fine-tune on your own classes
Upload a **.zip of class folders** (one sub-folder of images per class; or `train/` and `val/` folders
each holding the class folders), or generate a small **sample set** of coloured shapes. The model
starts from the ImageNet weights with a new head for your classes. The result loads in the Explain tab.
"""


def build_finetune_tab() -> FinetuneTab:
    """Lay out the tab inside an open ``gr.Tab``/``gr.Blocks`` and wire its events."""
    gr.Markdown(INTRO)
    dataset = gr.State(None)
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            data_zip = gr.File(label="Zip of class folders", file_types=[".zip"], type="filepath")
            sample_button = gr.Button("Generate the sample set")
            data_summary = gr.Markdown("No data yet.")
        with gr.Column(scale=1, min_width=280):
            arch = gr.Radio(list(ARCHES), value="resnet50", label="Model")
            freeze = gr.Radio(FREEZE_CHOICES, value="layer4", label="What trains")
            with gr.Row():
                epochs = gr.Slider(1, 50, value=5, step=1, label="Epochs")
                batch_size = gr.Slider(2, 128, value=16, step=1, label="Batch size")
            with gr.Row():
                lr = gr.Number(0.01, label="Learning rate (peak, SGD)", minimum=0)
                image_size = gr.Dropdown(list(IMAGE_SIZES), value=224, label="Image size (px)")
            estimate_button = gr.Button("Estimate time")
            estimate = gr.Markdown()
    with gr.Row():
        start_button = gr.Button("Start fine-tuning", variant="primary")
        cancel_button = gr.Button("Cancel", variant="stop")
    status = gr.Markdown()
    curves = gr.Plot(label="Training curves")
    with gr.Row():
        checkpoint = gr.File(label="Checkpoint (best validation top-1)", interactive=False)
        use_button = gr.Button("Use this model in the Explain tab", interactive=False)

    data_zip.upload(
        prepare_upload, data_zip, [dataset, data_summary], api_visibility="private", concurrency_id="finetune-data"
    )
    sample_button.click(
        generate_sample, None, [dataset, data_summary], api_visibility="private", concurrency_id="finetune-data"
    )
    settings = [dataset, arch, epochs, batch_size, freeze, image_size]
    estimate_button.click(
        estimate_time, settings, estimate, api_visibility="private", concurrency_id="finetune-estimate"
    )
    start_button.click(
        run_finetune,
        [dataset, arch, epochs, lr, batch_size, freeze, image_size],
        [status, curves, checkpoint, use_button],
        api_visibility="private",
        # Its own queue, a few wide: a second user gets the "busy" message at once
        # instead of waiting unseen, and inference never queues behind training.
        concurrency_id="finetune",
        concurrency_limit=4,
    )
    cancel_button.click(cancel_finetune, None, status, api_visibility="private", queue=False)
    return FinetuneTab(
        data_zip=data_zip,
        sample_button=sample_button,
        dataset=dataset,
        data_summary=data_summary,
        arch=arch,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        freeze=freeze,
        image_size=image_size,
        estimate_button=estimate_button,
        estimate=estimate,
        start_button=start_button,
        cancel_button=cancel_button,
        status=status,
        curves=curves,
        checkpoint=checkpoint,
        use_button=use_button,
    )
