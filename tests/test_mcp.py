"""The app as an AI agent sees it: launched with its MCP server on, reached with the `mcp` client
library over streamable HTTP; its tools answer as /predict and /explain answer over gradio_client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from resnet_demo.core.model import STAGES
from resnet_demo.explain import REGISTRY
from resnet_demo.ui.agent_tools import AGENT_TOOLS
from resnet_demo.ui.model_choice import untrained_name

from .conftest import EXAMPLES, free_port

PHOTO = EXAMPLES / "cat.jpg"
SAME = 1e-6  # probabilities of two runs of the same forward on the same photo
PAGE_ENDPOINTS = {"/predict", "/explain", "/compare", "/evaluate", "/transfer"}
# Markup and names an agent cannot use: reST roles and literals, the page's internals.
NOT_FOR_AGENTS = re.compile(r"``|:(func|mod|class|meth|data|attr):|gr\.State|analysis key|run_explain|_ui\b")


@pytest.fixture(scope="module")
def mcp_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The whole app launched as ``python app.py --mcp`` launches it, on an empty offline weights cache
    (random weights, marked UNTRAINED), on a free port, without blocking this thread."""
    saved = {name: os.environ.get(name) for name in ("TORCH_HOME", "SPACE_ID")}
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch_home"))
    os.environ.pop("SPACE_ID", None)  # on a Space, Gradio prefixes every tool's name with the Space's
    from resnet_demo.core.weights import clear_model_cache
    from resnet_demo.ui import build_demo, parse_args, ready_to_launch

    clear_model_cache()
    args = parse_args(["--port", str(free_port()), "--mcp"])
    demo = build_demo(arch=args.arch, weights=args.weights, device=args.device, time_budget_s=args.time_budget)
    demo.launch(**ready_to_launch(demo, args), prevent_thread_lock=True, quiet=True)
    try:
        assert demo.mcp_server, demo.mcp_error  # an MCP server that failed to start is only printed
        yield demo
    finally:
        demo.close()
        clear_model_cache()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _mcp_url(app: Any) -> str:
    return app.local_url.rstrip("/") + "/gradio_api/mcp/"  # the URL Gradio prints at launch


