"""The metric cards: hand-made cases with known answers, pytorch-grad-cam's ROAD as the reference,
the cards on an analysis (cached, with a random map's value), and every bad input as one sentence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.road import (
    NoisyLinearImputer,
    ROADCombined,
    ROADLeastRelevantFirstAverage,
    ROADMostRelevantFirstAverage,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

from resnet_demo.core.errors import UserError
from resnet_demo.core.weights import LoadedModel, Preprocessing
from resnet_demo.explain import analyze
from resnet_demo.explain.confidence import confidence
from resnet_demo.explain.map_statistics import complexity, sparseness
from resnet_demo.explain.metric_cards import METRICS, Settings, card_forwards, metric_cards, parse_metrics
from resnet_demo.explain.pointing import box_mask, energy_pointing, parse_box, photo_mask, pointing
from resnet_demo.explain.road import PERCENTILES, impute, road, road_keep_masks

from .conftest import EXAMPLES
from .test_explain import small  # noqa: F401  (the fixture)
from .test_faithfulness import SIDE, SQUARE, TOP, SquareModel

CAT = EXAMPLES / "cat.jpg"  # 451 x 300


def _square_mask() -> np.ndarray:
    mask = np.zeros((SIDE, SIDE), dtype=bool)
    mask[TOP : TOP + SQUARE, TOP : TOP + SQUARE] = True
    return mask


# ----------------------------------------------------------------------------- known answers


def test_a_map_that_is_the_object_scores_pointing_and_energy_one() -> None:
    mask = _square_mask()
    assert pointing(mask.astype(np.float32), mask) == 1.0
    assert energy_pointing(mask.astype(np.float32), mask) == 1.0
    outside = (~mask).astype(np.float32)
    assert pointing(outside, mask) == 0.0 and energy_pointing(outside, mask) == 0.0
    half = np.where(mask, 1.0, 1.0 / 3.0)  # the square holds 64 of 64 + 192 / 3 = 128 units
    assert energy_pointing(half, mask) == pytest.approx(0.5)


def test_uniform_map_has_sparseness_zero_and_maximal_entropy() -> None:
    uniform = np.full((SIDE, SIDE), 0.3, np.float32)
    assert sparseness(uniform) == pytest.approx(0.0, abs=1e-9)
    assert complexity(uniform) == pytest.approx(np.log(SIDE * SIDE))
    one = np.zeros((SIDE, SIDE), np.float32)
    one[3, 5] = 1.0
    assert sparseness(one) > 0.99 and complexity(one) == pytest.approx(0.0, abs=1e-6)
    ramp = np.random.default_rng(0).random((SIDE, SIDE))
    assert 0 < sparseness(ramp) < sparseness(one) and complexity(one) < complexity(ramp) < complexity(uniform)


def test_square_model_gives_the_analytic_drop() -> None:
    """Score = the mean of the square's first channel; the map shows the square at 0.5: the score halves."""
    image = torch.ones(1, 3, SIDE, SIDE)
    heat = np.where(_square_mask(), 0.5, 1.0).astype(np.float32)
    plain = Preprocessing(resize_size=SIDE, crop_size=SIDE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    (result,) = confidence(forward=SquareModel(), image=image, heatmaps=[heat], target=0, preprocessing=plain)
    assert result.photo_score == pytest.approx(1.0) and result.masked_score == pytest.approx(0.5)
    assert result.drop == pytest.approx(50.0) and not result.increase
    (full,) = confidence(
        forward=SquareModel(), image=image, heatmaps=[np.ones_like(heat)], target=0, preprocessing=plain
    )
    assert full.drop == pytest.approx(0.0)


def test_square_model_gives_the_analytic_road() -> None:
    """The photo is the square (ones on zeros) and the map ranks it first. Removing the square (and
    zeros around it) leaves only zeros to impute from, so the score falls to 0: MoRF at p <= 70 (the top
    30% or more removed) is -1. LeRF at p >= 30 removes at most the bottom 70%, zeros outside the square
    that the model does not read: 0."""
    mask = _square_mask()
    image = torch.from_numpy(np.broadcast_to(mask, (1, 3, SIDE, SIDE)).astype(np.float32).copy())
    heat = np.where(mask, 1.0, 0.0) + np.random.default_rng(1).random((SIDE, SIDE)) * 0.1  # the square first
    result = road(forward=SquareModel(), image=image, heatmap=heat, target=0, noise=0.0)
    early = [i for i, p in enumerate(PERCENTILES) if p <= 70]
    late = [i for i, p in enumerate(PERCENTILES) if p >= 30]
    np.testing.assert_allclose(result.morf[early], -1.0, atol=1e-6)
    np.testing.assert_allclose(result.lerf[late], 0.0, atol=1e-6)
    # LeRF at 10% keeps only 26 of the square's ones: everything else is imputed from them, so ones again.
    assert result.lerf[0] == pytest.approx(0.0, abs=1e-6)
    assert result.photo_score == pytest.approx(1.0)
    # The removed share at each percentile p: MoRF the top (100 - p)%, LeRF the bottom (100 - p)%.
    keeps = road_keep_masks(heat)
    removed = (~keeps).reshape(2, len(PERCENTILES), -1).sum(axis=2) / heat.size
    np.testing.assert_allclose(removed[0], 1 - np.array(PERCENTILES) / 100, atol=1 / heat.size + 1e-9)
    np.testing.assert_allclose(removed[1], 1 - np.array(PERCENTILES) / 100, atol=1 / heat.size + 1e-9)
    assert not (~keeps[1, -1] & mask).any() and (~keeps[0, -1] <= mask).all()  # bottom 10% outside, top 10% inside


# ----------------------------------------------------------------------------- pytorch-grad-cam's ROAD


# pytorch-grad-cam hands torch tensors to np.argwhere, which NumPy 2 warns about: the reference's, not ours.
GRAD_CAM_NUMPY = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")


@GRAD_CAM_NUMPY
def test_imputation_is_pytorch_grad_cams() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 20, 24, generator=g)
    keep = np.random.default_rng(0).random((20, 24)) > 0.7
    reference_mask = torch.from_numpy(keep.astype(np.float32))
    torch.testing.assert_close(impute(image, keep, noise=0.0), NoisyLinearImputer(noise=0.0)(image, reference_mask))
    torch.manual_seed(5)  # the reference draws its noise from torch's global generator
    noisy = NoisyLinearImputer()(image, reference_mask)
    torch.testing.assert_close(impute(image, keep, generator=torch.Generator().manual_seed(5)), noisy)
    assert not torch.equal(impute(image, keep, noise=0.0), noisy)  # the noise is there


