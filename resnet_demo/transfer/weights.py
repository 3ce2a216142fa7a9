"""torchvision's published segmentation and detection weights, from the classifier's cache.

Every entry's file name, categories, preprocessing and published metrics are read from
torchvision's weights enums. The files live where :mod:`resnet_demo.core.weights` keeps the
classifier's (``$TORCH_HOME/hub/checkpoints``), are fetched the same way (or refused when
downloads are off), and are read as hostile input by :func:`read_pth`. Each model is built
once, frozen and shared read-only; at most :data:`KEEP_MODELS` stay loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torchvision.models.detection as tvd
import torchvision.models.segmentation as tvs
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from ..core.cache import BoundedCache
from ..core.cancel import add_cancel_points
from ..core.checkpoint_files import WeightsError, check_tensors, is_state_dict, read_pth
from ..core.weights import fetch_weights_file, offline, state_dict_fit_problem

__all__ = [
    "BACKBONES",
    "KEEP_MODELS",
    "FROZEN_BATCHNORM",
    "MODELS",
    "TASKS",
    "TransferModel",
    "TransferSpec",
    "backbones_for",
    "build_transfer",
    "clear_transfer_cache",
    "load_transfer",
    "shared_transfer",
    "torchvision_builder",
    "transfer_spec",
]

TASKS: tuple[str, ...] = ("segment", "detect")
BACKBONES: tuple[str, ...] = ("resnet50", "resnet101")

# (task, model, backbone) -> (torchvision builder, its weights entry). Detection ships ResNet-50 only.
_ENTRIES: dict[tuple[str, str, str], tuple[Callable[..., nn.Module], Any]] = {
    ("segment", "deeplabv3", "resnet50"): (
        tvs.deeplabv3_resnet50,
        tvs.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
    ),
    ("segment", "deeplabv3", "resnet101"): (
        tvs.deeplabv3_resnet101,
        tvs.DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1,
    ),
    ("segment", "fcn", "resnet50"): (tvs.fcn_resnet50, tvs.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1),
    ("segment", "fcn", "resnet101"): (tvs.fcn_resnet101, tvs.FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1),
    ("detect", "fasterrcnn", "resnet50"): (tvd.fasterrcnn_resnet50_fpn, tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1),
    ("detect", "fasterrcnn_v2", "resnet50"): (
        tvd.fasterrcnn_resnet50_fpn_v2,
        tvd.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
    ),
    ("detect", "maskrcnn", "resnet50"): (tvd.maskrcnn_resnet50_fpn, tvd.MaskRCNN_ResNet50_FPN_Weights.COCO_V1),
    ("detect", "maskrcnn_v2", "resnet50"): (
        tvd.maskrcnn_resnet50_fpn_v2,
        tvd.MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
    ),
    ("detect", "retinanet", "resnet50"): (tvd.retinanet_resnet50_fpn, tvd.RetinaNet_ResNet50_FPN_Weights.COCO_V1),
    ("detect", "retinanet_v2", "resnet50"): (
        tvd.retinanet_resnet50_fpn_v2,
        tvd.RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1,
    ),
}
# The detectors torchvision builds with FrozenBatchNorm2d in their trained backbone (the v1
# models); their v2 successors train BatchNorm. Tested against torchvision's own builds.
FROZEN_BATCHNORM: frozenset[str] = frozenset({"fasterrcnn", "maskrcnn", "retinanet"})
MODELS: dict[str, tuple[str, ...]] = {
    task: tuple(dict.fromkeys(m for t, m, _ in _ENTRIES if t == task)) for task in TASKS
}
DEFAULT_MODEL = {"segment": "deeplabv3", "detect": "fasterrcnn"}


def backbones_for(*, task: str, model: str) -> tuple[str, ...]:
    """The backbones ``model`` is published on (empty for an unknown task or model)."""
    return tuple(b for t, m, b in _ENTRIES if (t, m) == (task, model))


@dataclass(frozen=True)
class TransferSpec:
    """One published segmentation or detection entry, as torchvision describes it."""

    task: str  # "segment" or "detect"
    model: str  # "deeplabv3", "fcn", "fasterrcnn", ...
    backbone: str  # "resnet50" or "resnet101"
    label: str  # for people: "DeepLabV3 ResNet-50 (COCO, VOC labels)"
    categories: tuple[str, ...]
    url: str
    file_name: str
    resize_size: int | None  # segmentation: the short side the entry's transform resizes to
    mean: tuple[float, ...]  # segmentation's normalisation (detection models normalise inside)
    std: tuple[float, ...]
    metrics: dict[str, float]  # e.g. {"miou": 66.4, "pixel_acc": 92.4} or {"box_map": 37.0}
    num_params: int
    gflops: float

    @property
    def frozen_batchnorm(self) -> bool:
        """torchvision builds its v1 detection backbones with frozen BatchNorm (fixed statistics and affine)."""
        return self.model in FROZEN_BATCHNORM

    @property
    def dilated(self) -> bool:
        """Segmentation backbones trade layer3/layer4's stride for dilation: output stride 8, not 32."""
        return self.task == "segment"

    @property
    def changes(self) -> tuple[str, ...]:
        """What the model changed in the classifier's ResNet, in words (empty: nothing)."""
        out = []
        if self.dilated:
            out.append("layer3 and layer4 dilated (2, then 4) instead of strided: layer4 is 1/8 of the input, not 1/32")
        if self.frozen_batchnorm:
            out.append("BatchNorm frozen (fixed statistics and affine parameters)")
        return tuple(out)


