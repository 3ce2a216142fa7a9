"""Deep Feature Factorization against pytorch-grad-cam's DeepFeatureFactorization (and so scikit-learn's
NMF), the registry's map, the overlay, and bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pytorch_grad_cam import DeepFeatureFactorization
from pytorch_grad_cam.feature_factorization import deep_feature_factorization as gradcam_dff
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import NMF

from resnet_demo.core.errors import UserError
from resnet_demo.core.weights import LoadedModel
from resnet_demo.explain import Analysis, analyze, method_cost, prepare
from resnet_demo.explain.dff import concept_colours, concept_overlay, concepts, factorize

from .conftest import EXAMPLES
from .test_explain import small_model

CAT = EXAMPLES / "cat.jpg"
SIZE = 112  # layer4 is 4x4: 16 positions for 5 concepts
# The reference NMF stops at 200 iterations, converged or not, and says so; ours does the same silently.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def small() -> LoadedModel:
    """One bottleneck per stage, 10 classes, random BN statistics, 112 px."""
    return small_model(crop=SIZE)


@pytest.fixture(scope="module")
def analysis(small: LoadedModel) -> Analysis:
    return analyze(image=CAT, model=small)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _matched(ours: np.ndarray, theirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concepts paired by the Hungarian algorithm on their maps' correlations: (ours, theirs) index arrays."""
    k = len(ours)
    corr = np.array([[_pearson(ours[i], theirs[j]) for j in range(k)] for i in range(k)])
    return linear_sum_assignment(-corr)


@pytest.mark.parametrize(("stage", "k", "seed"), [("layer4", 5, 0), ("layer3", 4, 2), ("stem", 3, 1)])
def test_dff_equals_pytorch_grad_cam(
    small: LoadedModel, analysis: Analysis, stage: str, k: int, seed: int, monkeypatch: pytest.MonkeyPatch
):
    # pytorch-grad-cam always asks scikit-learn's NMF for random_state=0: the same NMF with our seed instead.
    monkeypatch.setattr(gradcam_dff, "NMF", lambda **kwargs: NMF(**{**kwargs, "random_state": seed}))
    twin = copy.deepcopy(small.model)  # unfolded, hooked by pytorch-grad-cam: never the shared model
    layer = twin.maxpool if stage == "stem" else getattr(twin, stage)
    x = prepare(image=CAT, preprocessing=small.spec.preprocessing).tensor
    head = twin.fc if stage == "layer4" else None  # fc takes layer4's channels only
    dff = DeepFeatureFactorization(model=twin, target_layer=layer, computation_on_concepts=head)
    embeddings, maps, *outputs = dff(x, n_components=k)
    dff.activations_and_grads.release()
    result = concepts(analysis=analysis, stage=stage, k=k, seed=seed)
    ours = np.stack([c.heatmap for c in result.concepts])  # (k, 112, 112)
    assert ours.shape == (k, SIZE, SIZE) and ours.min() >= 0 and ours.max() <= 1
    i, j = _matched(ours, maps[0])
    for a, b in zip(i, j, strict=True):
        assert _pearson(ours[a], maps[0][b]) >= 0.99, (stage, a)
        assert _pearson(result.embeddings[a], embeddings[:, b]) >= 0.99, (stage, a)
    if stage == "layer4":  # each concept's top 2 classes: fc on its embedding, softmaxed, as run_dff_on_image
        probs = torch.softmax(torch.from_numpy(outputs[0]), dim=1)
        for a, b in zip(i, j, strict=True):
            top = torch.topk(probs[b], 2)
            assert [p.index for p in result.concepts[a].classes] == top.indices.tolist()
            assert [p.prob for p in result.concepts[a].classes] == pytest.approx(top.values.tolist(), rel=1e-3)
    else:
        assert all(c.classes == () for c in result.concepts)


def test_same_seed_same_concepts_another_seed_other_ones(analysis: Analysis):
    one = concepts(analysis=analysis, stage="layer3", seed=4)
    again = concepts(analysis=analysis, stage="layer3", seed=4)
    other = concepts(analysis=analysis, stage="layer3", seed=5)
    assert all(np.array_equal(a.raw, b.raw) for a, b in zip(one.concepts, again.concepts, strict=True))
    assert not all(np.allclose(a.raw, b.raw) for a, b in zip(one.concepts, other.concepts, strict=True))
    assert 0.0 < one.error < 1.0