def _with_session(app: Any, work: Any) -> Any:
    """``await work(session)`` on a fresh MCP client session with ``app``'s server."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def run() -> Any:
        async with streamable_http_client(_mcp_url(app)) as (read, write, _), ClientSession(read, write) as session:
            await session.initialize()
            return await work(session)

    return asyncio.run(run())


def _call(app: Any, tool: str, arguments: dict[str, Any]) -> Any:
    return _with_session(app, lambda session: session.call_tool(tool, arguments))


def _data_url(path: Path) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode()


def _client(app: Any, tmp: Path) -> Client:
    return Client(app.local_url, verbose=False, download_files=str(tmp), analytics_enabled=False)


def _assert_same_top5(got: list[dict[str, Any]], expected: list[tuple[str, float]]) -> None:
    """The same classes in the same order with the same probabilities (the same forward, run again)."""
    assert [c["class"] for c in got] == [name for name, _ in expected]
    assert [c["probability"] for c in got] == pytest.approx([p for _, p in expected], abs=SAME)


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def _pixels_hash(path: str | Path) -> str:
    with Image.open(path) as im:
        return hashlib.sha1(np.asarray(im.convert("RGB")).tobytes()).hexdigest()


def test_command_line_turns_the_mcp_server_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from resnet_demo.ui import launch_kwargs, parse_args

    monkeypatch.delenv("GRADIO_MCP_SERVER", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert parse_args([]).mcp is False and launch_kwargs(parse_args([]))["mcp_server"] is False
    assert parse_args(["--mcp"]).mcp is True and launch_kwargs(parse_args(["--mcp"]))["mcp_server"] is True
    monkeypatch.setenv("SPACE_ID", "someone/resnet-explorer")  # a Hugging Face Space: on by default
    assert parse_args([]).mcp is True and parse_args(["--no-mcp"]).mcp is False
    monkeypatch.setenv("GRADIO_MCP_SERVER", "False")  # Gradio's own variable wins over the Space's default
    assert parse_args([]).mcp is False and parse_args(["--mcp"]).mcp is True
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setenv("GRADIO_MCP_SERVER", "true")
    assert parse_args([]).mcp is True


def test_only_the_agent_tools_are_listed_and_described_for_an_agent(mcp_app: Any, tmp_path: Path) -> None:
    tools = {tool.name: tool for tool in _with_session(mcp_app, lambda session: session.list_tools()).tools}
    assert set(tools) == set(AGENT_TOOLS)  # none of the page's endpoints
    for name, tool in tools.items():
        text = tool.description or ""
        assert not NOT_FOR_AGENTS.search(text), (name, NOT_FOR_AGENTS.search(text))
        assert "UNTRAINED" in text and "resnet152" in text and "imagenet-v1" in text, name
        properties = tool.inputSchema["properties"]
        assert tool.inputSchema["required"] == ["image"], name
        assert properties["image"]["type"] == "string", name  # a URL or a data URL, which Gradio saves
        for parameter, schema in properties.items():
            assert schema.get("description"), (name, parameter)
            assert not NOT_FOR_AGENTS.search(schema["description"]), (name, parameter)
    explain = tools["explain_image"].description or ""
    assert all(re.search(rf"\b{re.escape(stage)}\b", explain) for stage in STAGES)
    assert all(re.search(rf"(^|[ (,]){re.escape(method)}[ ,;)]", explain) for method in REGISTRY), explain
    # The page's endpoints still answer scripts over HTTP, as before.
    endpoints = _client(mcp_app, tmp_path).view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert PAGE_ENDPOINTS | {f"/{name}" for name in AGENT_TOOLS} <= set(endpoints)
    assert [p["parameter_name"] for p in endpoints["/predict"]["parameters"]] == ["image", "arch", "weights"]


def test_classify_tool_answers_as_predict(mcp_app: Any, tmp_path: Path) -> None:
    result = _call(mcp_app, "classify_image", {"image": _data_url(PHOTO), "arch": "resnet50"})
    assert not result.isError, result.content
    (content,) = result.content
    answer = json.loads(content.text)
    label = _client(mcp_app, tmp_path).predict(handle_file(str(PHOTO)), "resnet50", "imagenet-v2", api_name="/predict")
    expected = [(c["label"], c["confidence"]) for c in label["confidences"]]
    _assert_same_top5(answer["top5"], expected)
    assert all(name.endswith("(UNTRAINED)") for name, _ in expected)  # offline: random weights, and it says so
    assert answer["model"] == {"arch": "resnet50", "weights": "imagenet-v2", "untrained": True}
    assert "UNTRAINED" in answer["note"]


def test_explain_tool_answers_as_explain(mcp_app: Any, tmp_path: Path) -> None:
    arguments = {"image": _data_url(PHOTO), "arch": "resnet50", "stage": "layer3", "method": "gradcam"}
    result = _call(mcp_app, "explain_image", arguments)
    assert not result.isError, result.content
    numbers, picture, link = result.content
    assert (numbers.type, picture.type, link.type) == ("text", "image", "text")
    answer = json.loads(numbers.text)
    client = _client(mcp_app, tmp_path)
    top5, status, _target, heatmap, caption, _strip, _features, raw = client.predict(
        handle_file(str(PHOTO)), "resnet50", "imagenet-v2", None, "layer3", "gradcam", 0.5, "crop", api_name="/explain"
    )
    expected = [(untrained_name(name=c["label"]), c["confidence"]) for c in top5["confidences"]]
    _assert_same_top5(answer["top5"], expected)
    assert answer["model"]["untrained"] is True and "UNTRAINED" in status and "UNTRAINED" in answer["note"]
    facts = answer["map"]
    assert (facts["method"], facts["stage"], facts["class"]) == ("gradcam", "layer3", expected[0][0])
    assert facts["class_index"] == answer["top5"][0]["class_index"]
    assert facts["probability"] == pytest.approx(expected[0][1], abs=SAME) and f"({expected[0][1]:.1%})" in caption
    assert facts["grid"] == list(np.load(raw).shape) == [14, 14]  # layer3 of a 224 px crop
    assert 0.0 <= facts["peak"]["x"] <= 1.0 and 0.0 <= facts["peak"]["y"] <= 1.0 and facts["all_zero"] is False
    # The map the agent sees is the page's: the same file behind its URL, and the same picture re-encoded.
    with Image.open(heatmap) as page_map:
        page_pixels = _pixels(page_map)
    assert picture.mimeType == "image/jpeg"
    with Image.open(io.BytesIO(base64.b64decode(picture.data))) as seen:
        assert seen.size == (page_pixels.shape[1], page_pixels.shape[0])
        assert np.abs(_pixels(seen) - page_pixels).mean() < 2.0  # JPEG twice: a level or so apart
    url = link.text.removeprefix("Image URL: ")
    import httpx

    served = tmp_path / "served.jpg"
    served.write_bytes(httpx.get(url, timeout=30).raise_for_status().content)
    assert _pixels_hash(served) == _pixels_hash(heatmap)


def test_tool_errors_are_the_core_sentences(mcp_app: Any) -> None:
    photo = _data_url(PHOTO)
    result = _call(mcp_app, "explain_image", {"image": photo, "stage": "layer9"})
    assert result.isError and "Unknown stage 'layer9'; choose one of stem, layer1" in result.content[0].text
    result = _call(mcp_app, "explain_image", {"image": photo, "stage": "layer2", "method": "cam"})
    assert result.isError and "CAM works at layer4 only" in result.content[0].text
    result = _call(mcp_app, "classify_image", {"image": photo, "arch": "resnet18"})
    assert result.isError and "resnet18" in result.content[0].text
