"""Gradio's record of a session, made light (resnet_demo.ui.light_sessions): the same fields as
Gradio's own, no copy of every block's settings up front, and each entry as Gradio would have
made it once a component changes."""

from __future__ import annotations

import tracemalloc
from typing import Any

import gradio as gr
import pytest
from gradio.state_holder import SessionState

from resnet_demo.ui import light_sessions


@pytest.fixture(scope="module")
def blocks() -> gr.Blocks:
    with gr.Blocks() as demo:
        name = gr.Textbox(label="name")
        choice = gr.Dropdown(["a", "b"], value="a", label="choice")
        kept = gr.State()
        out = gr.Markdown()
        name.submit(lambda n, c: f"{n} {c}", [name, choice], out)
    demo.ids = {"name": name._id, "choice": choice._id, "state": kept._id, "out": out._id}  # type: ignore[attr-defined]
    return demo


@pytest.fixture(autouse=True)
def _installed_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed for the test, and Gradio's constructor back after it: the served app's tests must see
    only what its own start-up installs."""
    monkeypatch.setattr(SessionState, "__init__", SessionState.__init__)
    light_sessions.install()


def _eager(demo: gr.Blocks) -> SessionState:
    """A session made by Gradio's own constructor, as without :func:`light_sessions.install`."""
    state = SessionState.__new__(SessionState)
    light_sessions._GRADIO_INIT(state, demo)
    return state


def test_a_light_session_has_gradio_s_fields_and_no_copy_of_the_blocks(blocks: gr.Blocks) -> None:
    light_sessions.install()  # again: idempotent
    assert light_sessions.installed()
    light, eager = SessionState(blocks), _eager(blocks)
    assert vars(light).keys() == vars(eager).keys()
    assert light.config_values == {}
    assert len(eager.config_values) == len(blocks.blocks)
    assert light.blocks_config is not blocks.default_config  # its own, as Gradio's is
    assert {k: v for k, v in vars(light).items() if k not in ("config_values", "blocks_config")} == {
        k: v for k, v in vars(eager).items() if k not in ("config_values", "blocks_config")
    }


def test_a_changed_component_s_entry_is_gradio_s(blocks: gr.Blocks) -> None:
    light, eager = SessionState(blocks), _eager(blocks)
    ids: dict[str, int] = blocks.ids  # type: ignore[attr-defined]
    for state in (light, eager):
        state._update_value_in_config(ids["out"], "hello b")
        state[ids["choice"]] = gr.Dropdown(["a", "b", "c"], value="c", label="choice", render=False)
        state[ids["state"]] = {"kept": 1}
    for key in ("out", "choice", "state"):
        assert light.config_values[ids[key]] == eager.config_values[ids[key]]
    assert light.config_values[ids["out"]]["props"]["value"] == "hello b"
    assert light[ids["state"]] == {"kept": 1}
    assert ids["name"] not in light.config_values  # untouched: left out, loads as it is


def test_a_light_session_holds_a_fraction_of_the_memory(blocks: gr.Blocks) -> None:
    def size(make: Any) -> int:
        tracemalloc.start()
        try:
            kept = [make(blocks) for _ in range(20)]
            return tracemalloc.get_traced_memory()[0] // len(kept)
        finally:
            tracemalloc.stop()

    light, eager = size(SessionState), size(_eager)
    assert light < eager / 2, (light, eager)
