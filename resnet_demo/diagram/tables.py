"""Tables of parameters and multiply-accumulates: per stage of one architecture, and across architectures."""

from __future__ import annotations

from ..core.complexity import arch_report, macs_by_module, parameter_count
from ..core.model import ARCH_DEPTHS, Widths
from .blocks import cached_block_infos, check_arch, meta_model, stem_shapes, widths_key
from .formatting import fmt_shape


def stage_table(*, arch: str, image_size: int = 224, widths: Widths | None = None) -> list[dict[str, object]]:
    """Per-stage rows: stem, layer1..layer4, head, total.

    Keys: ``stage``, ``blocks``, ``weighted_layers`` (convolutions and fc: they add up to
    the 50/101/152 of the name), ``output_shape``, ``params``, ``macs``, ``gmacs``,
    ``params_share`` and ``macs_share`` (percent of the total). The total row equals
    :func:`resnet_demo.core.complexity.arch_report` for the standard widths; ``widths`` (a pruned
    model's, see :meth:`~resnet_demo.core.model.ResNet.widths`) gives that model's totals.
    """
    check_arch(arch)
    key = widths_key(arch, widths)
    net = meta_model(arch, key)
    macs = macs_by_module(arch, image_size=image_size, widths=key)
    infos = cached_block_infos(arch, image_size, key)
    totals = (parameter_count(net), macs[""])

    stem_params = parameter_count(net.conv1) + parameter_count(net.bn1)
    stem_out = fmt_shape(stem_shapes(net, image_size)[2])
    rows = [_row("stem", 0, 1, stem_out, stem_params, macs.get("conv1", 0), totals=totals)]
    for stage_name, stage in net.stages.items():
        out = fmt_shape([b for b in infos if b.stage == stage_name][-1].out_shape)
        n = len(stage)
        rows.append(_row(stage_name, n, 3 * n, out, parameter_count(stage), macs.get(stage_name, 0), totals=totals))
    rows.append(_row("head", 0, 1, str(net.fc.out_features), parameter_count(net.fc), macs.get("fc", 0), totals=totals))
    blocks = sum(r["blocks"] for r in rows)
    layers = sum(r["weighted_layers"] for r in rows)
    rows.append(_row("total", blocks, layers, rows[-1]["output_shape"], *totals, totals=totals))
    return rows


def _row(
    stage: str, blocks: int, layers: int, shape: str, params: int, macs: int, *, totals: tuple[int, int]
) -> dict[str, object]:
    """One row of :func:`stage_table`; ``totals`` (params, MACs) of the whole network set the shares."""
    return {
        "stage": stage,
        "blocks": blocks,
        "weighted_layers": layers,
        "output_shape": shape,
        "params": params,
        "macs": macs,
        "gmacs": round(macs / 1e9, 3),
        "params_share": round(100 * params / totals[0], 1),
        "macs_share": round(100 * macs / totals[1], 1),
    }


def comparison_table() -> list[dict[str, object]]:
    """Per architecture: measured parameters and GMACs beside the reproduction guide's table and
    torchvision's published figures."""
    out = []
    for arch in ARCH_DEPTHS:
        r = arch_report(arch)
        out.append(
            {
                "arch": arch,
                "blocks": "-".join(str(d) for d in r.depths),
                "params": r.params,
                "params_torchvision": r.tv_params,
                "params_m_guide": r.guide_params_m,
                "gmacs": round(r.gmacs, 3),
                "gmacs_torchvision": r.tv_gmacs,
                "gmacs_guide": r.guide_gmacs,
                "top1_torchvision_v1": r.tv_acc1_v1,
                "top1_torchvision_v2": r.tv_acc1_v2,
                "top1_guide": r.guide_top1,
            }
        )
    return out
