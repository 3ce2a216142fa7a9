"""The Compare tab's handler: the same photo through ResNet-50, 101 and 152."""

from __future__ import annotations

import time
from typing import NamedTuple

import PIL.Image

from ..core.complexity import arch_report
from ..core.errors import UserError
from ..core.render import overlay
from ..core.weights import ARCH_LABELS, ARCHES, LoadedModel
from ..explain import analyze
from .components import user_errors
from .explain_handlers import label_dict
from .messages import COMPARE_NAMED_WEIGHTS, NO_PHOTO
from .model_choice import UNTRAINED_BANNER, UPLOAD, resolve_model


class Compared(NamedTuple):
    """``/compare``'s outputs, by the tab's component names: per depth, the top-5, the layer4 map, a summary."""

    resnet50_top5: dict[str, float]
    resnet50_heatmap: PIL.Image.Image
    resnet50_summary: str
    resnet101_top5: dict[str, float]
    resnet101_heatmap: PIL.Image.Image
    resnet101_summary: str
    resnet152_top5: dict[str, float]
    resnet152_heatmap: PIL.Image.Image
    resnet152_summary: str


def field_name(arch: str, panel: str) -> str:
    """The :class:`Compared` field (and the tab's component) of ``panel`` for ``arch``."""
    return f"{arch}_{panel}"


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
def compare(image: str | None, weights: str) -> Compared:
    """The same photo through ResNet-50, 101 and 152: per arch, top-5, layer4 map and a summary."""
    if image is None:
        raise UserError(NO_PHOTO)
    if weights == UPLOAD:
        raise UserError(COMPARE_NAMED_WEIGHTS)
    panels: dict[str, object] = {}
    for arch in ARCHES:
        loaded = resolve_model(arch=arch, weights=weights, checkpoint=None)
        t0 = time.perf_counter()
        analysis = analyze(image=image, topk=5, model=loaded)
        att = analysis.attribution(stage="layer4", target=None, method="gradcam")
        seconds = time.perf_counter() - t0
        panels[field_name(arch, "top5")] = label_dict(analysis)
        panels[field_name(arch, "heatmap")] = overlay(image=analysis.crop, heatmap=att.heatmap, opacity=0.5)
        panels[field_name(arch, "summary")] = _summary(loaded, seconds=seconds)
    return Compared(**panels)
