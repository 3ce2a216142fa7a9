"""The Transfer tab's handlers: a photo segmented or with its objects boxed, explained at a backbone stage."""

from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image

from ..images import load_image
from ..model import STAGES
from ..render import overlay
from ..transfer.backbone import READS
from ..transfer.drawing import draw_detections, draw_segmentation, hex_colour
from ..transfer.run import TransferResult, run_transfer
from ..transfer.weights import MODELS, TransferSpec, shared_transfer, transfer_spec
from ..weights import offline
from .analysis_store import NO_PHOTO
from .components import user_errors

__all__ = ["model_choices", "summary_markdown", "transfer"]


def model_choices(task: str) -> Any:
    """The model menu for ``task``, its default first."""
    names = MODELS.get(task, ())
    return gr.update(choices=list(names), value=names[0] if names else None)


def _legend(result: TransferResult) -> str:
    if result.segmentation is not None:
        rows = [
            f"<span style='color:{hex_colour(c.index)}'>■</span> {c.name}: {c.share:.1%}"
            for c in result.segmentation.classes
        ]
        return "Classes found: " + " · ".join(rows)
    assert result.detections is not None
    if not result.detections.items:
        return f"Nothing detected with a score of at least {result.detections.threshold:.2f}: lower the threshold."
    return "\n".join(f"- **{d.label}** {d.score:.2f}" for d in result.detections.items)


def summary_markdown(spec: TransferSpec, result: TransferResult) -> str:
    """What the model is, which stages its head reads, what changed in the backbone, and the equality check."""
    changes = []
    if spec.dilated:
        changes.append("layer3 and layer4 dilated (2, then 4) instead of strided: layer4 is 1/8 of the input, not 1/32")
    if spec.frozen_batchnorm:
        changes.append("BatchNorm frozen (fixed statistics and affine)")
    changed = "; ".join(changes) or "the backbone is the classifier's ResNet, unchanged"
    metrics = ", ".join(f"{k} {v:g}" for k, v in spec.metrics.items())
    worst = max(result.backbone_diff.values())
    cam = "" if result.cam is None else f"\n\nGrad-CAM at {result.cam.stage}: {result.cam.target}."
    return (
        f"**{spec.label}** · published {metrics} · the head reads {', '.join(READS[spec.model])}"
        f" · {changed}.\n\n"
        f"Backbone = our {spec.backbone}: every stage's output agrees to {worst:.1e} (relative).{cam}"
    )


@user_errors
def transfer(image: str | None, task: str, model: str, backbone: str, threshold: float, stage: str) -> tuple:
    """Run one photo: (picture with masks or boxes, legend, Grad-CAM overlay, summary)."""
    if image is None:
        raise gr.Error(NO_PHOTO)
    spec = transfer_spec(task=task, model=model, backbone=backbone)
    if stage not in STAGES:
        raise gr.Error(f"Unknown stage {stage[:40]!r}; pick one of {', '.join(STAGES)}.")
    photo: Image.Image = load_image(image)
    # Like every tab, usable offline: on random weights, labelled UNTRAINED with the reason.
    loaded = shared_transfer(task=spec.task, model=spec.model, backbone=spec.backbone, fallback_to_random=True)
    result = run_transfer(loaded=loaded, image=photo, threshold=float(threshold), stage=stage)
    if result.segmentation is not None:
        picture = draw_segmentation(photo, result.segmentation)
    else:
        assert result.detections is not None
        picture = draw_detections(photo, result.detections)
    heat = None if result.cam is None else overlay(image=photo, heatmap=result.cam.heatmap)
    summary = summary_markdown(spec, result)
    if loaded.untrained:
        hint = " The server is offline: an administrator must place the file in torchvision's cache." if offline() else ""
        summary = (
            f"⚠️ **{spec.label} on random weights (UNTRAINED): masks, boxes and maps are meaningless.** "
            f"{loaded.untrained_because}{hint}\n\n{summary}"
        )
    return picture, _legend(result), heat, summary
