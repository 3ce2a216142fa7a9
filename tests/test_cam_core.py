"""The one Grad-CAM (core/cam.py) and the one model shell (core/shell.py).

The classifier's engine (the Explain tab) and the transfer engine (the Transfer tab) are fed
the SAME activations and gradients and must draw IDENTICAL maps; a shell shares the shared
model's weights and changes nothing on it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet_demo.core.cam import finish_cam, gradcam
from resnet_demo.core.model import Bottleneck, ResNet
from resnet_demo.core.shell import shell
from resnet_demo.core.weights import Preprocessing
from resnet_demo.explain import MethodCall, get_method
from resnet_demo.explain.cams import CAM_FORMULAS
from resnet_demo.transfer.explain import grad_cams

_HOOK_TABLES = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _stage(seed: int, shape: tuple[int, int, int, int] = (1, 6, 5, 7)) -> tuple[Tensor, Tensor]:
    """A stage output (post-ReLU, as every ResNet stage's is) and a gradient at it, both (1, C, h, w)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.randn(shape, generator=g)


def _classifier_map(act: Tensor, grad: Tensor, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, bool]:
    """The Explain tab's Grad-CAM from a stage's activations and gradients: the registry's formula, then its finish."""
    _, formula = CAM_FORMULAS["gradcam"]
    with torch.no_grad():
        return get_method("gradcam").finish(formula(act, grad), size)


def _transfer_map(act: Tensor, grad: Tensor, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """The Transfer tab's Grad-CAM of a target whose gradient at ``act`` is exactly ``grad``: sum(A * G)."""
    leaf = act.clone().requires_grad_(True)
    target = (leaf * grad).sum()
    (seen,) = torch.autograd.grad(target, leaf, retain_graph=True)
    assert torch.equal(seen, grad)  # the engine is fed the very gradient the classifier is
    (finished,) = grad_cams(activations=[leaf], target=target, size=size)
    return finished


def _assert_identical(ours: tuple[np.ndarray, np.ndarray, bool], theirs: tuple[np.ndarray, np.ndarray, bool]) -> None:
    (heat_a, raw_a, zero_a), (heat_b, raw_b, zero_b) = ours, theirs
    assert heat_a.dtype == heat_b.dtype == np.float32 and heat_a.shape == heat_b.shape
    assert np.array_equal(heat_a, heat_b) and np.array_equal(raw_a, raw_b)
    assert zero_a == zero_b


def _normalised_then_upsampled(act: Tensor, grad: Tensor, size: tuple[int, int]) -> np.ndarray:
    """The order the transfer engine once had (scale at the stage's resolution, resize afterwards): wrong."""
    cam = gradcam(activations=act, gradients=grad)
    return F.interpolate(cam / cam.max(), size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


# ----------------------------------------------------------------------------- one Grad-CAM


@pytest.mark.parametrize("size", [(29, 53), (53, 29), (3, 4)], ids=["wide", "tall", "smaller"])
def test_both_engines_draw_the_same_upsampled_map(size: tuple[int, int]) -> None:
    act, grad = _stage(seed=1)
    ours = _classifier_map(act, grad, size)
    _assert_identical(ours, _transfer_map(act, grad, size))
    assert ours[0].shape == size and not ours[2] and ours[0].max() == 1.0  # scaled after upsampling: peaks at 1
    # The case tells the orders apart: a path that scaled before upsampling could not pass the test above.
    assert not np.array_equal(_normalised_then_upsampled(act, grad, size), ours[0])


def test_both_engines_flag_a_map_without_positive_evidence() -> None:
    act, grad = _stage(seed=2)
    grad = -grad.abs() - 0.01  # every channel weighs against the target: ReLU leaves nothing
    ours = _classifier_map(act, grad, (17, 9))
    _assert_identical(ours, _transfer_map(act, grad, (17, 9)))
    assert ours[2] and not ours[0].any() and np.isfinite(ours[0]).all()
    assert _transfer_map(act, grad, None)[2]  # at the stage's resolution too


def test_both_engines_treat_a_non_finite_value_alike() -> None:
    act, grad = _stage(seed=3)
    act[0, :, 2, 3] = float("nan")  # one position of the stage lost: 0 there, not a map of NaN
    ours = _classifier_map(act, grad, (11, 13))
    _assert_identical(ours, _transfer_map(act, grad, (11, 13)))
    assert np.isfinite(ours[0]).all() and not ours[2] and ours[1][2, 3] == 0.0


def test_at_the_stage_resolution_the_transfer_map_is_the_classifiers() -> None:
    # explain_transfer keeps the stage's resolution (no size): the same map as the classifier's finish
    # to that very size, and the map the independent formula gives, scaled by its maximum.
    act, grad = _stage(seed=4)
    ours = _transfer_map(act, grad, None)
    _assert_identical(ours, _classifier_map(act, grad, tuple(act.shape[-2:])))
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * act).sum(dim=1))[0]
    assert np.array_equal(ours[0], (cam / float(cam.max())).numpy())


def test_finish_keeps_the_raw_map_and_never_changes_its_input() -> None:
    cam = torch.tensor([[[[0.0, 2.0], [1.0, float("inf")]]]])
    before = cam.clone()
    heat, raw, all_zero = finish_cam(cam=cam, size=(4, 4))
    assert torch.equal(cam, before)  # the engines keep their maps: finishing works on a copy
    assert raw.tolist() == [[0.0, 2.0], [1.0, 0.0]] and heat.shape == (4, 4) and not all_zero
    assert heat.min() >= 0.0 and heat.max() == 1.0


# ----------------------------------------------------------------------------- one shell


@pytest.fixture
def model() -> ResNet:
    """A small ResNet, in place like the shared inference copies are, in eval mode."""
    torch.manual_seed(0)
    return ResNet((1, 1, 1, 1), num_classes=5, inplace=True).eval().requires_grad_(False)


def _inplace_flags(model: nn.Module) -> list[bool]:
    return [m.inplace for m in model.modules() if isinstance(m, (nn.ReLU, Bottleneck))]


def _hooks(model: nn.Module) -> int:
    return sum(len(getattr(m, n)) for m in model.modules() for n in _HOOK_TABLES)


def test_a_shell_shares_every_weight_and_owns_every_module(model: ResNet) -> None:
    own = shell(model)
    assert own is not model and type(own) is ResNet
    for (name, p), (name_s, p_s) in zip(model.named_parameters(), own.named_parameters(), strict=True):
        assert name == name_s and p_s is p and p_s.data_ptr() == p.data_ptr()
    for b, b_s in zip(model.buffers(), own.buffers(), strict=True):
        assert b_s is b
    assert not {id(m) for m in model.modules()} & {id(m) for m in own.modules()}
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(own(x), model(x))


def test_set_inplace_and_modes_on_a_shell_stay_there(model: ResNet) -> None:
    own = shell(model).set_inplace(False).train()
    assert all(_inplace_flags(model)) and not any(_inplace_flags(own))  # the shared model keeps its setting
    assert not any(m.training for m in model.modules()) and all(m.training for m in own.modules())


def test_replacing_a_child_leaves_the_original_alone(model: ResNet) -> None:
    block, fc = model.layer1[0], model.fc
    swap = nn.Identity()
    own = shell(model, replace={"layer1.0": swap})
    assert own.layer1[0] is swap and model.layer1[0] is block  # used as given: the caller keeps its handle
    own.fc = nn.Linear(2048, 3)
    own.layer4[0].conv1 = nn.Conv2d(1024, 512, 1)
    assert model.fc is fc and model.fc.out_features == 5 and model.layer4[0].conv1.in_channels == 1024
    with pytest.raises(ValueError, match="no submodule 'layer9'"):
        shell(model, replace={"layer9": swap})


def test_hooks_on_a_shell_never_reach_the_original(model: ResNet) -> None:
    calls: list[str] = []
    own = shell(model)
    own.register_forward_hook(lambda *a: calls.append("root"))
    own.layer2.register_forward_pre_hook(lambda *a: calls.append("layer2"))
    own.relu.register_full_backward_hook(lambda *a: None)
    assert _hooks(model) == 0 and _hooks(own) == 3
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(x)
        assert calls == []
        own(x)
    assert calls == ["layer2", "root"]


@pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations")  # on the shell's, as meant
def test_guided_gradcam_hooks_and_switches_only_its_shell(model: ResNet) -> None:
    # The one method that hooks (every ReLU, out of place): the shared, in-place model must not notice.
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    call = MethodCall(model, x, {}, Preprocessing(resize_size=64, crop_size=64), ("layer3",), target=1, options={})
    maps = get_method("guided-gradcam").compute(call)
    assert maps["layer3"].shape == (1, 3, 64, 64) and bool(torch.isfinite(maps["layer3"]).all())
    assert all(_inplace_flags(model)) and _hooks(model) == 0
    assert not nn.modules.module._global_forward_hooks and not nn.modules.module._global_backward_hooks


def test_a_module_twice_in_the_tree_is_one_module_in_the_shell() -> None:
    shared = nn.Linear(3, 3)
    pair = nn.Sequential(shared, nn.ReLU(), shared)
    own = shell(pair)
    assert own[0] is own[2] and own[0] is not shared and own[0].weight is shared.weight
