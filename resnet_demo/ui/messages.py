"""The sentences only the app needs, in one place: what its pages and API endpoints say about
what the core never sees (no photo sent, an analysis gone from the server, a picker's odd value,
a file the upload step cannot read, a training job of this session).

Handlers raise them as :class:`~resnet_demo.core.errors.UserError`, which
:func:`.components.user_errors` shows as a ``gr.Error``; only that wrapper and the upload step
raise ``gr.Error`` themselves. Everything the core checks (model names, weights files, stages,
methods, classes, opacity, training settings) it says in its own words, once.
"""

from __future__ import annotations

from .settings import STATE_TTL_S

# One sentence for the page and for scripts: /predict, /explain and /evaluate take the same photo.
NO_PHOTO = "Upload a photo first (or click one of the examples). Send an image with each API call."
EXPIRED = (
    f"This photo's analysis is no longer on the server (it is kept {STATE_TTL_S // 60} minutes after its last use). "
    "Press Explain to analyse it again."
)
BAD_VIEW = "View must be 'crop' or 'full'."
NO_CHECKPOINT = "Upload a .pth checkpoint first, or pick ImageNet weights."
NO_FINETUNED = "No checkpoint yet: run a fine-tune first."
NO_SLIMMED = "No slim checkpoint yet: run Slim first."
COMPARE_NAMED_WEIGHTS = "Compare runs the three ImageNet models: pick ImageNet V2, V1 or Random weights."
NO_ZIP = "Upload a .zip of class folders (e.g. cats/1.jpg, dogs/1.jpg), or generate the sample set."
NO_DATA = "Prepare the data first: upload a zip or generate the sample set."
NO_TRAINED = (
    "No model has been trained in the Fine-tune tab in this session yet: train one there, or upload a .pth checkpoint."
)
NO_FINETUNE_DATA = (
    "The Fine-tune tab has no data for this session: prepare it there (a zip or the sample set), "
    "or pick the generated sample set here."
)
NO_SLIM_UPLOAD = "Upload the fine-tuned .pth checkpoint to slim, or pick the model just trained."

# The upload step and the handlers' wrapper (.components).
TOO_MANY_PIXELS = (
    "This image has too many pixels to process safely (a possible decompression bomb). Please upload a smaller image."
)
UPLOAD_GONE = "This photo is no longer on the server (uploads are kept for a while only). Upload it again."
NOT_AN_IMAGE = "That file is not an image we can read. Please upload a JPEG, PNG, WebP, BMP or GIF."
OUT_OF_MEMORY = "The server ran out of memory for this request. Try a smaller image or model."


def unknown_weights(weights: object) -> str:
    """A weights value that is none of the menu's: the app loads no file a request names by its path."""
    return f"Unknown weights {str(weights)[:40]!r}. Pick ImageNet V2, ImageNet V1 or Random."


def unknown_pick(value: object) -> str:
    """A class picker's value that is no class index."""
    return f"Unknown class {str(value)[:40]!r}: pick one from the list."


def own_job_running(noun: str) -> str:
    """New data refused while this session's own training job reads the current data."""
    return f"Your {noun} is running on the current data; wait for it to end, or cancel it first."


def server_bug(error: BaseException) -> str:
    """The apology for a bug (its traceback goes to the log, never to the page)."""
    return f"Something went wrong on the server ({type(error).__name__}). Please try again."


def job_failed(error: BaseException, *, noun: str) -> str:
    """The apology for a training job that ended in a bug."""
    return f"The {noun} failed on the server ({type(error).__name__}). Please try again."
