"""The Slim tab's handlers: prune a fine-tuned checkpoint, recover it, report before and after.

Plain functions, so the tests call them directly. The settings are checked once, by the
core's :func:`~resnet_demo.slim.validate_slim` with the server's bounds; the run is the
core's :func:`~resnet_demo.slim.slim`, in the server's one training slot
(:mod:`.finetune_job`, shared with the Fine-tune tab), streamed like a fine-tune
(:func:`~.finetune_handlers.follow_job`). The run streams :class:`SlimProgress`, whose fields
are the tab's component names.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr

from ..core.errors import UserError
from ..core.weights import ARCH_LABELS, ARCHES, named_weights_on_disk, weights_spec
from ..data import load_image_set, make_sample_dataset
from ..finetune.checkpoints import checkpoint_arch, same_classes
from ..finetune.plots import TrainingHistory, training_figure
from ..slim import SlimConfig, SlimReport, markdown_table, slim, validate_slim
from ..slim.plots import accuracy_macs_figure
from . import finetune_job as jobs
from .components import user_errors
from .finetune_handlers import follow_job, offered_fields
from .messages import NO_FINETUNE_DATA, NO_SLIM_UPLOAD, NO_SLIMMED, NO_TRAINED
from .model_choice import UseCheckpoint, app_message, use_checkpoint
from .session_folders import fresh_folder, offer, session_dir, session_name

TRAINED, UPLOADED = "trained", "upload"  # where the checkpoint to slim comes from
FINETUNE_DATA, SAMPLE_DATA = "finetune", "sample"  # which images the recovery trains on
NO_TEACHER, SELF_TEACHER = "none", "self"
BATCH_SIZE = 16  # the Fine-tune tab's default; BatchNorm stays in eval mode under 8 images
LATENCY_REPEATS = 10  # timed batch-1 forwards per model: enough for a median, short on a busy server


class SlimProgress(NamedTuple):
    """A slim run as it runs: status and curves; the report, the checkpoint and the "use" button once it ends."""

    status: str  # Markdown
    curves: Any  # a plotly figure
    report: str  # Markdown: before and after, as a table ("" while it runs)
    report_plot: Any  # accuracy versus MACs (None while it runs)
    checkpoint: str | None  # the slim checkpoint offered for download
    use_button: Any  # the "use this model" button's update: interactive once a checkpoint exists


def teacher_choices() -> list[tuple[str, str]]:
    """The distillation teachers offered: none, the unpruned checkpoint, and the ImageNet
    ResNet-152 and ResNet-101 when their weights are on this server's disk (Hub or torchvision cache; nothing downloads)."""
    choices = [("None (labels only)", NO_TEACHER), ("The unpruned checkpoint itself (the usual choice)", SELF_TEACHER)]
    for arch in ("resnet152", "resnet101"):
        if named_weights_on_disk(arch=arch, weights="imagenet-v2"):
            choices.append((f"{ARCH_LABELS[arch]}, ImageNet (1000 classes)", arch))
    return choices


def _source(choice: str, upload: str | None, trained: str | None) -> str:
    """The checkpoint file to slim, by the source picker's choice."""
    if choice == TRAINED:
        if not trained:
            raise UserError(NO_TRAINED)
        return str(trained)
    if not upload:
        raise UserError(NO_SLIM_UPLOAD)
    return str(upload)


def _data(choice: str, session: str) -> Path:
    """The images of the recovery: this session's Fine-tune data, or the sample set (made once per session)."""
    folder = session_dir(session)
    if choice == FINETUNE_DATA:
        prepared = sorted(folder.glob("data-*"), key=lambda p: p.stat().st_mtime)  # the Fine-tune tab keeps one
        if not prepared:
            raise UserError(NO_FINETUNE_DATA)
        return prepared[-1]
    made = [p for p in folder.glob("slimsample-*") if (p / "done").is_file()]
    if made:
        return made[0]
    dest = fresh_folder(folder, prefix="slimsample")
    # The Fine-tune tab's sample set (same classes, sizes and seed), so a model trained on it fits.
    make_sample_dataset(dest, num_classes=3, images_per_class=40, image_size=160)
    (dest / "done").touch()  # a half-written set (the server stopped) is never reused
    return dest


@dataclass(frozen=True)
class SlimInputs:
    """The tab's inputs, in the order of its components."""

    source: str  # TRAINED or UPLOADED
    upload: str | None  # the uploaded .pth
    trained: str | None  # the Fine-tune tab's checkpoint of this session
    data: str  # FINETUNE_DATA or SAMPLE_DATA
    fraction: float
    criterion: str
    teacher: str  # NO_TEACHER, SELF_TEACHER or an architecture (its ImageNet weights)
    epochs: float


