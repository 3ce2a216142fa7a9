"""The backbone inside a segmentation or detection model, as this project's own ResNet.

torchvision's segmentation models keep the ResNet's children under ``backbone`` (an
IntermediateLayerGetter without avgpool and fc), its detection models under
``backbone.body`` (followed by the FPN). The names below the prefix are torchvision's
ResNet names, which :class:`~resnet_demo.model.ResNet` shares, so the mapping is one
prefix (:func:`map_backbone_key`) plus BatchNorm's ``num_batches_tracked`` counter, which
frozen BatchNorm does not keep.

What changed from the classifier: DeepLabV3 and FCN build the ResNet with
``replace_stride_with_dilation=[False, True, True]``: layer3 and layer4 keep stride 1
and dilate their 3x3 convolutions instead (2, then 4), so layer4 is 1/8 of the input,
not 1/32; :func:`dilate` applies the same change to a model of ours. The v1 detection
models freeze BatchNorm (fixed statistics and affine parameters), which in eval mode
computes what ordinary BatchNorm computes.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from ..checkpoint_files import WeightsError
from ..model import STAGES, ResNet, build_model
from .weights import TransferModel

__all__ = ["READS", "backbone_of", "backbone_stages", "dilate", "map_backbone_key", "our_backbone"]

# Where each task keeps the ResNet's children inside the torchvision model.
_PREFIX = {"segment": "backbone.", "detect": "backbone.body."}
_FC_KEYS = ("fc.weight", "fc.bias")  # the heads replace the classifier: no fc in the backbone

# Which backbone stages each head reads, for the architecture view.
READS: dict[str, tuple[str, ...]] = {
    "deeplabv3": ("layer3", "layer4"),  # layer4 for the ASPP head, layer3 for the auxiliary head
    "fcn": ("layer3", "layer4"),
    **{m: ("layer1", "layer2", "layer3", "layer4") for m in ("fasterrcnn", "maskrcnn", "fasterrcnn_v2", "maskrcnn_v2")},
    "retinanet": ("layer2", "layer3", "layer4"),  # RetinaNet's FPN starts at layer2 (P3)
    "retinanet_v2": ("layer2", "layer3", "layer4"),
}


def map_backbone_key(name: str, *, task: str) -> str | None:
    """Our ResNet's name for a key of the torchvision model's state_dict; None for keys outside the backbone."""
    prefix = _PREFIX[task]
    return name[len(prefix):] if name.startswith(prefix) else None


def backbone_of(loaded: TransferModel) -> nn.Module:
    """The torchvision model's ResNet body (an IntermediateLayerGetter: stem modules, then layer1..layer4)."""
    return loaded.model.backbone if loaded.spec.task == "segment" else loaded.model.backbone.body


def dilate(model: ResNet) -> ResNet:
    """Trade layer3's and layer4's stride for dilation, as ``replace_stride_with_dilation=[False, True, True]``
    does: the first block of each keeps the previous dilation, the others take the new one (2 for layer3,
    4 for layer4); padding follows dilation so the 3x3 convolutions keep the size. Returns ``model``,
    changed in place: call it on a model of your own, never a shared one.
    """
    dilation = 1
    for stage in (model.layer3, model.layer4):
        previous, dilation = dilation, dilation * 2
        for i, block in enumerate(stage):
            d = previous if i == 0 else dilation
            block.conv2.stride, block.conv2.dilation, block.conv2.padding = (1, 1), (d, d), (d, d)
            block.stride = 1
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)
    for info in model.feature_info:
        if info["module"] in ("layer3", "layer4"):
            info["reduction"] = 8
    return model


def our_backbone(loaded: TransferModel) -> ResNet:
    """A new :class:`ResNet` of ours holding the backbone's weights, loaded strictly (dilated for segmentation).

    Its ``fc`` is zero: the torchvision model has no classifier, so the logits mean nothing; use its stages.
    """
    spec = loaded.spec
    ours = build_model(spec.backbone)
    expected = ours.state_dict()
    mapped: dict[str, Tensor] = {}
    for name, value in loaded.model.state_dict().items():
        key = map_backbone_key(name, task=spec.task)
        if key is not None:
            mapped[key] = value
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in mapped:
            mapped[key] = torch.zeros_like(value)  # frozen BatchNorm keeps no counter; eval never reads it
        if key in _FC_KEYS:
            mapped[key] = torch.zeros_like(value)
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"The {spec.label} backbone does not map onto {spec.backbone}: "
            f"{len(missing)} missing ({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])})."
        )
    ours.load_state_dict(mapped, strict=True)
    if spec.dilated:
        dilate(ours)
    return ours.eval()


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
