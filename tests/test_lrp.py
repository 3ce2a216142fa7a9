"""LRP ε-z⁺-flat: against zennit's EpsilonPlusFlat + ResNetCanonizer, relevance conserved through every
residual sum of ResNet-50, -101 and -152, and the conservation report against the relevance itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

from resnet_demo.core.fold import fold_batchnorm, inference_copy
from resnet_demo.core.model import ResNet, build_model, standard_widths
from resnet_demo.core.weights import LoadedModel
from resnet_demo.explain import analyze, get_method, method_cost, prepare
from resnet_demo.explain.lrp import POINTS, BlockRelevance, relevance, relevance_conservation

from .conftest import EXAMPLES, random_state_dict
from .test_explain import _frozen, _randomize_bn, _spec

CAT = EXAMPLES / "cat.jpg"


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


@pytest.fixture(scope="module")
def r50() -> tuple[nn.Module, ResNet, torch.Tensor]:
    """torchvision's ResNet-50 and ours (folded) on the same generated weights, and the cat at 112 px."""
    state = random_state_dict("resnet50", seed=0)
    tv = tvm.resnet50()
    tv.load_state_dict(state)
    ours = build_model("resnet50")
    ours.load_state_dict(state)
    x = prepare(image=CAT, preprocessing=_spec("resnet50", crop=112).preprocessing).tensor  # (1, 3, 112, 112)
    return tv.eval(), inference_copy(ours.eval()), x


def test_lrp_equals_zennit_epsilon_plus_flat(r50) -> None:
    tv, folded, x = r50
    with torch.no_grad():
        logits = tv(x)
    for target in (int(logits.argmax()), int(logits.argmin())):  # a class the photo argues for, one it argues against
        ours = relevance(model=folded, image=x.contiguous(memory_format=torch.channels_last), target=target).pixels
        composite = EpsilonPlusFlat(canonizers=[ResNetCanonizer()])
        with Gradient(model=tv, composite=composite) as attributor:
            # zennit starts from the relevance it is given: the logit itself, as ours does.
            _, theirs = attributor(x.clone(), torch.eye(1000)[[target]] * logits[0, target])
        assert _pearson(ours.sum(dim=1), theirs.sum(dim=1)) >= 0.99
        assert float(ours.sum()) == pytest.approx(
            float(theirs.sum()), rel=1e-3
        )  # the same relevance reached the pixels


def test_contrast_is_lrp_of_a_class_holding_the_difference(r50) -> None:
    """LRP of logit(A) - logit(B) equals plain LRP of a model whose one class has the weights w_A - w_B."""
    _, folded, x = r50
    x = x.contiguous(memory_format=torch.channels_last)
    a, b = 3, 7
    contrast = relevance(model=folded, image=x, target=a, versus=b)
    twin = fold_batchnorm(folded)
    with torch.no_grad():
        fc = nn.Linear(folded.fc.in_features, 1)
        fc.weight.copy_(folded.fc.weight[a] - folded.fc.weight[b])
        fc.bias.copy_(folded.fc.bias[a] - folded.fc.bias[b])
    twin.fc = fc
    plain = relevance(model=twin, image=x, target=0)
    assert torch.allclose(contrast.pixels, plain.pixels, rtol=1e-4, atol=1e-6 * float(plain.pixels.abs().max()))
    assert contrast.conservation.score == pytest.approx(plain.conservation.score, rel=1e-5)