def slim_settings(*, inputs: SlimInputs, session: str) -> SlimConfig:
    """The tab's inputs as a config the server allows, or a :class:`UserError` with one sentence."""
    teacher = inputs.teacher
    weights = _source(inputs.source, inputs.upload, inputs.trained)
    arch = checkpoint_arch(weights, role="The checkpoint to slim")  # also: it records its class names
    spec = weights_spec(arch=arch, weights=weights)
    cfg = SlimConfig(
        data="",
        weights=weights,
        arch=arch,
        prune=float(inputs.fraction),
        criterion=inputs.criterion,
        epochs=int(inputs.epochs or 0),  # an empty field is refused as 0, in the core's words
        batch_size=BATCH_SIZE,
        image_size=spec.preprocessing.crop_size,  # the size the model was fine-tuned at
        distill_from=weights if teacher == SELF_TEACHER else (None if teacher == NO_TEACHER else teacher),
        latency_repeats=LATENCY_REPEATS,
        progress=False,
        workers=0,  # the server's cores are for the model; the set is small
    )
    validate_slim(cfg, server=True)
    if teacher in ARCHES:  # before the slot is taken: an ImageNet teacher fits only ImageNet's classes
        imagenet = weights_spec(arch=teacher, weights="imagenet-v2").categories
        same_classes(
            imagenet,
            spec.categories,
            what=f"The {ARCH_LABELS[teacher]} ImageNet teacher",
            remedy="for a fine-tuned model, distill from the unpruned checkpoint itself.",
        )
    cfg = dataclasses.replace(cfg, data=str(_data(inputs.data, session)))
    images = load_image_set(cfg.data, val_fraction=cfg.val_fraction, seed=cfg.seed)
    same_classes(
        spec.categories,
        images.class_names,
        what=f"The checkpoint to slim, {Path(weights).name},",
        remedy="slim a model on the data it was fine-tuned on.",
    )
    return cfg


def _final_status(report: SlimReport | None, steps: int, cancelled: bool) -> str:
    if cancelled or report is None:
        return (
            f"**Cancelled** after {steps} step(s): no report (it measures a finished run). The checkpoint below "
            "holds the pruned model as far as it recovered."
        )
    rows = {r.name: r for r in report.rows}
    before, after = rows["original"], rows["slim"]
    macs = report.ratio("macs")
    said = f" {macs:.2f}x the MACs" if macs is not None else ""
    top1 = ""
    if before.val_top1 is not None and after.val_top1 is not None:
        top1 = f", validation top-1 {after.val_top1:.1f}% (was {before.val_top1:.1f}%)"
    return (
        f"**Done.** {steps} step(s).{said}{top1}. Download the slim checkpoint below, "
        "or press **Use this model** to explain with it."
    )


@user_errors
def run_slim(
    source: str,
    upload: str | None,
    trained: str | None,
    data: str,
    fraction: float,
    criterion: str,
    teacher: str,
    epochs: float,
    request: gr.Request | None = None,
    progress: Callable[..., Any] | None = gr.Progress(),  # noqa: B008 - how Gradio asks for a progress bar
) -> Iterator[SlimProgress]:
    """Prune, recover and report, streaming the status and curves, then the report, the checkpoint
    and the "use" button.

    One training job runs per server, fine-tune or slim: a second gets the busy sentence.
    If the browser goes away, the run stops at its next step and the slot is freed.
    """
    # Refused before any work: the settings read the checkpoint and may write a sample set. The claim
    # below still decides, should another job take the slot meanwhile.
    if jobs.busy():
        raise UserError(jobs.busy_message())
    session = session_name(request)
    inputs = SlimInputs(source, upload, trained, data, fraction, criterion, teacher, epochs)
    try:
        cfg = slim_settings(inputs=inputs, session=session)
    except UserError as e:  # in the app's words: no command-line flags or server paths
        raise UserError(app_message(e)) from e
    with jobs.claim(owner=session, epochs=cfg.epochs, kind=jobs.SLIM) as job:
        cfg = dataclasses.replace(cfg, out=str(fresh_folder(session_dir(session), prefix="slimrun")))
        reports: list[SlimReport] = []

        def work() -> Any:  # the job keeps the recovery's result; the report comes back beside it
            result = slim(cfg, callback=job.events.put, stop=job.stop)
            reports.extend([result.report] if result.report is not None else [])
            return result.finetune

        job.start(work)
        history = TrainingHistory(epochs_total=cfg.epochs)
        try:
            for status, curves in follow_job(job, history=history, progress=progress):
                yield SlimProgress(status=status, curves=curves, report="", report_plot=None, **offered_fields(None))
        except UserError:  # the run failed: nothing of it is worth keeping
            shutil.rmtree(cfg.out, ignore_errors=True)
            raise
        try:
            assert job.result is not None
            path = job.result.best or job.result.last
            # Named for what it is: a download called best.pth is easily mistaken for the fine-tuned one.
            name = f"{Path(cfg.weights).stem[:60]}-slim{round(100 * cfg.prune)}.pth"
            # Beside the session's fine-tuned checkpoint, not in its place; both go when the page closes.
            renamed = path.rename(path.with_name(name)) if path is not None else None
            offered = offer(session, renamed, kind=job.kind.key) if renamed is not None else None
        finally:  # the resumable last.pth and the logs go; only the offered checkpoint stays
            shutil.rmtree(cfg.out, ignore_errors=True)
        report = reports[0] if reports else None
        status = _final_status(report, int(job.result.summary.get("steps_done", 0)), job.result.cancelled)
        yield SlimProgress(
            status=status,
            curves=training_figure(history),
            report=markdown_table(report) if report is not None else "",
            report_plot=accuracy_macs_figure(report) if report is not None else None,
            **offered_fields(offered),
        )


@user_errors
def cancel_slim(request: gr.Request | None = None) -> str:
    """Ask this session's running job to stop; the checkpoint of the recovery so far is offered."""
    if not jobs.cancel(owner=session_name(request)):
        return "Nothing is running."
    return "Cancelling after the current step; the checkpoint of the recovery so far will be offered."


@user_errors
def use_slimmed(path: str | None) -> UseCheckpoint:
    """The "Use this model" button: switch the Explain tab to the slim checkpoint, at its recorded architecture."""
    if not path:
        raise UserError(NO_SLIMMED)
    return use_checkpoint(path, checkpoint_arch(path, role="The slim checkpoint"))
