"""Images that travel inside the page's own event messages, not as files the page fetches afterwards.

Gradio saves each image an event returns to its cache and sends the page a link; the page then
fetches each one, a request apiece. A new photo's page holds thirteen (the crop and its map, five
stages, the fused map, five feature grids): on a browser's six connections per server, two of them
held by Gradio's event stream and heartbeat, that is three waves of requests after the answer has
arrived, and the server's file route answers each in turn. Sent inside the message instead, as
``data:`` URLs, they arrive with it: no request, no file written.

Only the page's own events send them so (see :func:`inline_images`); ``/explain`` and the other
API endpoints return files, as scripts expect. An inline image is named as Gradio names the file of
the same image, ``<hash of its bytes>/image.<format>``, so the page can tell the same picture by its
name whichever way it came (see :mod:`.browser_views`). Only small images travel inline (all of a
new photo's, at most 30 KB each): a larger one, the whole photo and its map in the whole-photo
view, stays a file, which the browser fetches once and keeps, rather than travel again with every
other class or opacity.
"""

from __future__ import annotations

import base64
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import gradio as gr
import PIL.Image
from gradio import processing_utils
from gradio.data_classes import ImageData

__all__ = ["INLINE", "INLINE_MAX_BYTES", "InlineImage", "image_data", "inline_images", "marked"]

INLINE = "resnet_demo.inline"  # the data's meta type: not Gradio's file type, so Gradio leaves it as it is
INLINE_MAX_BYTES = 64 * 1024  # a larger image stays a file
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class InlineImage:
    """An image to send inside the message (an image component's value, or a gallery's item)."""

    image: PIL.Image.Image


def image_data(image: PIL.Image.Image, *, format: str, cache: str) -> ImageData:
    """``image`` as an image component's data with its bytes in the URL: the bytes Gradio would save
    (its own encoder), named after them as Gradio names their file. Over :data:`INLINE_MAX_BYTES`,
    those bytes saved as Gradio's file in ``cache`` instead (the component's cache folder)."""
    data = processing_utils.encode_pil_to_bytes(image, format)
    if len(data) > INLINE_MAX_BYTES:
        return ImageData(path=processing_utils.save_bytes_to_cache(data, f"image.{format}", cache))
    return ImageData(
        path=f"{processing_utils.hash_bytes(data)}/image.{format}",
        url=f"data:image/{format};base64,{base64.b64encode(data).decode('ascii')}",
        size=len(data),
        orig_name=f"image.{format}",
        mime_type=f"image/{format}",
        meta={"_type": INLINE},
    )


def marked(value: Any) -> Any:
    """``value`` (a handler's result, a component's value or update) with every PIL image in it an :class:`InlineImage`."""
    if isinstance(value, PIL.Image.Image):
        return InlineImage(value)
    if hasattr(value, "_fields"):  # a handler's named result
        return type(value)(*map(marked, value))
    if isinstance(value, dict) and "value" in value:  # gr.update(value=...)
        return {**value, "value": marked(value["value"])}
    if isinstance(value, (list, tuple)):
        return type(value)(map(marked, value))
    return value


def inline_images(fn: F) -> F:
    """``fn`` (a handler of the page's own events, or a generator of their steps) with the images of its
    results sent inside the message; the same signature, for Gradio to read."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def steps(*args: Any, **kwargs: Any) -> Any:
            step = None
            for step in fn(*args, **kwargs):
                yield marked(step)
            if step is not None:
                # Gradio's closing message of a run of steps repeats the last step's values: a last step
                # that changes nothing keeps the images from travelling twice.
                yield type(step)(*[gr.skip()] * len(step))

        return steps  # type: ignore[return-value]

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        return marked(fn(*args, **kwargs))

    return run  # type: ignore[return-value]
