"""The Explain tab's example photos: their answer computed on the first click and served from a cache
from then on, while each visitor's analysis (what their state's key names) stays their own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import PIL.Image
import pytest
from gradio_client import Client

from resnet_demo.ui import example_handlers as eh
from resnet_demo.ui import explain_handlers as h
from resnet_demo.ui.analysis_store import ANALYSES, stored
from resnet_demo.ui.components import example_photos
from resnet_demo.ui.explain_tab import ExplainTab, build_explain_tab

FIRST = h.Settings(arch="resnet50", weights="random", checkpoint=None)


def _tab() -> tuple[gr.Blocks, ExplainTab, gr.State]:
    with gr.Blocks() as demo:
        status, analysis = gr.Markdown(), gr.State(None)
        tab = build_explain_tab(
            arch=FIRST.arch, weights=FIRST.weights, checkpoint=FIRST.checkpoint, status=status, analysis=analysis
        )
    return demo, tab, analysis


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The photos the examples' answer was computed for, in order (the tab is built after this)."""
    calls: list[str] = []
    answer = eh.example_answer

    def counting(image: str | None, *, first: h.Settings) -> Any:
        calls.append(str(image))
        return answer(image, first=first)

    monkeypatch.setattr(eh, "example_answer", counting)
    return calls


@pytest.fixture
def served(counted: list[str]) -> Iterator[tuple[ExplainTab, Callable[[int], tuple[Any, float]]]]:
    """The tab, launched, and a click on example ``index`` through Gradio's queue: what the click's
    event answers (an event there only when the examples are cached) and how long it took."""
    demo, tab, _analysis = _tab()
    demo.queue().launch(prevent_thread_lock=True, quiet=True)
    client = Client(demo.local_url, verbose=False, download_files=False, analytics_enabled=False)

    def click(index: int) -> tuple[Any, float]:
        start = time.perf_counter()
        answer = client.predict(index, api_name="/load_example")
        return answer, time.perf_counter() - start

    try:
        yield tab, click
    finally:
        client.close()
        demo.close()


def test_the_second_click_is_served_from_the_cache(counted: list[str], served) -> None:
    tab, click = served
    assert not any(isinstance(c, gr.State) for c in tab.examples.outputs)  # a cached key: one analysis for all
    first, first_s = click(0)
    again, again_s = click(0)
    assert [Path(p).name for p in counted] == [Path(example_photos()[0]).name]  # computed once
    assert again == first and again_s < first_s
    fields = dict(zip(eh.ExampleAnswer._fields, first, strict=True))
    assert "UNTRAINED" in fields["status"] and len(fields["strip"]) == 5  # the page's answer, cached
    assert len(fields["slider"]) == 2 and all(Path(image["path"]).is_file() for image in fields["slider"])
    click(1)
    assert len(counted) == 2  # another example is computed on its own first click


def test_each_visitor_gets_their_own_analysis_of_an_example(counted: list[str], served) -> None:
    tab, click = served
    photo = example_photos()[0]
    click(0)
    follow = eh.example_followup(first=FIRST)
    settings = (FIRST.arch, FIRST.weights, FIRST.checkpoint, FIRST.stage, FIRST.method, FIRST.opacity, FIRST.view)
    mine = h.page_after(follow(photo, *settings, gr.Request(session_hash="visitorA"), None))
    yours = h.page_after(follow(photo, *settings, gr.Request(session_hash="visitorB"), None))
    assert mine.analysis != yours.analysis and stored(mine.analysis) is not stored(yours.analysis)
    assert {"visitorA", "visitorB"} <= ANALYSES.sessions()
    cached = tab.examples.cached_file.read_text()
    assert mine.analysis not in cached and yours.analysis not in cached  # no key in what every visitor gets
    # The cached answer stands: the visitor's event fills their state, the class pickers and the strip's label.
    assert all(v == gr.skip() for k, v in mine._asdict().items() if k not in ("analysis", "target", "versus", "strip"))
    assert mine.strip == gr.update(label=h.strip_label(FIRST.method))
    assert mine.target["choices"] == h.class_choices(stored(mine.analysis))
    ANALYSES.drop_session("visitorA")  # the first visitor closes the page
    assert stored(yours.analysis).predictions  # the second one's analysis stays
    with pytest.raises(gr.Error):
        h.rerender(mine.analysis, "layer3", h.TOP_CLASS, h.NO_VERSUS, "gradcam", 0.5, "crop")
    ANALYSES.drop_session("visitorB")
    assert len(counted) == 1


def test_other_settings_than_the_cached_answers_draw_the_page_again(counted: list[str]) -> None:
    photo = example_photos()[0]
    follow = eh.example_followup(first=FIRST)
    page = h.page_after(
        follow(photo, "resnet50", "random", None, "layer3", "gradcam", 0.5, "full", gr.Request(session_hash="c"), None)
    )
    photo_shown, heat = page.slider
    assert isinstance(heat, PIL.Image.Image) and "layer3" in page.caption
    assert photo_shown is stored(page.analysis).image and heat.size == photo_shown.size  # the whole photo
    ANALYSES.drop_session("c")
    assert counted == []  # the cached answer is not these settings'


def test_each_server_keeps_its_cache_in_a_folder_of_its_own() -> None:
    _d1, one, _a1 = _tab()
    _d2, two, _a2 = _tab()
    folders = {one.examples.cached_folder, two.examples.cached_folder}
    assert len(folders) == 2  # not Gradio's .gradio/cached_examples/<component id>, shared by every start
    assert all(not f.resolve().is_relative_to(Path.cwd()) for f in folders)
