"""The model events' output components: Gradio's components, with their API schema made once."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pytest

from resnet_demo.ui import outputs

CASES: list[tuple[type, type, dict[str, Any]]] = [
    (outputs.Gallery, gr.Gallery, {"columns": 5}),
    (outputs.Image, gr.Image, {"format": "jpeg"}),
    (outputs.ImageSlider, gr.ImageSlider, {}),
    (outputs.File, gr.File, {}),
    (outputs.File, gr.File, {"file_count": "multiple"}),  # another data model: another schema
    (outputs.Label, gr.Label, {"num_top_classes": 5}),
]


@pytest.mark.parametrize(("ours", "gradios", "kwargs"), CASES)
def test_each_is_its_gradio_component_with_the_same_schema_and_front_end(
    ours: type, gradios: type, kwargs: dict[str, Any]
) -> None:
    mine, theirs = ours(render=False, **kwargs), gradios(render=False, **kwargs)
    assert isinstance(mine, gradios)
    assert mine.get_block_name() == theirs.get_block_name()  # the parent's front end renders it
    for info in ("api_info", "api_info_as_input", "api_info_as_output"):
        assert getattr(mine, info)() == getattr(theirs, info)()


def test_a_rebuilt_component_reuses_the_schema_instead_of_making_it_again() -> None:
    # What Gradio does for every update an output is sent: a new instance, asked for its schema.
    first, rebuilt = outputs.Gallery(render=False), outputs.Gallery(render=False, label="another")
    assert rebuilt.api_info() is first.api_info()
    single, multiple = outputs.File(render=False), outputs.File(render=False, file_count="multiple")
    assert single.api_info() != multiple.api_info()  # kept per data model, not per class