def _choose(task: str, model: str | None, backbone: str) -> tuple[str, str]:
    if task not in TASKS:
        raise WeightsError(f"Unknown task {task!r:.40}; choose one of {', '.join(TASKS)}.")
    model = DEFAULT_MODEL[task] if model is None else model
    if model not in MODELS[task]:
        raise WeightsError(f"Unknown {task} model {model!r:.40}; choose one of {', '.join(MODELS[task])}.")
    if (task, model, backbone) not in _ENTRIES:
        have = [b for t, m, b in _ENTRIES if (t, m) == (task, model)]
        raise WeightsError(f"{model} is published on {', '.join(have)} only, not on {backbone!r:.40}.")
    return task, model


def transfer_spec(*, task: str, model: str | None = None, backbone: str = "resnet50") -> TransferSpec:
    """Describe a published entry without loading anything (:class:`WeightsError` for an unknown one)."""
    task, model = _choose(task, model, backbone)
    entry = _ENTRIES[(task, model, backbone)][1]
    meta = entry.meta
    transform = entry.transforms()
    resize = getattr(transform, "resize_size", None)
    metrics = next(iter(meta["_metrics"].values()))
    return TransferSpec(
        task=task,
        model=model,
        backbone=backbone,
        label=f"{model} {backbone} ({entry.name})",
        categories=tuple(meta["categories"]),
        url=entry.url,
        file_name=entry.url.rsplit("/", 1)[-1],
        resize_size=int(resize[0]) if resize else None,
        mean=tuple(getattr(transform, "mean", ())),
        std=tuple(getattr(transform, "std", ())),
        metrics={k: float(v) for k, v in metrics.items()},
        num_params=int(meta["num_params"]),
        gflops=float(meta["_ops"]),
    )


@dataclass(frozen=True)
class TransferModel:
    """A torchvision segmentation or detection model in eval mode, with its spec."""

    model: nn.Module
    spec: TransferSpec
    # Why the published weights could not be had, when the model runs on random weights instead.
    untrained_because: str | None = None

    @property
    def untrained(self) -> bool:
        return self.untrained_because is not None


def _freeze_batchnorm(module: nn.Module) -> None:
    """Swap every BatchNorm2d for torchvision's FrozenBatchNorm2d, as its builder does for pretrained v1
    detection backbones (their files then carry no ``num_batches_tracked``)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features, eps=child.eps))
        else:
            _freeze_batchnorm(child)


def torchvision_builder(spec: TransferSpec) -> Callable[..., nn.Module]:
    """torchvision's builder of the entry (e.g. ``deeplabv3_resnet50``)."""
    return _ENTRIES[(spec.task, spec.model, spec.backbone)][0]


def resnet_body(model: nn.Module, *, task: str) -> nn.Module:
    """The ResNet body of a ``task`` model (an IntermediateLayerGetter: stem modules, then layer1..layer4):
    the backbone itself for segmentation, the part before the FPN for detection."""
    return model.backbone if task == "segment" else model.backbone.body


