"""CRP concepts: the conditional maps of every channel add up to the LRP map, each channel's relevance
and conditional map equal zennit's (its EpsilonPlusFlat with the relevance at the stage masked to the
channel, as zennit-crp's CondAttribution does), the tiles' shares, and bad requests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.models as tvm
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

from resnet_demo.core.errors import UserError
from resnet_demo.core.model import build_model
from resnet_demo.core.weights import LoadedModel
from resnet_demo.explain import Analysis, analyze, get_method, method_cost
from resnet_demo.explain import crp as crp_module
from resnet_demo.explain.crp import MAX_CONCEPTS, check_concepts, concepts, conditional_relevance
from resnet_demo.explain.lrp import finish_relevance_map, relevance

from .conftest import EXAMPLES
from .test_explain import _frozen, _randomize_bn, _spec

CAT = EXAMPLES / "cat.jpg"


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


@pytest.fixture(scope="module")
def twins() -> tuple[Analysis, torch.nn.Module]:
    """An analysis of the cat at 64 px on a random ResNet-50, and torchvision's ResNet-50 on the same weights."""
    torch.manual_seed(0)
    tv = tvm.resnet50()
    _randomize_bn(tv, seed=1)
    ours = build_model("resnet50")
    ours.load_state_dict(tv.state_dict())
    analysis = analyze(image=CAT, model=LoadedModel(_frozen(ours), _spec("resnet50", crop=64)))
    return analysis, tv.eval()


def _zennit(tv: torch.nn.Module, x: torch.Tensor, target: int, *, channel: int | None = None):
    """zennit's relevance at layer3's output (1, C, h, w) and at the pixels (1, 3, H, W); with ``channel``,
    the pixels' relevance when only that channel of layer3 hands its relevance on."""
    found = {}

    def keep(module, args, output) -> None:
        def mask(grad: torch.Tensor) -> torch.Tensor:
            found["layer3"] = grad.clone()
            if channel is None:
                return grad
            only = torch.zeros_like(grad)
            only[:, channel] = grad[:, channel]
            return only

        output.register_hook(mask)

    handle = tv.layer3.register_forward_hook(keep)
    try:
        with Gradient(model=tv, composite=EpsilonPlusFlat(canonizers=[ResNetCanonizer()])) as attributor:
            logits = tv(x)
            _, pixels = attributor(x.clone(), torch.eye(logits.shape[1])[[target]] * logits[0, target].detach())
    finally:
        handle.remove()
    return found["layer3"], pixels


def test_channels_and_conditional_maps_equal_zennit(twins) -> None:
    analysis, tv = twins
    x = analysis.input.contiguous()
    target = analysis.predictions[0].index
    theirs_stage, _ = _zennit(tv, x, target)
    tiles = concepts(analysis=analysis, stage="layer3", target=target, k=6)
    ours_stage = relevance(model=analysis.model, image=analysis.input, target=target).stages["layer3"]
    assert _pearson(ours_stage.sum(dim=(2, 3)), theirs_stage.sum(dim=(2, 3))) >= 0.99
    assert [t.channel for t in tiles] == torch.topk(theirs_stage[0].sum(dim=(1, 2)), 6).indices.tolist()
    top = tiles[0].channel
    _, theirs = _zennit(tv, x, target, channel=top)
    ours = conditional_relevance(
        model=analysis.model, image=analysis.input, stage="layer3", target=target, channels=[top]
    )
    assert _pearson(ours.sum(dim=1), theirs.sum(dim=1)) >= 0.99
    assert np.allclose(tiles[0].heatmap, finish_relevance_map(ours, (64, 64))[0], atol=1e-6)


@pytest.mark.parametrize("stage", ["stem", "layer1"])
def test_the_conditional_maps_of_all_channels_add_up_to_the_lrp_map(twins, stage: str) -> None:
    analysis, _ = twins
    target = analysis.predictions[1].index
    channels = analysis.stage_shapes[stage][0]
    maps = conditional_relevance(
        model=analysis.model, image=analysis.input, stage=stage, target=target, channels=range(channels)
    )
    plain = relevance(model=analysis.model, image=analysis.input, target=target).pixels
    assert maps.shape == (channels, 3, 64, 64)
    assert _pearson(maps.sum(dim=0), plain[0]) >= 0.99
    assert torch.allclose(maps.sum(dim=0), plain[0], rtol=1e-4, atol=1e-5 * float(plain.abs().max()))


