"""A batch of images through the network and its explanation maps, in one pass.

Grad-CAM, the audit's default, is computed for a whole batch at once with the single-photo
engine's own pieces (:mod:`resnet_demo.explain.gradcam`, :mod:`resnet_demo.core.cam`):

* at ``layer4`` the gradient of a class logit is the ``fc`` row over (h w)
  (:func:`~resnet_demo.explain.gradcam.layer4_gradient`): the inference forward alone
  gives the maps, no backward;
* at an earlier stage the forward runs in inference mode up to that stage, then with
  autograd from its output, and ONE backward of the sum of every image's top-1 logit gives
  every image's gradient (the images of a batch do not interact in an eval-mode network).

Any other method of the registry goes through :func:`resnet_demo.explain.analyze`, one
photo at a time: the same maps the Explain tab draws, at their own price.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..core.cam import gradcam
from ..core.model import STAGES, ResNet
from ..core.weights import LoadedModel
from ..explain import Prepared, analyze
from ..explain.gradcam import finish_layer_map, layer4_gradient

__all__ = ["BatchMaps", "STAGE_STRIDES", "batch_gradcam", "batch_maps", "default_stage"]

# How many pixels of the crop one cell of a stage's output covers.
STAGE_STRIDES = {"stem": 4, "layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
# The deepest stage with at least this many cells a side is the default: layer4 at 224 px, as in the
# Explain tab; at small crops layer4 is 1x1 or 2x2, a blob with no place in it to compare.
MIN_CELLS = 7


def default_stage(crop_size: int) -> str:
    """The stage a user would pick for ``crop_size``: the deepest whose map has >= 7 cells a side."""
    for stage in reversed(STAGES):
        if math.ceil(crop_size / STAGE_STRIDES[stage]) >= MIN_CELLS:
            return stage
    return "stem"


class BatchMaps:
    """What one batch gave: logits (B, classes), the explained classes (B,), the maps (B, H, W) in [0, 1]."""

    def __init__(self, logits: Tensor, targets: Tensor, maps: np.ndarray) -> None:
        self.logits = logits
        self.targets = targets
        self.maps = maps


def _stage_gradients(net: ResNet, act: Tensor, *, stage: str) -> tuple[Tensor, Tensor, Tensor]:
    """Logits, targets and d logit_target / d act for a batch, from ``stage``'s output: one backward."""
    leaf = act.detach().clone().requires_grad_(True)  # a normal tensor even if ``act`` is an inference tensor
    with torch.enable_grad(), torch.autocast(device_type=leaf.device.type, enabled=False):
        logits, _ = net.forward_stages(leaf, start=stage)
        assert logits is not None
        targets = logits.detach().argmax(dim=1)
        # The images are independent, so the gradient of the sum is each image's own gradient.
        score = logits.gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(score, [leaf])
    return logits.detach(), targets, grad


def batch_gradcam(net: ResNet, x: Tensor, *, stage: str) -> BatchMaps:
    """Grad-CAM of every image's top-1 class at ``stage`` for a (B, 3, H, W) batch ``x`` on the
    network's device, ``channels_last``; ``net`` is the folded inference copy (read, never hooked)."""
    size = (x.shape[-2], x.shape[-1])
    if stage == "layer4":
        with torch.inference_mode():
            logits, acts = net.forward_stages(x)
            assert logits is not None
            targets = logits.argmax(dim=1)
            act = acts["layer4"]
            grads = torch.cat(
                [layer4_gradient(net, act[i : i + 1], target=int(t), versus=None) for i, t in enumerate(targets)]
            )
            raw = gradcam(activations=act, gradients=grads)  # (B, 1, h, w)
    else:
        with torch.inference_mode():
            _, early = net.forward_stages(x, stop=stage)
        logits, targets, grads = _stage_gradients(net, early[stage], stage=stage)
        with torch.inference_mode():
            raw = gradcam(activations=early[stage], gradients=grads)
    maps = np.stack([finish_layer_map(raw[i : i + 1], size)[0] for i in range(raw.shape[0])])
    return BatchMaps(logits.float(), targets, maps)


def batch_maps(
    *, net: ResNet, loaded: LoadedModel, x: Tensor, prepared: list[Prepared], method: str, stage: str
) -> BatchMaps:
    """The maps of ``method`` at ``stage`` for a batch: batched for Grad-CAM, photo by photo otherwise."""
    if method == "gradcam":
        return batch_gradcam(net, x, stage=stage)
    with torch.inference_mode():
        logits = net(x).float()
    targets = logits.argmax(dim=1)
    maps = []
    for p, t in zip(prepared, targets.tolist(), strict=True):
        att = analyze(image=p, model=loaded, topk=1).attribution(method=method, stage=stage, target=t)
        maps.append(att.heatmap)
    return BatchMaps(logits, targets, np.stack(maps))
