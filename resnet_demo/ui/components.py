"""Small pieces the tabs share: the image input that never shows a stack trace, the error wrapper,
the example photos and their cache."""

from __future__ import annotations

import atexit
import contextlib
import functools
import html
import inspect
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr
import PIL.Image

from ..core.errors import UserError
from ..core.model import STAGES
from . import outputs
from .messages import NOT_AN_IMAGE, OUT_OF_MEMORY, TOO_MANY_PIXELS, UPLOAD_GONE, server_bug
from .settings import IMAGE_FORMAT

log = logging.getLogger("resnet_demo.ui")

F = TypeVar("F", bound=Callable[..., Any])

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


def example_photos() -> list[str]:
    """The example photos shipped with the app, for the tabs' example pickers."""
    return sorted(str(p) for p in EXAMPLES_DIR.glob("*.jpg"))


def own_cache(examples: gr.Examples) -> gr.Examples:
    """``examples`` with their cached answers in a new folder of this server's own, removed when it exits.

    Gradio keeps them in ``.gradio/cached_examples/<component id>`` under the working folder, where the
    next start of the app (on other weights, or other code) or a second server started beside it would
    serve them as its own. Call before the first click: the cache is made on it.
    """
    folder = Path(tempfile.mkdtemp(prefix="resnet-explorer-examples-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    examples.cached_folder = folder
    examples.cached_file = folder / "log.csv"
    examples.cached_indices_file = folder / "indices.csv"
    return examples


def user_errors(fn: F) -> F:
    """Turn every exception of a handler into a ``gr.Error`` with a plain sentence.

    A :class:`UserError` keeps its own message; anything else is a bug, so it is
    logged with its traceback and the user gets a short apology instead of one.
    A streaming (generator) handler stays a generator, its errors translated as it streams.
    """
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def streaming(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with _as_sentences(fn.__name__):
                yield from fn(*args, **kwargs)

        return streaming  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _as_sentences(fn.__name__):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _as_sentences(handler: str) -> Iterator[None]:
    try:
        yield
    except gr.Error:
        raise
    except UserError as e:
        # Gradio renders an error's message as HTML, and messages quote user text (class names
        # from an uploaded checkpoint): escaped, a name like "<img src=x>" shows as typed.
        raise gr.Error(html.escape(str(e), quote=False)) from e
    except MemoryError as e:
        raise gr.Error(OUT_OF_MEMORY) from e
    except Exception as e:
        log.exception("handler %s failed", handler)
        raise gr.Error(server_bug(e)) from e


class SafeImage(gr.Image):
    """``gr.Image`` whose upload step reports unreadable files as a sentence.

    Gradio opens the upload with PIL before any handler runs; a file that is not
    an image, or a decompression bomb, would otherwise end as a bare "Error".
    """

    # Like Gradio's own templates (gr.Text for gr.Textbox): render with the parent's front end.
    is_template = True

    def preprocess(self, payload: Any) -> Any:
        try:
            return super().preprocess(payload)
        except PIL.Image.DecompressionBombError as e:
            raise gr.Error(TOO_MANY_PIXELS) from e
        except FileNotFoundError as e:  # swept from the server's cache since it was uploaded
            raise gr.Error(UPLOAD_GONE) from e
        except (PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise gr.Error(NOT_AN_IMAGE) from e


class OpenRadio(gr.Radio):
    """``gr.Radio`` that hands any value to the handler: the core checks it and says what is wrong in the
    sentence the command line gives, where Gradio's own check would answer first in its words
    ("Value: 'x' ... is not in the list of choices"). For the inputs of API endpoints."""

    is_template = True  # render with gr.Radio's front end

    def preprocess(self, payload: Any) -> Any:
        return payload


class OpenSlider(gr.Slider):
    """``gr.Slider`` that hands any value to the handler, out of its range or not a number at all: the
    core checks it and says what is wrong in the sentence the command line gives, where Gradio's own
    bounds check ("Value -1 is less than minimum value 0.") would answer first, and let NaN through."""

    is_template = True  # render with gr.Slider's front end

    def preprocess(self, payload: Any) -> Any:
        return payload


def stage_gallery(*, label: str, elem_id: str, height: int, **kwargs: Any) -> gr.Gallery:
    """A row of one tile per stage (stem, layer1..layer4): the strips of maps and the feature maps."""
    return outputs.Gallery(
        label=label, columns=len(STAGES), height=height, elem_id=elem_id, format=IMAGE_FORMAT, **kwargs
    )
