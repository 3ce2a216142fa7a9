"""Small Gradio pieces: the image input that never shows a stack trace, the error wrapper."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gradio as gr
import PIL.Image

from ..errors import UserError

log = logging.getLogger("resnet_demo.ui")

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn every exception of a handler into a ``gr.Error`` with a plain sentence.

    A :class:`UserError` keeps its own message; anything else is a bug, so it is
    logged with its traceback and the user gets a short apology instead of one.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as e:
            raise gr.Error(str(e)) from e
        except MemoryError as e:
            raise gr.Error("The server ran out of memory for this request. Try a smaller image or model.") from e
        except Exception as e:
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error(f"Something went wrong on the server ({type(e).__name__}). Please try again.") from e

    return wrapper  # type: ignore[return-value]


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
            raise gr.Error(
                "This image has too many pixels to process safely (a possible decompression bomb). "
                "Please upload a smaller image."
            ) from e
        except (PIL.UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
            raise gr.Error("That file is not an image we can read. Please upload a JPEG, PNG, WebP, BMP or GIF.") from e