def test_the_registry_map_is_the_concept_that_adds_most_to_the_class(analysis: Analysis, small: LoadedModel):
    fc = small.model.fc
    for target, versus in ((analysis.predictions[0].index, None), (analysis.predictions[1].index, 4)):
        result = concepts(analysis=analysis, stage="layer4", target=target, versus=versus)
        # At layer4 the head is linear: a concept adds (its embedding through fc's row, less the channel
        # minima) times its mean weight over the positions.
        weight = fc.weight[target] - (0 if versus is None else fc.weight[versus])
        offset = analysis._acts["layer4"][0].flatten(1).amin(dim=1)
        for c, emb in zip(result.concepts, result.embeddings, strict=True):
            expected = float(weight @ (torch.from_numpy(emb) - offset)) * c.raw.mean()
            assert c.contribution == pytest.approx(expected, rel=1e-3, abs=1e-6)
        best = int(np.argmax([c.contribution for c in result.concepts]))
        assert result.best == best and result.concepts[best].contribution > 0
        shown = analysis.attribution(method="dff", stage="layer4", target=target, versus=versus)
        assert np.array_equal(shown.raw, result.concepts[best].raw)
        assert _pearson(shown.heatmap, result.concepts[best].heatmap) >= 0.999
    at_layer1 = analysis.attribution(method="dff", stage="layer1")
    assert at_layer1.raw.shape == analysis.stage_shapes["layer1"][1:]


def test_the_overlay_paints_each_concept_in_its_colour_with_a_legend(analysis: Analysis):
    result = concepts(analysis=analysis, stage="layer4", k=4)
    image, legend = concept_overlay(result=result, image=analysis.crop, opacity=1.0)
    assert image.size == analysis.crop.size and image.mode == "RGB"
    colours = concept_colours(4)
    assert len(set(colours)) == 4 and [c for c, _ in legend] == colours
    for j, (colour, text) in enumerate(legend):
        top = result.concepts[j].classes[0]
        assert text.startswith(f"concept {j + 1}: {top.label} ")
        y, x = np.unravel_index(int(result.concepts[j].heatmap.argmax()), result.concepts[j].heatmap.shape)
        if all(result.concepts[j].heatmap[y, x] >= c.heatmap[y, x] for c in result.concepts):
            assert np.abs(np.asarray(image)[y, x].astype(int) - colour).max() <= 2, j  # its own colour, full strength
    assert concept_overlay(result=result, image=analysis.crop, opacity=0.0)[0].tobytes() == analysis.crop.tobytes()
    at_layer2 = concepts(analysis=analysis, stage="layer2", k=3)
    assert [t for _, t in concept_overlay(result=at_layer2, image=analysis.crop)[1]] == [
        "concept 1", "concept 2", "concept 3"
    ]  # fmt: skip


@pytest.mark.parametrize("k", [1, 17])
def test_k_out_of_range_is_one_sentence(analysis: Analysis, k: int):
    words = f"DFF takes 2 to 16 concepts, not {k}."
    with pytest.raises(UserError, match="^" + words.replace(".", r"\.") + "$"):
        concepts(analysis=analysis, stage="layer4", k=k)
    with pytest.raises(UserError, match="^" + words.replace(".", r"\.") + "$"):
        analysis.fresh().attribution(method="dff", stage="layer4", dff_concepts=k)
    with pytest.raises(UserError, match="^" + words.replace(".", r"\.") + "$"):
        method_cost(method="dff", arch="resnet50", dff_concepts=k)


def test_a_stage_with_fewer_channels_than_k_is_one_sentence(monkeypatch: pytest.MonkeyPatch):
    from resnet_demo.explain import dff as dff_module

    ran: list[int] = []
    monkeypatch.setattr(dff_module, "nmf", lambda *a, **kw: ran.append(1))  # must not be reached
    with pytest.raises(UserError) as raised:
        factorize(activations=torch.rand(1, 8, 4, 4), k=10)
    assert str(raised.value) == "DFF cannot find 10 concepts in a stage of 8 channels: ask for at most 8."
    assert ran == []
