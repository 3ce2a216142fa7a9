"""The explanation engine: correctness against independent computations and captum,
one forward per image, no shared mutable state, and the whole path on the example photos."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import itertools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from PIL import Image
from torch import nn

from resnet_demo.core.errors import UserError
from resnet_demo.core.fold import fold_batchnorm
from resnet_demo.core.model import STAGES, ResNet, build_model
from resnet_demo.core.render import overlay
from resnet_demo.core.weights import LoadedModel, Preprocessing, WeightsSpec, shared_model, weights_spec
from resnet_demo.explain import (
    METHODS,
    Analysis,
    Method,
    MethodCall,
    analyze,
    find_class,
    inference_model,
    method_cost,
    overlay_on_full,
    predict,
    prepare,
    register,
    resolve_class,
    unregister,
)
from resnet_demo.explain.captum_methods import finish_pixel_map
from resnet_demo.explain.network import inference_pass, input_of
from resnet_demo.explain.sanity import randomization_check

from .conftest import EXAMPLES, random_state_dict

CAT = EXAMPLES / "cat.jpg"
analyze_module = importlib.import_module("resnet_demo.explain.analyze")  # the package exports a function of that name
PHOTOS = sorted(EXAMPLES.glob("*.jpg"))


def _spec(arch: str, *, classes: int = 1000, crop: int = 64) -> WeightsSpec:
    return WeightsSpec(
        arch=arch,
        name="test",
        label="generated test weights",
        categories=tuple(f"class {i}" for i in range(classes)),
        preprocessing=Preprocessing(resize_size=crop * 232 // 224, crop_size=crop),
        pretrained=True,
    )


def _randomize_bn(model: nn.Module, seed: int) -> None:
    """Random BatchNorm statistics and affines, so folding them is not a no-op."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _frozen(model: ResNet) -> ResNet:
    return model.eval().requires_grad_(False)


def small_model(*, crop: int = 64) -> LoadedModel:
    """A small ResNet (one bottleneck per stage, 10 classes) with random BN statistics (so folding
    is not a no-op), its crop ``crop`` px: the same network for every crop."""
    torch.manual_seed(0)
    model = ResNet((1, 1, 1, 1), num_classes=10)
    _randomize_bn(model, seed=1)
    return LoadedModel(_frozen(model), _spec("small", classes=10, crop=crop))


@pytest.fixture(scope="module")
def small() -> LoadedModel:
    """A small ResNet (one bottleneck per stage, 10 classes) with random BN statistics."""
    return small_model()


@pytest.fixture(scope="module")
def r50() -> LoadedModel:
    """ResNet-50 on generated weights (random BN statistics included), at 64x64 for speed."""
    model = build_model("resnet50")
    model.load_state_dict(random_state_dict("resnet50", seed=0))
    return LoadedModel(_frozen(model), _spec("resnet50"))


def _reference_gradcam(model: ResNet, x: torch.Tensor, target: int) -> dict[str, torch.Tensor]:
    """Grad-CAM written out: a plain forward of the unfolded model, d logit / d A by autograd,
    alpha_k = spatial mean of the gradient, map = ReLU(sum_k alpha_k A_k). Stage -> (h, w)."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        acts = {"stem": model.forward_stem(x)}
        h = acts["stem"]
        for name, layer in model.stages.items():
            h = layer(h)
            acts[name] = h
        logits = model.forward_head(h)
        grads = torch.autograd.grad(logits[0, target], list(acts.values()))
    maps = {}
    for (stage, act), grad in zip(acts.items(), grads, strict=True):
        alpha = grad.mean(dim=(2, 3), keepdim=True)
        maps[stage] = torch.relu((alpha * act).sum(dim=1))[0].detach()
    return maps


def _captum_gradcam(model: ResNet, x: torch.Tensor, stage: str, target: int) -> torch.Tensor:
    """captum's LayerGradCam on the unfolded model (pass a private copy: captum hooks its layer). (h, w)"""
    layer = model.maxpool if stage == "stem" else getattr(model, stage)
    with torch.enable_grad():
        attr = LayerGradCam(model, layer).attribute(x.clone(), target=target, relu_attributions=True)
    return attr[0, 0].detach()