class _Tiny(nn.Module):
    """A small convolutional classifier: enough spatial structure for ROAD to move."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 8, 5, padding=2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).amax(dim=(2, 3))) * 4


@GRAD_CAM_NUMPY
def test_road_matches_pytorch_grad_cam() -> None:
    model = _Tiny().eval()
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 24, 24, generator=g)
    heat = torch.rand(24, 24, generator=g).numpy()  # no ties: the reference's masks are ours exactly
    target = int(model(image).argmax())
    ours = road(forward=model, image=image, heatmap=heat, target=target, seed=2)
    refs = [ClassifierOutputSoftmaxTarget(target)]
    morf = ROADMostRelevantFirstAverage(list(PERCENTILES))(image, heat[None], refs, model)[0]
    lerf = ROADLeastRelevantFirstAverage(list(PERCENTILES))(image, heat[None], refs, model)[0]
    combined = ROADCombined(list(PERCENTILES))(image, heat[None], refs, model)[0]
    assert abs(ours.morf_area) > 0.01  # the map's pixels matter to this model: a real comparison
    # Both add noise of sd 0.01 (different draws): within 2% of the curve's own size.
    assert ours.morf_area == pytest.approx(morf, rel=0.02, abs=2e-3)
    assert ours.lerf_area == pytest.approx(lerf, rel=0.02, abs=2e-3)
    assert ours.combined == pytest.approx(combined, rel=0.02, abs=2e-3)


# ----------------------------------------------------------------------------- on an analysis


@pytest.fixture(scope="module")
def cat_analysis(small: LoadedModel):  # noqa: F811
    return analyze(image=CAT, model=small)


def test_the_cards_of_a_map(cat_analysis) -> None:
    a = cat_analysis
    att = a.attribution(stage="layer3", method="gradcam")
    mask = box_mask(a.prepared, (100, 50, 300, 250))
    report = metric_cards(a, attribution=att, metrics="all", object_mask=mask, settings=Settings(n=4, steps=4))
    cards = report.to_json()
    assert list(cards) == list(METRICS) and not report.skipped
    for name, c in cards.items():
        assert c["name"] == name and c["description"].endswith(".") and c["better"] in ("higher", "lower")
        assert c["reference"] and c["range"] and c["cost_forwards"] >= 0
        assert set(c) >= {"value", "random_value", "better_than_random", "seconds"}
    assert cards["sparseness"]["value"] == pytest.approx(sparseness(att.heatmap))
    assert cards["pointing"]["random_value"] == pytest.approx(mask.mean())
    assert cards["energy-pointing"]["value"] == pytest.approx(energy_pointing(att.heatmap, mask))
    assert cards["max-sensitivity"]["details"]["n"] == 4 and cards["max-sensitivity"]["value"] > 0
    other = cards["random-logit"]["details"]["other_class"]
    assert other != att.target and 0 <= other < len(a.categories)
    # Asked again: the same records, from the cache.
    again = metric_cards(a, attribution=att, metrics="all", object_mask=mask, settings=Settings(n=4, steps=4))
    assert all(again.cards[n] is report.cards[n] for n in METRICS)
    # Without an object, "all" skips the pointing games and says so.
    rest = metric_cards(a, attribution=att, metrics="all", settings=Settings(n=4, steps=4))
    assert set(rest.skipped) == {"pointing", "energy-pointing"} and "pointing" not in rest.cards


def test_max_sensitivity_recomputes_the_map_per_perturbed_photo(cat_analysis) -> None:
    """The batched maps equal the maps of a fresh analysis of each perturbed photo, one by one."""
    from dataclasses import replace

    from resnet_demo.explain.sensitivity import maps_for_inputs, perturbed_inputs

    a = cat_analysis
    images = perturbed_inputs(a.prepared.tensor, n=3, radius=0.05, seed=0)
    target = a.predictions[0].index
    batched = maps_for_inputs(a, images, method="gradcam", stage="layer3", target=target)
    for image, got in zip(images, batched, strict=True):
        alone = analyze(image=replace(a.prepared, tensor=image[None]), model=a.loaded)
        np.testing.assert_allclose(got, alone.attribution(stage="layer3", target=target).heatmap, atol=1e-4)
    assert not np.allclose(batched[0], batched[1])  # the perturbations differ


def test_segmentation_mask_is_sampled_onto_the_crop(cat_analysis) -> None:
    a = cat_analysis
    w, h = a.image.size
    left = np.zeros((h, w), dtype=bool)
    left[:, : w // 2] = True
    got = photo_mask(a.prepared, left)
    expected = box_mask(a.prepared, (0, 0, w // 2, h))
    np.testing.assert_array_equal(got, expected)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("box", "words"),
    [
        ((300, 50, 100, 250), "inverted"),
        ((100, 50, 100, 250), "no area"),
        ((100, 50, 500, 250), "outside the photo"),
        ((-1, 50, 100, 250), "outside the photo"),
        ((0, 0, 60, 299), "outside the centre crop"),  # left of the crop the model saw
    ],
)
def test_bad_boxes_are_one_sentence(cat_analysis, box: tuple[float, ...], words: str) -> None:
    with pytest.raises(UserError, match=words) as info:
        box_mask(cat_analysis.prepared, box)
    assert str(info.value).count(". ") == 0 and "/" not in str(info.value)


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "1,2,3,nan"])
def test_unreadable_boxes(text: str) -> None:
    with pytest.raises(UserError, match="four numbers"):
        parse_box(text)


def test_bad_metric_choices_compute_nothing(cat_analysis, monkeypatch: pytest.MonkeyPatch) -> None:
    a = cat_analysis
    att = a.attribution(stage="layer4", method="gradcam")
    calls: list[int] = []
    monkeypatch.setattr("resnet_demo.explain.metric_cards.road", lambda **kw: calls.append(1))
    for metrics, settings, words in [
        ("road,bogus", Settings(), "Unknown metric"),
        ("", Settings(), "at least one metric"),
        ("road,pointing", Settings(), "needs the object"),
        ("road", Settings(n=0), "from 1 to 64"),
        ("road", Settings(n=65), "from 1 to 64"),
        ("road", Settings(n=2.5), "whole number"),
        ("road", Settings(similarity="cosine"), "Unknown similarity"),
        ("road", Settings(radius=0.0), "radius"),
    ]:
        with pytest.raises(UserError, match=words):
            metric_cards(a, attribution=att, metrics=metrics, settings=settings)
    assert calls == []


def test_parse_and_price() -> None:
    assert parse_metrics("all") == (list(METRICS), True)
    assert parse_metrics(" insertion, road ") == (["road", "insertion"], False)
    s = Settings(n=10, steps=16)
    assert card_forwards(["deletion", "insertion"], settings=s, map_forwards=0.0) == 62  # shared curves
    assert card_forwards(["max-sensitivity"], settings=s, map_forwards=0.5) == 15
