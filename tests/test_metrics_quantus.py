"""The metric cards against Quantus 0.6, the metrics library, on the same model, photo, map and seed:
sparseness, complexity, the pointing game, attribution localisation (energy pointing), max-sensitivity,
the random-logit test and ROAD's imputation and removal curve."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from resnet_demo.core.weights import LoadedModel
from resnet_demo.explain import analyze
from resnet_demo.explain.map_statistics import complexity, sparseness
from resnet_demo.explain.pointing import energy_pointing, pointing
from resnet_demo.explain.road import impute
from resnet_demo.explain.sensitivity import maps_for_inputs, max_sensitivity, random_logit

from .conftest import EXAMPLES
from .test_explain import small  # noqa: F401  (the fixture)

quantus = pytest.importorskip("quantus")
warnings.filterwarnings("ignore", module="quantus")

CAT = EXAMPLES / "cat.jpg"
REL = 0.02  # our values against Quantus's: within 2%


@pytest.fixture(scope="module")
def cat(small: LoadedModel):  # noqa: F811
    return analyze(image=CAT, model=small)


def _maps(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    smooth = np.outer(np.hanning(32), np.hanning(32)) ** 3
    return [rng.random((32, 32)), smooth, np.where(rng.random((32, 32)) > 0.9, rng.random((32, 32)), 0.0)]


def test_sparseness_and_complexity_equal_quantus() -> None:
    for heat in _maps(0):
        x = np.zeros((1, 3, 32, 32), np.float32)  # read for its shape only
        a = heat[None, None].astype(np.float32)
        q_sparse = quantus.Sparseness(disable_warnings=True)(
            model=None, x_batch=x, y_batch=np.zeros(1, int), a_batch=a.copy()
        )[0]
        q_complex = quantus.Complexity(disable_warnings=True)(
            model=None, x_batch=x, y_batch=np.zeros(1, int), a_batch=a.copy()
        )[0]
        assert sparseness(heat) == pytest.approx(q_sparse, rel=REL, abs=1e-6)
        assert complexity(heat) == pytest.approx(q_complex, rel=REL)


def test_pointing_and_energy_equal_quantus() -> None:
    rng = np.random.default_rng(1)
    for heat in _maps(2):
        mask = np.zeros((32, 32), bool)
        x0, y0 = rng.integers(0, 16, 2)
        mask[y0 : y0 + 12, x0 : x0 + 14] = True
        for m in (mask, ~mask):
            x = np.zeros((1, 3, 32, 32), np.float32)
            a, s = heat[None, None].astype(np.float32), m[None, None].astype(np.float32)
            kw = dict(model=None, x_batch=x, y_batch=np.zeros(1, int), a_batch=a.copy(), s_batch=s)
            assert pointing(heat, m) == quantus.PointingGame(disable_warnings=True)(**kw)[0]
            q_energy = quantus.AttributionLocalisation(disable_warnings=True)(**kw)[0]
            assert energy_pointing(heat, m) == pytest.approx(q_energy, rel=REL, abs=1e-6)


def _explain(analysis, stage: str):
    """Quantus's explain_func: our engine's map of each input, (B, 1, H, W)."""

    def explain(model, inputs, targets, **kwargs) -> np.ndarray:
        images = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
        maps = [
            maps_for_inputs(analysis, images[i : i + 1], method="gradcam", stage=stage, target=int(t))[0]
            for i, t in enumerate(np.atleast_1d(targets))
        ]
        return np.stack(maps)[:, None]

    return explain


def test_max_sensitivity_equals_quantus(cat) -> None:
    att = cat.attribution(stage="layer3", method="gradcam")
    x = cat.prepared.tensor.numpy()
    n, radius, seed = 5, 0.05, 7
    ours = max_sensitivity(cat, attribution=att, n=n, radius=radius, seed=seed)
    np.random.seed(seed)  # Quantus draws its noise from numpy's global generator
    theirs = quantus.MaxSensitivity(nr_samples=n, lower_bound=radius * float(x.max() - x.min()), disable_warnings=True)(
        model=cat.model,
        x_batch=x,
        y_batch=np.array([att.target]),
        a_batch=att.heatmap[None, None].copy(),
        explain_func=_explain(cat, "layer3"),
        device="cpu",
    )[0]
    assert ours > 0.01  # the map moves: a real comparison
    assert ours == pytest.approx(theirs, rel=REL)


@pytest.mark.parametrize("seed", [2, 5])  # classes whose map has evidence (Quantus refuses an all-zero map)
def test_random_logit_equals_quantus(cat, seed: int) -> None:
    att = cat.attribution(stage="layer3", method="gradcam")
    ours, other = random_logit(cat, attribution=att, seed=seed, kind="ssim")
    shape = att.heatmap.shape

    def ssim_2d(a: np.ndarray, b: np.ndarray, batched: bool = False, **kwargs) -> list[float]:
        # Quantus flattens the maps before comparing them (1-D windows); SSIM compares images: 2-D again.
        return quantus.similarity_func.ssim(a.reshape(-1, *shape), b.reshape(-1, *shape), batched=True)

    theirs = quantus.RandomLogit(
        num_classes=len(cat.categories), seed=seed, similarity_func=ssim_2d, disable_warnings=True
    )(
        model=cat.model,
        x_batch=cat.prepared.tensor.numpy(),
        y_batch=np.array([att.target]),
        a_batch=att.heatmap[None, None].copy(),
        explain_func=_explain(cat, "layer3"),
        device="cpu",
    )[0]
    assert other != att.target
    assert ours == pytest.approx(theirs, rel=REL, abs=1e-4)


class _Bright(nn.Module):
    """One channel (Quantus 0.6's ROAD indexes the map per channel, so it runs on one channel only):
    class 0 when the square (4:12, 4:12) is brighter than 0.6 on average, else class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x[:, 0, 4:12, 4:12].mean(dim=(1, 2))
        return torch.stack([10 * (s - 0.6), torch.zeros_like(s)], dim=1)


def test_road_imputation_and_curve_equal_quantus() -> None:
    model = _Bright().eval()
    g = np.random.default_rng(3)
    x = (g.random((1, 1, 20, 20)) * 0.3).astype(np.float32)
    x[..., 4:12, 4:12] += 0.7
    heat = (g.random((20, 20)) * 0.5).astype(np.float32)
    heat[4:12, 4:12] += 0.5  # the square first
    order = np.argsort(-heat.ravel())
    # The imputation itself, on the same removed pixels (Quantus's noise is numpy's; none here).
    for k in (40, 200, 360):
        theirs = quantus.functions.perturb_func.noisy_linear_imputation(arr=x[0], indices=order[:k], noise=0.0)
        keep = np.ones(400, bool)
        keep[order[:k]] = False
        ours = impute(torch.from_numpy(x[0]), keep.reshape(20, 20), noise=0.0).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    # Quantus's ROAD curve (still right after removing the top p%), from our imputation.
    percentages = list(range(10, 100, 10))
    y = model(torch.from_numpy(x)).argmax(1).numpy()
    theirs = quantus.ROAD(percentages=percentages, noise=0.0, disable_warnings=True)(
        model=model, x_batch=x, y_batch=y, a_batch=heat[None, None].copy(), device="cpu"
    )
    ours = {}
    for p in percentages:
        keep = np.ones(400, bool)
        keep[order[: int(400 * p / 100)]] = False
        filled = impute(torch.from_numpy(x[0]), keep.reshape(20, 20), noise=0.0)
        ours[p] = int(model(filled[None]).argmax(1).item() == y[0])
    assert ours == {p: int(v) for p, v in theirs.items()}
    assert 0 < sum(ours.values()) < len(percentages)  # the curve changes: a real comparison
