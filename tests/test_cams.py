"""The CAM family, contrastive maps, fusion, Score-CAM and Ablation-CAM: against pytorch-grad-cam,
against the formulas written out, and against a model that holds the contrast as a class of its own."""

from __future__ import annotations

import copy
import dataclasses

import cv2
import numpy as np
import pytest
import torch
import torchvision.models as tvm
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.ablation_layer import AblationLayer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from torch import nn

from resnet_demo.core.errors import UserError
from resnet_demo.core.model import STAGES, ResNet, build_model
from resnet_demo.core.weights import LoadedModel
from resnet_demo.explain import METHODS, Analysis, analyze, cheap_methods, get_method, method_cost, prepare
from resnet_demo.explain.cams import eigen_projection
from resnet_demo.explain.gradcam import GRADIENT_CACHE

from .conftest import EXAMPLES, random_state_dict
from .test_explain import _close, _Counter, _frozen, _hooks, _spec, small_model

CAT = EXAMPLES / "cat.jpg"
SIZE = 112  # layer4 is 4x4, the stem 28x28: maps with enough positions to correlate

# Our name -> pytorch-grad-cam's class, for the methods both implement.
GRADIENT_TWINS = {
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "gradcam-elementwise": GradCAMElementWise,
}


@pytest.fixture(scope="module")
def small() -> LoadedModel:
    """One bottleneck per stage, 10 classes, random BN statistics, 112 px."""
    return small_model(crop=SIZE)


@pytest.fixture(scope="module")
def analysis(small: LoadedModel) -> Analysis:
    return analyze(image=CAT, model=small)


@pytest.fixture(scope="module")
def twin(small: LoadedModel) -> ResNet:
    """The unfolded model, privately: pytorch-grad-cam hooks it, and needs gradients on (frozen
    weights and an input without grad would give it none)."""
    return copy.deepcopy(small.model).requires_grad_(True)


def _x(small: LoadedModel) -> torch.Tensor:
    return prepare(image=CAT, preprocessing=small.spec.preprocessing).tensor  # (1, 3, 112, 112)


def _layer(model: ResNet, stage: str) -> nn.Module:
    return model.maxpool if stage == "stem" else getattr(model, stage)


def _upsampled(raw: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Our (h, w) raw map upsampled as pytorch-grad-cam upsamples its maps (cv2, bilinear)."""
    return cv2.resize(np.float32(raw), (size, size))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _positive_target(analysis: Analysis) -> int:
    """The top class; its logit must be positive for Ablation-CAM's (y - y_k) / y to mean the same for both."""
    return analysis.predictions[0].index


# --------------------------------------------------------------------------- against pytorch-grad-cam


@pytest.mark.parametrize("method", sorted(GRADIENT_TWINS))
def test_gradient_methods_equal_pytorch_grad_cam(small: LoadedModel, analysis: Analysis, twin: ResNet, method: str):
    x = _x(small)
    for target in (analysis.predictions[0].index, analysis.predictions[3].index):
        maps = analysis.attributions(target=target, method=method)
        for stage in STAGES:
            with GRADIENT_TWINS[method](model=twin, target_layers=[_layer(twin, stage)]) as cam:
                theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]  # (112, 112)
            assert not maps[stage].all_zero and theirs.max() > 0, (stage, target)
            assert _pearson(_upsampled(maps[stage].raw), theirs) >= 0.99, (method, stage, target)
    assert _hooks(twin) == 0


