"""Grad-CAM at any stage, from at most one backward pass, and the Grad-CAM registry entry.

Grad-CAM (Selvaraju et al., 2017) weighs each channel of a stage's output by the mean
gradient of the class score over it: ReLU(sum_k mean_ij(d y_c / d A_k(i, j)) A_k). It is
the formula of captum's ``LayerGradCam``, which takes a forward and a backward per
layer and hooks the model; the test suite checks every stage against it.

* At ``layer4`` no backward pass is needed at all. After ``layer4`` come a global
  average pool and the ``fc`` layer, so d logit_c / d A_k(i, j) = w_ck / (H W) for
  every position, and Grad-CAM reduces to CAM: ReLU(sum_k w_ck A_k) / (H W).
* At an earlier stage, only the network *after* that stage is rerun, from the stored
  activation, and one backward pass down to it yields the gradients of that stage and
  of every later one: walking the stages one by one costs one backward in all.

Maps are upsampled with captum's ``LayerAttribution.interpolate`` (bilinear), as the
paper does, and scaled to [0, 1]; a map without positive evidence stays all zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from captum.attr import LayerAttribution
from torch import Tensor

from ..model import STAGES, ResNet
from .methods import FinishedMap, Method, MethodCall, register
from .network import POSITION

__all__ = ["GRADCAM", "cam_layer4", "finish_layer_map", "grad_segment", "gradcam_from_grads"]

# Forward passes per map, by stage: how deep the backward goes (see Method.cost).
_RELATIVE_COST = {
    "layer4": 0.02,  # CAM: no backward
    "layer3": 0.6,
    "layer2": 1.25,
    "layer1": 1.6,
    "stem": 1.8,
}


def gradcam_from_grads(act: Tensor, grad: Tensor) -> Tensor:
    """Grad-CAM as captum's LayerGradCam computes it: ReLU(sum_k mean_ij(dy/dA_k) A_k), (1, 1, h, w)."""
    alpha = grad.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    return torch.relu((alpha * act).sum(dim=1, keepdim=True))


def cam_layer4(model: ResNet, layer4: Tensor, target: int) -> Tensor:
    """Grad-CAM at layer4 without a backward pass: the gradient is w_c / (H W) everywhere. (1, 1, h, w)"""
    h, w = layer4.shape[-2:]
    weight = model.fc.weight[target].to(layer4.dtype)  # (C,)
    cam = torch.einsum("c,bchw->bhw", weight, layer4).unsqueeze(1)  # (1, 1, h, w)
    return torch.relu(cam) / (h * w)


def grad_segment(
    model: ResNet,
    act: Tensor,
    *,
    start: str,
    stages: Sequence[str],
    target: int | None,
    stats: list[Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor], int]:
    """Forward from ``start``'s activation with autograd, then ONE backward down to the
    earliest requested stage. Returns logits, activations, raw Grad-CAM maps (1, 1, h, w)
    of ``stages``, and the target (the top-1 class if ``target`` is None)."""
    leaf = act.detach().clone().requires_grad_(True)  # a normal tensor even if ``act`` is an inference tensor
    with torch.enable_grad(), torch.autocast(device_type=leaf.device.type, enabled=False):
        logits, acts = model.forward_stages(leaf, start=start, stats=stats)
        assert logits is not None
        if target is None:
            target = int(logits[0].argmax())
        wanted = [s for s in stages if s != "layer4"]
        grads = torch.autograd.grad(logits[0, target], [acts[s] for s in wanted]) if wanted else ()
    with torch.no_grad():
        maps = {s: gradcam_from_grads(acts[s].detach(), g) for s, g in zip(wanted, grads, strict=True)}
        if "layer4" in stages:  # cheaper, and the same number (see the module docstring)
            maps["layer4"] = cam_layer4(model, acts["layer4"].detach(), target)
    return logits.detach(), {k: v.detach() for k, v in acts.items()}, maps, target


def finish_layer_map(raw: Tensor, size: tuple[int, int]) -> FinishedMap:
    """Upsample a (1, 1, h, w) map bilinearly to ``size`` and scale it to [0, 1], NaN-free."""
    raw = torch.nan_to_num(raw.float(), nan=0.0, posinf=0.0, neginf=0.0)
    up = LayerAttribution.interpolate(raw, size, interpolate_mode="bilinear")[0, 0]
    peak = float(up.max())
    all_zero = not bool((raw > 0).any()) or peak <= 0.0
    heat = torch.zeros_like(up) if all_zero else (up / peak).clamp_(0.0, 1.0)
    return heat.cpu().numpy().astype(np.float32), raw[0, 0].cpu().numpy().astype(np.float32), all_zero


def _gradcam_maps(call: MethodCall) -> dict[str, Tensor]:
    """Raw maps of the stages asked for, from the stored activations: layer4 in closed form,
    the others from one backward, which also yields (and returns) every stage on its way."""
    maps: dict[str, Tensor] = {}
    if "layer4" in call.stages:
        maps["layer4"] = cam_layer4(call.model, call.activations["layer4"], call.target)
    deep = [s for s in call.stages if s != "layer4"]
    if deep:
        start = min(deep, key=POSITION.__getitem__)
        # The backward passes every later stage on its way down: their maps are free,
        # and a caller walking the stages one by one then pays for one backward only.
        on_the_way = [s for s in STAGES if POSITION[s] >= POSITION[start] and s != "layer4"]
        _, _, got, _ = grad_segment(
            call.model, call.activations[start], start=start, stages=on_the_way, target=call.target
        )
        maps.update(got)
    return maps


GRADCAM = register(
    Method(
        name="gradcam",
        label="Grad-CAM",
        space="layer",
        cost=lambda stage, options: _RELATIVE_COST[stage],
        compute=_gradcam_maps,
        finish=finish_layer_map,
    )
)
