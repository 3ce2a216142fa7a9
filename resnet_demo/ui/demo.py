"""The whole app: the intro and the weights banner above the tabs, each tab from its own
builder, the events that cross tabs, and the command line that launches it."""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys

import gradio as gr
import torch

from ..core.devices import configure_threads, release_openmp_threads, resolve_device
from ..core.errors import UserError
from ..core.precision import PRECISIONS, resolve_precision
from ..core.weights import ARCHES, DEFAULT_WEIGHTS
from . import light_sessions
from .agent_tools import add_agent_tools, only_agent_tools
from .architecture_tab import build_architecture_tab
from .audit_tab import build_audit_tab
from .budget import BUDGET
from .compare_tab import build_compare_tab
from .events import outputs_of
from .explain_tab import build_explain_tab
from .finetune_tab import build_finetune_tab
from .housekeeping import remove_files_on_exit, start_tidying, visitor_left
from .model_choice import SETTINGS, UseCheckpoint, resolve_model, start_choice, status_markdown, use_checkpoint
from .settings import (
    CSS,
    DELETE_CACHE,
    INFERENCE_LIMIT,
    MAX_UPLOAD,
    QUEUE_SIZE,
    STATE_TTL_S,
    THEME,
    TIME_BUDGET_S,
)
from .slim_handlers import use_slimmed
from .slim_tab import build_slim_tab
from .transfer_tab import build_transfer_tab

INTRO = """# ResNet Explorer
Pick **ResNet-50, 101 or 152**, drop in a photo, and see what the network predicts and **why**:
Grad-CAM and a dozen other explanation maps for every stage and any class (or "this class and not that one"),
how far each map can be trusted, the feature maps of every stage, and the bottleneck blocks at work.
"""


