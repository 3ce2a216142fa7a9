"""Grad-CAM at the backbone stages of a segmentation or detection model, and the backbone's feature maps.

The target is a scalar of the model's output: for a segmentation class, the sum of that
class's logits over the pixels predicted as it (pytorch-grad-cam's
``SemanticSegmentationTarget``); for one detection, its score. One forward keeps the graph
and gives the answer (masks or boxes) too; one backward gives the gradient at every stage
asked for. The gradient is taken through a per-call shell of the model
(:func:`resnet_demo.core.shell.shell`) whose backbone makes the earliest stage's output the
leaf to differentiate: nothing is hooked, and the shared model's weights, which need no
gradient, stay as they are. The maps are :mod:`resnet_demo.core.cam`'s Grad-CAM, finished as
the classifier's are, so the Explain and Transfer tabs draw the same map for the same
activations and gradients.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..core.cam import FinishedCam, finish_cam, gradcam
from ..core.errors import UserError
from ..core.features import FeatureGrid, feature_grid
from ..core.model import STAGES, check_stage
from ..core.shell import shell
from .backbone import backbone_of
from .check import backbone_check
from .detect import Detections, check_threshold, detections_of, raw_detections, sized_transform
from .segment import Segmentation, prepare_segment, segment_logits, segmentation_of
from .weights import TransferModel, TransferSpec

__all__ = ["TransferCam", "TransferExplanation", "explain_transfer", "grad_cams", "target_index"]


@dataclass(frozen=True)
class TransferCam:
    """A Grad-CAM map at one backbone stage."""

    stage: str
    target: str  # for people: "class 'dog' over 1,234 of the photo's 9,600 pixels", "detection 0: 'dog' 0.91"
    heatmap: np.ndarray  # (h, w) float32 in [0, 1], the stage's resolution
    all_zero: bool  # every weighted channel was negative: no evidence at this stage


@dataclass(frozen=True)
class TransferExplanation:
    """One photo through the model: its answer, Grad-CAM per stage for one target, the feature maps."""

    segmentation: Segmentation | None
    detections: Detections | None
    target: int | None  # the class or detection explained; None: nothing to explain (no detection)
    target_text: str | None  # for people, as in TransferCam.target
    cams: dict[str, TransferCam]  # by stage, in STAGES order; empty when nothing is explained
    features: dict[str, FeatureGrid]  # every stage's strongest channels (empty unless asked for)
    backbone_diff: dict[str, float]  # per stage, our ResNet vs the backbone (empty unless asked for)


class _Tap(nn.Module):
    """The backbone's IntermediateLayerGetter, run recording every stage's output, the earliest of
    ``stages`` made a leaf that records gradients (what comes before it needs none), and the input."""

    def __init__(self, getter: nn.Module, stages: Sequence[str]) -> None:
        super().__init__()
        self.getter = getter
        self.leaf = "maxpool" if stages[0] == "stem" else stages[0]
        self.activations: dict[str, Tensor] = {}
        self.input: Tensor | None = None

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        self.input = x.detach()  # (B, 3, h, w): the detector's own resized, normalised, padded batch
        out: OrderedDict[str, Tensor] = OrderedDict()
        for name, module in self.getter.items():
            x = module(x)  # (B, C, H, W)
            if name == self.leaf:
                x = x.detach().requires_grad_()
            if name == "maxpool" or name in STAGES:
                self.activations["stem" if name == "maxpool" else name] = x
            if name in self.getter.return_layers:
                out[self.getter.return_layers[name]] = x
        return out


def _check_stages(stages: Sequence[str]) -> tuple[str, ...]:
    if not stages:
        raise UserError(f"Choose at least one stage among {', '.join(STAGES)}.")
    asked = {check_stage(s) for s in stages}
    return tuple(s for s in STAGES if s in asked)  # running order, once each


def _tapped(loaded: TransferModel, stages: tuple[str, ...], size: int | None) -> tuple[nn.Module, _Tap]:
    """A shell of the model whose backbone runs through the returned tap (a detector's at input size ``size``).

    Every replacement goes into ONE shell: a shell of this shell would copy the tap too, and
    the forward would then record into the copy, not into the tap the caller reads.
    """
    tap = _Tap(backbone_of(loaded), stages).eval()
    if loaded.spec.task == "segment":  # the getter is the model's backbone
        return shell(loaded.model, replace={"backbone": tap}), tap
    replace: dict[str, nn.Module] = {"backbone.body": tap}  # a detector wraps the getter in an FPN
    transform = sized_transform(loaded.model, size=size)
    if transform is not None:
        replace["transform"] = transform
    return shell(loaded.model, replace=replace), tap


def grad_cams(
    *, activations: Sequence[Tensor], target: Tensor, size: tuple[int, int] | None = None
) -> list[FinishedCam]:
    """Grad-CAM of ``target`` at each of ``activations`` (1, C, h, w), from one backward, each finished
    as the classifier's maps are (:func:`~resnet_demo.core.cam.finish_cam`): at the stage's resolution,
    or upsampled to ``size`` (height, width) before the scaling to [0, 1]; all zeros (flagged) where no
    position has positive evidence."""
    grads = torch.autograd.grad(target, list(activations))  # each (1, C, h, w)
    with torch.no_grad():
        return [
            finish_cam(cam=gradcam(activations=activation.detach(), gradients=grad), size=size)
            for activation, grad in zip(activations, grads, strict=True)
        ]


def _segment_target(
    logits: Tensor, segmentation: Segmentation, target: int | None, names: tuple[str, ...]
) -> tuple[int, Tensor, str]:
    if target is None:  # an object before background
        shown = [c for c in segmentation.classes if c.index != 0] or list(segmentation.classes)
        target = shown[0].index
    if not 0 <= target < len(names):
        raise UserError(f"Unknown class {target}; the classes are 0 to {len(names) - 1}.")
    region = logits.detach().argmax(0) == target  # (h, w) at the model's input size
    if not bool(region.any()):
        raise UserError(f"No pixel of this photo is predicted as {names[target]!r}; choose a class it found.")
    # People are told the photo's pixels: the input size is the model's, larger or smaller than their photo.
    mask = segmentation.mask  # (H, W) the photo's size
    count = int(np.count_nonzero(mask == target))
    text = f"class {names[target]!r} over {count:,} of the photo's {mask.size:,} pixels"
    return target, logits[target][region].sum(), text


def _detection_target(
    out: dict[str, Tensor], found: Detections, target: int | None, names: tuple[str, ...]
) -> tuple[int, Tensor, str] | None:
    if target is None:
        if not found.items:
            return None  # nothing detected is an answer: there is just nothing to explain
        target = found.items[0].index
    scores = out["scores"]  # (N,)
    if not 0 <= target < len(scores) or scores[target].item() < found.threshold:
        raise UserError(f"There is no detection {target} over the threshold; the photo has {len(found.items)}.")
    name = names[int(out["labels"][target])]
    return target, scores[target], f"detection {target}: {name!r} {scores[target].item():.2f}"


def target_index(spec: TransferSpec, text: str | float | None) -> int | None:
    """What to explain as an index: a segmentation class by name or number, a detection by its number;
    None (or blank): the default target."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and float(text).is_integer():  # a menu's value (JSON may send 3.0)
        return int(text)
    text = str(text).strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        return int(text)
    if spec.task == "segment" and text in spec.categories:
        return spec.categories.index(text)
    if spec.task == "segment":
        raise UserError(f"Unknown class {text!r:.40}; the classes are {', '.join(spec.categories)}.")
    raise UserError(f"The target of a detection is its number as listed (0, 1, ...), not {text!r:.40}.")


def explain_transfer(
    *,
    loaded: TransferModel,
    image: Image.Image,
    target: int | None = None,
    stages: Sequence[str] = STAGES,
    threshold: float = 0.5,
    size: int | None = None,
    features: bool = True,
    check: bool = False,
) -> TransferExplanation:
    """Segment or detect ``image`` and explain ``target`` with Grad-CAM at each of ``stages``.

    ``target`` is a segmentation class index, or a detection's index in the model's output
    (:attr:`Detection.index`); None explains the largest class other than background, or the
    best detection over ``threshold`` (none detected: no maps, not an error). ``size`` is the
    input's short side (default the entry's own). ``features`` adds every stage's feature-map
    grid; ``check`` compares our ResNet with the backbone on the very input the model saw.
    """
    threshold = check_threshold(threshold)
    stages = _check_stages(stages)
    model, tap = _tapped(loaded, stages, size)
    names = loaded.spec.categories
    segmentation = detections = None
    with torch.enable_grad():
        if loaded.spec.task == "segment":
            logits = segment_logits(model, prepare_segment(loaded, image, size=size))[0]  # (K, h, w)
            segmentation = segmentation_of(logits.argmax(0), image=image, categories=names)
            chosen = _segment_target(logits, segmentation, target, names)
        else:
            out = raw_detections(model, image)
            detections = detections_of(out, categories=names, threshold=threshold, photo_size=image.size)
            chosen = _detection_target(out, detections, target, names)
        cams: dict[str, TransferCam] = {}
        if chosen is not None:
            _, score, text = chosen
            maps = grad_cams(activations=[tap.activations[s] for s in stages], target=score)
            cams = {s: TransferCam(s, text, m.heatmap, m.all_zero) for s, m in zip(stages, maps, strict=True)}
    acts = {name: a.detach() for name, a in tap.activations.items()}
    assert tap.input is not None
    return TransferExplanation(
        segmentation=segmentation,
        detections=detections,
        target=None if chosen is None else chosen[0],
        target_text=None if chosen is None else chosen[2],
        cams=cams,
        features={s: feature_grid(acts[s][0], stage=s) for s in STAGES} if features else {},
        backbone_diff=backbone_check(loaded, tap.input, theirs=acts) if check else {},
    )
