"""The model events' output components: Gradio's components, with their API schema made once, that also
send the page's images inside the message."""

from __future__ import annotations

import base64
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import PIL.Image
import pytest
from gradio import processing_utils

from resnet_demo.ui import outputs
from resnet_demo.ui.inline_images import INLINE_MAX_BYTES, InlineImage, inline_images

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


def _photo(seed: int) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8))


def _inline_bytes(data: dict[str, Any]) -> bytes:
    head, _, payload = data["url"].partition(",")
    assert head == "data:image/jpeg;base64"
    return base64.b64decode(payload)


def test_an_inline_image_is_gradios_file_inside_the_message() -> None:
    a, b = _photo(0), _photo(1)
    gallery = outputs.Gallery(render=False, format="jpeg")
    files = processing_utils.move_files_to_cache(gallery.postprocess([(a, "stem"), (b, "layer1")]), gallery,
                                                 postprocess=True)  # fmt: skip
    sent = processing_utils.move_files_to_cache(
        gallery.postprocess([(InlineImage(a), "stem"), (InlineImage(b), "layer1")]), gallery, postprocess=True
    )
    assert [t["caption"] for t in sent] == ["stem", "layer1"]
    for file, inline in zip(files, sent, strict=True):
        assert file["image"]["url"].startswith("/gradio_api/file=")  # a plain image: Gradio's file, as before
        assert _inline_bytes(inline["image"]) == Path(file["image"]["path"]).read_bytes()  # the same bytes
        # Named as Gradio names the file: the page tells the same picture by its last two path parts.
        assert inline["image"]["path"] == "/".join(file["image"]["path"].split("/")[-2:])
    assert sent[0]["image"]["path"] != sent[1]["image"]["path"]

    image = outputs.Image(render=False, format="jpeg")
    one = processing_utils.move_files_to_cache(image.postprocess(InlineImage(a)), image, postprocess=True)
    assert _inline_bytes(one) == _inline_bytes(sent[0]["image"])
    slider = outputs.ImageSlider(render=False, format="jpeg")
    pair = processing_utils.move_files_to_cache(slider.postprocess((InlineImage(a), InlineImage(b))), slider,
                                                postprocess=True)  # fmt: skip
    assert [_inline_bytes(d) for d in pair] == [_inline_bytes(t["image"]) for t in sent]
    assert slider.postprocess((a, b)).root[0].url is None  # plain images: files, Gradio's own way


def test_a_large_image_stays_a_file_the_browser_keeps() -> None:
    big = PIL.Image.fromarray(np.random.default_rng(2).integers(0, 255, (400, 400, 3), dtype=np.uint8))
    assert len(processing_utils.encode_pil_to_bytes(big, "jpeg")) > INLINE_MAX_BYTES
    slider = outputs.ImageSlider(render=False, format="jpeg")
    photo, heat = processing_utils.move_files_to_cache(
        slider.postprocess((InlineImage(big), InlineImage(_photo(0)))), slider, postprocess=True
    )
    assert photo["url"].startswith("/gradio_api/file=")  # fetched once, then the browser's own copy
    assert heat["url"].startswith("data:image/jpeg;base64,")
    plain = processing_utils.move_files_to_cache(slider.postprocess((big, big)), slider, postprocess=True)[0]
    assert photo["path"] == plain["path"]  # the same bytes in the same file as Gradio's own
    assert Path(photo["path"]).read_bytes() == processing_utils.encode_pil_to_bytes(big, "jpeg")


def test_the_page_handlers_mark_their_images_and_close_with_a_step_that_changes_nothing() -> None:
    class Step(NamedTuple):
        slider: Any
        strip: Any
        caption: str

    a, b = _photo(0), _photo(1)

    def steps(request: gr.Request | None = None) -> Iterator[Step]:
        yield Step(slider=(a, b), strip=gr.skip(), caption="map")
        yield Step(slider=gr.skip(), strip=gr.update(value=[(a, "stem")], label="strip"), caption="more")

    wrapped = inline_images(steps)
    assert inspect.isgeneratorfunction(wrapped)  # run as steps, cancellable, by Gradio
    assert inspect.signature(wrapped) == inspect.signature(steps)  # Gradio reads its Request argument there
    first, second, closing = list(wrapped())
    assert first.slider == (InlineImage(a), InlineImage(b)) and first.caption == "map"
    assert second.strip == {**gr.update(label="strip"), "value": [(InlineImage(a), "stem")]}
    assert second.slider == gr.skip()
    assert closing == Step(*[gr.skip()] * 3)  # Gradio's closing message repeats the last step's values
    assert inline_images(lambda: Step(a, [b], "x"))() == Step(InlineImage(a), [InlineImage(b)], "x")