def test_concept_tiles(twins) -> None:
    analysis, _ = twins
    # The runner-up against the top class: channels on both sides, as a random network gives no single class.
    target, versus = analysis.predictions[1].index, analysis.predictions[0].index
    tiles = concepts(analysis=analysis, stage="layer2", target=target, versus=versus, k=8)
    at_stage = relevance(model=analysis.model, image=analysis.input, target=target, versus=versus).stages["layer2"][0]
    per_channel = at_stage.sum(dim=(1, 2)).double()
    assert [t.channel for t in tiles] == torch.topk(per_channel, 8).indices.tolist()  # the most relevance, not |R|
    assert float(per_channel.min()) < -abs(tiles[-1].relevance)  # some channel argues against more strongly
    shares = [t.share for t in tiles]
    assert shares == sorted(shares, reverse=True) and sum(shares) <= 1.0
    for t in tiles:
        assert t.relevance == pytest.approx(float(per_channel[t.channel]), rel=1e-5)
        assert t.share == pytest.approx(t.relevance / float(per_channel.abs().sum()), rel=1e-5)
    # The feature map is the channel's activation at the stage, numbered as the feature maps number it.
    stage_output = analysis.loaded.model.forward_intermediates(analysis.prepared.tensor).stages["layer2"][0]
    for t in tiles:
        act = stage_output[t.channel].clamp(min=0)
        assert t.feature_map.shape == tuple(act.shape) and t.feature_map.dtype == np.float32
        expected = act / act.max() if act.max() > 0 else act  # a channel that is off everywhere stays 0
        assert np.allclose(t.feature_map, expected.numpy(), atol=1e-4)
        assert t.heatmap.shape == (64, 64) and t.heatmap.min() >= 0 and t.heatmap.max() <= 1

    # The registry's map at a stage: the pixels' relevance conditioned on the k concepts together.
    att = analysis.attribution(method="crp", stage="layer2", target=target, versus=versus, crp_concepts=8)
    chosen = [t.channel for t in tiles]
    conditioned = conditional_relevance(
        model=analysis.model, image=analysis.input, stage="layer2", target=target, versus=versus, channels=chosen
    ).sum(dim=0)
    assert np.allclose(att.raw, conditioned.numpy(), rtol=1e-5, atol=1e-7)
    assert get_method("crp").answers == "what"
    assert method_cost(method="crp", arch="resnet50", stage="layer1", crp_concepts=12) > method_cost(
        method="crp", arch="resnet50", stage="layer1"
    )


def test_bad_requests_are_one_sentence_before_any_work(twins, monkeypatch: pytest.MonkeyPatch) -> None:
    analysis, _ = twins

    def refuse(*args, **kwargs):
        raise AssertionError("computed before the request was checked")

    monkeypatch.setattr(crp_module, "RelevancePass", refuse)
    for k in (0, MAX_CONCEPTS + 1, -3, 2.5, True):
        with pytest.raises(UserError, match=f"from 1 to {MAX_CONCEPTS}"):
            concepts(analysis=analysis, stage="layer3", k=k)
    with pytest.raises(UserError, match=f"from 1 to {MAX_CONCEPTS}"):
        analysis.attribution(method="crp", stage="layer3", crp_concepts=0)
    with pytest.raises(UserError, match="Unknown stage"):
        concepts(analysis=analysis, stage="layer5")
    with pytest.raises(UserError, match="Class 10000 does not exist"):
        concepts(analysis=analysis, stage="layer3", target=10000)
    with pytest.raises(UserError, match="has 6 channels, fewer than the 7 concepts"):
        check_concepts(7, stage="a pruned stage", channels=6)
