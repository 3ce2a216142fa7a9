"""Event handlers of the app: convert Gradio values, call the core, convert back.

Every function here is plain Python, so the tests call them directly; the only
Gradio they use is ``gr.Error`` (through :func:`user_errors`) and ``gr.update``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import PIL.Image

from .. import diagram
from ..complexity import arch_report
from ..explain import METHODS, STAGES, Analysis, Attribution, analyze, method_cost, overlay, overlay_on_full
from ..weights import ARCHES, LoadedModel, shared_model
from .components import user_errors

ARCH_LABELS: dict[str, str] = {"resnet50": "ResNet-50", "resnet101": "ResNet-101", "resnet152": "ResNet-152"}
ARCH_CHOICES: list[tuple[str, str]] = [(ARCH_LABELS[a], a) for a in ARCHES]
UPLOAD = "upload"
WEIGHT_CHOICES: list[tuple[str, str]] = [
    ("ImageNet V2 (torchvision, best)", "imagenet-v2"),
    ("ImageNet V1 (the paper's recipe)", "imagenet-v1"),
    ("Random (untrained)", "random"),
    ("My checkpoint (.pth upload)", UPLOAD),
]
ALL_STAGES = "all"
STAGE_CHOICES: list[tuple[str, str]] = [(s, s) for s in STAGES]
VIEW_CHOICES: list[tuple[str, str]] = [("The 224 crop the model saw", "crop"), ("The whole photo", "full")]
TOP_CLASS = -1  # the class picker's value for "whatever the model ranks first"
UNTRAINED_BANNER = "UNTRAINED"

# Where inference runs; set once at start-up by build_demo (--device), read by every request.
SETTINGS: dict[str, str] = {"device": "cpu"}


def method_choices(*, arch: str) -> list[tuple[str, str]]:
    """Method picker entries, the slow ones labelled with their expected time here."""
    out = []
    for method, label in METHODS.items():
        cost = method_cost(method=method, arch=arch)
        out.append((label if cost < 1.0 else f"{label} (~{cost:.0f} s here)", method))
    return out


# ---------------------------------------------------------------------------- models


def resolve_model(*, arch: str, weights: str, checkpoint: str | None) -> LoadedModel:
    """The shared, cached model for the pickers' values.

    Named weights fall back to random ones when they cannot be had (the banner says
    so); a checkpoint the user uploaded must load, or they get the reason.
    """
    if arch not in ARCHES:
        raise gr.Error(f"Unknown model {arch!r}. Pick ResNet-50, ResNet-101 or ResNet-152.")
    if weights == UPLOAD:
        if not checkpoint:
            raise gr.Error("Upload a .pth checkpoint first, or pick ImageNet weights.")
        return shared_model(arch=arch, weights=str(checkpoint), device=SETTINGS["device"])
    if weights not in dict((v, k) for k, v in WEIGHT_CHOICES):
        raise gr.Error(f"Unknown weights {weights!r}. Pick ImageNet V2, ImageNet V1 or Random.")
    return shared_model(arch=arch, weights=weights, fallback_to_random=True, device=SETTINGS["device"])


def status_markdown(loaded: LoadedModel) -> str:
    """The weights status line, and the warning banner when the weights fell back to random."""
    if loaded.warning:
        return (
            f"⚠️ **Pretrained weights unavailable: running {ARCH_LABELS[loaded.spec.arch]} on random weights "
            f"({UNTRAINED_BANNER}).** Every prediction below is meaningless; the views still work.\n\n"
            f"{loaded.warning}"
        )
    if loaded.untrained:
        return (
            f"**{ARCH_LABELS[loaded.spec.arch]} on random weights ({UNTRAINED_BANNER}):** predictions are meaningless."
        )
    return f"✅ **{loaded.status}**"


@user_errors
def weights_status(arch: str, weights: str, checkpoint: str | None) -> str:
    """Status line for the pickers, loading the model (once) if needed."""
    if weights == UPLOAD and not checkpoint:
        return "Upload a fine-tuned `.pth` checkpoint (from the Fine-tune tab or `python -m resnet_demo finetune`)."
    return status_markdown(resolve_model(arch=arch, weights=weights, checkpoint=checkpoint))


# ---------------------------------------------------------------------------- temporary files


class _Downloads:
    """A folder of at most ``keep`` files for the raw maps users may download.

    Gradio copies returned files into its own cache (cleaned by ``delete_cache``);
    this keeps our own copies bounded too, whatever the number of requests.
    """

    def __init__(self, keep: int = 64) -> None:
        self.dir = Path(tempfile.gettempdir()) / f"resnet-explorer-{os.getpid()}"
        self.keep = keep
        self._lock = threading.Lock()

    def save_npy(self, array: np.ndarray, *, stem: str) -> str:
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            files = sorted(self.dir.glob("*.npy"), key=lambda p: p.stat().st_mtime)
            for old in files[: max(0, len(files) - self.keep + 1)]:
                old.unlink(missing_ok=True)
            # Named by content: the same map gives the same file, which Gradio's cache
            # (keyed by content and name) then stores once instead of once per request.
            digest = hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()[:12]
            path = self.dir / f"{stem}-{digest}.npy"
            np.save(path, array)
            return str(path)


DOWNLOADS = _Downloads()

# ---------------------------------------------------------------------------- explain tab


def _label_dict(analysis: Analysis) -> dict[str, float]:
    # gr.Label wants plain Python floats.
    return {p.label: float(p.prob) for p in analysis.predictions}


def class_choices(analysis: Analysis) -> list[tuple[str, int]]:
    """The class picker: top class, then the top-k with probabilities, then every class."""
    top = [(f"#{i + 1} {p.label} ({p.prob:.1%})", p.index) for i, p in enumerate(analysis.predictions)]
    ranked = {p.index for p in analysis.predictions}
    rest = [(name, i) for i, name in enumerate(analysis.spec.categories) if i not in ranked]
    return [("Top class", TOP_CLASS), *top, *rest]


def _target(target: int | float | str | None) -> int | None:
    if target is None or target == "":
        return None
    try:
        t = int(target)
    except (TypeError, ValueError) as e:
        raise gr.Error(f"Unknown class {target!r}: pick one from the list.") from e
    return None if t == TOP_CLASS else t


def _ms(seconds: float) -> str:
    # layer4 Grad-CAM is a closed form (CAM) and takes well under a millisecond.
    return "<1 ms" if seconds < 1e-3 else f"{seconds * 1000:.0f} ms"


def _caption(analysis: Analysis, att: Attribution) -> str:
    prob = next((p.prob for p in analysis.predictions if p.index == att.target), None)
    prob_text = f" ({prob:.1%})" if prob is not None else ""
    parts = [
        f"**{METHODS[att.method]}** at **{att.stage}** for class **{att.target_label}**{prob_text}, "
        f"computed in {_ms(att.seconds)}."
    ]
    if att.all_zero:
        parts.append(
            "⚠️ The map is all zero: at this stage nothing in the image counts as positive "
            "evidence for this class (all of its evidence is negative)."
        )
    if analysis.untrained:
        parts.insert(0, f"**{UNTRAINED_BANNER}** (random weights): this map explains a meaningless prediction.")
    return "\n\n".join(parts)


def _render(analysis: Analysis, att: Attribution, *, opacity: float, view: str) -> PIL.Image.Image:
    if view == "full":
        return overlay_on_full(analysis=analysis, attribution=att, opacity=opacity)
    return overlay(image=analysis.crop, heatmap=att.heatmap, opacity=opacity)


def _strip(analysis: Analysis, *, target: int | None, opacity: float) -> list[tuple[PIL.Image.Image, str]]:
    """Grad-CAM of every stage for the same class: where the evidence forms, early to late."""
    out = []
    for stage in STAGES:
        att = analysis.attribution(stage=stage, target=target, method="gradcam")
        note = " (all zero)" if att.all_zero else ""
        out.append((overlay(image=analysis.crop, heatmap=att.heatmap, opacity=opacity), f"{stage}{note}"))
    return out


def _features(analysis: Analysis) -> list[tuple[PIL.Image.Image, str]]:
    out = []
    for stage in STAGES:
        grid = analysis.feature_maps(stage)
        c, h, w = grid.shape
        out.append((grid.image, f"{stage} · {c}×{h}×{w} · channels {', '.join(map(str, grid.channels[:4]))}…"))
    return out


def _check_view(*, stage: str, method: str, opacity: float, view: str) -> None:
    if stage not in STAGES:
        raise gr.Error(f"Unknown stage {stage!r}: pick one of {', '.join(STAGES)}.")
    if method not in METHODS:
        raise gr.Error(f"Unknown method {method!r}: pick one of {', '.join(METHODS)}.")
    if not 0.0 <= float(opacity) <= 1.0:
        raise gr.Error("Opacity must be between 0 and 1.")
    if view not in ("crop", "full"):
        raise gr.Error("View must be 'crop' or 'full'.")


@user_errors
def run_explain(
    image: str | None,
    arch: str,
    weights: str,
    checkpoint: str | None,
    stage: str,
    method: str,
    opacity: float,
    view: str,
) -> tuple[Any, ...]:
    """Explain tab, a new photo or model: one forward, then every view of it.

    Returns (analysis state, top-5, status, class picker, overlay, caption, strip,
    feature maps, raw map file).
    """
    if image is None:
        raise gr.Error("Upload a photo first (or click one of the examples).")
    _check_view(stage=stage, method=method, opacity=opacity, view=view)
    loaded = resolve_model(arch=arch, weights=weights, checkpoint=checkpoint)
    analysis = analyze(image=image, arch=arch, weights=loaded.spec.name, topk=5, loaded=loaded)
    att = analysis.attribution(stage=stage, target=None, method=method)
    return (
        analysis,
        _label_dict(analysis),
        status_markdown(loaded),
        gr.update(choices=class_choices(analysis), value=TOP_CLASS),
        _render(analysis, att, opacity=opacity, view=view),
        _caption(analysis, att),
        _strip(analysis, target=None, opacity=opacity),
        _features(analysis),
        DOWNLOADS.save_npy(att.raw, stem=f"{arch}-{stage}-{att.method}-class{att.target}"),
    )


@user_errors
def rerender(
    analysis: Analysis | None,
    stage: str,
    target: int | None,
    method: str,
    opacity: float,
    view: str,
) -> tuple[Any, ...]:
    """Explain tab, another stage / class / method / opacity / view of the same photo.

    No new forward pass: the analysis in the user's state serves it.
    Returns (overlay, caption, strip, raw map file).
    """
    if analysis is None:
        raise gr.Error("Upload a photo first (or click one of the examples).")
    _check_view(stage=stage, method=method, opacity=opacity, view=view)
    t = _target(target)
    if t is not None and not 0 <= t < len(analysis.spec.categories):
        raise gr.Error(f"Class {t} does not exist: this model has {len(analysis.spec.categories)} classes.")
    att = analysis.attribution(stage=stage, target=t, method=method)
    return (
        _render(analysis, att, opacity=opacity, view=view),
        _caption(analysis, att),
        _strip(analysis, target=t, opacity=opacity),
        DOWNLOADS.save_npy(att.raw, stem=f"{analysis.arch}-{stage}-{att.method}-class{att.target}"),
    )


@user_errors
def predict(image: str | None, arch: str = "resnet50", weights: str = "imagenet-v2") -> dict[str, float]:
    """API: the top-5 classes of a photo (``/predict``)."""
    if image is None:
        raise gr.Error("Send an image.")
    loaded = resolve_model(arch=arch, weights=weights, checkpoint=None)
    return _label_dict(analyze(image=image, arch=arch, weights=loaded.spec.name, topk=5, loaded=loaded))


# ---------------------------------------------------------------------------- architecture tab


def block_choices(*, arch: str) -> list[tuple[str, str]]:
    """Block picker entries, e.g. ("layer3.0 · 512→1024, stride 2", "layer3.0")."""
    return diagram.block_choices(arch=arch)


@user_errors
def architecture_view(analysis: Analysis | None, arch: str, color_by: str, block: str | None) -> tuple[Any, ...]:
    """Architecture tab: the diagram (coloured by the last photo of this arch), the selected
    block's inside and its feature maps. Returns (diagram, block figure, feature maps, caption)."""
    if arch not in ARCHES:
        raise gr.Error(f"Unknown model {arch!r}.")
    names = [b.name for b in diagram.block_infos(arch)]
    block = block if block in names else names[0]  # a stale pick from another arch
    live = analysis is not None and analysis.arch == arch
    stats = None
    if live and color_by in diagram.STAT_CHOICES:
        stats = {b.name: float(getattr(b, color_by)) for b in analysis.blocks}  # type: ignore[union-attr]
    fig = diagram.architecture_figure(
        arch=arch, stats=stats, stat=color_by if stats else "residual_ratio", selected=block
    )
    inside = diagram.block_figure(arch=arch, block=block)
    if live:
        grid = analysis.feature_maps(block)  # type: ignore[union-attr]
        c, hh, w = grid.shape
        features = grid.image
        stat = next(b for b in analysis.blocks if b.name == block)  # type: ignore[union-attr]
        caption = (
            f"**{block}** on your photo: output {c}×{hh}×{w}, residual ratio ‖F(x)‖/‖x‖ = "
            f"{stat.residual_ratio:.3f}, mean activation {stat.mean_activation:.3f}. "
            f"Feature maps: its {len(grid.channels)} most active channels ({', '.join(map(str, grid.channels))})."
        )
    else:
        features = None
        caption = (
            f"Run a photo through {ARCH_LABELS[arch]} in the Explain tab to colour the blocks by what they did to it."
        )
    return fig, inside, features, caption


