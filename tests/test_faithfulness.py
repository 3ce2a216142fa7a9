"""Deletion and insertion curves: exact on a model whose answer is known, batched, seeded,
against either baseline, and on an analysis: cached (per baseline), ranked, contrastive."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from resnet_demo.core.errors import UserError
from resnet_demo.core.weights import LoadedModel
from resnet_demo.explain import analyze, get_method, quick_methods
from resnet_demo.explain.baselines import BASELINES, blurred_baseline, make_baseline, mean_baseline
from resnet_demo.explain.faithfulness import Curves, deletion_insertion, faithfulness, rank_methods
from resnet_demo.explain.plots import faithfulness_figure

from .conftest import EXAMPLES
from .test_explain import small  # noqa: F401  (the fixture)

CAT = EXAMPLES / "cat.jpg"
SIDE, TOP, SQUARE = 16, 4, 8  # a 16x16 image; the evidence is the 8x8 square at (4, 4)


class SquareModel(nn.Module):
    """Class 0's probability is the share s of the square showing the image (ones over a zero baseline):
    logits (log s, log(1 - s), ``other``), so softmax over the first two gives s exactly."""

    def __init__(self, other: float = -1e9) -> None:
        super().__init__()
        self.other = other
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        s = x[:, 0, TOP : TOP + SQUARE, TOP : TOP + SQUARE].mean(dim=(1, 2)).clamp(1e-9, 1 - 1e-9)  # (B,)
        return torch.stack([s.log(), (1 - s).log(), torch.full_like(s, self.other)], dim=1)


def _photo() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    image = torch.ones(1, 3, SIDE, SIDE)
    perfect = np.zeros((SIDE, SIDE), np.float32)
    perfect[TOP : TOP + SQUARE, TOP : TOP + SQUARE] = 1.0
    return image, torch.zeros_like(image), perfect


def test_a_perfect_map_gives_the_analytic_curves() -> None:
    image, baseline, perfect = _photo()
    steps = 16
    curves = deletion_insertion(
        forward=SquareModel(), image=image, baseline=baseline, heatmap=perfect, target=0, steps=steps
    )
    n, area = SIDE * SIDE, SQUARE * SQUARE
    k = np.round(np.arange(steps + 1) * n / steps)  # pixels changed at each step
    np.testing.assert_allclose(curves.fractions, k / n)
    # The square's pixels go first: deletion removes the evidence linearly, insertion reveals it.
    np.testing.assert_allclose(curves.deletion, np.clip(1 - k / area, 0, 1), atol=1e-6)
    np.testing.assert_allclose(curves.insertion, np.clip(k / area, 0, 1), atol=1e-6)
    assert curves.deletion_auc == pytest.approx(area / n / 2, abs=1e-6)  # a triangle over the first quarter
    assert curves.insertion_auc == pytest.approx(1 - area / n / 2, abs=1e-6)


def test_the_analytic_curves_hold_with_the_mean_baseline() -> None:
    # The square shows 1 and the rest -1/3 in channel 0, so the channel's mean is 0: the mean
    # baseline is the zero the model reads as "no evidence", and the curves are the analytic ones.
    image, _, perfect = _photo()
    image[:, 0] = torch.where(torch.as_tensor(perfect) > 0, 1.0, -1.0 / 3.0)
    baseline = make_baseline(image, kind="mean")
    assert float(baseline[:, 0].abs().max()) < 1e-6 and torch.allclose(baseline[:, 1:], torch.ones(1, 2, SIDE, SIDE))
    steps = 8
    curves = deletion_insertion(
        forward=SquareModel(), image=image, baseline=baseline, heatmap=perfect, target=0, steps=steps
    )
    k = np.round(np.arange(steps + 1) * SIDE * SIDE / steps)
    np.testing.assert_allclose(curves.deletion, np.clip(1 - k / SQUARE**2, 0, 1), atol=1e-5)
    np.testing.assert_allclose(curves.insertion, np.clip(k / SQUARE**2, 0, 1), atol=1e-5)
    # The blurred baseline keeps some of the square's brightness: the same map scores less against it.
    blurred = deletion_insertion(
        forward=SquareModel(), image=image, baseline=make_baseline(image, kind="blur"), heatmap=perfect, target=0,
        steps=steps,
    )  # fmt: skip
    assert blurred.deletion_auc > curves.deletion_auc + 0.05


def test_a_perfect_map_beats_a_random_one_and_aucs_lie_in_0_1() -> None:
    image, baseline, perfect = _photo()
    noise = np.random.default_rng(3).random((SIDE, SIDE)).astype(np.float32)
    inverted = 1 - perfect  # the worst order: the square last
    got = {
        name: deletion_insertion(forward=SquareModel(), image=image, baseline=baseline, heatmap=m, target=0)
        for name, m in (("perfect", perfect), ("random", noise), ("inverted", inverted))
    }
    for c in got.values():
        assert 0.0 <= c.deletion_auc <= 1.0 and 0.0 <= c.insertion_auc <= 1.0
    assert got["perfect"].score > got["random"].score + 0.4 > got["inverted"].score + 0.8
    assert got["random"].deletion_auc == pytest.approx(0.5, abs=0.1)  # chance: a roughly linear fall


def test_perturbed_images_go_through_the_network_in_batches() -> None:
    image, baseline, perfect = _photo()
    model = SquareModel()
    deletion_insertion(forward=model, image=image, baseline=baseline, heatmap=perfect, target=0, steps=16)
    # The photo and the baseline are shared by both curves: 2 * 16 images, never one forward each.
    assert model.batches == [8, 8, 8, 8]
    model.batches.clear()
    deletion_insertion(forward=model, image=image, baseline=baseline, heatmap=perfect, target=0, steps=4, batch_size=5)
    assert model.batches == [5, 3]


def test_ties_are_broken_by_the_seed() -> None:
    image, baseline, _ = _photo()
    flat = np.zeros((SIDE, SIDE), np.float32)  # all ties: the order is the seeded tie-break alone

    def run(seed: int) -> Curves:
        return deletion_insertion(
            forward=SquareModel(), image=image, baseline=baseline, heatmap=flat, target=0, seed=seed
        )

    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a.deletion, b.deletion)
    assert not np.array_equal(a.deletion, c.deletion)


def test_versus_scores_the_two_way_choice() -> None:
    image, baseline, perfect = _photo()
    model = SquareModel(other=3.0)  # a third class that takes most of the softmax
    plain = deletion_insertion(forward=model, image=image, baseline=baseline, heatmap=perfect, target=0)
    versus = deletion_insertion(forward=model, image=image, baseline=baseline, heatmap=perfect, target=0, versus=1)
    # p(0) / (p(0) + p(1)) is the square's share whatever class 2 does; p(0) alone is not.
    np.testing.assert_allclose(versus.insertion, np.clip(np.round(np.arange(17) * 16) / 64, 0, 1), atol=1e-6)
    assert plain.insertion[-1] < 0.2


def test_bad_steps_are_a_user_error() -> None:
    image, baseline, perfect = _photo()
    for steps in (0, 10_000):
        with pytest.raises(UserError, match="steps"):
            deletion_insertion(
                forward=SquareModel(), image=image, baseline=baseline, heatmap=perfect, target=0, steps=steps
            )


def test_baseline_blurs_the_detail_but_keeps_the_colours() -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 64, 64, generator=g) + torch.tensor([0.0, 1.0, 2.0]).view(1, 3, 1, 1)
    blurred = blurred_baseline(image)
    assert blurred.shape == image.shape
    assert torch.allclose(blurred.mean(dim=(2, 3)), image.mean(dim=(2, 3)), atol=0.02)  # colours kept
    assert float(blurred.std(dim=(2, 3)).max()) < 0.1 * float(image.std(dim=(2, 3)).min())  # detail gone


def test_mean_baseline_is_each_channels_mean_everywhere() -> None:
    g = torch.Generator().manual_seed(2)
    image = torch.randn(1, 3, 24, 40, generator=g) * 2 + torch.tensor([-1.0, 0.5, 3.0]).view(1, 3, 1, 1)
    mean = mean_baseline(image)
    assert mean.shape == image.shape and mean.is_contiguous()
    for ch in range(3):
        assert torch.all(mean[0, ch] == mean[0, ch, 0, 0])  # constant: no spatial evidence left
        assert float(mean[0, ch, 0, 0]) == pytest.approx(float(image[0, ch].mean()), abs=1e-6)
    assert torch.equal(make_baseline(image, kind="mean"), mean)
    assert torch.equal(make_baseline(image, kind="blur"), blurred_baseline(image))
    assert set(BASELINES) == {"blur", "mean"}


def test_an_unknown_baseline_is_a_user_error_naming_the_choices(small: LoadedModel) -> None:  # noqa: F811
    with pytest.raises(UserError, match="Unknown baseline 'grey'; choose one of blur, mean"):
        make_baseline(torch.zeros(1, 3, 8, 8), kind="grey")
    analysis = analyze(image=CAT, model=small)
    with pytest.raises(UserError, match="Unknown baseline"):
        faithfulness(analysis, attribution=analysis.attribution(stage="layer4"), baseline="black")
    with pytest.raises(UserError, match="Unknown baseline"):
        rank_methods(analysis, stage="layer4", baseline="")


# --------------------------------------------------------------------------- on an analysis


def test_faithfulness_of_an_analysis_is_cached_and_shares_the_random_map(small: LoadedModel) -> None:  # noqa: F811
    analysis = analyze(image=CAT, model=small)
    gradcam = analysis.attribution(stage="layer3")
    first = faithfulness(analysis, attribution=gradcam)
    assert faithfulness(analysis, attribution=gradcam).curves is first.curves  # cached
    assert first.method == "gradcam" and first.stage == "layer3" and first.target == gradcam.target
    assert first.curves.deletion.shape == (17,) and first.versus is None
    assert first.curves.deletion[0] == pytest.approx(analysis.prob(gradcam.target), abs=1e-4)  # the photo itself
    for c in (first.curves, first.random):
        assert 0.0 <= c.deletion_auc <= 1.0 and 0.0 <= c.insertion_auc <= 1.0
    other = faithfulness(analysis, attribution=analysis.attribution(stage="layer4"))
    assert other.random is first.random  # one random-map curve per class and steps
    assert other.curves is not first.curves
    fig = faithfulness_figure(first, dark=True)
    assert fig.layout.height == 360 and fig.layout.paper_bgcolor == "rgba(0,0,0,0)"
    assert len(fig.data) == 4 and f"{first.curves.deletion_auc:.3f}" in fig.data[0].name


def test_rank_methods_scores_every_quick_method_of_the_stage(small: LoadedModel) -> None:  # noqa: F811
    analysis = analyze(image=CAT, model=small)
    rows = rank_methods(analysis, stage="layer3")
    expected = {m for m in quick_methods() if get_method(m).stages is None or "layer3" in get_method(m).stages}
    assert {r.method for r in rows} == expected and {"gradcam", "lrp", "crp", "dff"} <= expected
    assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)
    for r in rows:
        assert r.score == pytest.approx(r.insertion_auc - r.deletion_auc)
    # The ranking filled the cache: the same map's curves come back without a forward.
    again = faithfulness(analysis, attribution=analysis.attribution(stage="layer3"))
    assert again.score == pytest.approx(next(r.score for r in rows if r.method == "gradcam"))
    seen: list[float] = []
    contrast = rank_methods(analysis, stage="layer3", target=1, versus=2, steps=4, progress=seen.append)
    assert all(get_method(r.method).class_specific for r in contrast)
    assert seen[-1] == 1.0 and seen == sorted(seen)
    with pytest.raises(UserError):
        rank_methods(analysis, stage="layer9")


def test_each_baseline_has_its_own_curves_and_cache(small: LoadedModel, request: pytest.FixtureRequest) -> None:  # noqa: F811
    analysis = analyze(image=CAT, model=small)
    gradcam = analysis.attribution(stage="layer4")
    blur = faithfulness(analysis, attribution=gradcam, steps=4)
    mean = faithfulness(analysis, attribution=gradcam, steps=4, baseline="mean")
    assert (blur.baseline, mean.baseline) == ("blur", "mean")
    assert blur.curves.deletion[0] == pytest.approx(mean.curves.deletion[0])  # both start from the photo itself
    # ... and end on their own baseline, which the network scores differently.
    assert blur.curves.deletion[-1] != pytest.approx(mean.curves.deletion[-1], abs=1e-6)
    assert not np.allclose(blur.random.insertion, mean.random.insertion)
    forwards: list[int] = []  # batch sizes of the forwards made from here on
    # Counted on the network the curves run (the analysis's model), removed by the fixture's end.
    handle = analysis.model.register_forward_pre_hook(lambda _m, args: forwards.append(args[0].shape[0]))
    request.addfinalizer(handle.remove)
    again_blur = faithfulness(analysis, attribution=gradcam, steps=4)
    again_mean = faithfulness(analysis, attribution=gradcam, steps=4, baseline="mean")
    assert again_blur.curves is blur.curves and again_mean.curves is mean.curves
    assert again_mean.random is mean.random and forwards == []  # both cached: not one forward
    rows = rank_methods(analysis, stage="layer4", steps=4, baseline="mean")
    assert forwards  # the other quick methods' curves were computed, against the mean baseline
    assert next(r.score for r in rows if r.method == "gradcam") == pytest.approx(mean.score)
