"""The cascading randomisation check: the shared model is untouched, randomising fc changes
the layer4 map, Spearman's correlation is right, and the result is cached."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from resnet_demo.core.errors import UserError
from resnet_demo.core.weights import LoadedModel
from resnet_demo.explain import analyze
from resnet_demo.explain.captum_methods import finish_pixel_map
from resnet_demo.explain.methods import Method, MethodCall, register, unregister
from resnet_demo.explain.sanity import (
    SANITY_STEPS,
    THRESHOLD,
    randomization_check,
    reinitialize,
    spearman,
    verdict_step,
)

from .conftest import EXAMPLES
from .test_explain import small  # noqa: F401  (the fixture)

CAT = EXAMPLES / "cat.jpg"


def test_spearman_matches_its_definition_with_ties() -> None:
    a = np.array([1.0, 2.0, 2.0, 3.0, 0.0])
    b = np.array([10.0, 30.0, 20.0, 40.0, 0.0])
    # Average ranks: a -> [2, 3.5, 3.5, 5, 1], b -> [2, 4, 3, 5, 1]; then Pearson of the ranks.
    ra, rb = np.array([2, 3.5, 3.5, 5, 1]), np.array([2, 4, 3, 5, 1])
    assert spearman(a, b) == pytest.approx(float(np.corrcoef(ra, rb)[0, 1]))
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, a**3) == pytest.approx(1.0)  # ranks only: any increasing function agrees
    assert spearman(np.zeros(5), a) == 0.0 and spearman(np.ones(4), np.ones(4)) == 1.0


def test_reinitialize_follows_the_models_own_init(small: LoadedModel) -> None:  # noqa: F811
    model = copy.deepcopy(small.model)
    reinitialize(model.layer4, generator=torch.Generator().manual_seed(0))
    bn = model.layer4[0].bn1
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(
        bn.running_var, torch.ones_like(bn.running_var)
    )
    conv = model.layer4[0].conv2.weight  # Kaiming normal, fan_out: std = sqrt(2 / (out * k * k))
    assert float(conv.std()) == pytest.approx((2 / (conv.shape[0] * 9)) ** 0.5, rel=0.1)
    assert torch.equal(model.layer3[0].conv1.weight, small.model.layer3[0].conv1.weight)  # only what was asked


def test_randomisation_keeps_the_shared_model_and_changes_the_map(small: LoadedModel) -> None:  # noqa: F811
    before = {k: v.clone() for k, v in small.model.state_dict().items()}
    analysis = analyze(image=CAT, model=small)
    seen: list[float] = []
    check = randomization_check(analysis, stage="layer4", progress=seen.append)
    after = small.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical
    assert seen == [(i + 1) / len(SANITY_STEPS) for i in range(len(SANITY_STEPS))]
    assert [s.name for s in check.steps] == list(SANITY_STEPS)
    assert check.steps[1].randomized == ("fc", "layer4")

    # Recomputing with the same weights (a private copy, not randomised) reproduces the map...
    same = analyze(image=analysis.prepared, model=dataclasses.replace(small, model=copy.deepcopy(small.model)))
    reference = spearman(check.original, same.attribution(stage="layer4", target=check.target).heatmap)
    assert reference > 0.99
    # ...while random fc weights give the class another direction in layer4's features.
    assert check.steps[0].correlation < reference - 0.3
    assert check.passed == (check.steps[verdict_step(check.stage)].correlation < THRESHOLD)
    assert check.verdict == (
        "the map depends on the learned weights"
        if check.passed
        else "the map does not depend on the learned weights: treat it as an edge detector"
    )
    assert randomization_check(analysis, stage="layer4") is check  # cached per analysis
    assert check.steps[0].heatmap.shape == analysis.crop.size[::-1]


def test_an_empty_map_has_nothing_to_check(small: LoadedModel) -> None:  # noqa: F811
    model = copy.deepcopy(small.model)
    with torch.no_grad():
        model.fc.weight.neg_().abs_().neg_()  # every weight negative: no class has positive evidence at layer4
    analysis = analyze(image=CAT, model=dataclasses.replace(small, model=model))
    with pytest.raises(UserError, match="no positive evidence"):
        randomization_check(analysis, stage="layer4")


def test_the_verdict_waits_until_the_maps_own_stage_is_random() -> None:
    assert SANITY_STEPS[verdict_step("layer4")] == "layer4"  # fc and layer4 random
    assert SANITY_STEPS[verdict_step("layer2")] == "layer2"
    assert verdict_step("stem") == verdict_step("input") == len(SANITY_STEPS) - 1


# ----------------------------------------------------------------------------- the verdict, pinned both ways


def _edges(call: MethodCall) -> dict[str, torch.Tensor]:
    """A map that reads the photo alone: the gradient magnitude of its grey levels. No weight touches it."""
    grey = call.tensor.float().mean(dim=1, keepdim=True)  # (1, 1, H, W)
    dx = torch.nn.functional.pad((grey[..., :, 1:] - grey[..., :, :-1]).abs(), (0, 1, 0, 0))
    dy = torch.nn.functional.pad((grey[..., 1:, :] - grey[..., :-1, :]).abs(), (0, 0, 0, 1))
    return {"input": (dx + dy).expand(-1, 3, -1, -1)}  # (1, 3, H, W), as the pixel methods give


@pytest.fixture
def edge_method() -> Iterator[str]:
    entry = Method(
        name="test-edges", label="Edges (test)", space="input", cost=lambda _stage, _opts: 0.0,
        compute=_edges, finish=finish_pixel_map, class_specific=False,
    )  # fmt: skip
    register(entry)
    try:
        yield entry.name
    finally:
        unregister(entry.name)


def test_the_threshold_is_half_the_ranking() -> None:
    assert THRESHOLD == 0.5


def test_an_edge_detector_gets_the_failing_verdict(small: LoadedModel, edge_method: str) -> None:  # noqa: F811
    analysis = analyze(image=CAT, model=small)
    check = randomization_check(analysis, method=edge_method, stage="input")
    assert [s.correlation for s in check.steps] == pytest.approx([1.0] * len(SANITY_STEPS))
    assert not check.passed
    assert check.verdict == "the map does not depend on the learned weights: treat it as an edge detector"


def test_the_models_gradcam_gets_the_passing_verdict_at_its_known_correlation(small: LoadedModel) -> None:  # noqa: F811
    analysis = analyze(image=CAT, model=small)
    check = randomization_check(analysis, stage="layer4", seed=0)
    # The same cascade by hand: fc then layer4 re-initialised from one generator seeded 0, the map
    # recomputed, Spearman against the original. The package must find this very number.
    private = copy.deepcopy(small.model)
    generator = torch.Generator().manual_seed(0)
    for name in ("fc", "layer4"):
        reinitialize(getattr(private, name), generator=generator)
    redo = analyze(image=analysis.prepared, model=dataclasses.replace(small, model=private))
    expected = spearman(check.original, redo.attribution(stage="layer4", target=check.target).heatmap)
    assert check.steps[verdict_step("layer4")].correlation == pytest.approx(expected, abs=1e-6)
    assert expected < THRESHOLD  # on this model and photo: what the verdict below rests on
    assert check.passed
    assert check.verdict == "the map depends on the learned weights"
