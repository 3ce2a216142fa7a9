from __future__ import annotations

import math

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from resnet_demo.core.model import ARCH_DEPTHS, STAGES, Bottleneck, build_model, resnet50, resnet101, resnet152

from .conftest import TV_BUILDERS, random_state_dict

ARCHES = list(ARCH_DEPTHS)
TV_NODES = {"maxpool": "stem", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4"}


@pytest.mark.parametrize("arch", ARCHES)
def test_matches_torchvision(arch: str) -> None:
    sd = random_state_dict(arch, seed=3)
    ours = build_model(arch).eval()
    theirs = TV_BUILDERS[arch]().eval()
    ours.load_state_dict(sd, strict=True)
    theirs.load_state_dict(sd, strict=True)

    # Identical keys, order and shapes: torchvision's weights load strictly.
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    extractor = create_feature_extractor(theirs, return_nodes={**TV_NODES, "fc": "logits"})
    with torch.no_grad():
        ref = extractor(x)
        out = ours.forward_intermediates(x)
        plain = ours(x)
    assert (out.logits - ref["logits"]).abs().max().item() < 1e-4
    assert (plain - ref["logits"]).abs().max().item() < 1e-4
    assert list(out.stages) == list(STAGES)
    for name in STAGES:
        assert (out.stages[name] - ref[name]).abs().max().item() < 1e-4, name


@pytest.mark.parametrize("dilation", [(False, True, True), (True, False, True)])
def test_dilated_matches_torchvision(dilation: tuple[bool, bool, bool]) -> None:
    """DeepLab's and FCN's (False, True, True), and a mix that checks the first block's previous dilation."""
    sd = random_state_dict("resnet50", seed=11)
    ours = build_model("resnet50", replace_stride_with_dilation=dilation).eval()
    theirs = tvm.resnet50(replace_stride_with_dilation=list(dilation)).eval()
    ours.load_state_dict(sd, strict=True)
    theirs.load_state_dict(sd, strict=True)
    assert ours.replace_stride_with_dilation == dilation
    # Every convolution has torchvision's stride, padding and dilation.
    convs = {n: (m.stride, m.padding, m.dilation) for n, m in theirs.named_modules() if isinstance(m, nn.Conv2d)}
    assert {n: (m.stride, m.padding, m.dilation) for n, m in ours.named_modules() if isinstance(m, nn.Conv2d)} == convs
    # layer3's first block keeps the dilation before it; a strided layer3 after a dilated layer2 keeps 2.
    assert [b.dilation for b in ours.layer3] == ([1, 2, 2, 2, 2, 2] if dilation[1] else [2] * 6)
    assert [b.conv2.dilation for b in ours.layer4] == [(2, 2), (4, 4), (4, 4)]

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    extractor = create_feature_extractor(theirs, return_nodes={**TV_NODES, "fc": "logits"})
    with torch.no_grad():
        ref = extractor(x)
        out = ours.forward_intermediates(x)
        _, late = ours.forward_stages(out.stages["layer2"], start="layer2")
    assert (out.logits - ref["logits"]).abs().max().item() < 1e-4
    for name in STAGES:
        assert (out.stages[name] - ref[name]).abs().max().item() < 1e-4, name
        reduction = next(f["reduction"] for f in ours.feature_info if f["module"] == name)
        assert out.stages[name].shape[-1] == 64 // reduction, name
    assert torch.allclose(late["layer4"], ref["layer4"], atol=1e-4)
    # Dilation changes strides, never the state_dict.
    assert list(ours.state_dict()) == list(build_model("resnet50").state_dict())


@pytest.mark.parametrize("bad", [(False, True), [False, True, True, True], (0, 1, 1), "FTT", True])
def test_bad_dilation_setting_is_a_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="three bools"):
        build_model("resnet50", replace_stride_with_dilation=bad)  # type: ignore[arg-type]


def test_forward_intermediates_blocks_are_consistent() -> None:
    model = resnet50().eval()
    model.load_state_dict(random_state_dict("resnet50", seed=5))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model.forward_intermediates(x, blocks=True)
        plain = model.forward_intermediates(x)
    assert [b.name for b in out.blocks] == [
        f"layer{s + 1}.{i}" for s, n in enumerate(ARCH_DEPTHS["resnet50"]) for i in range(n)
    ]
    for b in out.blocks:
        # The block's output is ReLU(F(x) + shortcut), and F(x) / shortcut were not overwritten.
        assert torch.allclose(b.output, torch.relu(b.residual + b.shortcut))
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        last = [b for b in out.blocks if b.name.startswith(stage + ".")][-1]
        assert torch.equal(last.output, out.stages[stage])
    assert torch.equal(out.logits, plain.logits)
    assert plain.blocks == []