def _model(arch: str, *, seed: int, widths=None) -> ResNet:
    """A folded random ResNet with random BatchNorm statistics, so the folded convolutions have biases.
    Each residual branch is scaled down (bn3's weight), as training leaves it, so the 50 blocks of
    ResNet-152 keep the activations within float32."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=10, widths=widths)
    _randomize_bn(model, seed=seed + 1)
    with torch.no_grad():
        for name, m in model.named_modules():
            if name.endswith("bn3"):
                m.weight.mul_(0.2)
    return fold_batchnorm(_frozen(model))


def _without_biases(model: ResNet) -> ResNet:
    bare = fold_batchnorm(model)
    with torch.no_grad():
        for m in bare.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.zero_()
    return bare


def _check_sums(model: ResNet, x: torch.Tensor, blocks: list[BlockRelevance]) -> None:
    """Every residual sum hands on what it received, split by what the branch and the shortcut added."""
    parts = {b.name: b for b in model.set_inplace(False).forward_intermediates(x, blocks=True).blocks}
    assert [b.name for b in blocks] == list(reversed(model.block_names()))
    for b in blocks:
        received, handed = float(b.received.sum()), float(b.residual.sum() + b.shortcut.sum())
        assert handed == pytest.approx(received, rel=1e-4, abs=1e-4 * float(b.received.abs().sum()))
        f, shortcut = parts[b.name].residual, parts[b.name].shortcut
        # In proportion: each side's relevance is its share of the sum (wherever the sum is not ~0).
        live = (f + shortcut).abs() > 1e-3
        expected = b.received * shortcut / (f + shortcut)
        assert torch.allclose(b.shortcut[live], expected[live], rtol=1e-3, atol=1e-5 * float(b.received.abs().max()))


@pytest.mark.parametrize("arch", ["resnet50", "resnet101", "resnet152"])
def test_relevance_is_conserved_through_every_block(arch: str) -> None:
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    model = _model(arch, seed=5)
    with torch.no_grad():
        target = int(model(x).argmax())

    # With biases: every sum conserves; what went missing is what the report says the biases and ε took.
    blocks: list[BlockRelevance] = []
    found = relevance(model=model, image=x, target=target, blocks=blocks)
    _check_sums(model, x, blocks)
    report = found.conservation
    assert list(report.relevance) == list(POINTS)
    assert report.relevance["input"] == pytest.approx(float(found.pixels.sum()) / report.score, rel=1e-4)
    for point in POINTS:
        total = report.relevance[point] + report.biases[point] + report.stabilisers[point]
        assert total == pytest.approx(1.0, abs=1e-3), point
    assert abs(report.biases["input"]) > 0.01  # the biases did take a share: the check above is not vacuous

    # Without biases: the logit reaches every stage's input and the pixels, within 1%.
    bare = relevance(model=_without_biases(model), image=x, target=target).conservation
    for point in POINTS:
        assert bare.relevance[point] == pytest.approx(1.0, abs=0.01), point
        assert bare.biases[point] == pytest.approx(0.0, abs=1e-6)


def test_pruned_and_dilated_models_are_supported() -> None:
    """A slimmed network (narrower blocks) and a dilated one conserve relevance like any other."""
    widths = tuple((max(8, a // 4), max(8, b // 2)) for a, b in standard_widths("resnet50"))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    for model in (_model("resnet50", seed=1, widths=widths), _dilated()):
        bare = _without_biases(model)
        blocks: list[BlockRelevance] = []
        found = relevance(model=bare, image=x, target=1, blocks=blocks)
        _check_sums(bare, x, blocks)
        assert found.conservation.relevance["input"] == pytest.approx(1.0, abs=0.01)


def _dilated() -> ResNet:
    torch.manual_seed(3)
    return fold_batchnorm(
        _frozen(ResNet((1, 1, 1, 1), num_classes=10, replace_stride_with_dilation=(False, True, True)))
    )


@pytest.fixture(scope="module")
def small_analysis():
    torch.manual_seed(0)
    model = ResNet((1, 1, 1, 1), num_classes=10)
    _randomize_bn(model, seed=1)
    return analyze(image=CAT, model=LoadedModel(_frozen(model), _spec("small", classes=10, crop=96)))


def test_the_registry_entry(small_analysis) -> None:
    a = small_analysis
    entry = get_method("lrp")
    assert entry.space == "input" and entry.class_specific
    top = a.predictions[0].index
    att = a.attribution(method="lrp")
    assert att.stage == "input" and att.target == top
    assert att.heatmap.shape == (96, 96) and att.heatmap.dtype == np.float32
    assert att.heatmap.min() >= 0.0 and att.heatmap.max() == pytest.approx(1.0)
    direct = relevance(model=a.model, image=a.input, target=top).pixels[0]
    assert np.allclose(att.raw, direct.numpy(), rtol=1e-5, atol=1e-7)
    # The heat map: positive relevance over the colours, scaled by its 99th percentile.
    positive = direct.sum(dim=0).clamp(min=0)
    expected = (positive / torch.quantile(positive.flatten(), 0.99)).clamp(0, 1)
    assert np.allclose(att.heatmap, expected.numpy(), atol=1e-5)

    versus = a.attribution(method="lrp", versus=a.predictions[1].index)
    contrast = relevance(model=a.model, image=a.input, target=top, versus=a.predictions[1].index).pixels[0]
    assert np.allclose(versus.raw, contrast.numpy(), rtol=1e-5, atol=1e-7)

    report = relevance_conservation(analysis=a)
    assert report == relevance(model=a.model, image=a.input, target=top).conservation
    json = report.to_json()
    assert set(json["points"]) == set(POINTS) and all(isinstance(v, float) for v in json["points"]["input"].values())
    assert 0 < method_cost(method="lrp", arch="resnet50") < method_cost(method="ig", arch="resnet50")


def test_nothing_is_hooked_or_changed_on_the_shared_model(small_analysis) -> None:
    model = small_analysis.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inplace = [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)]
    relevance(model=model, image=small_analysis.input, target=1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [m.inplace for m in model.modules() if isinstance(m, nn.ReLU)] == inplace
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks")
    assert not any(getattr(m, h) for m in model.modules() for h in hooks)
