"""The app's tools for AI agents, served over the Model Context Protocol (``python app.py --mcp``).

Gradio makes every public API endpoint an MCP tool, named after its function and described by its
docstring. The page's endpoints (``/predict``, ``/explain``, ...) make poor tools: their outputs are
the page's components (``/explain`` returns the tab's state key, Markdown, picker updates,
galleries) and their docstrings are written for this code's readers. Their HTTP answers are a
contract with scripts, so they stay as they are, and :func:`only_agent_tools` keeps them off the
MCP server's tool list. The tools here are two functions with plain type hints and descriptions
written for an agent, calling the page's own handlers:

* ``classify_image``: the top-5 classes (``/predict``'s handler), as JSON text;
* ``explain_image``: the top-5, one explanation map as an image and its numbers (``/explain``'s
  handler).

Both are also HTTP endpoints of the same names (``/classify_image``, ``/explain_image``).
"""

# No `from __future__ import annotations` here: gr.api reads a function's return annotation as it is
# (inspect.signature, unevaluated), and only a real tuple[...] makes the tool's several outputs.
import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any

import gradio as gr
import numpy as np
from gradio.data_classes import FileData

from ..core.model import STAGES
from ..explain import REGISTRY, Analysis, Attribution
from .cancellation import cancellable
from .components import user_errors
from .explain_handlers import explain_photo, predict
from .model_choice import UNTRAINED_BANNER, resolve_model, untrained_name
from .settings import IMAGE_FORMAT, INFERENCE_LIMIT

__all__ = ["AGENT_TOOLS", "add_agent_tools", "only_agent_tools"]

AGENT_TOOLS = ("classify_image", "explain_image")  # the MCP tools' names, and their endpoints' (off Spaces)
AGENT_SESSION = "agent"  # the analysis store's session of every agent call: it keeps the newest two
MAP_OPACITY = 0.5  # the map over the crop as the page first shows it
# Gradio lists as MCP tools only functions whose _mcp_type is unset or "tool" (gr.mcp.tool, .resource and
# .prompt set it). It has no flag per event, and "undocumented" would also take an endpoint off the API page.
_NOT_A_TOOL = "none"
# The map saved as the page's heat map is (gr.Image's own encoding into Gradio's cache): the same picture gives
# the same file. Made here, once: a component made inside a running event is only an update of the page.
_MAP_FILES = gr.Image(format=IMAGE_FORMAT, render=False)

UNTRAINED_NOTE = (
    f"{UNTRAINED_BANNER}: the pretrained weights are not available on this server, so the model runs on "
    "random weights and its predictions and maps are meaningless."
)
_MODELS = (
    "Models (arch): resnet50 (the default), resnet101, resnet152. Weights: imagenet-v2 (the default), "
    "imagenet-v1 (both trained on ImageNet's 1000 classes), or random. "
    f"If the pretrained weights are not available on the server, the model runs on random weights: every class "
    f"name then ends in ({UNTRAINED_BANNER}), untrained is true, and the answer is meaningless."
)
_IMAGE = "The photo is a http(s) URL or a base64 data URL (data:image/jpeg;base64,...)."

CLASSIFY_DESCRIPTION = (
    "Classify a photo with a ResNet image classifier. Returns JSON text: the model (arch, weights, untrained) "
    "and top5, the five most likely ImageNet classes, most likely first, each with its probability "
    f"(0 to 1). {_MODELS} {_IMAGE}"
)


def _methods_text() -> str:
    # From the registry, so that a new method is offered as soon as it exists.
    quick = [f"{name} ({m.label})" for name, m in REGISTRY.items() if m.cheap]
    slow = [f"{name} ({m.label})" for name, m in REGISTRY.items() if not m.cheap]
    tied = [f"{name} works at {', '.join(m.supported_stages)} only" for name, m in REGISTRY.items() if m.stages]
    pixels = [name for name, m in REGISTRY.items() if m.space == "input"]
    return (
        f"Methods, quick: {', '.join(quick)}; slow (seconds to minutes): {', '.join(slow)}. "
        f"{'; '.join(tied)}. {' and '.join(pixels)} explain the pixels themselves and ignore the stage. "
        "The server refuses a request it expects to take longer than its time limit, and says so."
    )


def explain_description() -> str:
    """What ``explain_image`` does, for an agent: inputs, outputs, the stages and the methods."""
    return (
        "Explain a ResNet image classifier's prediction for a photo: which parts of the photo made it "
        "predict its top class. Returns, in this order: JSON text with the model (arch, weights, untrained), "
        "top5 (the five most likely ImageNet classes, most likely first, each with its probability from "
        "0 to 1 and its class index) and map (the method and the stage it explains, the class it explains "
        "(the top class) with its probability, all_zero (true when nothing in the photo counts as evidence "
        "for the class), peak (where the map is strongest, as fractions of the crop's width and height from "
        "its top left corner), grid (the map's own rows and columns before upsampling) and the seconds it "
        "took); then the map drawn over the square crop the model saw (Turbo colours: red where the evidence "
        "is strongest, dark blue where there is none) as an image, and that image's URL. "
        "Stages, from the earliest to the last: stem (the first convolution: edges and colours, fine "
        f"detail), {', '.join(STAGES[1:-1])}, and {STAGES[-1]} (the default: the last and coarsest stage, "
        "whose maps are the most specific to the class). "
        f"{_methods_text()} {_MODELS} {_IMAGE}"
    )


def _path(image: FileData | dict[str, Any] | str | None) -> str | None:
    # Gradio hands a function without components the file as its JSON (a dict), already in its cache.
    if image is None or isinstance(image, str):
        return image
    return image.get("path") if isinstance(image, dict) else image.path


