"""The backbone inside a segmentation or detection model, as this project's own ResNet.

torchvision's segmentation models keep the ResNet's children under ``backbone`` (an
IntermediateLayerGetter without avgpool and fc), its detection models under
``backbone.body`` (followed by the FPN). The names below the prefix are torchvision's
ResNet names, which :class:`~resnet_demo.core.model.ResNet` shares, so the mapping is one
prefix (:func:`map_backbone_key`) plus BatchNorm's ``num_batches_tracked`` counter, which
frozen BatchNorm does not keep.

What changed from the classifier: DeepLabV3 and FCN build the ResNet with
``replace_stride_with_dilation=[False, True, True]`` (:data:`DILATION`): layer3 and layer4
keep stride 1 and dilate their 3x3 convolutions instead (2, then 4), so layer4 is 1/8 of
the input, not 1/32; :func:`our_backbone` builds our ResNet with the same setting. The v1
detection models freeze BatchNorm (fixed statistics and affine parameters), which in eval
mode computes what ordinary BatchNorm computes.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from ..core.checkpoint_files import WeightsError
from ..core.model import STAGES, Dilation, ResNet, build_model
from .weights import TransferModel, resnet_body

__all__ = [
    "DILATION",
    "HEAD_INPUTS",
    "READS",
    "backbone_of",
    "backbone_stages",
    "map_backbone_key",
    "our_backbone",
    "reads",
]

# Where each task keeps the ResNet's children inside the torchvision model.
_PREFIX = {"segment": "backbone.", "detect": "backbone.body."}
_FC_KEYS = ("fc.weight", "fc.bias")  # the heads replace the classifier: no fc in the backbone

# The segmentation models' replace_stride_with_dilation (torchvision's segmentation builders).
DILATION: Dilation = (False, True, True)

_FPN_P2_P5 = {"layer1": "FPN P2", "layer2": "FPN P3", "layer3": "FPN P4", "layer4": "FPN P5"}

# Per model, the backbone stages its head reads (in running order) and what reads each, for the
# architecture view; as torchvision's builders wire them (their return_layers).
HEAD_INPUTS: dict[str, dict[str, str]] = {
    # The auxiliary FCN head on layer3 is kept because the published files carry it.
    "deeplabv3": {"layer3": "auxiliary FCN head", "layer4": "ASPP head"},
    "fcn": {"layer3": "auxiliary FCN head", "layer4": "FCN head"},
    # Faster and Mask R-CNN's FPN takes all four stages (returned_layers [1, 2, 3, 4]).
    **{m: dict(_FPN_P2_P5) for m in ("fasterrcnn", "maskrcnn", "fasterrcnn_v2", "maskrcnn_v2")},
    # RetinaNet skips P2 (too many anchors); its v1 builds P6 from P5, its v2 from layer4 itself.
    "retinanet": {"layer2": "FPN P3", "layer3": "FPN P4", "layer4": "FPN P5"},
    "retinanet_v2": {"layer2": "FPN P3", "layer3": "FPN P4", "layer4": "FPN P5 and P6"},
}

# The stages alone, per model: what the summaries print.
READS: dict[str, tuple[str, ...]] = {m: tuple(taps) for m, taps in HEAD_INPUTS.items()}


def reads(model: str) -> tuple[str, ...]:
    """The backbone stages ``model``'s head reads, in running order (e.g. ("layer3", "layer4"))."""
    if model not in READS:
        raise ValueError(f"Unknown model {model!r:.40}; choose one of {', '.join(READS)}.")
    return READS[model]


def map_backbone_key(name: str, *, task: str) -> str | None:
    """Our ResNet's name for a key of the torchvision model's state_dict; None for keys outside the backbone."""
    prefix = _PREFIX[task]
    return name[len(prefix) :] if name.startswith(prefix) else None


def backbone_of(loaded: TransferModel) -> nn.Module:
    """The torchvision model's ResNet body (an IntermediateLayerGetter: stem modules, then layer1..layer4)."""
    return resnet_body(loaded.model, task=loaded.spec.task)


def our_backbone(loaded: TransferModel) -> ResNet:
    """A new :class:`ResNet` of ours holding the backbone's weights, loaded strictly (dilated for segmentation).

    Its tensors are the torchvision model's own (loaded with ``assign``, frozen): no copy of the weights
    and no random initialisation to throw away, so checking a photo costs only our forward. Read-only,
    like the shared model it shares them with: never train it or change it in place. Its ``fc`` is
    zero: the torchvision model has no classifier, so the logits mean nothing; use its stages.
    """
    spec = loaded.spec
    with torch.device("meta"):  # shapes only: every tensor is replaced below
        ours = build_model(spec.backbone, replace_stride_with_dilation=DILATION if spec.dilated else None)
    expected = ours.state_dict()
    mapped: dict[str, Tensor] = {}
    for name, value in loaded.model.state_dict().items():
        key = map_backbone_key(name, task=spec.task)
        if key is not None:
            mapped[key] = value
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in mapped:
            mapped[key] = torch.zeros(value.shape, dtype=value.dtype)  # frozen BatchNorm keeps no counter
        if key in _FC_KEYS:
            mapped[key] = torch.zeros(value.shape, dtype=value.dtype)
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"The {spec.label} backbone does not map onto {spec.backbone}: "
            f"{len(missing)} missing ({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])})."
        )
    ours.load_state_dict(mapped, strict=True, assign=True)
    return ours.requires_grad_(False).eval()


def backbone_stages(loaded: TransferModel, x: Tensor) -> dict[str, Tensor]:
    """The stem and stage outputs of the backbone inside the torchvision model for the batch ``x``
    (already normalised, at the model's input size), run module by module: no hooks on a shared model."""
    outputs: OrderedDict[str, Tensor] = OrderedDict()
    for name, module in backbone_of(loaded).items():
        x = module(x)  # (B, C, H, W)
        if name == "maxpool":
            outputs["stem"] = x
        elif name in STAGES:
            outputs[name] = x
    return dict(outputs)