def test_eigencam_equals_pytorch_grad_cam_up_to_the_svd_sign(small: LoadedModel, analysis: Analysis, twin: ResNet):
    x = _x(small)
    with torch.no_grad():
        acts = twin.forward_intermediates(x).stages
    for stage in STAGES:
        ours = analysis.attribution(stage=stage, method="eigencam")
        act = acts[stage]
        # A singular vector's sign is arbitrary: pytorch-grad-cam keeps whichever the SVD
        # returns, we fix it (positive correlation with the channel sum). So the projections
        # agree up to sign, and the maps agree once the sign is the same.
        theirs = get_2d_projection(act.numpy())[0]  # (h, w), before any ReLU
        projection = eigen_projection(act)[0, 0].numpy()
        assert abs(_pearson(projection, theirs)) >= 0.99, stage
        assert _pearson(projection, act[0].sum(dim=0).numpy()) > 0, stage  # our sign choice
        sign = 1.0 if _pearson(projection, theirs) > 0 else -1.0
        expected = _upsampled(np.maximum(sign * theirs, 0))
        if sign > 0:  # pytorch-grad-cam's own map then is the same one
            with EigenCAM(model=twin, target_layers=[_layer(twin, stage)]) as cam:
                expected = cam(input_tensor=x, targets=None)[0]
        assert _pearson(_upsampled(ours.raw), expected) >= 0.99, stage
        # No class enters: every class gets the same map.
        assert np.array_equal(analysis.attribution(stage=stage, method="eigencam", target=5).raw, ours.raw)


def test_scorecam_and_ablationcam_equal_pytorch_grad_cam(small: LoadedModel, analysis: Analysis, twin: ResNet):
    # The stem has 64 channels: every channel (channels=0, the papers' method) stays affordable.
    x = _x(small)
    target = _positive_target(analysis)
    for method, theirs_class in (("scorecam", ScoreCAM), ("ablationcam", AblationCAM)):
        ours = analysis.attribution(stage="stem", target=target, method=method, channels=0)
        private = copy.deepcopy(twin)  # Ablation-CAM swaps a layer of the model it is given
        with theirs_class(model=private, target_layers=[private.maxpool]) as cam:
            cam.batch_size = 32
            theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]
        assert not ours.all_zero and theirs.max() > 0, method
        assert _pearson(_upsampled(ours.raw), theirs) >= 0.99, method


def test_ablationcam_at_layer4_is_the_closed_form(small: LoadedModel, analysis: Analysis) -> None:
    """After layer4 come a mean and fc: zeroing channel k takes w_ck mean(A_k) off the logit."""
    x = _x(small)
    target = _positive_target(analysis)
    with torch.no_grad():
        out = small.model.forward_intermediates(x)
    a4, logit = out.stages["layer4"][0], out.logits[0, target]
    weights = small.model.fc.weight[target] * a4.mean(dim=(1, 2)) / logit  # (C,)
    expected = torch.relu(torch.einsum("c,chw->hw", weights, a4))
    att = analysis.attribution(stage="layer4", target=target, method="ablationcam", channels=0)
    assert _close(att.raw, expected, rel=1e-3)


def test_top_channels_option_and_progress(analysis: Analysis) -> None:
    seen: list[float] = []
    few = analysis.attribution(stage="layer1", method="scorecam", channels=40, progress=seen.append)
    assert seen == [pytest.approx(32 / 40), pytest.approx(1.0)]  # after each batch of (at most) 32 images
    default = analysis.attribution(stage="layer1", method="scorecam")
    assert not np.array_equal(few.raw, default.raw)  # the option keys the cache and changes the map
    # The cost follows the channels: all 2048 of layer4 cost 2048 / 64 times the default 64.
    all_channels = method_cost(method="scorecam", arch="resnet50", stage="layer4", channels=0)
    assert all_channels == pytest.approx(32 * method_cost(method="scorecam", arch="resnet50", stage="layer4"))
    assert method_cost(method="ablationcam", arch="resnet50", stage="layer4") < method_cost(
        method="ablationcam", arch="resnet50", stage="layer1"
    )


# --------------------------------------------------------------------------- against pytorch-grad-cam on ResNet-50
# The toy above has one block per stage; here the real depth (3-4-6-3 blocks), at the two stages
# the app shows first, against pytorch-grad-cam on torchvision's own ResNet-50 with the same weights.

R50_SIZE = 160  # layer4 5x5, layer3 10x10: enough positions to correlate, half the cost of 224 px
R50_STAGES = ("layer3", "layer4")
# Every method both implement: the gradient family here, Eigen-CAM, Score-CAM and Ablation-CAM below.
# Not compared: CAM (layer4's fc weights; pytorch-grad-cam has no class for it, the formula test below
# covers it) and Guided Grad-CAM (pytorch-grad-cam has only the guided backprop model, not the product).
R50_TWINS = {"gradcam": GradCAM, **GRADIENT_TWINS}
# Score-CAM and Ablation-CAM on every channel would take 1024 + 2048 forward passes per side: both
# sides weigh the same 16 strongest channels (ours through its ``channels`` option).
FEW = 16


