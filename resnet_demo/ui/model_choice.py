"""The model the pickers name: the choices of architecture and weights, the shared model
they load, and the weights banner that says what is running. The core checks the
architecture (:func:`~resnet_demo.core.weights.check_arch`) and any checkpoint file."""

from __future__ import annotations

import html
from typing import Any, NamedTuple

import gradio as gr

from ..core.errors import UserError
from ..core.weights import ARCH_LABELS, ARCHES, LoadedModel, WeightsError, check_arch, shared_model
from .components import user_errors
from .messages import NO_CHECKPOINT, NO_FINETUNED, unknown_weights

ARCH_CHOICES: list[tuple[str, str]] = [(ARCH_LABELS[a], a) for a in ARCHES]
UPLOAD = "upload"
WEIGHT_CHOICES: list[tuple[str, str]] = [
    ("ImageNet V2 (torchvision, best)", "imagenet-v2"),
    ("ImageNet V1 (the paper's recipe)", "imagenet-v1"),
    ("Random (untrained)", "random"),
    ("My checkpoint (.pth upload)", UPLOAD),
]
UNTRAINED_BANNER = "UNTRAINED"


def untrained_name(*, name: str) -> str:
    """A class name as an answer on random weights shows it: ``"tabby (UNTRAINED)"``."""
    return f"{name} ({UNTRAINED_BANNER})"


# Where inference runs and the forward's number format; set once at start-up by build_demo (--device,
# --precision), read by every request.
SETTINGS: dict[str, str] = {"device": "cpu", "precision": "float32"}


def app_message(error: UserError) -> str:
    """A core error in the app's words: where the command line would be told flags and
    this machine's paths (a :class:`WeightsError`'s ``cli_fix``), the app says what to do here."""
    if isinstance(error, WeightsError) and error.cli_fix:
        return (
            f"{error.problem} In this app: pick Random in the Weights menu (untrained weights), "
            f"or ask whoever runs this server to put the file in its torchvision cache."
        )
    return str(error)


def start_choice(*, weights: str) -> tuple[str, str | None]:
    """The weights picker's first value and the checkpoint to show, for the ``--weights`` option.

    A path starts the app on that checkpoint, as if it had been uploaded.
    """
    named = weights in {v for _label, v in WEIGHT_CHOICES}
    return (weights, None) if named else (UPLOAD, weights)


def resolve_model(*, arch: str, weights: str, checkpoint: str | None) -> LoadedModel:
    """The shared, cached model for the pickers' values.

    Named weights fall back to random ones when they cannot be had (the banner says
    so); a checkpoint the user uploaded must load, or they get the reason. The core
    checks ``arch``.
    """
    if weights == UPLOAD:
        if not checkpoint:
            raise UserError(NO_CHECKPOINT)
        # A bad file raises WeightsError, naming the file by its name (never its server folder):
        # the handlers' wrapper shows it as a gr.Error, and a bad --weights file stops the start-up.
        return shared_model(arch=arch, weights=str(checkpoint), device=SETTINGS["device"])
    # Not the core's check: it takes any other value for a file's path, and a request names no server file.
    if not isinstance(weights, str) or weights not in dict((v, k) for k, v in WEIGHT_CHOICES):
        raise UserError(unknown_weights(weights))
    return shared_model(arch=arch, weights=weights, fallback_to_random=True, device=SETTINGS["device"])


def status_markdown(loaded: LoadedModel) -> str:
    """The weights banner: one line saying which weights run (with a warning when they fell back to random
    ones), and behind a "details" disclosure why and what to do, or where the weights were read."""
    arch = ARCH_LABELS[loaded.spec.arch]
    if loaded.warning:
        why = app_message(loaded.cause) if loaded.cause is not None else loaded.warning
        return with_details(
            f"⚠️ **{UNTRAINED_BANNER}: running {arch} on random weights.** "
            "Pretrained weights unavailable, so every prediction is meaningless.",
            f"{html.escape(why, quote=False)}\n\nThe views still work: they explain the random model's predictions.",
        )
    if loaded.untrained:
        return f"**{arch} on random weights ({UNTRAINED_BANNER}):** predictions are meaningless."
    # Set by the core's loader; a model other code built may not say.
    source = getattr(loaded, "source", None) or getattr(loaded.spec, "source", None)
    line = f"✅ **{html.escape(loaded.status, quote=False)}**"  # a checkpoint's status names the user's file
    return with_details(line, f"Weights read from {html.escape(source, quote=False)}.") if source else line


def with_details(line: str, details: str) -> str:
    """Markdown: ``line``, then ``details`` (Markdown) behind a disclosure that says "details"."""
    # gr.Markdown keeps <details> and <summary> (its sanitiser allows both); the blank lines around
    # ``details`` make it Markdown again inside the HTML.
    return f"{line}\n<details><summary>details</summary>\n\n{details}\n\n</details>"


@user_errors
def weights_status(arch: str, weights: str, checkpoint: str | None) -> str:
    """Status line for the pickers, loading the model (once) if needed."""
    if weights == UPLOAD and not checkpoint:
        return "Upload a fine-tuned `.pth` checkpoint (from the Fine-tune tab or `python -m resnet_demo finetune`)."
    return status_markdown(resolve_model(arch=arch, weights=weights, checkpoint=checkpoint))


def checkpoint_visibility(weights: str) -> dict[str, Any]:
    """Show the checkpoint upload only while the weights picker says "My checkpoint"."""
    return gr.update(visible=weights == UPLOAD)


class UseCheckpoint(NamedTuple):
    """The "Use this model" buttons' outputs: the Explain tab's pickers (by its component names) on a
    checkpoint, and that tab shown."""

    arch: str
    weights: Any  # the weights picker's update: "My checkpoint"
    checkpoint: str  # the checkpoint file
    tabs: Any  # the app's tabs, on the Explain tab


@user_errors
def use_checkpoint(path: str | None, arch: str) -> UseCheckpoint:
    """Fine-tune tab's "use this model": switch the Explain tab to the new checkpoint and its arch."""
    if not path:
        raise UserError(NO_FINETUNED)
    return UseCheckpoint(
        arch=check_arch(arch), weights=gr.update(value=UPLOAD), checkpoint=path, tabs=gr.Tabs(selected="explain")
    )