def _tensor(v: np.ndarray | torch.Tensor) -> torch.Tensor:
    return v.detach().double() if isinstance(v, torch.Tensor) else torch.from_numpy(np.array(v)).double()


def _close(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, rel: float = 1e-4) -> bool:
    a, b = _tensor(a), _tensor(b)
    return a.shape == b.shape and float((a - b).abs().max()) <= rel * float(b.abs().max()) + 1e-9


def _hooks(model: nn.Module) -> int:
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return sum(len(getattr(m, n)) for m in model.modules() for n in names)


# --------------------------------------------------------------------------- correctness


def test_folded_copy_matches_the_model(r50: LoadedModel) -> None:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    model = r50.model
    folded = inference_model(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert folded is inference_model(model)  # made once, then shared
    with torch.no_grad():
        ref = model.forward_intermediates(x)
        out = folded.forward_intermediates(x.contiguous(memory_format=torch.channels_last))
    assert _close(out.logits, ref.logits)
    for stage in STAGES:
        assert _close(out.stages[stage], ref.stages[stage]), stage


def test_folding_does_not_touch_the_original(r50: LoadedModel) -> None:
    before = {k: v.clone() for k, v in r50.model.state_dict().items()}
    fold_batchnorm(r50.model)
    after = r50.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_gradcam_equals_independent_computation_and_captum(small: LoadedModel) -> None:
    analysis = analyze(image=CAT, model=small)
    x = prepare(image=CAT, preprocessing=small.spec.preprocessing).tensor
    private = copy.deepcopy(small.model)  # captum's hooks go on this copy
    nonzero = 0
    for target in range(6):
        maps = analysis.attributions(stages=STAGES, target=target)
        reference = _reference_gradcam(small.model, x, target)
        for stage in STAGES:
            nonzero += int(reference[stage].max() > 0)
            assert _close(maps[stage].raw, reference[stage]), (stage, target)
            assert maps[stage].all_zero == bool(reference[stage].max() <= 0)
            if target < 3:
                assert _close(maps[stage].raw, _captum_gradcam(private, x, stage, target)), (stage, target)
    assert nonzero >= 15  # most maps hold positive evidence, or the comparison proves little


def test_gradcam_on_resnet50_equals_captum_at_every_stage(r50: LoadedModel) -> None:
    # Folded network and one shared backward against captum on the plain model, per stage.
    analysis = analyze(image=CAT, model=r50, gradcam_stages=STAGES)
    x = prepare(image=CAT, preprocessing=r50.spec.preprocessing).tensor
    target = analysis.predictions[0].index
    private = copy.deepcopy(r50.model)
    for stage, att in analysis.attributions(stages=STAGES).items():
        assert _close(att.raw, _captum_gradcam(private, x, stage, target), rel=2e-4), stage


def test_layer4_gradcam_is_cam_without_a_backward(r50: LoadedModel) -> None:
    """After layer4 come a global average pool and fc, so Grad-CAM = ReLU(w_c . A) / (H W): CAM."""
    analysis = analyze(image=CAT, model=r50)
    x = prepare(image=CAT, preprocessing=r50.spec.preprocessing).tensor
    with torch.no_grad():
        a4 = r50.model.forward_intermediates(x).stages["layer4"][0]  # (2048, h, w)
    private = copy.deepcopy(r50.model)
    for target in (analysis.predictions[0].index, analysis.predictions[3].index, 999):
        att = analysis.attribution(stage="layer4", target=target)
        cam = torch.relu(torch.einsum("c,chw->hw", r50.model.fc.weight[target], a4))
        h, w = a4.shape[-2:]
        assert _close(att.raw, cam / (h * w))  # proportional to CAM, with factor 1 / (H W)
        assert _close(att.raw, _captum_gradcam(private, x, "layer4", target))


def test_heatmap_is_bilinear_upsampled_and_normalised(small: LoadedModel) -> None:
    analysis = analyze(image=CAT, model=small)
    for stage in ("layer2", "layer4"):
        att = analysis.attribution(stage=stage, target=1)
        raw = torch.from_numpy(np.array(att.raw))[None, None]
        up = LayerAttribution.interpolate(raw, (64, 64), interpolate_mode="bilinear")[0, 0]
        assert np.allclose(att.heatmap, (up / up.max()).numpy(), atol=1e-6)
        assert att.heatmap.dtype == np.float32 and att.heatmap.shape == (64, 64)
        assert att.heatmap.max() == pytest.approx(1.0)


def test_all_negative_evidence_gives_a_flagged_zero_map(small: LoadedModel) -> None:
    model = copy.deepcopy(small.model)
    with torch.no_grad():
        model.fc.weight[4] = -model.fc.weight[4].abs() - 1e-3  # layer4 is post-ReLU: every term <= 0
    analysis = analyze(image=CAT, model=dataclasses.replace(small, model=model))
    att = analysis.attribution(stage="layer4", target=4)
    assert att.all_zero and not np.isnan(att.heatmap).any() and att.heatmap.max() == 0.0
    assert any(not analysis.attribution(stage="layer4", target=t).all_zero for t in range(10))
    assert np.asarray(overlay(image=analysis.crop, heatmap=att.heatmap)).shape == (64, 64, 3)


def _rank(a: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (ReLU'd maps have many zeros)."""
    a = a.ravel()
    order = a.argsort(kind="stable")
    ranks = np.empty(a.size)
    ranks[order] = np.arange(a.size)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if a.max() == a.min() or b.max() == b.min():
        return 0.0  # an all-zero map shares no structure with any map
    return float(np.corrcoef(_rank(a), _rank(b))[0, 1])


@pytest.mark.slow
def test_sanity_check_model_randomization() -> None:
    """Adebayo et al. (2018), through the package's :func:`randomization_check`: re-initialising the
    top of the network (fc, then fc and layer4) must change the layer4 Grad-CAM map.

    ResNet-50 on generated weights at 112 px, two photos, each photo's top 3 classes (one
    class can keep its map by chance; their mean cannot). In an untrained network the lower
    stages' maps follow the activations more than the class, so only the top steps are a
    fair test here; tests/test_sanity.py pins the verdict itself both ways.
    """
    model = build_model("resnet50")
    model.load_state_dict(random_state_dict("resnet50", seed=0))
    spec = _spec("resnet50", crop=112)
    trained = LoadedModel(_frozen(model), spec)
    private = copy.deepcopy(model)  # captum hooks its layer: never on the analysed model

    for photo in (CAT, EXAMPLES / "astronaut.jpg"):
        analysis = analyze(image=photo, model=trained)
        x = prepare(image=photo, preprocessing=spec.preprocessing).tensor
        checks = [randomization_check(analysis, stage="layer4", target=p.index) for p in analysis.top(3)]
        for check in checks:
            # The map the check starts from is the real one: captum's Grad-CAM on the learned weights.
            ref = _captum_gradcam(private, x, "layer4", check.target)[None, None]
            up = LayerAttribution.interpolate(ref, (112, 112), interpolate_mode="bilinear")[0, 0].numpy()
            assert _spearman(check.original, up) > 0.99
            assert [s.randomized for s in check.steps[:2]] == [("fc",), ("fc", "layer4")]
            for step in check.steps[:2]:  # what it reports is the rank correlation of the maps it shows
                assert step.correlation == pytest.approx(_spearman(check.original, step.heatmap), abs=1e-6)
        for i, randomized in enumerate(("fc", "fc and layer4")):
            changed = [c.steps[i].correlation for c in checks]
            assert np.mean(changed) < 0.5, (photo.name, randomized, changed)


# --------------------------------------------------------------------------- one forward


class _Counter:
    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.counts = dict.fromkeys(modules, 0)
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name: str):
        def hook(module, args, output) -> None:
            self.counts[name] += 1

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def test_one_forward_serves_predictions_feature_maps_block_stats_and_layer4(r50: LoadedModel) -> None:
    fast = inference_model(r50.model)
    # Hooks in a test only, and only to count: the engine itself never hooks.
    counter = _Counter(
        {
            "stem": fast.conv1,
            "layer2": fast.layer2[0].conv1,
            "layer3": fast.layer3[0].conv1,
            "layer4": fast.layer4[0].conv1,
        }
    )
    try:
        analysis = analyze(image=CAT, model=r50)
        analysis.predictions, analysis.blocks, analysis.top(20)
        for stage in STAGES:
            analysis.feature_maps(stage)
        analysis.attribution(stage="layer4")
        analysis.attribution(stage="layer4", target=5)
        assert counter.counts == {"stem": 1, "layer2": 1, "layer3": 1, "layer4": 1}
        analysis.attribution(stage="layer3", target=5)  # reruns layer4 only, from the stored layer3
        assert counter.counts == {"stem": 1, "layer2": 1, "layer3": 1, "layer4": 2}
        analysis.attribution(stage="layer2", target=7)  # from the stored layer2 on
        assert counter.counts == {"stem": 1, "layer2": 1, "layer3": 2, "layer4": 3}
        analysis.attribution(stage="layer3", target=7)  # came free with layer2's backward
        assert counter.counts["layer4"] == 3
        one_pass = analyze(image=CAT, model=r50, gradcam_stages=STAGES)
        one_pass.attributions(stages=STAGES)
        assert counter.counts == {"stem": 2, "layer2": 2, "layer3": 3, "layer4": 4}
    finally:
        counter.remove()
    assert _hooks(fast) == 0


def test_one_pass_and_on_demand_gradcam_agree(r50: LoadedModel) -> None:
    lazy = analyze(image=CAT, model=r50).attributions(stages=STAGES)
    eager_analysis = analyze(image=CAT, model=r50, gradcam_stages=STAGES)
    eager = eager_analysis.attributions(stages=STAGES)
    for stage in STAGES:
        assert _close(eager[stage].raw, lazy[stage].raw), stage
    assert eager_analysis.predictions == analyze(image=CAT, model=r50).predictions


def test_a_deferred_backward_runs_once_when_first_needed(r50: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[int] = []
    real = analyze_module.segment_backward

    def counted(*args, **kwargs):
        runs.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(analyze_module, "segment_backward", counted)
    eager = analyze(image=CAT, model=r50, gradcam_stages=STAGES).attributions(stages=STAGES)
    assert len(runs) == 1
    runs.clear()
    deferred = analyze(image=CAT, model=r50, gradcam_stages=STAGES, defer_backward=True)
    deferred.attribution(stage="layer4")  # a closed form: the top-k and layer4's map need no backward
    assert runs == []
    with ThreadPoolExecutor(4) as pool:  # asked by several threads at once: the one graph runs once
        maps = list(pool.map(lambda _: deferred.attributions(stages=STAGES), range(4)))
    assert len(runs) == 1
    for got in maps:
        for stage in STAGES:
            assert _close(got[stage].raw, eager[stage].raw), stage


@pytest.mark.parametrize("gradcam_stages", [(), STAGES], ids=["inference pass", "one pass with Grad-CAM"])
def test_block_stats_from_the_same_forward(r50: LoadedModel, gradcam_stages: tuple[str, ...]) -> None:
    # The reference: the unfolded, out-of-place model, which returns F(x) and the shortcut of every block.
    analysis = analyze(image=CAT, model=r50, gradcam_stages=gradcam_stages)
    x = prepare(image=CAT, preprocessing=r50.spec.preprocessing).tensor
    with torch.no_grad():
        ref = r50.model.forward_intermediates(x, blocks=True)
    assert [b.name for b in analysis.blocks] == [b.name for b in ref.blocks]
    assert len(analysis.blocks) == 16
    for stat, block in zip(analysis.blocks, ref.blocks, strict=True):
        ratio = (block.residual.norm() / block.shortcut.norm()).item()
        assert stat.residual_ratio == pytest.approx(ratio, rel=1e-4)
        assert stat.residual_norm == pytest.approx(block.residual.norm().item(), rel=1e-4)
        assert stat.shortcut_norm == pytest.approx(block.shortcut.norm().item(), rel=1e-4)
        assert stat.mean_activation == pytest.approx(block.output.mean().item(), rel=1e-4)
        assert stat.out_shape == tuple(block.output.shape[1:])
        assert stat.projection == stat.name.endswith(".0")
        assert stat.stage == stat.name.split(".")[0] and stat.index == int(stat.name.split(".")[1])
    # The stage outputs the analysis keeps are the reference's: the same channel means, the same probabilities.
    assert _close(analysis.probabilities(), torch.softmax(ref.logits, dim=1)[0])
    for stage in STAGES:
        grid = analysis.feature_maps(stage, n=8)
        assert _close(grid.means, ref.stages[stage][0].mean(dim=(1, 2))[grid.channels]), stage


def test_engine_pass_equals_the_models_forward(r50: LoadedModel) -> None:
    """The engine's inference pass (folded, in place, channels_last) against the model's own forward."""
    x = prepare(image=CAT, preprocessing=r50.spec.preprocessing).tensor
    with torch.no_grad():
        ref = r50.model.forward_intermediates(x, blocks=True)
    folded = inference_model(r50.model)
    with torch.inference_mode():
        logits, acts, numbers = inference_pass(folded, input_of(folded, x), compile=False)
    assert _close(logits, ref.logits)
    assert list(acts) == list(STAGES)
    for stage in STAGES:
        assert _close(acts[stage], ref.stages[stage]), stage
    expected = [[b.residual.norm(), b.shortcut.norm(), b.output.mean()] for b in ref.blocks]
    assert _close(numbers, torch.tensor(expected))


def test_feature_maps_top_channels_by_mean_activation(r50: LoadedModel) -> None:
    analysis = analyze(image=CAT, model=r50)
    x = prepare(image=CAT, preprocessing=r50.spec.preprocessing).tensor
    with torch.no_grad():
        ref = r50.model.forward_intermediates(x, blocks=True)
    shapes = {
        "stem": (64, 16, 16),
        "layer1": (256, 16, 16),
        "layer2": (512, 8, 8),
        "layer3": (1024, 4, 4),
        "layer4": (2048, 2, 2),
    }
    for stage in STAGES:
        fm = analysis.feature_maps(stage, n=16)
        assert fm.shape == shapes[stage] and len(fm.channels) == 16
        means = ref.stages[stage][0].mean(dim=(1, 2))
        assert fm.channels[0] == int(means.argmax())
        assert fm.means == sorted(fm.means, reverse=True)
        assert fm.image.mode == "RGB" and fm.image.size == (4 * 98 + 2, 4 * 98 + 2)
    block = analysis.feature_maps("layer3.2", n=5, tile=20)
    out = ref.blocks[[b.name for b in ref.blocks].index("layer3.2")].output[0]
    assert block.shape == tuple(out.shape) and block.channels[0] == int(out.mean(dim=(1, 2)).argmax())
    assert block.image.size == (3 * 22 + 2, 2 * 22 + 2)
    for bad in ("layer5", "layer3.9", "stem.0"):
        with pytest.raises(UserError):
            analysis.feature_maps(bad)
    # A channel a user picked (a concept) comes first, then the strongest others, none twice.
    means = ref.stages["layer3"][0].mean(dim=(1, 2))
    weakest = int(means.argmin())
    pinned = analysis.feature_maps("layer3", n=6, first=[weakest, fm_top := int(means.argmax())])
    assert pinned.channels[:2] == [weakest, fm_top] and len(set(pinned.channels)) == 6
    assert pinned.channels[2:] == [i for i in torch.topk(means, 7).indices.tolist() if i != fm_top][:4]
    assert pinned.means[0] == pytest.approx(float(means[weakest]), rel=1e-5)
    with pytest.raises(UserError, match="channels 0 to 1023"):
        analysis.feature_maps("layer3", first=[1024])


# --------------------------------------------------------------------------- other methods


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
def test_guided_gradcam_ig_occlusion(r50: LoadedModel) -> None:
    analysis = analyze(image=CAT, model=r50)
    fast = inference_model(r50.model)
    results = {
        "guided-gradcam": analysis.attribution(method="guided-gradcam", stage="layer3"),
        "ig": analysis.attribution(method="ig", ig_steps=4),
        "ig+nt": analysis.attribution(method="ig", ig_steps=2, noise_tunnel_samples=2),
        "occlusion": analysis.attribution(method="occlusion", stage="layer1"),
    }
    for name, att in results.items():
        assert att.heatmap.shape == (64, 64) and att.heatmap.dtype == np.float32, name
        assert np.isfinite(att.heatmap).all() and att.heatmap.min() >= 0.0 and att.heatmap.max() <= 1.0, name
        assert not att.all_zero and att.seconds > 0, name
        assert att.target == analysis.predictions[0].index
    assert results["guided-gradcam"].stage == "layer3" and results["guided-gradcam"].raw.shape == (3, 64, 64)
    assert results["ig"].stage == "input" and results["ig"].raw.shape == (3, 64, 64)
    assert results["occlusion"].stage == "input" and results["occlusion"].raw.shape == (64, 64)
    assert not np.array_equal(results["ig"].raw, results["ig+nt"].raw)
    # Guided backprop hooked a per-call shell, never the shared networks.
    assert _hooks(r50.model) == 0 and _hooks(fast) == 0
    assert not nn.modules.module._global_forward_hooks and not nn.modules.module._global_backward_hooks
    assert not any(p.requires_grad for p in itertools.chain(r50.model.parameters(), fast.parameters()))


def test_method_cost_orders_the_methods() -> None:
    costs = {m: method_cost(method=m, arch="resnet50") for m in METHODS}
    assert all(c > 0 for c in costs.values())
    assert method_cost(method="gradcam", arch="resnet50", stage="layer4") < costs["gradcam"]
    assert costs["gradcam"] < costs["guided-gradcam"] < costs["occlusion"] < costs["ig"]
    assert method_cost(method="ig", arch="resnet152") > costs["ig"]
    assert method_cost(method="ig", arch="resnet50", noise_tunnel_samples=4) == pytest.approx(4 * costs["ig"])


def _saliency(call: MethodCall) -> dict[str, torch.Tensor]:
    """Gradient x input: a method small enough to write in a test."""
    x = call.image.clone().requires_grad_(True)
    with torch.enable_grad():
        score = call.model(x)[0, call.target] * call.options["scale"]
        (grad,) = torch.autograd.grad(score, [x])
    return {"input": (grad * x).detach()}


def test_a_new_method_is_one_registry_entry(r50: LoadedModel) -> None:
    entry = Method(
        name="saliency",
        label="Gradient x input",
        space="input",
        cost=lambda stage, options: 2.0,  # a forward and a backward
        compute=_saliency,
        finish=finish_pixel_map,
        options={"scale": 1},
    )
    register(entry)
    try:
        assert METHODS["saliency"] == "Gradient x input" and list(METHODS)[-1] == "saliency"
        with pytest.raises(ValueError):
            register(entry)
        analysis = analyze(image=CAT, model=r50)
        att = analysis.attribution(method="saliency", stage="layer2")
        assert att.stage == "input" and att.method == "saliency" and att.raw.shape == (3, 64, 64)
        assert att.heatmap.shape == (64, 64) and att.heatmap.min() >= 0 and att.heatmap.max() <= 1 and not att.all_zero
        assert analysis.attribution(method="saliency") is att  # cached
        # The entry's options key the cache; another method's options are ignored.
        assert analysis.attribution(method="saliency", scale=2) is not att
        assert analysis.attribution(method="saliency", ig_steps=3) is att
        with pytest.raises(TypeError, match="sigma"):
            analysis.attribution(method="saliency", sigma=2)
        assert method_cost(method="saliency", arch="resnet50") == pytest.approx(
            2.0 / 36.0 * method_cost(method="occlusion", arch="resnet50")
        )
    finally:
        unregister("saliency")
    assert "saliency" not in METHODS
    with pytest.raises(UserError, match="method"):
        method_cost(method="saliency", arch="resnet50")


def test_fresh_copy_recomputes_its_maps(r50: LoadedModel) -> None:
    analysis = analyze(image=CAT, model=r50, gradcam_stages=("layer3",))
    first = analysis.attribution(stage="layer3")
    copy_ = analysis.fresh()
    again = copy_.attribution(stage="layer3")
    assert again is not first and np.array_equal(again.heatmap, first.heatmap)
    assert copy_.attribution(stage="layer3") is again and analysis.attribution(stage="layer3") is first
    assert copy_.predictions == analysis.predictions and copy_.timings == analysis.timings


# --------------------------------------------------------------------------- sharing


def test_concurrent_calls_equal_sequential_calls(r50: LoadedModel) -> None:
    shared = analyze(image=CAT, model=r50)

    def job(i: int):
        kind, arg = i % 3, i // 3
        if kind == 0:  # a whole analysis of another photo
            a = analyze(image=PHOTOS[arg % len(PHOTOS)], model=r50)
            return [(p.index, p.prob) for p in a.predictions], [b.residual_ratio for b in a.blocks]
        if kind == 1:  # Grad-CAM maps of one shared analysis, several classes
            maps = shared.attributions(stages=STAGES, target=arg)
            return {s: m.heatmap for s, m in maps.items()}
        return shared.feature_maps(STAGES[arg % 5]).channels

    def fresh(i: int):
        # The same work on a private analysis: no cache can make the answers equal.
        return (
            job(i)
            if i % 3 != 1
            else {
                s: m.heatmap
                for s, m in analyze(image=CAT, model=r50).attributions(stages=STAGES, target=i // 3).items()
            }
        )

    jobs = list(range(12))
    sequential = [fresh(i) for i in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(job, jobs))
    for i, (a, b) in enumerate(zip(sequential, concurrent, strict=True)):
        if isinstance(a, dict):
            assert all(np.array_equal(a[s], b[s]) for s in STAGES), i
        else:
            assert a == b, i


def test_analysis_is_read_only(r50: LoadedModel) -> None:
    analysis = analyze(image=CAT, model=r50)
    analysis.predictions.clear()
    analysis.blocks.clear()
    analysis.timings.clear()
    assert len(analysis.predictions) == 5 and len(analysis.blocks) == 16 and "forward" in analysis.timings
    assert copy.deepcopy(analysis) is analysis
    att = analysis.attribution()
    with pytest.raises(ValueError):
        att.heatmap[0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        att.target = 3  # type: ignore[misc]


def test_bad_requests_are_user_errors(r50: LoadedModel) -> None:
    analysis = analyze(image=CAT, model=r50)
    with pytest.raises(UserError, match="stage"):
        analysis.attribution(stage="layer9")
    with pytest.raises(UserError, match="method"):
        analysis.attribution(method="lime")
    with pytest.raises(UserError, match="0 to 999"):
        analysis.attribution(target=1000)
    with pytest.raises(UserError, match="not an image"):
        analyze(image=b"nope", model=r50)


# --------------------------------------------------------------------------- example photos


def test_whole_path_on_the_example_photos(fake_pretrained) -> None:
    fake_pretrained("resnet50", "imagenet-v2")
    loaded = shared_model(arch="resnet50", weights="imagenet-v2")
    assert not loaded.untrained
    shapes = {
        "stem": (64, 56, 56),
        "layer1": (256, 56, 56),
        "layer2": (512, 28, 28),
        "layer3": (1024, 14, 14),
        "layer4": (2048, 7, 7),
    }
    for photo in PHOTOS:
        analysis = analyze(image=photo, model=loaded, gradcam_stages=STAGES)
        assert isinstance(analysis, Analysis) and analysis.crop.size == (224, 224)
        assert analysis.image.size == Image.open(photo).size
        probs = [p.prob for p in analysis.predictions]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert analysis.predictions[0].label == loaded.spec.categories[analysis.predictions[0].index]
        assert analysis.top(1)[0] == analysis.predictions[0]
        assert all(np.isfinite([b.residual_ratio, b.mean_activation]).all() for b in analysis.blocks)
        for stage, att in analysis.attributions(stages=STAGES).items():
            assert att.raw.shape == shapes[stage][1:]
            assert att.heatmap.shape == (224, 224) and att.heatmap.dtype == np.float32
            assert np.isfinite(att.heatmap).all() and att.heatmap.min() >= 0 and att.heatmap.max() <= 1
            assert overlay(image=analysis.crop, heatmap=att.heatmap).size == (224, 224)
            full = overlay_on_full(analysis=analysis, attribution=att, opacity=0.4)
            assert full.size == analysis.image.size and full.mode == "RGB"
            assert analysis.feature_maps(stage).shape == shapes[stage]
    assert predict(image=CAT, model=loaded) == analyze(image=CAT, model=loaded).predictions


def test_overlay_blends_and_maps_back() -> None:
    image = Image.new("RGB", (40, 30), (10, 20, 30))
    heat = np.zeros((7, 7), np.float32)
    heat[3, 3] = 1.0
    assert np.array_equal(np.asarray(overlay(image=image, heatmap=heat, opacity=0.0)), np.asarray(image))
    full = overlay(image=image, heatmap=heat, opacity=1.0)
    assert full.size == (40, 30) and full.getpixel((20, 15)) != full.getpixel((0, 0))
    with pytest.raises(ValueError):
        overlay(image=image, heatmap=heat, opacity=1.5)


def test_overlay_on_full_places_the_crop(r50: LoadedModel) -> None:
    analysis = analyze(image=EXAMPLES / "rocket.jpg", model=r50)  # 640x427: the crop is a centred square
    att = analysis.attribution()
    out = np.asarray(overlay_on_full(analysis=analysis, attribution=att, opacity=0.5)).astype(int)
    photo = np.asarray(analysis.image).astype(int)
    box = analysis.crop_box
    assert out.shape == photo.shape
    left_strip = slice(0, int(box.left) - 3)
    assert np.all(out[:, left_strip] <= photo[:, left_strip])  # outside the crop: dimmed, no colour
    small = overlay_on_full(analysis=analysis, attribution=att, max_side=200)
    assert max(small.size) == 200


# --------------------------------------------------------------------------- classes


def test_find_and_resolve_class() -> None:
    names = weights_spec(arch="resnet50").categories
    assert find_class(categories=names, query="Tabby")[0] == 281
    assert 282 in find_class(categories=names, query="tiger cat")
    assert find_class(categories=names, query="281")[0] == 281
    assert find_class(categories=names, query="  ") == []
    assert resolve_class(categories=names, query="tabby") == 281
    assert resolve_class(categories=names, query=7) == 7
    assert resolve_class(categories=names, query="Crane") == 517  # the exact name wins over "crane bird"
    with pytest.raises(UserError, match="several"):
        resolve_class(categories=names, query="terrier")
    with pytest.raises(UserError, match="No class"):
        resolve_class(categories=names, query="zzzz")


def test_prepared_images_are_reused(r50: LoadedModel, tmp_path: Path) -> None:
    prepared = prepare(image=CAT, preprocessing=r50.spec.preprocessing)
    assert prepare(image=prepared, preprocessing=r50.spec.preprocessing) is prepared
    other = prepare(image=prepared, preprocessing=Preprocessing(resize_size=40, crop_size=32))
    assert other.tensor.shape == (1, 3, 32, 32)
    assert analyze(image=prepared, model=r50).predictions == analyze(image=CAT, model=r50).predictions
