"""SmoothGrad against captum's NoiseTunnel(Saliency) with the same noise; RISE on a model whose
score is known; both through the registry (progress, seeds, contrast, cancellation, bad options)."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from captum.attr import NoiseTunnel, Saliency
from torch import nn

from resnet_demo.core.cancel import Cancelled, cancel_scope
from resnet_demo.core.errors import UserError
from resnet_demo.core.weights import LoadedModel
from resnet_demo.explain import Analysis, analyze, method_cost, prepare
from resnet_demo.explain.rise import rise_saliency
from resnet_demo.explain.smoothgrad import SMOOTHGRAD_BATCH

from .conftest import EXAMPLES
from .test_explain import small_model

CAT = EXAMPLES / "cat.jpg"
SIZE = 64


@pytest.fixture(scope="module")
def small() -> LoadedModel:
    """One bottleneck per stage, 10 classes, random BN statistics, 64 px."""
    return small_model(crop=SIZE)


@pytest.fixture(scope="module")
def analysis(small: LoadedModel) -> Analysis:
    return analyze(image=CAT, model=small)


def _pearson(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    return float(np.corrcoef(np.ravel(np.asarray(a)), np.ravel(np.asarray(b)))[0, 1])


class _Contrast(nn.Module):
    """The unfolded model as captum sees it for a contrastive map: one column, logit(a) - logit(b)."""

    def __init__(self, model: nn.Module, a: int, b: int) -> None:
        super().__init__()
        self.model, self.a, self.b = model, a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return (logits[:, self.a] - logits[:, self.b])[:, None]


# --------------------------------------------------------------------------- SmoothGrad


def test_smoothgrad_equals_captum_noise_tunnel_saliency_with_the_same_noise(small: LoadedModel, analysis: Analysis):
    x = prepare(image=CAT, preprocessing=small.spec.preprocessing).tensor  # (1, 3, 64, 64)
    twin = copy.deepcopy(small.model)  # unfolded, out of place: captum's own forward and backward
    target, other = analysis.predictions[0].index, analysis.predictions[2].index
    samples, seed, pct = 10, 3, 20  # 10 = a full batch of 8 and the rest: the order in which the noise is drawn
    sigma = pct / 100 * float(x.max() - x.min())
    for versus in (None, other):
        ours = analysis.attribution(
            method="smoothgrad", target=target, versus=versus, smoothgrad_samples=samples, seed=seed,
            smoothgrad_sigma_pct=pct,
        ).raw  # fmt: skip
        forward, captum_target = (twin, target) if versus is None else (_Contrast(twin, target, versus), 0)
        torch.manual_seed(seed)  # captum draws its noise from torch's global generator, a batch at a time
        theirs = NoiseTunnel(Saliency(forward)).attribute(
            x.clone(), nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=SMOOTHGRAD_BATCH,
            stdevs=sigma, target=captum_target, abs=False,
        )[0]  # fmt: skip
        assert ours.shape == (3, SIZE, SIZE)
        assert _pearson(ours, theirs) >= 0.999, versus
        assert np.allclose(ours, theirs.numpy(), rtol=1e-3, atol=1e-4 * float(theirs.abs().max())), versus


def test_smoothgrad_is_seeded_batched_and_reports_progress(analysis: Analysis):
    seen: list[float] = []
    first = analysis.fresh().attribution(method="smoothgrad", smoothgrad_samples=10, progress=seen.append)
    again = analysis.fresh().attribution(method="smoothgrad", smoothgrad_samples=10)
    other = analysis.fresh().attribution(method="smoothgrad", smoothgrad_samples=10, seed=1)
    assert seen == pytest.approx([8 / 10, 1.0])  # one report per batch of 8, then the rest
    assert np.array_equal(first.raw, again.raw)
    assert not np.allclose(first.raw, other.raw)
    assert first.heatmap.shape == (SIZE, SIZE) and first.heatmap.min() >= 0.0 and first.heatmap.max() <= 1.0
    assert method_cost(method="smoothgrad", arch="resnet50", smoothgrad_samples=50) == pytest.approx(
        2 * method_cost(method="smoothgrad", arch="resnet50")
    )


# --------------------------------------------------------------------------- RISE


def _square_score(top: int, bottom: int, left: int, right: int):
    """A hand-made model: its score is the mean of the first colour over a known square."""
    return lambda batch: batch[:, 0, top:bottom, left:right].mean(dim=(1, 2))


def _mass_on(saliency: torch.Tensor, square: tuple[int, int, int, int]) -> float:
    top, bottom, left, right = square
    positive = saliency.clamp(min=0)
    return float(positive[top:bottom, left:right].sum() / positive.sum())


def test_rise_puts_its_mass_on_the_square_that_makes_the_score():
    # The masks are smooth over a cell (bilinear), so a square's map spills about a cell around it:
    # the square is large against the cells here (80 px of 96, cells of 6 px), yet 69 % of the area only.
    image = torch.ones(1, 3, 96, 96)
    square = (8, 88, 8, 88)
    saliency = rise_saliency(forward=_square_score(*square), image=image, masks=2000, grid=16, seed=0)
    assert saliency.shape == (96, 96)
    assert _mass_on(saliency, square) >= 0.90
    # With the paper's 7 x 7 grid, a small square off the centre: the map peaks on it.
    small = (16, 40, 56, 80)
    saliency = rise_saliency(forward=_square_score(*small), image=image, masks=1000, seed=0)
    peak = np.unravel_index(int(saliency.argmax()), saliency.shape)
    assert small[0] <= peak[0] < small[1] and small[2] <= peak[1] < small[3]
    assert _mass_on(saliency, small) >= 3 * (24 * 24) / (96 * 96)  # three times a uniform map's share


def test_rise_through_the_registry_is_seeded_batched_and_contrastive(analysis: Analysis):
    seen: list[float] = []
    top, other = analysis.predictions[0].index, analysis.predictions[1].index
    first = analysis.fresh().attribution(method="rise", rise_masks=50, progress=seen.append)
    again = analysis.fresh().attribution(method="rise", rise_masks=50)
    reseeded = analysis.fresh().attribution(method="rise", rise_masks=50, seed=5)
    versus = analysis.fresh().attribution(method="rise", rise_masks=50, versus=other)
    assert seen == pytest.approx([32 / 50, 1.0])  # 32 masked copies of 64 px per forward
    assert first.raw.shape == (SIZE, SIZE) and first.stage == "input" and first.target == top
    assert np.array_equal(first.raw, again.raw)
    assert not np.allclose(first.raw, reseeded.raw)
    assert versus.versus == other and not np.allclose(versus.raw, first.raw)
    assert method_cost(method="rise", arch="resnet50", rise_masks=600) == pytest.approx(
        2 * method_cost(method="rise", arch="resnet50", rise_masks=300)
    )


def test_rise_stops_when_cancelled(analysis: Analysis):
    stop = threading.Event()
    stop.set()
    seen: list[float] = []
    with cancel_scope(stop), pytest.raises(Cancelled):
        analysis.fresh().attribution(method="rise", rise_masks=100, progress=seen.append)
    assert seen == []  # stopped in the first batch's forward


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("method", "options", "words"),
    [
        ("smoothgrad", {"smoothgrad_samples": 0}, "SmoothGrad takes 1 to 200 noisy samples, not 0."),
        ("smoothgrad", {"smoothgrad_samples": 201}, "SmoothGrad takes 1 to 200 noisy samples, not 201."),
        ("smoothgrad", {"smoothgrad_sigma_pct": 0}, "SmoothGrad takes 1 to 100 percent of noise, not 0."),
        ("rise", {"rise_masks": 49}, "RISE takes 50 to 4000 masks, not 49."),
        ("rise", {"rise_masks": 4001}, "RISE takes 50 to 4000 masks, not 4001."),
        ("rise", {"rise_grid": 1}, "RISE takes 2 to 32 grid cells per side, not 1."),
    ],
)
def test_bad_options_are_one_sentence_before_any_work(analysis: Analysis, method: str, options: dict, words: str):
    seen: list[float] = []
    with pytest.raises(UserError) as raised:
        analysis.fresh().attribution(method=method, progress=seen.append, **options)
    assert str(raised.value) == words
    assert seen == []
    with pytest.raises(UserError, match="^" + words.replace(".", r"\.") + "$"):
        method_cost(method=method, arch="resnet50", **options)  # the app refuses it before starting
