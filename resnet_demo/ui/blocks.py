"""The Gradio interface: layout and event wiring only; the handlers hold the logic."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import gradio as gr

from .. import diagram
from ..devices import resolve_device
from ..errors import UserError
from ..weights import ARCHES, DEFAULT_WEIGHTS
from . import handlers as h
from .components import SafeImage

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"

# Two requests at once keep both cores busy; more would only slow each one down.
INFERENCE_LIMIT = 2
QUEUE_SIZE = 32
# Photos are limited by pixels (resnet_demo.images); this cap is for fine-tune zips and checkpoints.
MAX_UPLOAD = "300mb"
# Gradio's cache: every hour, delete files older than two hours, so a Space's disk stays small.
DELETE_CACHE = (3600, 7200)
# Per-user analyses are dropped after 20 minutes idle (each holds activations).
STATE_TTL_S = 20 * 60

THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="sky")
CSS = """
.banner-warn { border-left: 4px solid #f59e0b; padding-left: 8px; }
footer { display: none !important; }
#heatmap img { width: 100%; height: 100%; object-fit: contain; image-rendering: auto; }
"""

INTRO = """# ResNet Explorer
Pick **ResNet-50, 101 or 152**, drop in a photo, and see what the network predicts and **why**:
Grad-CAM for every stage and any class, the feature maps of every stage, and the bottleneck blocks at work.
"""


def _examples() -> list[str]:
    return sorted(str(p) for p in EXAMPLES_DIR.glob("*.jpg"))


def build_demo(*, arch: str = "resnet50", weights: str = DEFAULT_WEIGHTS, device: str = "cpu") -> gr.Blocks:
    """Build the app. Loads the default model now, so the page opens with its weights status."""
    h.SETTINGS["device"] = str(resolve_device(device))
    named = weights in {v for _label, v in h.WEIGHT_CHOICES}
    # A --weights PATH starts the app on that checkpoint, as if it had been uploaded.
    weights, start_checkpoint = (weights, None) if named else (h.UPLOAD, weights)
    # Not through the gr.Error wrapper: a bad --weights file must stop the start-up with its reason.
    initial_status = h.status_markdown(h.resolve_model(arch=arch, weights=weights, checkpoint=start_checkpoint))
    with gr.Blocks(title="ResNet Explorer", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(INTRO)
        status = gr.Markdown(initial_status, elem_id="weights-status", elem_classes=["banner-warn"])
        analysis = gr.State(None, time_to_live=STATE_TTL_S)

        with gr.Tabs() as tabs:
            with gr.Tab("Explain", id="explain"):
                with gr.Row():
                    with gr.Column(scale=2, min_width=300):
                        arch_in = gr.Radio(h.ARCH_CHOICES, value=arch, label="Model", elem_id="arch")
                        weights_in = gr.Dropdown(h.WEIGHT_CHOICES, value=weights, label="Weights", elem_id="weights")
                        checkpoint = gr.File(
                            label="Fine-tuned checkpoint (.pth)",
                            file_types=[".pth", ".pt"],
                            value=start_checkpoint,
                            visible=start_checkpoint is not None,
                            type="filepath",
                        )
                        image = SafeImage(
                            type="filepath",
                            image_mode=None,  # keep the file as uploaded: our loader handles every mode
                            sources=["upload", "webcam", "clipboard"],
                            label="Photo",
                            elem_id="photo",
                            height=320,
                        )
                        run = gr.Button("Explain", variant="primary", elem_id="run")
                        examples = gr.Examples(_examples(), inputs=[image], label="Examples (click one)")
                    with gr.Column(scale=3, min_width=400):
                        top5 = gr.Label(num_top_classes=5, label="Top-5 predictions", elem_id="top5")
                        with gr.Row():
                            stage = gr.Radio(h.STAGE_CHOICES, value="layer4", label="Stage", elem_id="stage")
                            view = gr.Radio(h.VIEW_CHOICES, value="crop", label="Show on")
                        with gr.Row():
                            target = gr.Dropdown(
                                [("Top class", h.TOP_CLASS)],
                                value=h.TOP_CLASS,
                                label="Explain class (type to search)",
                                elem_id="target",
                            )
                            method = gr.Dropdown(h.method_choices(arch=arch), value="gradcam", label="Method")
                            opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heat-map opacity")
                        heatmap = gr.Image(
                            label="Heat map", elem_id="heatmap", format="png", height=360, interactive=False
                        )
                        caption = gr.Markdown(elem_id="caption")
                        raw = gr.File(label="Raw map (.npy, before upsampling)", interactive=False)
                strip = gr.Gallery(label="Grad-CAM at every stage, same class", columns=5, height=220, elem_id="strip")
                features = gr.Gallery(
                    label="Feature maps: the most active channels of each stage",
                    columns=5,
                    height=260,
                    elem_id="features",
                )

            with gr.Tab("Architecture", id="architecture") as arch_tab:
                gr.Markdown(
                    "Each box is one bottleneck block (1x1 reduce, 3x3, 1x1 expand). Diamonds mark the first "
                    "block of a stage, whose shortcut is a strided 1x1 projection. After you explain a photo, "
                    "the blocks are coloured by what they did to it."
                )
                with gr.Row():
                    arch_view = gr.Radio(h.ARCH_CHOICES, value=arch, label="Model")
                    color_by = gr.Radio(
                        [(label, key) for key, (label, _unit) in diagram.STAT_CHOICES.items()] + [("none", "none")],
                        value="residual_ratio",
                        label="Colour blocks by",
                    )
                    block = gr.Dropdown(h.block_choices(arch=arch), value="layer3.0", label="Block", elem_id="block")
                arch_caption = gr.Markdown()
                # No label: it would cover the figure's own top-left corner.
                diagram_plot = gr.Plot(show_label=False, elem_id="diagram")
                with gr.Row():
                    block_plot = gr.Plot(show_label=False, elem_id="block-inside")
                    block_features = gr.Image(
                        label="Feature maps of the selected block", interactive=False, format="png"
                    )
                stage_rows, stage_headers, compare_rows, compare_headers = h.table_rows(arch=arch)
                stage_table = gr.Dataframe(stage_rows, headers=stage_headers, label="Per stage", interactive=False)
                gr.Dataframe(
                    compare_rows,
                    headers=compare_headers,
                    label="Measured vs the reproduction guide vs torchvision",
                    interactive=False,
                )
                gr.Code(
                    diagram.model_source(),
                    language="python",
                    label="The model code (resnet_demo/model.py), read from the module that runs",
                    max_lines=40,
                )

            with gr.Tab("Compare depths", id="compare"):
                gr.Markdown("The same photo through ResNet-50, 101 and 152: what does depth buy?")
                with gr.Row():
                    cmp_image = SafeImage(type="filepath", image_mode=None, label="Photo", height=240)
                    with gr.Column():
                        cmp_weights = gr.Dropdown(h.WEIGHT_CHOICES[:3], value=weights, label="Weights")
                        cmp_run = gr.Button("Compare", variant="primary", elem_id="compare-run")
                gr.Examples(_examples(), inputs=[cmp_image])
                cmp_outputs = []
                with gr.Row():
                    for a in ARCHES:
                        with gr.Column():
                            cmp_outputs += [
                                gr.Label(num_top_classes=5, label=h.ARCH_LABELS[a]),
                                gr.Image(label=f"{h.ARCH_LABELS[a]}: layer4 Grad-CAM", interactive=False, height=220),
                                gr.Markdown(),
                            ]

            with gr.Tab("Fine-tune", id="finetune"):
                from .finetune_tab import build_finetune_tab

                ft = build_finetune_tab()

        # ------------------------------------------------------------------ events
        model_inputs = [arch_in, weights_in, checkpoint]
        weights_in.change(
            lambda w: gr.update(visible=w == h.UPLOAD), weights_in, checkpoint, api_visibility="private", queue=False
        )
        gr.on(
            [arch_in.change, weights_in.change, checkpoint.change],
            h.weights_status,
            model_inputs,
            status,
            api_visibility="private",
            concurrency_id="load",
            concurrency_limit=1,
        )
        arch_in.change(lambda a: gr.update(choices=h.method_choices(arch=a)), arch_in, method, api_visibility="private")

        explain_outputs = [analysis, top5, status, target, heatmap, caption, strip, features, raw]
        explain_inputs = [image, *model_inputs, stage, method, opacity, view]
        explain_kwargs = {
            "concurrency_id": "inference",
            "concurrency_limit": INFERENCE_LIMIT,
            "trigger_mode": "always_last",
        }
        explain_event = gr.on(
            [run.click, image.upload],
            h.run_explain,
            explain_inputs,
            explain_outputs,
            api_name="explain",
            **explain_kwargs,
        )
        # Clicking an example fills the photo (no upload event), then explains it.
        examples.load_input_event.then(
            h.run_explain, explain_inputs, explain_outputs, api_visibility="private", **explain_kwargs
        )
        gr.on(
            [stage.change, target.input, method.change, opacity.release, view.change],
            h.rerender,
            [analysis, stage, target, method, opacity, view],
            [heatmap, caption, strip, raw],
            api_visibility="private",
            concurrency_id="inference",
            trigger_mode="always_last",
        )

        arch_view_inputs = [analysis, arch_view, color_by, block]
        arch_view_outputs = [diagram_plot, block_plot, block_features, arch_caption]
        arch_view.change(
            lambda a: (gr.update(choices=h.block_choices(arch=a), value="layer3.0"), h.table_rows(arch=a)[0]),
            arch_view,
            [block, stage_table],
            api_visibility="private",
        )
        # Plots in a hidden tab can render undersized, so draw them when the tab is shown.
        gr.on(
            [arch_tab.select, color_by.change, block.change, arch_view.change],
            h.architecture_view,
            arch_view_inputs,
            arch_view_outputs,
            api_visibility="private",
            trigger_mode="always_last",
        )
        explain_event.then(lambda a: a, arch_in, arch_view, api_visibility="private")

        cmp_run.click(
            h.compare,
            [cmp_image, cmp_weights],
            cmp_outputs,
            api_name="compare",
            concurrency_id="inference",
        )
        # /predict: top-5 only, for scripts. A hidden trigger gives it real components, so
        # gradio_client sees an image input and a label output in the API schema.
        predict_trigger = gr.Button(visible=False)
        predict_trigger.click(
            h.predict,
            [image, arch_in, weights_in],
            gr.Label(visible=False),
            api_name="predict",
            concurrency_id="inference",
        )

        ft.use_button.click(
            h.use_checkpoint,
            [ft.checkpoint, ft.arch],
            [arch_in, weights_in, checkpoint, tabs],
            api_visibility="private",
        )
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python app.py", description="ResNet Explorer in your browser.")
    # Spaces (and other hosts) set Gradio's own variables; honour them.
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), help="address to bind")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="port")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--arch", choices=ARCHES, default="resnet50", help="model shown first (default resnet50)")
    parser.add_argument(
        "--weights", default=DEFAULT_WEIGHTS, help="imagenet-v2 (default), imagenet-v1, random, or a .pth path"
    )
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu", help="where inference runs")
    return parser.parse_args(argv)


def launch_kwargs(args: argparse.Namespace) -> dict[str, object]:
    return {
        "server_name": args.host,
        "server_port": args.port,
        "share": args.share,
        "max_file_size": MAX_UPLOAD,
        "theme": THEME,
        "css": CSS,
        "show_error": True,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        demo = build_demo(arch=args.arch, weights=args.weights, device=args.device)
    except UserError as e:  # e.g. --device cuda without a GPU, or a --weights file that does not load
        print(f"error: {e}", file=sys.stderr)
        return 2
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=INFERENCE_LIMIT)
    demo.launch(**launch_kwargs(args))
    return 0
