"""The network as the diagram reads it: one :class:`BlockInfo` per bottleneck block.

Everything is read from the model the app runs, built on the meta device (shapes, no
storage, nothing run), and from :mod:`resnet_demo.core.complexity`; nothing about the
network is typed in by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from ..core.complexity import macs_by_module, parameter_count
from ..core.model import ARCH_DEPTHS, Bottleneck, Dilation, ResNet, Widths, build_model, dilation_flags, standard_widths

Shape = tuple[int, int, int]  # (C, H, W) of one image

IMAGE_SIZE = 224  # the figures show the shapes of the standard 224x224 crop unless given a model's own
NUM_CLASSES = 1000  # ImageNet's head, unless given a model's own


@dataclass(frozen=True)
class BlockInfo:
    """One bottleneck block as the diagram shows it (shapes at ``image_size`` input)."""

    name: str  # module path, e.g. "layer3.0"
    stage: str  # "layer3"
    index: int  # position in its stage, from 0
    in_shape: Shape
    out_shape: Shape
    stride: int  # on the 3x3 convolution (ResNet v1.5)
    widths: tuple[int, int, int, int]  # channels: in, after 1x1 reduce, after 3x3, out
    projection: bool  # True: the shortcut is a 1x1 conv + BN; False: the identity
    params: int  # the whole block, projection included
    macs: int  # multiply-accumulates of the whole block, projection included
    shortcut_params: int = 0  # of the projection alone (0 for the identity)
    shortcut_macs: int = 0
    dilation: int = 1  # of the 3x3 convolution: 1 unless the stage trades its stride for dilation

    @property
    def downsamples(self) -> bool:
        return self.stride > 1


def widths_key(arch: str, widths: Widths | None) -> Widths | None:
    """``widths`` as a hashable cache key: tuples of ints, and None for the standard widths,
    so that a model that records its standard widths draws exactly like one that does not."""
    if widths is None:
        return None
    key = tuple((int(a), int(b)) for a, b in widths)
    return None if key == standard_widths(arch) else key


def dilation_key(replace_stride_with_dilation: Dilation | list[bool] | None) -> Dilation | None:
    """``replace_stride_with_dilation`` checked, as a hashable cache key: a tuple, and None for no
    dilation (all False included), so that both draw the same cached network."""
    flags = dilation_flags(replace_stride_with_dilation)
    return flags if any(flags) else None


@lru_cache(maxsize=8)
def meta_model(
    arch: str, widths: Widths | None = None, dilation: Dilation | None = None, num_classes: int = NUM_CLASSES
) -> ResNet:
    """``arch`` (with ``widths``, see :func:`widths_key`, ``dilation``, see :func:`dilation_key`, and a
    head of ``num_classes``) built on the meta device, cached; callers only read its module attributes."""
    # Meta tensors have shapes but no storage: the structure costs nothing to keep.
    with torch.device("meta"):
        return build_model(arch, num_classes=num_classes, widths=widths, replace_stride_with_dilation=dilation).eval()


def pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    """A kernel size, stride, padding or dilation as (height, width)."""
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _after(layer: nn.Module, shape: Shape) -> Shape:
    """Shape after a Conv2d or MaxPool2d, from its own kernel, stride, padding and dilation."""
    c, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = pair(layer.kernel_size), pair(layer.stride), pair(layer.padding)
    dh, dw = pair(layer.dilation)
    out_c = layer.out_channels if isinstance(layer, nn.Conv2d) else c
    # PyTorch's formula: a dilated kernel spans d * (k - 1) + 1 pixels.
    return (out_c, (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)


def stem_shapes(net: ResNet, image_size: int) -> tuple[Shape, Shape, Shape]:
    """(image, after conv1, after maxpool)."""
    image = (net.conv1.in_channels, image_size, image_size)
    after_conv = _after(net.conv1, image)
    return image, after_conv, _after(net.maxpool, after_conv)


def block_shapes(block: Bottleneck, x: Shape) -> tuple[Shape, Shape, Shape]:
    """Shapes after conv1, conv2 and conv3 of one block with input shape ``x``."""
    a = _after(block.conv1, x)
    b = _after(block.conv2, a)
    return a, b, _after(block.conv3, b)


@lru_cache(maxsize=16)
def cached_block_infos(
    arch: str, image_size: int, widths: Widths | None = None, dilation: Dilation | None = None
) -> tuple[BlockInfo, ...]:
    """Every block of ``arch`` in running order, cached (an unchecked ``arch`` raises KeyError);
    ``widths`` is a :func:`widths_key`, ``dilation`` a :func:`dilation_key`."""
    net = meta_model(arch, widths, dilation)
    macs = macs_by_module(arch, image_size=image_size, widths=widths, replace_stride_with_dilation=dilation)
    x = stem_shapes(net, image_size)[2]
    infos = []
    for stage_name, stage in net.stages.items():
        for i, block in enumerate(stage):
            name = f"{stage_name}.{i}"
            out = block_shapes(block, x)[2]
            proj = block.downsample is not None
            infos.append(
                BlockInfo(
                    name=name,
                    stage=stage_name,
                    index=i,
                    in_shape=x,
                    out_shape=out,
                    stride=pair(block.conv2.stride)[0],
                    widths=(block.conv1.in_channels, block.conv1.out_channels, block.conv2.out_channels, out[0]),
                    projection=proj,
                    params=parameter_count(block),
                    macs=macs.get(name, 0),
                    shortcut_params=parameter_count(block.downsample) if proj else 0,
                    shortcut_macs=macs.get(f"{name}.downsample", 0) if proj else 0,
                    dilation=pair(block.conv2.dilation)[0],
                )
            )
            x = out
    return tuple(infos)


def stage_depths(arch: str) -> dict[str, int]:
    """Stage name -> number of blocks, read from the model ("layer1": 3, ...)."""
    return {name: len(stage) for name, stage in meta_model(arch).stages.items()}


def check_arch(arch: str) -> None:
    """Raise ValueError, naming the choices, unless ``arch`` is a known architecture."""
    if arch not in ARCH_DEPTHS:
        raise ValueError(f"Unknown architecture {arch!r}; choose one of {', '.join(ARCH_DEPTHS)}.")


def check_head(*, num_classes: int = NUM_CLASSES, image_size: int = IMAGE_SIZE) -> None:
    """Raise ValueError unless ``num_classes`` and ``image_size`` are positive whole numbers (a model's own)."""
    for what, value in (("num_classes", num_classes), ("image_size", image_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{what} must be a positive int, not {value!r}.")


def block_infos(
    arch: str,
    *,
    image_size: int = 224,
    widths: Widths | None = None,
    replace_stride_with_dilation: Dilation | list[bool] | None = None,
) -> list[BlockInfo]:
    """Every bottleneck block of ``arch`` (inner ``widths`` of a pruned model, see
    :meth:`~resnet_demo.core.model.ResNet.widths`; None: standard; ``replace_stride_with_dilation``
    as the model's), in the order the network runs them."""
    check_arch(arch)
    key = dilation_key(replace_stride_with_dilation)
    return list(cached_block_infos(arch, image_size, widths_key(arch, widths), key))


def block_choices(*, arch: str, widths: Widths | None = None) -> list[tuple[str, str]]:
    """(label, block name) pairs for a dropdown, e.g. ("layer3.0 · 512→1024, stride 2", "layer3.0")."""
    out = []
    for b in block_infos(arch, widths=widths):
        extra = f", stride {b.stride}" if b.downsamples else ""
        out.append((f"{b.name} · {b.widths[0]}→{b.widths[3]}{extra}", b.name))
    return out
