"""The Compare tab's handler: the same photo through ResNet-50, 101 and 152."""

from __future__ import annotations

import time
from typing import Any

import gradio as gr

from ..core.complexity import arch_report
from ..core.render import overlay
from ..core.weights import ARCHES, LoadedModel
from ..explain import analyze
from .components import user_errors
from .explain_handlers import NO_PHOTO, label_dict
from .model_choice import ARCH_LABELS, UNTRAINED_BANNER, UPLOAD, resolve_model


def _summary(loaded: LoadedModel, *, seconds: float) -> str:
    """One line on the model: depth, size, cost, time here, and its published top-1 when it is trained."""
    arch = loaded.spec.arch
    report = arch_report(arch)
    acc = loaded.spec.published.get("acc@1")
    return (
        f"**{ARCH_LABELS[arch]}** {list(report.depths)} blocks · {report.params / 1e6:.1f}M params · "
        f"{report.gmacs:.2f} GMACs · {seconds * 1000:.0f} ms here"
        + (f" · ImageNet top-1 {acc:.1f}%" if acc and not loaded.untrained else "")
        + (f" · **{UNTRAINED_BANNER}**" if loaded.untrained else "")
    )


@user_errors
def compare(image: str | None, weights: str) -> tuple[Any, ...]:
    """The same photo through ResNet-50, 101 and 152: per arch, top-5, layer4 map and a summary."""
    if image is None:
        raise gr.Error(NO_PHOTO)
    if weights == UPLOAD:
        raise gr.Error("Compare runs the three ImageNet models: pick ImageNet V2, V1 or Random weights.")
    outputs: list[Any] = []
    for arch in ARCHES:
        loaded = resolve_model(arch=arch, weights=weights, checkpoint=None)
        t0 = time.perf_counter()
        analysis = analyze(image=image, topk=5, model=loaded)
        att = analysis.attribution(stage="layer4", target=None, method="gradcam")
        seconds = time.perf_counter() - t0
        heat = overlay(image=analysis.crop, heatmap=att.heatmap, opacity=0.5)
        outputs += [label_dict(analysis), heat, _summary(loaded, seconds=seconds)]
    return tuple(outputs)