@pytest.mark.parametrize(
    ("builder", "depths", "params"),
    [
        (resnet50, (3, 4, 6, 3), 25_557_032),
        (resnet101, (3, 4, 23, 3), 44_549_160),
        (resnet152, (3, 8, 36, 3), 60_192_808),
    ],
)
def test_depths_and_parameter_counts(builder, depths, params) -> None:
    with torch.device("meta"):
        model = builder()
    assert (len(model.layer1), len(model.layer2), len(model.layer3), len(model.layer4)) == depths
    assert sum(p.numel() for p in model.parameters()) == params


def test_projection_shortcut_only_where_shape_changes() -> None:
    with torch.device("meta"):
        model = resnet50()
    for stage in model.stages.values():
        first, *rest = stage
        assert isinstance(first.downsample, nn.Sequential)
        assert all(b.downsample is None for b in rest)
    # "v1.5": the stride is on the 3x3 conv, and on the projection.
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)
    assert model.layer2[0].downsample[0].stride == (2, 2)
    assert model.layer1[0].conv2.stride == (1, 1)


def test_each_relu_is_its_own_non_inplace_module() -> None:
    model = resnet50()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 1 + 3 * 16
    assert len({id(m) for m in relus}) == len(relus)
    assert not any(m.inplace for m in relus)
    block = model.layer1[0]
    assert isinstance(block, Bottleneck)
    assert {block.relu1 is block.relu2, block.relu2 is block.relu3} == {False}


def test_kaiming_init_and_batchnorm_init() -> None:
    torch.manual_seed(0)
    model = resnet50()
    conv = model.layer3[0].conv2  # 256 -> 256, 3x3: 590k weights, a tight std estimate
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.02)
    conv1x1 = model.layer4[0].conv3
    assert conv1x1.weight.std().item() == pytest.approx(math.sqrt(2.0 / conv1x1.out_channels), rel=0.02)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_zero_init_residual() -> None:
    model = resnet50(zero_init_residual=True)
    blocks = [m for m in model.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16
    for b in blocks:
        assert torch.all(b.bn3.weight == 0)
        assert torch.all(b.bn1.weight == 1) and torch.all(b.bn2.weight == 1)
    # Each block then starts as the identity: at init the residual branch adds nothing.
    x = torch.rand(1, 256, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model.eval().layer1[1](x), x)


def test_num_classes_and_unknown_arch() -> None:
    assert resnet50(num_classes=7).fc.out_features == 7
    with pytest.raises(ValueError, match="resnet50, resnet101, resnet152"):
        build_model("resnet18")


def test_feature_info_matches_stage_outputs() -> None:
    model = resnet50().eval()
    with torch.no_grad():
        out = model.forward_intermediates(torch.rand(1, 3, 64, 64))
    assert [f["module"] for f in model.feature_info] == list(STAGES)
    for info in model.feature_info:
        t = out.stages[info["module"]]
        assert t.shape == (1, info["num_chs"], 64 // info["reduction"], 64 // info["reduction"])


def test_one_block_forward_in_place_or_not_with_statistics() -> None:
    """set_inplace changes memory use only; the statistics are those of F(x), the shortcut and the output."""
    model = resnet50().eval()
    model.load_state_dict(random_state_dict("resnet50", seed=7))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        parts = model.forward_intermediates(x, blocks=True)
        stats: list[torch.Tensor] = []
        model.set_inplace(True)
        logits, stages = model.forward_stages(x, stats=stats)
        late_stats: list[torch.Tensor] = []
        _, late = model.forward_stages(stages["layer2"], start="layer2", stats=late_stats)
    assert all(m.inplace for m in model.modules() if isinstance(m, (nn.ReLU, Bottleneck)))
    assert torch.allclose(logits, parts.logits, atol=1e-5)
    assert torch.allclose(late["layer4"], parts.stages["layer4"], atol=1e-5)
    assert model.block_names() == [b.name for b in parts.blocks]
    assert model.block_names(start="layer2") == [b.name for b in parts.blocks if b.name >= "layer3"]
    numbers = torch.stack(stats).view(-1, 3)
    expected = torch.tensor([[b.residual.norm(), b.shortcut.norm(), b.output.mean()] for b in parts.blocks])
    assert torch.allclose(numbers, expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(
        torch.stack(late_stats).view(-1, 3), expected[-(len(late_stats) // 3) :], rtol=1e-4, atol=1e-6
    )
    with pytest.raises(ValueError, match="out-of-place"):
        model.forward_intermediates(x, blocks=True)
    model.set_inplace(False)
    assert not any(m.inplace for m in model.modules() if isinstance(m, (nn.ReLU, Bottleneck)))
