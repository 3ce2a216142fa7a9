"""The model events' output components, with their API schema made once per data model.

Gradio 6.31 builds a new instance of an output component for every update it is sent,
``gr.skip()`` included, and asks it for its API schema, which pydantic then rebuilds: 0.7 ms for
an image, 2.4 ms for a gallery. A new photo's page arrives in two steps, each leaving the other's
outputs as they are, so its two steps paid about 15 ms of the server's time for schemas that never
change: the base ``Component.api_info`` is its data model's JSON schema and nothing else. These
components keep that schema for every instance of the same data model (a file output's model
depends on its ``file_count``); each renders with its parent's front end.

The image components also take :class:`~.inline_images.InlineImage` values (the page's own events
send them): those travel inside the message instead of as files (see :mod:`.inline_images`).
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio import image_utils
from gradio.components.base import Component
from gradio.components.gallery import GalleryData, GalleryImage
from gradio.components.imageslider import SliderData
from gradio.data_classes import ImageData

from .inline_images import InlineImage, image_data

__all__ = ["File", "Gallery", "Image", "ImageSlider", "Label"]

_SCHEMAS: dict[type, dict[str, Any]] = {}  # data model -> its API schema


def _schema_once(self: Component) -> dict[str, Any]:
    """The base ``Component.api_info``, answered from :data:`_SCHEMAS` after its first call."""
    model = self.data_model
    if model not in _SCHEMAS:
        _SCHEMAS[model] = Component.api_info(self)  # Gradio's own answer (the dict it keeps per instance)
    return _SCHEMAS[model]


# ``is_template``: render with the parent's front end, as gr.Text does with gr.Textbox's. Gradio names the
# front end after the first base class, so each is a direct subclass of its Gradio component; and its
# metaclass reads each component class's source, so they are written out, not made by a function.


def _image(value: Any, *, format: str, cache: str) -> ImageData | None:
    """One image's data: inside the message for an :class:`InlineImage`, else Gradio's file."""
    if isinstance(value, InlineImage):
        return image_data(value.image, format=format, cache=cache)
    return image_utils.postprocess_image(value, cache_dir=cache, format=format)


class Gallery(gr.Gallery):
    """``gr.Gallery`` (see the module)."""

    is_template = True
    api_info = _schema_once

    def postprocess(self, value: Any) -> GalleryData:
        items = [item if isinstance(item, (tuple, list)) else (item, None) for item in value or []]
        if not items or not all(isinstance(image, InlineImage) for image, _caption in items):
            return super().postprocess(value)
        cache = self.GRADIO_CACHE
        return GalleryData(root=[GalleryImage(image=_image(image, format=self.format, cache=cache), caption=c)
                                 for image, c in items])  # fmt: skip


class Image(gr.Image):
    """``gr.Image`` (see the module)."""

    is_template = True
    api_info = _schema_once

    def postprocess(self, value: Any) -> ImageData | None:
        if isinstance(value, InlineImage):
            return _image(value, format=self.format, cache=self.GRADIO_CACHE)
        return super().postprocess(value)


class ImageSlider(gr.ImageSlider):
    """``gr.ImageSlider`` (see the module)."""

    is_template = True
    api_info = _schema_once

    def postprocess(self, value: Any) -> SliderData | None:
        if value is None or not any(isinstance(v, InlineImage) for v in value):
            return super().postprocess(value)
        return SliderData(root=tuple(_image(v, format=self.format, cache=self.GRADIO_CACHE) for v in value))


class File(gr.File):
    """``gr.File`` (see the module)."""

    is_template = True
    api_info = _schema_once


class Label(gr.Label):
    """``gr.Label`` (see the module)."""

    is_template = True
    api_info = _schema_once
