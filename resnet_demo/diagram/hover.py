"""Hover text of the architecture diagram's nodes: blocks, projections, strides, stem and head."""

from __future__ import annotations

from ..core.complexity import macs_by_module, parameter_count
from ..core.model import Dilation, Widths
from .blocks import NUM_CLASSES, BlockInfo, cached_block_infos, meta_model, pair, stem_shapes
from .formatting import fmt_count, fmt_shape


def block_hover(b: BlockInfo, *, depth: int, stat_line: str | None) -> str:
    """A block's name, place, shapes, stride, widths, shortcut, cost and (if given) statistic."""
    w = b.widths
    stride = f"/{b.stride}" if b.downsamples else ""
    dilated = f" dilation {b.dilation}" if b.dilation > 1 else ""
    lines = [
        f"<b>{b.name}</b>: stage {b.stage}, block index {b.index} (of 0–{depth - 1})",
        f"in {fmt_shape(b.in_shape)} → out {fmt_shape(b.out_shape)}",
        f"stride {b.stride}"
        + (": halves H and W" if b.downsamples else "")
        + (f" · dilation {b.dilation}: the 3×3 taps {b.dilation} pixels apart" if b.dilation > 1 else ""),
        f"conv widths {w[0]} → {w[1]} → {w[2]} → {w[3]} (1×1, 3×3{stride}{dilated}, 1×1)",
        (
            f"shortcut: projection, 1×1 conv {w[0]}→{w[3]}{' ' + stride if stride else ''} + BN"
            if b.projection
            else "shortcut: identity"
        ),
        f"params {b.params:,} ({fmt_count(b.params)}) · MACs {b.macs:,} ({fmt_count(b.macs)})",
    ]
    if stat_line:
        lines.append(stat_line)
    return "<br>".join(lines)


def projection_hover(b: BlockInfo) -> str:
    """A projection shortcut: its convolution, shapes, cost, and which change makes it needed."""
    w = b.widths
    stride_text = f", stride {b.stride}" if b.downsamples else ""
    changes = " and ".join(x for x, c in (("width", w[0] != w[3]), ("size", b.downsamples)) if c)
    return (
        f"<b>{b.name}.downsample</b>: projection shortcut<br>1×1 conv {w[0]} → {w[3]}{stride_text}, then BN"
        f"<br>{fmt_shape(b.in_shape)} → {fmt_shape(b.out_shape)}"
        f"<br>params {b.shortcut_params:,} · MACs {b.shortcut_macs:,} ({fmt_count(b.shortcut_macs)})"
        f"<br>needed because the {changes} changes"
    )


def stride_hover(b: BlockInfo) -> str:
    """The stride marker of a downsampling block."""
    return f"<b>{b.name}</b> has stride {b.stride}: {fmt_shape(b.in_shape)} → {fmt_shape(b.out_shape)}"


def edge_nodes(
    arch: str,
    *,
    image_size: int,
    widths: Widths | None = None,
    dilation: Dilation | None = None,
    num_classes: int = NUM_CLASSES,
) -> dict[str, tuple[str, str]]:
    """Label and hover of the stem and head nodes ("image", "conv1", "maxpool", "avgpool", "fc");
    ``widths`` is a :func:`~resnet_demo.diagram.blocks.widths_key`, ``dilation`` a
    :func:`~resnet_demo.diagram.blocks.dilation_key`, ``num_classes`` the head's outputs."""
    net = meta_model(arch, widths, dilation, num_classes)
    macs = macs_by_module(
        arch, image_size=image_size, num_classes=num_classes, widths=widths, replace_stride_with_dilation=dilation
    )
    image, after_conv, after_pool = stem_shapes(net, image_size)
    last = cached_block_infos(arch, image_size, widths, dilation)[-1].out_shape
    k, s = pair(net.conv1.kernel_size)[0], pair(net.conv1.stride)[0]
    pk, ps = pair(net.maxpool.kernel_size)[0], pair(net.maxpool.stride)[0]
    stem_params = parameter_count(net.conv1) + parameter_count(net.bn1)
    fc = net.fc
    return {
        "image": ("image", f"<b>input image</b><br>{fmt_shape(image)}"),
        "conv1": (
            f"conv {k}×{k}/{s}",
            f"<b>stem: conv1 → bn1 → relu</b><br>{k}×{k} conv, stride {s}, {image[0]} → {after_conv[0]} channels"
            f"<br>in {fmt_shape(image)} → out {fmt_shape(after_conv)}"
            f"<br>params {stem_params:,} · MACs {macs.get('conv1', 0):,} ({fmt_count(macs.get('conv1', 0))})",
        ),
        "maxpool": (
            f"maxpool /{ps}",
            f"<b>stem: maxpool</b><br>{pk}×{pk} max pool, stride {ps}"
            f"<br>in {fmt_shape(after_conv)} → out {fmt_shape(after_pool)}<br>no parameters",
        ),
        "avgpool": (
            "avgpool",
            f"<b>head: avgpool</b><br>global average pool<br>in {fmt_shape(last)} → out {last[0]}",
        ),
        "fc": (
            f"fc {fc.out_features}",
            f"<b>head: fc</b><br>linear {fc.in_features} → {fc.out_features} classes"
            f"<br>params {parameter_count(fc):,} · MACs {macs.get('fc', 0):,}",
        ),
    }