def build_transfer(spec: TransferSpec) -> nn.Module:
    """The entry's model as torchvision builds it for its published file, with random weights."""
    builder = torchvision_builder(spec)
    kwargs: dict[str, Any] = {"weights": None, "weights_backbone": None, "num_classes": len(spec.categories)}
    if spec.task == "segment":
        kwargs["aux_loss"] = True  # the published files carry the auxiliary head
    model = builder(**kwargs)
    if spec.frozen_batchnorm:
        _freeze_batchnorm(resnet_body(model, task=spec.task))
    # A cancelled request stops before the next stage of the backbone or the next head (within a second).
    heads = (m for n, m in model.named_children() if n != "backbone")
    add_cancel_points(*resnet_body(model, task=spec.task).children(), *heads)
    # oneDNN's convolutions are faster on channels-last tensors: on 2 AVX-512 cores, DeepLabV3's forward at
    # 520 px takes 0.72x the time and its five-stage Grad-CAM 0.76x; Faster R-CNN's forward 0.87x. Loading a
    # state_dict copies into these tensors, keeping their layout.
    return model.to(memory_format=torch.channels_last)


def load_transfer(
    *,
    task: str,
    model: str | None = None,
    backbone: str = "resnet50",
    download: bool | None = None,
    fallback_to_random: bool = False,
) -> TransferModel:
    """Build the entry's model and load its published file from torchvision's cache, strictly, in eval mode.

    ``download=None`` fetches a missing file unless downloads are off (``RESNET_DEMO_OFFLINE=1``).
    With ``fallback_to_random``, weights that cannot be had leave the model on its random
    initialisation, marked ``untrained`` with the reason (the app stays usable offline).
    """
    try:
        return _load_published(task=task, model=model, backbone=backbone, download=download)
    except WeightsError as e:
        if not fallback_to_random:
            raise
        spec = transfer_spec(task=task, model=model, backbone=backbone)
        return TransferModel(build_transfer(spec).eval(), spec, untrained_because=e.problem)


def _load_published(*, task: str, model: str | None, backbone: str, download: bool | None) -> TransferModel:
    spec = transfer_spec(task=task, model=model, backbone=backbone)
    fetch = (not offline()) if download is None else download
    path = fetch_weights_file(
        url=spec.url,
        file_name=spec.file_name,
        what=f"torchvision's weights for {spec.model} on {spec.backbone}",
        download=fetch,
        progress=False,
        cli_fix=lambda target: f"Fix: download {spec.url} and place it at {target}.",
    )
    state_dict = read_pth(path)
    if not is_state_dict(state_dict):
        raise WeightsError(f"{path.name} in torchvision's cache is not a state_dict.")
    check_tensors(state_dict, name=path.name)
    net = build_transfer(spec)
    problem = state_dict_fit_problem(net, state_dict)
    if problem is not None:
        raise WeightsError(f"{path.name} does not fit {spec.label}: {problem}.")
    net.load_state_dict(state_dict, strict=True)
    return TransferModel(net.eval(), spec)


KEEP_MODELS = 2  # a detection model with its activations is ~0.5-1 GB; two bound the app's memory
_CACHE: BoundedCache[tuple[str, str, str, bool], TransferModel] = BoundedCache(KEEP_MODELS)


def shared_transfer(
    *, task: str, model: str | None = None, backbone: str = "resnet50", fallback_to_random: bool = False
) -> TransferModel:
    """:func:`load_transfer`, once per entry, frozen and shared read-only (the :data:`KEEP_MODELS` most recent)."""
    spec = transfer_spec(task=task, model=model, backbone=backbone)

    def load() -> TransferModel:
        loaded = load_transfer(task=task, model=spec.model, backbone=backbone, fallback_to_random=fallback_to_random)
        for p in loaded.model.parameters():
            p.requires_grad_(False)
        return loaded

    # Made under the cache's lock: two users asking for the same model load it once.
    return _CACHE.get_or_make((spec.task, spec.model, spec.backbone, fallback_to_random), load)


def clear_transfer_cache() -> None:
    """Forget every loaded model (tests, or after new files were placed in the cache)."""
    _CACHE.clear()
