"""Named results: every event with several outputs returns a named tuple whose fields name its
components, so that a handler and its event cannot disagree on their order."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator
from typing import Any, NamedTuple

import gradio as gr
import pytest

from resnet_demo.ui.agent_tools import AGENT_TOOLS
from resnet_demo.ui.events import extend, outputs_of
from resnet_demo.ui.example_handlers import ExampleAnswer


class Pair(NamedTuple):
    left: str
    right: int


class Holder:
    def __init__(self) -> None:
        self.left = gr.Markdown()
        self.right = gr.Number()
        self.note = "not a component"


def test_outputs_follow_the_fields_and_refuse_what_names_no_component() -> None:
    with gr.Blocks():
        holder, extra = Holder(), gr.Textbox()
        assert outputs_of(Pair, holder) == [holder.left, holder.right]
        assert outputs_of(Pair, left=extra, right=holder.right) == [extra, holder.right]
        with pytest.raises(TypeError, match="Pair.right names no component"):
            outputs_of(Pair, left=extra)
        with pytest.raises(TypeError, match="has no field other"):
            outputs_of(Pair, holder, other=extra)
        with pytest.raises(TypeError, match="both a keyword argument and an attribute"):
            outputs_of(Pair, holder, left=extra)
        with pytest.raises(TypeError, match="not a named tuple"):
            outputs_of(tuple, holder)
    Noted = extend(Pair, "Noted", {"note": str}, doc="A pair and a note.")
    assert Noted._fields == ("left", "right", "note") and Noted.__doc__ == "A pair and a note."
    assert extend(Noted, "Lesser", {}, drop=("left",), doc="Less.")._fields == ("right", "note")
    with pytest.raises(TypeError, match="Noted has no field middle"):
        extend(Noted, "Lesser", {}, drop=("middle",), doc="Less.")
    with pytest.raises(TypeError, match="Noted.note names no component of Holder"):
        outputs_of(Noted, Holder())


def _result_type(fn: Any) -> Any:
    """The named tuple a handler returns (or a streaming handler yields), from its annotation."""
    hint = typing.get_type_hints(inspect.unwrap(fn))["return"]
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Iterator else hint


def test_every_event_with_several_outputs_returns_its_named_tuple() -> None:
    from resnet_demo.ui import build_demo

    demo = build_demo(weights="random")
    several = [d for d in demo.fns.values() if len(d.outputs) > 1]
    assert len(several) >= 15  # explain (3), trust (5), architecture (2), compare, transfer (3), fine-tune (3)...
    # Gradio's own event that serves the examples' cached answers: its handler returns what was cached,
    # the answers of example_handlers.example_answer, in the order of the outputs the examples got.
    served = [d for d in several if d.fn.__qualname__.startswith("Examples.")]
    assert [len(d.outputs) for d in served] == [len(ExampleAnswer._fields)]
    for d in several:
        if d.api_name in AGENT_TOOLS:  # gr.api: one output per element of a plain tuple[...] annotation
            assert len(typing.get_args(_result_type(d.fn))) == len(d.outputs), d.name
            continue
        result = ExampleAnswer if d in served else _result_type(d.fn)
        assert len(getattr(result, "_fields", ())) == len(d.outputs), (d.name, result)
    public = {d.api_name: d for d in demo.fns.values() if d.api_visibility == "public"}
    # The API: the named endpoints only, their outputs as they were.
    assert set(public) == {"explain", "predict", "evaluate", "compare", "transfer", "audit", *AGENT_TOOLS}
    assert [len(public[n].outputs) for n in ("explain", "compare", "transfer")] == [9, 9, 7]