def _model(*, arch: str, weights: str, untrained: bool) -> dict[str, Any]:
    return {"arch": arch, "weights": weights, "untrained": untrained}


def _answer(fields: dict[str, Any], *, untrained: bool) -> str:
    return json.dumps({**fields, "note": UNTRAINED_NOTE} if untrained else fields)


@user_errors
def classify_image(image: FileData, arch: str = "resnet50", weights: str = "imagenet-v2") -> str:
    """The top-5 classes of a photo as JSON text, from /predict's handler.

    Args:
        image: the photo, a http(s) URL or a base64 data URL
        arch: the model: resnet50, resnet101 or resnet152
        weights: imagenet-v2, imagenet-v1 or random
    Returns:
        JSON text: model (arch, weights, untrained) and top5 (class and probability, most likely first)
    """
    top5 = predict(_path(image), arch, weights)  # checks every input, then loads the shared model
    untrained = resolve_model(arch=arch, weights=weights, checkpoint=None).untrained
    ranked = [{"class": name, "probability": prob} for name, prob in top5.items()]
    return _answer(
        {"model": _model(arch=arch, weights=weights, untrained=untrained), "top5": ranked}, untrained=untrained
    )


def _peak(att: Attribution) -> dict[str, float]:
    rows, cols = att.heatmap.shape
    row, col = np.unravel_index(int(np.argmax(att.heatmap)), att.heatmap.shape)
    return {"x": round((col + 0.5) / cols, 3), "y": round((row + 0.5) / rows, 3)}


def _map_facts(analysis: Analysis, att: Attribution) -> dict[str, Any]:
    prob = next((p.prob for p in analysis.predictions if p.index == att.target), att.target_prob)
    label = untrained_name(name=att.target_label) if analysis.untrained else att.target_label
    return {
        "method": att.method,
        "method_name": REGISTRY[att.method].label,
        "stage": att.stage,
        "class": label,
        "class_index": att.target,
        "probability": float(prob),
        "all_zero": bool(att.all_zero),
        "peak": _peak(att),
        "grid": list(att.raw.shape[-2:]),
        "seconds": round(att.seconds, 4),
    }


@user_errors
def explain_image(
    image: FileData,
    arch: str = "resnet50",
    weights: str = "imagenet-v2",
    stage: str = "layer4",
    method: str = "gradcam",
) -> tuple[str, FileData]:
    """One explanation map of a photo's top class and the numbers behind it, from /explain's handler.

    Args:
        image: the photo, a http(s) URL or a base64 data URL
        arch: the model: resnet50, resnet101 or resnet152
        weights: imagenet-v2, imagenet-v1 or random
        stage: where in the network the map is made: stem, layer1, layer2, layer3 or layer4
        method: the explanation method's name, e.g. gradcam (the default), layercam, scorecam, ig
    Returns:
        JSON text: model, top5 (class, probability, class index) and the map's numbers
        the map over the crop the model saw, as an image
    """
    analysis, explained = explain_photo(
        _path(image), arch, weights, None, stage, method, MAP_OPACITY, "crop", session=AGENT_SESSION
    )
    att = analysis.attribution(stage=stage, method=method)  # the map just drawn: served from the analysis's cache
    names = [untrained_name(name=p.label) if analysis.untrained else p.label for p in analysis.predictions]
    top5 = [
        {"class": name, "probability": float(p.prob), "class_index": p.index}
        for name, p in zip(names, analysis.predictions, strict=True)
    ]
    facts = {
        "model": _model(arch=arch, weights=weights, untrained=analysis.untrained),
        "top5": top5,
        "map": _map_facts(analysis, att),
    }
    saved = _MAP_FILES.postprocess(explained.heatmap)
    assert saved is not None and saved.path is not None  # a PIL image always gives a file
    return _answer(facts, untrained=analysis.untrained), FileData(path=saved.path, orig_name=saved.orig_name)


def _one_at_a_time(fn: Callable[..., Awaitable[Any]], *, slots: int) -> Callable[..., Awaitable[Any]]:
    """``fn`` with at most ``slots`` calls running at once, the others waiting their turn (Gradio's
    signature and type hints of ``fn`` kept)."""
    gate = asyncio.Semaphore(slots)  # binds to the server's event loop on first use

    @functools.wraps(fn)
    async def gated(*args: Any, **kwargs: Any) -> Any:
        async with gate:
            return await fn(*args, **kwargs)

    return gated


def add_agent_tools() -> list[Callable[..., Any]]:
    """Add the agent tools to the Blocks being built (call inside its ``with``); returns their functions."""
    classify = cancellable(classify_image)
    # A tool with several outputs must skip Gradio's queue: through it, Gradio 6.31's MCP server answers
    # a client that asks for no progress with the outputs' Python repr as one text, the image lost. The
    # gate stands in for the queue's limit, so that agents never run more explanations at once than it.
    explain = _one_at_a_time(cancellable(explain_image), slots=INFERENCE_LIMIT)
    gr.api(classify, api_name="classify_image", api_description=CLASSIFY_DESCRIPTION, concurrency_id="inference")
    gr.api(explain, api_name="explain_image", api_description=explain_description(), queue=False)
    return [classify, explain]


def only_agent_tools(demo: gr.Blocks, *, tools: list[Callable[..., Any]]) -> None:
    """Keep every public endpoint of ``demo`` but ``tools`` off its MCP server's tool list; their HTTP
    API stays as it is."""
    for block_fn in demo.fns.values():
        if block_fn.api_visibility == "public" and block_fn.fn is not None and block_fn.fn not in tools:
            block_fn.fn._mcp_type = _NOT_A_TOOL  # type: ignore[attr-defined]
