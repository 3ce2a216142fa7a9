"""ResNet-50/101/152 from "Deep Residual Learning for Image Recognition" (He et al., 2015).

The module and parameter names are torchvision's, key for key, so torchvision's
published ImageNet weights load with ``strict=True``. Two things differ from
torchvision's file, and neither changes the state_dict:

* every ReLU is its own module (``relu1``, ``relu2``, ``relu3``), out of place by
  default, so hooks, Guided Grad-CAM and other attribution methods see each
  activation once, and the residual branch F(x) and the shortcut survive the sum;
* the one forward of a block, :meth:`Bottleneck.forward_parts`, serves every caller.
  :meth:`ResNet.set_inplace` switches its ReLUs and sum to in-place operations (the
  trainer's and the inference copy's choice: fewer activation-sized tensors); its
  ``stats`` argument collects ||F(x)||, ||shortcut|| and the mean output of every
  block as the block runs (the explanation engine's block statistics);
* :meth:`ResNet.forward_stages` runs the network from the input or from any stage's
  stored output up to any stage, returning the output of each stage on the way: the
  explanation engine reruns only the part after a stage for Grad-CAM. Nothing is
  hooked, so concurrent callers can share one model.
* :meth:`ResNet.forward_intermediates` returns, from one forward pass, the logits
  together with the output of the stem and of each stage and, on request, the
  residual branch F(x) and the shortcut x of every bottleneck block.

``ResNet(..., widths=...)`` builds a channel-pruned network (the outputs of every block's
conv1 and conv2 narrower; module names unchanged), and :meth:`ResNet.widths` reads them back.
``ResNet(..., replace_stride_with_dilation=...)`` trades the stride of layer2..layer4 for
dilation exactly as torchvision does (DeepLabV3 and FCN use ``(False, True, True)``); the
state_dict is unchanged, and the model records the setting for its consumers.

Like torchvision ("ResNet v1.5"), the stride of a downsampling block sits on the
3x3 convolution, not on the first 1x1 convolution as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .cancel import check_cancelled
from .errors import UserError

__all__ = [
    "ARCH_DEPTHS",
    "STAGES",
    "Widths",
    "Bottleneck",
    "BlockOutput",
    "Dilation",
    "Intermediates",
    "NO_DILATION",
    "ResNet",
    "arch_of",
    "build_model",
    "check_stage",
    "dilation_flags",
    "resnet50",
    "resnet101",
    "resnet152",
    "standard_widths",
]

# Number of bottleneck blocks in layer1..layer4, from Table 1 of the paper.
ARCH_DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
    "resnet152": (3, 8, 36, 3),
}

# The inner widths of every block in running order: (outputs of conv1, outputs of conv2).
Widths = tuple[tuple[int, int], ...]

# Per stage, layer2..layer4: True trades the stage's stride 2 for dilation (torchvision's
# replace_stride_with_dilation). Its feature maps then keep the previous stage's size.
Dilation = tuple[bool, bool, bool]
NO_DILATION: Dilation = (False, False, False)

# Points in the network whose outputs forward_intermediates can return.
STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")


def check_stage(stage: str) -> str:
    """``stage`` itself if it names a stage; else a :class:`UserError` listing them."""
    if stage not in STAGES:
        raise UserError(f"Unknown stage {stage!r:.40}; choose one of {', '.join(STAGES)}.")
    return stage


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution; padding equal to the dilation keeps H and W at stride 1. No bias, since a
    BatchNorm always follows."""
    return nn.Conv2d(
        in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, dilation=dilation, bias=False
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution; no bias, since a BatchNorm always follows."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand, added to the shortcut.

    ``planes`` is the width of the 3x3 convolution; the block outputs
    ``planes * expansion`` channels. ``width``, when given, sets the outputs of conv1
    and conv2 instead (a channel-pruned block); the output width stays
    ``planes * expansion``, so the sum with the shortcut is unchanged. ``dilation`` spaces
    the 3x3 convolution's taps (see :class:`ResNet`'s ``replace_stride_with_dilation``).
    """

    expansion: int = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        dilation: int = 1,
        inplace: bool = False,
        width: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        w1, w2 = width or (planes, planes)
        self.conv1 = conv1x1(inplanes, w1)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.conv2 = conv3x3(w1, w2, stride, dilation)
        self.bn2 = nn.BatchNorm2d(w2)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.conv3 = conv1x1(w2, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu3 = nn.ReLU(inplace=inplace)
        self.downsample = downsample
        self.stride = stride
        self.dilation = dilation
        self.inplace = inplace  # see ResNet.set_inplace

    def residual(self, x: Tensor) -> Tensor:
        """The residual branch F(x), before the addition."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))

    def shortcut(self, x: Tensor) -> Tensor:
        """The shortcut: x itself, or a strided 1x1 projection where the shape changes."""
        return x if self.downsample is None else self.downsample(x)

    def forward_parts(self, x: Tensor, stats: list[Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The block's forward: ``(output, F(x), shortcut(x))`` from one pass.

        With ``stats``, appends ||F(x)||, ||shortcut(x)|| and the mean of the output,
        taken as the block runs, so neither tensor has to be kept for them. In an
        in-place block the sum is written into F(x)'s storage, so the F(x) returned
        holds the output; only out-of-place blocks return F(x) itself.
        """
        f = self.residual(x)  # F(x): (B, C_out, H, W)
        identity = self.shortcut(x)  # (B, C_out, H, W)
        if stats is not None:
            with torch.no_grad():
                stats += [torch.linalg.vector_norm(f), torch.linalg.vector_norm(identity)]
        # In place saves one activation-sized tensor per block; autograd allows it because a
        # convolution or BatchNorm keeps its input for the backward pass, never its output.
        out = self.relu3(f.add_(identity) if self.inplace else f + identity)
        if stats is not None:
            with torch.no_grad():
                stats.append(out.mean())
        return out, f, identity

    def forward(self, x: Tensor, stats: list[Tensor] | None = None) -> Tensor:
        return self.forward_parts(x, stats)[0]


@dataclass(frozen=True)
class BlockOutput:
    """What one bottleneck block computed, for the block statistics."""

    name: str  # e.g. "layer3.0"
    output: Tensor  # (B, C_out, H, W)
    residual: Tensor  # F(x): (B, C_out, H, W)
    shortcut: Tensor  # x, or its projection: (B, C_out, H, W)


@dataclass(frozen=True)
class Intermediates:
    """Everything one forward pass of :meth:`ResNet.forward_intermediates` returns."""

    logits: Tensor  # (B, num_classes)
    stages: dict[str, Tensor]  # stage name -> (B, C, H, W)
    blocks: list[BlockOutput] = field(default_factory=list)


class ResNet(nn.Module):
    """A ResNet of bottleneck blocks, with torchvision's module names.

    ``widths`` (one (conv1, conv2) output pair per block, in running order) builds a
    channel-pruned network; None builds the standard widths.

    ``replace_stride_with_dilation`` (three bools, for layer2..layer4; None: all False) is
    torchvision's: a True stage keeps stride 1 and doubles the dilation of its 3x3
    convolutions instead, so its output keeps the previous stage's size. The setting is
    kept as ``self.replace_stride_with_dilation`` (a tuple), and ``feature_info`` follows it.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int] | list[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        *,
        inplace: bool = False,
        widths: Widths | None = None,
        replace_stride_with_dilation: Dilation | list[bool] | None = None,
    ) -> None:
        super().__init__()
        dilated = dilation_flags(replace_stride_with_dilation)
        self.replace_stride_with_dilation: Dilation = dilated
        if widths is not None and len(widths) != sum(layers):
            raise ValueError(f"widths has {len(widths)} pairs; this network has {sum(layers)} blocks.")
        self.inplanes = 64  # a cursor: the channel count entering the next block
        self.dilation = 1  # a cursor too: the dilation of the last stage built
        # Per stage, its blocks' widths (None: standard), cut from the flat list in running order.
        ends = [sum(layers[: i + 1]) for i in range(4)]
        per_stage = [None if widths is None else widths[end - n : end] for end, n in zip(ends, layers, strict=True)]

        # The stem: 7x7/2 convolution then 3x3/2 max pool, 224 -> 56.
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.layer1 = self._make_layer(64, layers[0], widths=per_stage[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2, dilate=dilated[0], widths=per_stage[1])
        self.layer3 = self._make_layer(256, layers[2], stride=2, dilate=dilated[1], widths=per_stage[2])
        self.layer4 = self._make_layer(512, layers[3], stride=2, dilate=dilated[2], widths=per_stage[3])

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)

        # One description of the network for every consumer (UI, Grad-CAM, diagram),
        # in the manner of timm's feature_info. A dilated stage keeps the previous reduction.
        reductions = [4, 4]
        for d in dilated:
            reductions.append(reductions[-1] if d else reductions[-1] * 2)
        self.feature_info: list[dict[str, int | str]] = [
            {"module": name, "num_chs": chs, "reduction": r}
            for name, chs, r in zip(STAGES, (64, 256, 512, 1024, 2048), reductions, strict=True)
        ]

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. (2015b): keeps the variance of activations steady through ReLUs.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

        if zero_init_residual:
            # With the last BN of each residual branch at zero, every block starts as the
            # identity, which improves training by 0.2~0.3% (Goyal et al., 2017).
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
        self.set_inplace(inplace)

    def _make_layer(
        self, planes: int, blocks: int, stride: int = 1, *, dilate: bool = False, widths: Widths | None = None
    ) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            # torchvision's rule: the stride becomes dilation; the first block still sees the
            # previous stage's dilation, the others the new one.
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            # Only the first block of a stage changes the shape, so only it needs a projection.
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * Bottleneck.expansion, stride),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        inner: list[tuple[int, int] | None] = [None] * blocks if widths is None else [(a, b) for a, b in widths]
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, dilation=previous_dilation, width=inner[0])]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, dilation=self.dilation, width=inner[i]) for i in range(1, blocks)]
        return nn.Sequential(*layers)

    @property
    def stages(self) -> dict[str, nn.Sequential]:
        """layer1..layer4 by name."""
        return {"layer1": self.layer1, "layer2": self.layer2, "layer3": self.layer3, "layer4": self.layer4}

    @property
    def depths(self) -> tuple[int, int, int, int]:
        """Blocks per stage, layer1..layer4."""
        return tuple(len(layer) for layer in self.stages.values())  # type: ignore[return-value]

    def widths(self) -> Widths:
        """Every block's inner widths in running order: (outputs of conv1, outputs of conv2)."""
        return tuple(
            (block.conv1.out_channels, block.conv2.out_channels) for layer in self.stages.values() for block in layer
        )

    def set_inplace(self, inplace: bool) -> ResNet:
        """Make every ReLU and every block's sum work in place (or not); returns ``self``.

        In place is what training and plain inference want: each block then keeps two
        activation-sized tensors fewer. Out of place (the default) keeps every
        activation intact, which hooks (Guided Grad-CAM) and
        :meth:`forward_intermediates` with ``blocks=True`` need. Set it on a model
        that is yours: a shared model is shared with this flag.
        """
        for m in self.modules():
            if isinstance(m, (nn.ReLU, Bottleneck)):
                m.inplace = inplace
        return self

    def block_names(self, *, start: str = "input") -> list[str]:
        """Names of the blocks after ``start`` ("input" or a stage), in order: "layer1.0", ...

        The order in which :meth:`forward_stages` appends block statistics.
        """
        first = STAGES.index(start) if start != "input" else 0
        return [
            f"{name}.{i}"
            for name, layer in self.stages.items()
            if STAGES.index(name) > first
            for i in range(len(layer))
        ]

    def forward_stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (B, num_classes)

    def forward_stages(
        self,
        x: Tensor,
        *,
        start: str = "input",
        stop: str | None = None,
        stats: list[Tensor] | None = None,
        blocks: list[BlockOutput] | None = None,
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Run from the output of ``start`` ("input": ``x`` is the image) through ``stop``.

        Returns ``(logits, outputs)``: the logits when ``stop`` is None (else None), and
        the output of ``start`` and of every stage after it. Starting later than the
        input is what lets Grad-CAM of an early stage reuse stored activations instead
        of a second full forward. ``stats`` collects the statistics of every block run
        (see :meth:`Bottleneck.forward_parts`, three per block, in :meth:`block_names`
        order); ``blocks`` collects each block's output, F(x) and shortcut.
        """
        if start == "input":
            x = self.forward_stem(x)  # (B, 64, H/4, W/4)
            start = "stem"
        outputs = {start: x}
        if stop == start:
            return None, outputs
        for name, layer in self.stages.items():
            if STAGES.index(name) <= STAGES.index(start):
                continue
            check_cancelled()  # a caller that cancels (an app request) stops here, within a stage's time
            if stats is None and blocks is None:
                x = layer(x)  # the module call, so that hooks on a stage (captum's layer methods) fire
            elif blocks is None:
                for block in layer:
                    x = block(x, stats)
            else:
                for i, block in enumerate(layer):
                    x, f, identity = block.forward_parts(x, stats)
                    blocks.append(BlockOutput(f"{name}.{i}", x, f, identity))
            outputs[name] = x  # (B, C, H, W)
            if name == stop:
                return None, outputs
        return self.forward_head(x), outputs

    def forward(self, x: Tensor) -> Tensor:
        logits, _ = self.forward_stages(x)
        assert logits is not None
        return logits

    def forward_intermediates(self, x: Tensor, *, blocks: bool = False) -> Intermediates:
        """One forward pass returning the logits and the output of every stage.

        With ``blocks=True`` it also returns, for every bottleneck block, its output,
        its residual branch F(x) and its shortcut (out-of-place models only: an
        in-place sum overwrites F(x)).
        """
        if blocks and any(isinstance(m, Bottleneck) and m.inplace for m in self.modules()):
            raise ValueError("forward_intermediates(blocks=True) needs an out-of-place model: call set_inplace(False).")
        parts: list[BlockOutput] = []
        logits, stages = self.forward_stages(x, blocks=parts if blocks else None)
        assert logits is not None
        return Intermediates(logits=logits, stages=stages, blocks=parts)


def dilation_flags(replace_stride_with_dilation: Dilation | list[bool] | None) -> Dilation:
    """``replace_stride_with_dilation`` checked and as a tuple; None is no dilation.

    Raises ValueError unless it is None or a tuple or list of three bools (layer2..layer4).
    """
    if replace_stride_with_dilation is None:
        return NO_DILATION
    value = replace_stride_with_dilation
    if not isinstance(value, (tuple, list)) or len(value) != 3 or not all(isinstance(v, bool) for v in value):
        raise ValueError(
            f"replace_stride_with_dilation must be None or three bools, for layer2, layer3 and layer4; got {value!r}."
        )
    return (value[0], value[1], value[2])


def standard_widths(arch: str) -> Widths:
    """The inner widths of every block of the unpruned ``arch``: (planes, planes), in running order."""
    if arch not in ARCH_DEPTHS:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of {', '.join(ARCH_DEPTHS)}.")
    return tuple((p, p) for p, n in zip((64, 128, 256, 512), ARCH_DEPTHS[arch], strict=True) for _ in range(n))


def arch_of(model: ResNet) -> str:
    """The architecture name of ``model``, read from its blocks per stage."""
    found = [a for a, d in ARCH_DEPTHS.items() if d == model.depths]
    if not found:
        raise ValueError(f"No known architecture has {model.depths} blocks per stage.")
    return found[0]


def build_model(arch: str, **kwargs: Any) -> ResNet:
    """Build ``resnet50``, ``resnet101`` or ``resnet152`` with random (Kaiming) weights.

    ``kwargs`` are :class:`ResNet`'s keyword arguments (``num_classes``, ``widths`` for a
    channel-pruned network, ``replace_stride_with_dilation``, ...), passed on as torchvision's
    ``_resnet`` passes them, so the options are declared once.
    """
    if arch not in ARCH_DEPTHS:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of {', '.join(ARCH_DEPTHS)}.")
    return ResNet(ARCH_DEPTHS[arch], **kwargs)


def resnet50(*, num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-50: [3, 4, 6, 3] bottleneck blocks, 25.6M parameters."""
    return build_model("resnet50", num_classes=num_classes, zero_init_residual=zero_init_residual)


def resnet101(*, num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-101: [3, 4, 23, 3] bottleneck blocks, 44.5M parameters."""
    return build_model("resnet101", num_classes=num_classes, zero_init_residual=zero_init_residual)


def resnet152(*, num_classes: int = 1000, zero_init_residual: bool = False) -> ResNet:
    """ResNet-152: [3, 8, 36, 3] bottleneck blocks, 60.2M parameters."""
    return build_model("resnet152", num_classes=num_classes, zero_init_residual=zero_init_residual)
