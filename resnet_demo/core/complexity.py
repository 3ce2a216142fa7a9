"""Parameters and multiply-accumulates, measured, beside the published figures.

This is the check the reproduction guide asks for: count what the code builds and
compare it with torchvision's published numbers and with the reproduction guide's table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import torch
from torch.utils.flop_counter import FlopCounterMode

from .model import ARCH_DEPTHS, Dilation, ResNet, Widths, arch_of, build_model, dilation_flags
from .weights import weights_spec

__all__ = ["GUIDE_TABLE", "ArchReport", "arch_report", "macs_by_module", "model_complexity", "parameter_count"]

# The reproduction guide's table: parameters (millions), "FLOPs" (billions; really multiply-accumulates)
# and ImageNet top-1 (%).
GUIDE_TABLE: dict[str, dict[str, float]] = {
    "resnet50": {"params_m": 25.6, "gmacs": 4.1, "top1": 76.5},
    "resnet101": {"params_m": 44.5, "gmacs": 7.8, "top1": 77.8},
    "resnet152": {"params_m": 60.2, "gmacs": 11.6, "top1": 78.3},
}


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def macs_by_module(
    arch: str,
    *,
    image_size: int = 224,
    num_classes: int = 1000,
    widths: Widths | None = None,
    replace_stride_with_dilation: Dilation | list[bool] | None = None,
) -> dict[str, int]:
    """Multiply-accumulates of one image, per module path ("" is the whole model).

    Counted by ``FlopCounterMode`` (convolutions and the fc layer; BN, ReLU, pooling
    and additions are not multiply-accumulates) on the meta device, so nothing is
    computed and it takes milliseconds. ``widths`` counts a channel-pruned network
    (see :meth:`~resnet_demo.core.model.ResNet.widths`); None the standard one.
    ``replace_stride_with_dilation`` counts a dilated network (larger feature maps from
    layer3 on for DeepLab's setting); None, or all False, the standard one. Cached.
    """
    flags = dilation_flags(replace_stride_with_dilation)
    # One cache entry per network: None and (False, False, False) build the same one.
    return _macs_by_module(arch, image_size, num_classes, widths, flags if any(flags) else None)


@lru_cache(maxsize=16)
def _macs_by_module(
    arch: str, image_size: int, num_classes: int, widths: Widths | None, dilation: Dilation | None
) -> dict[str, int]:
    with torch.device("meta"):
        model = build_model(arch, num_classes=num_classes, widths=widths, replace_stride_with_dilation=dilation).eval()
        x = torch.empty(1, 3, image_size, image_size)
    counter = FlopCounterMode(display=False, depth=None)
    with counter, torch.no_grad():
        model(x)
    # FlopCounterMode counts 2 FLOPs per multiply-accumulate and names modules
    # "ResNet.layer1.0"; "Global" is the whole model.
    return {
        "" if name == "Global" else name.partition(".")[2]: sum(per_op.values()) // 2
        for name, per_op in counter.get_flop_counts().items()
    }


def model_complexity(model: ResNet, *, image_size: int = 224) -> tuple[int, int]:
    """(parameters, multiply-accumulates of one ``image_size`` image) of any of our ResNets,
    pruned or dilated or not; the MACs are counted on a meta-device twin, so ``model`` is never run."""
    widths = tuple(model.widths())
    macs = macs_by_module(
        arch_of(model),
        image_size=image_size,
        num_classes=model.fc.out_features,
        widths=widths,
        replace_stride_with_dilation=model.replace_stride_with_dilation,
    )
    return parameter_count(model), macs[""]


@dataclass(frozen=True)
class ArchReport:
    """Measured figures of one architecture beside torchvision's and the reproduction guide's."""

    arch: str
    depths: tuple[int, int, int, int]
    params: int
    gmacs: float
    tv_params: int
    tv_gmacs: float
    tv_acc1_v1: float
    tv_acc1_v2: float
    guide_params_m: float
    guide_gmacs: float
    guide_top1: float

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["params_diff_vs_tv"] = self.params - self.tv_params
        d["gmacs_diff_vs_guide"] = round(self.gmacs - self.guide_gmacs, 3)
        d["params_m_diff_vs_guide"] = round(self.params / 1e6 - self.guide_params_m, 2)
        return d


@lru_cache(maxsize=8)
def arch_report(arch: str, *, image_size: int = 224) -> ArchReport:
    with torch.device("meta"):
        params = parameter_count(build_model(arch))
    v1 = weights_spec(arch=arch, weights="imagenet-v1").published
    v2 = weights_spec(arch=arch, weights="imagenet-v2").published
    guide = GUIDE_TABLE[arch]
    return ArchReport(
        arch=arch,
        depths=ARCH_DEPTHS[arch],
        params=params,
        gmacs=macs_by_module(arch, image_size=image_size)[""] / 1e9,
        tv_params=int(v2["params"]),
        tv_gmacs=v2["gmacs"],
        tv_acc1_v1=v1["acc@1"],
        tv_acc1_v2=v2["acc@1"],
        guide_params_m=guide["params_m"],
        guide_gmacs=guide["gmacs"],
        guide_top1=guide["top1"],
    )