_HEADERS = {
    "arch": "model",
    "blocks": "blocks",
    "weighted_layers": "weighted layers",
    "output_shape": "output (C×H×W)",
    "params": "params",
    "macs": "MACs",
    "gmacs": "GMACs",
    "params_share": "params %",
    "macs_share": "MACs %",
    "params_torchvision": "params (torchvision)",
    "params_m_guide": "params M (guide)",
    "gmacs_torchvision": "GMACs (torchvision)",
    "gmacs_guide": "GMACs (guide)",
    "top1_torchvision_v1": "top-1 % V1 (torchvision)",
    "top1_torchvision_v2": "top-1 % V2 (torchvision)",
    "top1_guide": "top-1 % (guide)",
}


def _table(rows: list[dict[str, Any]]) -> tuple[list[list[Any]], list[str]]:
    def cell(v: Any) -> Any:
        # Thousands separators make 25557032 readable; the table is for people.
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10_000 else v

    return [[cell(v) for v in r.values()] for r in rows], [_HEADERS.get(k, k) for k in rows[0]]


def table_rows(*, arch: str) -> tuple[list[list[Any]], list[str], list[list[Any]], list[str]]:
    """The per-stage table of ``arch`` and the comparison with the reproduction guide and torchvision, as rows."""
    return (*_table(diagram.stage_table(arch=arch)), *_table(diagram.comparison_table()))


