"""The model events' output components, with their API schema made once per data model.

Gradio 6.31 builds a new instance of an output component for every update it is sent,
``gr.skip()`` included, and asks it for its API schema, which pydantic then rebuilds: 0.7 ms for
an image, 2.4 ms for a gallery. A new photo's page arrives in two steps, each leaving the other's
outputs as they are, so its two steps paid about 15 ms of the server's time for schemas that never
change: the base ``Component.api_info`` is its data model's JSON schema and nothing else. These
components keep that schema for every instance of the same data model (a file output's model
depends on its ``file_count``); each renders with its parent's front end.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
from gradio.components.base import Component

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


class Gallery(gr.Gallery):
    """``gr.Gallery`` (see the module)."""

    is_template = True
    api_info = _schema_once


class Image(gr.Image):
    """``gr.Image`` (see the module)."""

    is_template = True
    api_info = _schema_once


class ImageSlider(gr.ImageSlider):
    """``gr.ImageSlider`` (see the module)."""

    is_template = True
    api_info = _schema_once


class File(gr.File):
    """``gr.File`` (see the module)."""

    is_template = True
    api_info = _schema_once


class Label(gr.Label):
    """``gr.Label`` (see the module)."""

    is_template = True
    api_info = _schema_once
