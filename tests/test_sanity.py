"""The cascading randomisation check: the shared model is untouched, randomising fc changes
the layer4 map, Spearman's correlation is right, and the result is cached."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from resnet_demo.core.errors import UserError
from resnet_demo.core.weights import LoadedModel
from resnet_demo.explain import analyze
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