def build_demo(
    *,
    arch: str = "resnet50",
    weights: str = DEFAULT_WEIGHTS,
    device: str = "auto",
    precision: str = "float32",
    time_budget_s: float = TIME_BUDGET_S,
) -> gr.Blocks:
    """Build the app. Loads the default model now, so the page opens with its weights status.

    ``device``: ``auto`` (CUDA when there is a GPU, as on a Space with one; the CPU otherwise), ``cpu`` or ``cuda``.
    ``precision``: the forward's number format for new photos (see :mod:`resnet_demo.core.precision`).

    ``time_budget_s`` is the longest a request may be expected to take (0: no limit; see :mod:`.budget`).
    """
    SETTINGS["device"] = str(resolve_device(device))
    SETTINGS["precision"] = resolve_precision(name=precision, device=torch.device(SETTINGS["device"])).name
    BUDGET.seconds = time_budget_s
    weights, start_checkpoint = start_choice(weights=weights)
    # Not through the gr.Error wrapper: a bad --weights file must stop the start-up with its reason.
    initial_status = status_markdown(resolve_model(arch=arch, weights=weights, checkpoint=start_checkpoint))
    with gr.Blocks(title="ResNet Explorer", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(INTRO)
        status = gr.Markdown(initial_status, elem_id="weights-status", elem_classes=["banner-warn"])
        # The key of the user's last photo in the analysis store (.analysis_store), shared by the tabs.
        analysis = gr.State(None, time_to_live=STATE_TTL_S)
        with gr.Tabs() as tabs:
            with gr.Tab("Explain", id="explain"):
                explain = build_explain_tab(
                    arch=arch, weights=weights, checkpoint=start_checkpoint, status=status, analysis=analysis
                )
            with gr.Tab("Architecture", id="architecture") as arch_tab:
                architecture = build_architecture_tab(arch=arch, tab=arch_tab, analysis=analysis)
            with gr.Tab("Compare depths", id="compare"):
                build_compare_tab(weights=weights)
            with gr.Tab("Transfer", id="transfer"):
                build_transfer_tab()
            with gr.Tab("Fine-tune", id="finetune"):
                finetune = build_finetune_tab()
            with gr.Tab("Slim", id="slim"):
                slimmed = build_slim_tab(trained=finetune.checkpoint)
            with gr.Tab("Audit", id="audit"):
                build_audit_tab(arch=arch, weights=weights, checkpoint=start_checkpoint)

        # The diagram shows the model of the last explained photo, coloured by it. Copied by the page itself:
        # a round trip to the server would compete with the new photo's images for the page's connections.
        explain.explained.then(None, explain.arch, architecture.arch, js="(arch) => arch", api_visibility="private")
        use_model = outputs_of(UseCheckpoint, explain, tabs=tabs)  # "use this model", from either tab
        finetune.use_button.click(
            use_checkpoint, [finetune.checkpoint, finetune.arch], use_model, api_visibility="private"
        )
        slimmed.use_button.click(use_slimmed, slimmed.checkpoint, use_model, api_visibility="private")

        def left(request: gr.Request) -> None:
            # A visitor's analyses, files and session go when their page closes, not after Gradio's hour.
            visitor_left(request, blocks=demo)

        demo.unload(left)
        # Last: every endpoint above is the page's, for scripts; agents get tools of their own.
        only_agent_tools(demo, tools=add_agent_tools())
    start_tidying(demo)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The app's command line; Gradio's own host and port variables are the defaults."""
    parser = argparse.ArgumentParser(prog="python app.py", description="ResNet Explorer in your browser.")
    # Spaces (and other hosts) set Gradio's own variables; honour them.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), help="address to bind")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="port")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--arch", choices=ARCHES, default="resnet50", help="model shown first (default resnet50)")
    parser.add_argument(
        "--weights", default=DEFAULT_WEIGHTS, help="imagenet-v2 (default), imagenet-v1, random, or a .pth path"
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda", "auto"], default="auto",
        help="where inference runs (default auto: CUDA when there is a GPU, else the CPU)",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="float32",
        help="the forward's number format for new photos (default float32; bfloat16: faster where the CPU or GPU "
        "has it natively, approximate probabilities; auto: what passes the accuracy guard here)",
    )  # fmt: skip
    parser.add_argument(
        "--time-budget",
        type=_seconds,
        default=TIME_BUDGET_S,
        metavar="SECONDS",
        help=f"refuse requests expected to take longer (default {TIME_BUDGET_S:g}; 0: no limit, for a private run)",
    )
    parser.add_argument(
        "--mcp",
        action=argparse.BooleanOptionalAction,
        default=_mcp_default(),
        help="also serve tools for AI agents over the Model Context Protocol at /gradio_api/mcp/ (default: "
        "Gradio's GRADIO_MCP_SERVER variable, true or false; unset, on only on Hugging Face Spaces)",
    )
    return parser.parse_args(argv)


def _mcp_default() -> bool:
    # Gradio's own variable first, as launch() itself reads it; a Space (it sets SPACE_ID) is meant to be reached.
    chosen = os.environ.get("GRADIO_MCP_SERVER")
    if chosen is not None:
        return chosen.strip().lower() == "true"
    return bool(os.environ.get("SPACE_ID"))


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def launch_kwargs(args: argparse.Namespace) -> dict[str, object]:
    """The keyword arguments of ``demo.launch`` for the command line ``args``."""
    return {
        "server_name": args.host,
        "server_port": args.port,
        "share": args.share,
        "max_file_size": MAX_UPLOAD,
        "theme": THEME,
        "css": CSS,
        "show_error": True,
        "mcp_server": args.mcp,
    }


def ready_to_launch(demo: gr.Blocks, args: argparse.Namespace) -> dict[str, object]:
    """What :func:`main` does between building ``demo`` and launching it: share out the cores and
    queue it; returns ``demo.launch``'s keyword arguments for the command line ``args``.

    The tests launch the app through this too, so that they serve it as ``python app.py`` does.
    """
    # The cores shared out among the requests that run at once: oversubscribed threads wait on each other.
    torch.set_num_threads(max(1, configure_threads() // INFERENCE_LIMIT))
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=INFERENCE_LIMIT)
    light_sessions.install()  # a session per script call: made without a copy of all 242 blocks' settings
    # The app's startup objects (Gradio's, torch's, plotly's: millions) live as long as the server: out
    # of every later collection. A full gc.collect() over them took 0.35-0.45 s, which the memory
    # hand-back after long work and every automatic full collection in a request paid.
    gc.collect()
    gc.freeze()
    # The models' startup work ran on this thread, which then only serves: its OpenMP threads would
    # slow every request's pass on the request threads (see release_openmp_threads).
    release_openmp_threads()
    return launch_kwargs(args)


def main(argv: list[str] | None = None) -> int:
    """Build, queue and launch the app; returns the exit status (2 when it cannot start)."""
    args = parse_args(argv)
    try:
        demo = build_demo(
            arch=args.arch, weights=args.weights, device=args.device, precision=args.precision,
            time_budget_s=args.time_budget,
        )  # fmt: skip
    except UserError as e:  # e.g. --device cuda without a GPU, or a --weights file that does not load
        print(f"error: {e}", file=sys.stderr)
        return 2
    remove_files_on_exit(demo)  # SIGTERM and Ctrl-C leave none of the app's files behind
    demo.launch(**ready_to_launch(demo, args))
    return 0