# ---------------------------------------------------------------------------- compare tab


@user_errors
def compare(image: str | None, weights: str) -> tuple[Any, ...]:
    """The same photo through ResNet-50, 101 and 152: per arch, top-5, layer4 map and a summary."""
    if image is None:
        raise gr.Error("Upload a photo first (or click one of the examples).")
    if weights == UPLOAD:
        raise gr.Error("Compare runs the three ImageNet models: pick ImageNet V2, V1 or Random weights.")
    outputs: list[Any] = []
    for arch in ARCHES:
        loaded = resolve_model(arch=arch, weights=weights, checkpoint=None)
        t0 = time.perf_counter()
        analysis = analyze(image=image, arch=arch, weights=loaded.spec.name, topk=5, loaded=loaded)
        att = analysis.attribution(stage="layer4", target=None, method="gradcam")
        seconds = time.perf_counter() - t0
        report = arch_report(arch)
        acc = loaded.spec.published.get("acc@1")
        summary = (
            f"**{ARCH_LABELS[arch]}** {list(report.depths)} blocks · {report.params / 1e6:.1f}M params · "
            f"{report.gmacs:.2f} GMACs · {seconds * 1000:.0f} ms here"
            + (f" · ImageNet top-1 {acc:.1f}%" if acc and not loaded.untrained else "")
            + (f" · **{UNTRAINED_BANNER}**" if loaded.untrained else "")
        )
        outputs += [_label_dict(analysis), overlay(image=analysis.crop, heatmap=att.heatmap, opacity=0.5), summary]
    return tuple(outputs)


def use_checkpoint(path: str | None, arch: str) -> tuple[Any, ...]:
    """Fine-tune tab's "use this model": switch the Explain tab to the new checkpoint and its arch."""
    if not path:
        raise gr.Error("No checkpoint yet: run a fine-tune first.")
    if arch not in ARCHES:
        raise gr.Error(f"Unknown model {arch!r}.")
    return arch, gr.update(value=UPLOAD), path, gr.Tabs(selected="explain")