@pytest.fixture(scope="module")
def r50() -> LoadedModel:
    model = build_model("resnet50")
    model.load_state_dict(random_state_dict("resnet50", seed=3))
    return LoadedModel(_frozen(model), _spec("resnet50", crop=R50_SIZE))


@pytest.fixture(scope="module")
def r50_analysis(r50: LoadedModel) -> Analysis:
    return analyze(image=CAT, model=r50)  # one analysis for every method: the gradients are shared


@pytest.fixture(scope="module")
def tv50() -> torch.nn.Module:
    """torchvision's ResNet-50 on the same weights, for pytorch-grad-cam to hook (gradients on)."""
    model = tvm.resnet50()
    model.load_state_dict(random_state_dict("resnet50", seed=3))
    return model.eval()


def _r50_x(r50: LoadedModel) -> torch.Tensor:
    return prepare(image=CAT, preprocessing=r50.spec.preprocessing).tensor  # (1, 3, 160, 160)


def _tv_stages(tv50: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """torchvision's own layer3 and layer4 outputs, and its logits under "fc"."""
    out = {}
    with torch.no_grad():
        h = tv50.maxpool(tv50.relu(tv50.bn1(tv50.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            h = out[name] = getattr(tv50, name)(h)
        out["fc"] = tv50.fc(torch.flatten(tv50.avgpool(h), 1))
    return out


@pytest.mark.parametrize("method", sorted(R50_TWINS))
def test_gradient_methods_equal_pytorch_grad_cam_on_resnet50(
    method: str, r50: LoadedModel, r50_analysis: Analysis, tv50: torch.nn.Module
) -> None:
    target = r50_analysis.predictions[0].index
    maps = r50_analysis.attributions(stages=R50_STAGES, target=target, method=method)
    for stage in R50_STAGES:
        with R50_TWINS[method](model=tv50, target_layers=[getattr(tv50, stage)]) as cam:
            theirs = cam(input_tensor=_r50_x(r50), targets=[ClassifierOutputTarget(target)])[0]
        assert not maps[stage].all_zero and theirs.max() > 0, stage
        assert _pearson(_upsampled(maps[stage].raw, R50_SIZE), theirs) >= 0.99, (method, stage)


def test_eigencam_equals_pytorch_grad_cam_on_resnet50(
    r50: LoadedModel, r50_analysis: Analysis, tv50: torch.nn.Module
) -> None:
    x = _r50_x(r50)
    acts = _tv_stages(tv50, x)
    for stage in R50_STAGES:
        theirs = get_2d_projection(acts[stage].numpy())[0]  # their SVD, before any ReLU
        with EigenCAM(model=tv50, target_layers=[getattr(tv50, stage)]) as cam:
            their_map = cam(input_tensor=x, targets=None)[0]
        assert _pearson(their_map, _upsampled(np.maximum(theirs, 0), R50_SIZE)) >= 0.99, stage  # that SVD is theirs
        # Ours fixes the singular vector's sign that theirs leaves to the SVD: equal up to that sign.
        sign = 1.0 if _pearson(eigen_projection(acts[stage])[0, 0].numpy(), theirs) > 0 else -1.0
        ours = r50_analysis.attribution(stage=stage, method="eigencam")
        assert _pearson(_upsampled(ours.raw, R50_SIZE), _upsampled(np.maximum(sign * theirs, 0), R50_SIZE)) >= 0.99


class _ChannelTap(nn.Module):
    """torchvision's ResNet whose ``stage`` output also passes, as a dead end, through ``tap`` keeping
    ``channels`` only: pytorch-grad-cam's Score-CAM hooks ``tap``, so it weighs those channels alone."""

    def __init__(self, net: nn.Module, stage: str, channels: torch.Tensor) -> None:
        super().__init__()
        self.net, self.stage, self.channels = net, stage, channels
        self.tap = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(n, name)(x)
            if name == self.stage:
                self.tap(x[:, self.channels])
        return n.fc(torch.flatten(n.avgpool(x), 1))


class _AblateChosen(AblationLayer):
    """pytorch-grad-cam's ablation layer, ablating the given channels (its own hook for choosing some)."""

    def __init__(self, channels: torch.Tensor) -> None:
        super().__init__()
        self.chosen = np.int32(channels.numpy())

    def activations_to_be_ablated(self, activations: torch.Tensor, ratio_channels_to_ablate: float = 1.0) -> np.ndarray:
        self.indices = self.chosen.copy()
        return self.indices


def _strongest(act: torch.Tensor) -> torch.Tensor:
    """The FEW channels of highest mean activation (what ours weighs with ``channels=FEW``), chosen by
    the test on torchvision's activations; the next one must be clearly weaker, so that rounding
    cannot make the two sides choose differently."""
    means = act[0].mean(dim=(1, 2)).sort(descending=True)
    assert means.values[FEW - 1] - means.values[FEW] > 1e-3 * means.values[FEW - 1]
    return means.indices[:FEW]


def test_scorecam_and_ablationcam_equal_pytorch_grad_cam_on_resnet50(
    r50: LoadedModel, r50_analysis: Analysis, tv50: torch.nn.Module
) -> None:
    x = _r50_x(r50)
    target = _positive_target(r50_analysis)
    acts = _tv_stages(tv50, x)
    assert acts["fc"][0, target] > 0  # Ablation-CAM's (y - y_k) / y: theirs divides by y, ours by |y|
    for stage in R50_STAGES:
        chosen = _strongest(acts[stage])
        tapped = _ChannelTap(tv50, stage, chosen)
        with ScoreCAM(model=tapped, target_layers=[tapped.tap]) as cam:
            theirs = {"scorecam": cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]}
        private = copy.deepcopy(tv50)  # Ablation-CAM swaps a layer of the model it is given
        ablation = AblationCAM(
            model=private, target_layers=[getattr(private, stage)], ablation_layer=_AblateChosen(chosen)
        )
        with ablation as cam:
            theirs["ablationcam"] = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]
        for method, their_map in theirs.items():
            ours = r50_analysis.attribution(stage=stage, target=target, method=method, channels=FEW)
            assert not ours.all_zero and their_map.max() > 0, (method, stage)
            assert _pearson(_upsampled(ours.raw, R50_SIZE), their_map) >= 0.99, (method, stage)


# --------------------------------------------------------------------------- formulas written out


def test_cam_is_the_fc_weighted_sum_at_layer4(small: LoadedModel, analysis: Analysis) -> None:
    with torch.no_grad():
        a4 = small.model.forward_intermediates(_x(small)).stages["layer4"][0]  # (2048, 4, 4)
    w = small.model.fc.weight
    for target, versus in ((0, None), (3, None), (3, 7)):
        weight = w[target] - (w[versus] if versus is not None else 0)
        expected = torch.relu(torch.einsum("c,chw->hw", weight, a4))
        att = analysis.attribution(method="cam", target=target, versus=versus)
        assert _close(att.raw, expected), (target, versus)
        # Grad-CAM at layer4 is CAM / (H W): the gradient is w_c / (H W) everywhere; so are
        # XGrad-CAM and HiResCAM, whose formulas differ only where the gradient varies.
        for method in ("gradcam", "xgradcam", "hirescam"):
            att = analysis.attribution(method=method, target=target, versus=versus)
            assert _close(att.raw, expected / 16, rel=1e-5), (method, target, versus)


def test_layercam_is_gradcam_elementwise_on_post_relu_stages(analysis: Analysis) -> None:
    # Stage outputs are >= 0, so ReLU(G) A = ReLU(G A): the two formulas give one map.
    layercam = analysis.attributions(method="layercam", target=4)
    elementwise = analysis.attributions(method="gradcam-elementwise", target=4)
    hirescam = analysis.attributions(method="hirescam", target=4)
    for stage in STAGES:
        assert _close(layercam[stage].raw, elementwise[stage].raw), stage
    assert not all(_close(layercam[s].raw, hirescam[s].raw) for s in STAGES)  # not every formula agrees


# --------------------------------------------------------------------------- contrast, fusion, sharing


def _with_contrast_class(loaded: LoadedModel, a: int, b: int) -> LoadedModel:
    """The model with an 11th class whose logit is logit(a) - logit(b)."""
    model = copy.deepcopy(loaded.model)
    fc = nn.Linear(model.fc.in_features, model.fc.out_features + 1)
    with torch.no_grad():
        fc.weight.copy_(torch.cat([model.fc.weight, (model.fc.weight[a] - model.fc.weight[b])[None]]))
        fc.bias.copy_(torch.cat([model.fc.bias, (model.fc.bias[a] - model.fc.bias[b])[None]]))
    model.fc = fc
    spec = dataclasses.replace(loaded.spec, categories=(*loaded.spec.categories, "a and not b"))
    return LoadedModel(_frozen(model), spec)


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU")
def test_contrastive_map_equals_the_map_of_the_difference_class(small: LoadedModel) -> None:
    tiny = dataclasses.replace(small, spec=_spec("small", classes=10, crop=64))  # 64 px: every method, quickly
    analysis = analyze(image=CAT, model=tiny)
    a, b = analysis.predictions[1].index, analysis.predictions[0].index
    direct = analyze(image=CAT, model=_with_contrast_class(tiny, a, b))
    options = {"channels": 8, "ig_steps": 2, "smoothgrad_samples": 2, "rise_masks": 50}
    for method in METHODS:
        entry = get_method(method)
        # RISE scores a class by its probability, as the paper does; a contrast, which has none, by
        # logit(A) - logit(B): so its contrastive map is not the plain map of a difference class.
        if not entry.class_specific or method == "rise":
            continue
        stages = entry.supported_stages[-1:] if method in ("cam", "guided-gradcam") else ("layer2", "layer4")
        ours = analysis.attributions(stages=stages, target=a, versus=b, method=method, **options)
        theirs = direct.attributions(stages=stages, target=10, method=method, **options)
        for stage, att in ours.items():
            assert att.versus == b and att.versus_label == tiny.spec.categories[b] and att.target == a
            assert _close(att.raw, theirs[stage].raw, rel=2e-4), (method, stage)
        if entry.cheap:  # the contrast changed the map (checked where that costs nothing)
            plain = analysis.attributions(stages=stages, target=a, method=method)
            assert any(not np.array_equal(plain[s].raw, ours[s].raw) for s in ours), method


def test_fusion_is_the_maximum_of_the_stage_maps(analysis: Analysis) -> None:
    for method in ("gradcam", "layercam", "eigencam"):
        fused = analysis.fusion(method=method, target=2)
        maps = analysis.attributions(method=method, target=2)
        assert list(maps) == list(STAGES) and fused.stage == "fusion" and fused.method == method
        expected = np.max(np.stack([m.heatmap for m in maps.values()]), axis=0)
        assert np.array_equal(fused.heatmap, expected) and fused.heatmap.shape == (SIZE, SIZE)
        assert fused.heatmap.max() == pytest.approx(1.0)
        assert analysis.fusion(method=method, target=2) is fused  # cached
    contrast = analysis.fusion(method="gradcam", target=2, versus=4)
    assert contrast.versus == 4 and not np.array_equal(contrast.heatmap, analysis.fusion(target=2).heatmap)
    assert np.array_equal(analysis.fusion(method="cam").heatmap, analysis.attribution(method="cam").heatmap)


def test_one_backward_serves_every_cheap_method_and_stage(small: LoadedModel) -> None:
    analysis = analyze(image=CAT, model=small)
    fast = analysis.model
    counter = _Counter({"layer2": fast.layer2, "layer3": fast.layer3, "layer4": fast.layer4})
    try:
        for method in cheap_methods():
            analysis.attribution(stage="layer4", method=method, target=1)
        assert counter.counts == {"layer2": 0, "layer3": 0, "layer4": 0}  # layer4: closed form, no rerun
        analysis.attribution(stage="layer2", method="layercam", target=1)  # reruns layer3 and layer4 once
        for method in cheap_methods():
            analysis.attributions(stages=get_method(method).supported_stages[2:], method=method, target=1)
        assert counter.counts == {"layer2": 0, "layer3": 1, "layer4": 1}
        analysis.attribution(stage="layer3", method="hirescam", target=1, versus=2)  # another score: a new backward
        assert counter.counts == {"layer2": 0, "layer3": 1, "layer4": 2}
    finally:
        counter.remove()
    assert _hooks(fast) == 0


def test_gradients_are_kept_for_a_few_classes(small: LoadedModel) -> None:
    analysis = analyze(image=CAT, model=small)
    counter = _Counter({"layer4": analysis.model.layer4})
    try:
        for target in range(GRADIENT_CACHE):
            analysis.attribution(stage="layer3", target=target)
        analysis.attribution(stage="layer3", target=0, method="xgradcam")  # held: arithmetic only
        assert counter.counts["layer4"] == GRADIENT_CACHE
        analysis.attribution(stage="layer3", target=GRADIENT_CACHE)  # one class too many: the least recent goes
        analysis.attribution(stage="layer3", target=0, method="layercam")  # used just now: still held
        assert counter.counts["layer4"] == GRADIENT_CACHE + 1
        analysis.attribution(stage="layer3", target=1, method="xgradcam")  # the one that went: a backward again
        assert counter.counts["layer4"] == GRADIENT_CACHE + 2
    finally:
        counter.remove()


def test_metadata_and_accessors(small: LoadedModel, analysis: Analysis) -> None:
    assert list(METHODS)[:10] == [
        "gradcam",
        "gradcam++",
        "xgradcam",
        "layercam",
        "hirescam",
        "gradcam-elementwise",
        "eigencam",
        "cam",
        "scorecam",
        "ablationcam",
    ]
    assert cheap_methods() == list(METHODS)[:8]
    # Side by side (gallery, ranking): the cheap maps and those within QUICK_FORWARDS at every stage.
    from resnet_demo.explain.methods import QUICK_FORWARDS, quick_methods

    assert set(quick_methods()) - set(cheap_methods()) == {"guided-gradcam", "lrp", "crp", "dff"}
    for slow in ("scorecam", "ig", "occlusion", "smoothgrad", "rise"):
        entry = get_method(slow)
        stages = ("input",) if entry.space == "input" else entry.supported_stages
        assert max(entry.cost(s, dict(entry.options)) for s in stages) > QUICK_FORWARDS
    assert get_method("cam").supported_stages == ("layer4",) and get_method("gradcam").supported_stages == STAGES
    assert [m for m in METHODS if not get_method(m).class_specific] == ["eigencam"]
    assert analysis.loaded is small and analysis.prepared.crop.size == (SIZE, SIZE)
    x = analysis.input
    assert x.shape == (1, 3, SIZE, SIZE) and x.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        logits = analysis.model(x)
    assert _close(torch.softmax(logits, dim=1)[0], torch.from_numpy(analysis.probabilities()))
    assert not any(p.requires_grad for p in analysis.model.parameters())


# --------------------------------------------------------------------------- bad input


def test_bad_requests_are_user_errors(analysis: Analysis) -> None:
    top = analysis.predictions[0].index
    bad = [
        ({"method": "gradcam+++"}, "Unknown method"),
        ({"method": "cam", "stage": "layer3"}, "layer4 only"),
        ({"method": "gradcam", "versus": top}, "against itself"),
        ({"method": "eigencam", "versus": 3}, "ignores the class"),
        ({"method": "gradcam", "versus": 10}, "does not exist"),
    ]
    for kwargs, message in bad:
        with pytest.raises(UserError, match=message):
            analysis.attribution(**kwargs)
    with pytest.raises(UserError, match="layer4 only"):
        analysis.attributions(stages=STAGES, method="cam")
    with pytest.raises(UserError, match="pixels"):
        analysis.fusion(method="occlusion")
    with pytest.raises(UserError, match="layer4 only"):
        method_cost(method="cam", arch="resnet50", stage="stem")
    assert method_cost(method="cam", arch="resnet50") > 0  # no stage: the dearest one it supports
