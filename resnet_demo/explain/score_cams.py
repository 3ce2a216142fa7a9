"""Score-CAM and Ablation-CAM: channel weights measured by forward passes instead of gradients.

Both weigh a stage's channels A_k by what each does to the class score, then map
ReLU(sum_k weight_k A_k) like the rest of the CAM family, as pytorch-grad-cam does:

* Score-CAM (Wang et al., 2020) masks the input with each channel, upsampled to the
  crop and min-max scaled to [0, 1], runs the masked images through the network in
  batches, and takes the softmax of their scores over the channels as the weights.
* Ablation-CAM (Desai and Ramaswamy, 2020) zeroes one channel of the stored stage
  output at a time and reruns only the network after the stage, in batches; a
  channel's weight is the score it takes away, relative to the score: (y - y_k) / |y|.

A forward per channel is slow on a CPU (ResNet-50's stages have 64 to 2048 channels),
so the option ``channels`` limits them to the N channels of highest mean activation,
64 by default; ``channels=0`` takes every channel, which is the papers' method. The
channels left out weigh nothing. Costs are in the registry, so
:func:`~resnet_demo.explain.method_cost` predicts the wait before it starts, and
``progress`` is called after every batch. With ``versus`` the score is
logit(target) - logit(versus), as for every class-specific method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.cam import weighted_cam
from .gradcam import finish_layer_map, score_of
from .methods import Method, MethodCall, register

__all__ = ["ABLATION_CAM", "DEFAULT_CHANNELS", "SCORE_CAM", "top_channels"]

DEFAULT_CHANNELS = 64  # channels weighed by default; 0 = all (the papers' method)
# Values per batch (batch x channels x height x width) sent through the network at once: ~16 MB of input.
_BATCH_VALUES = 4 * 1024 * 1024
_MAX_BATCH = 32
# Channels of each stage's output: the same for ResNet-50, -101 and -152 (bottleneck expansion 4).
_STAGE_CHANNELS = {"stem": 64, "layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
# Forward passes per channel, measured on ResNet-50 at 224 px (2 threads, batched): Score-CAM
# runs the whole network on each masked image; Ablation-CAM only what follows the stage.
_SCORE_PER_CHANNEL = 0.75
_ABLATION_PER_CHANNEL = {"stem": 0.75, "layer1": 0.6, "layer2": 0.38, "layer3": 0.14, "layer4": 0.003}


def top_channels(act: Tensor, n: int) -> Tensor:
    """Indices of the ``n`` channels of (1, C, h, w) ``act`` with the highest mean activation, strongest
    first; every channel, in order, when ``n`` is 0 or at least C. (n,) int64"""
    c = act.shape[1]
    if n <= 0 or n >= c:
        return torch.arange(c, device=act.device)
    return torch.topk(act.mean(dim=(2, 3))[0], n).indices


def _batches(count: int, per_item: int) -> Iterator[slice]:
    size = max(1, min(_MAX_BATCH, _BATCH_VALUES // max(1, per_item)))
    for start in range(0, count, size):
        yield slice(start, min(count, start + size))


def _channel_count(stage: str, options: Mapping[str, int]) -> int:
    n, c = options["channels"], _STAGE_CHANNELS[stage]
    return c if n <= 0 else min(n, c)


def _weighted_map(act: Tensor, channels: Tensor, weights: Tensor) -> Tensor:
    """ReLU(sum_k weights_k A_k) over the chosen channels: (1, 1, h, w)."""
    return weighted_cam(weights=weights.view(1, -1, 1, 1), activations=act[:, channels])


def _score_cam_stage(call: MethodCall, stage: str, done: Callable[[int], None]) -> Tensor:
    act = call.activations[stage]  # (1, C, h, w)
    channels = top_channels(act, call.options["channels"])
    x = call.image  # (1, 3, H, W)
    scores = []
    for part in _batches(len(channels), x.numel()):
        # pytorch-grad-cam upsamples with nn.UpsamplingBilinear2d, i.e. align_corners=True.
        up = F.interpolate(act[:, channels[part]], size=x.shape[-2:], mode="bilinear", align_corners=True)[0]
        low = up.amin(dim=(1, 2), keepdim=True)  # (b, 1, 1)
        masks = (up - low) / (up.amax(dim=(1, 2), keepdim=True) - low + 1e-8)  # (b, H, W) in [0, 1]
        batch = (x * masks[:, None]).contiguous(memory_format=torch.channels_last)  # (b, 3, H, W)
        scores.append(score_of(call.model(batch), call.target, call.versus))
        done(part.stop - part.start)
    weights = torch.softmax(torch.cat(scores).float(), dim=0)  # (n,)
    return _weighted_map(act, channels, weights.to(act.dtype))


def _ablation_cam_stage(call: MethodCall, stage: str, done: Callable[[int], None]) -> Tensor:
    act = call.activations[stage]  # (1, C, h, w)
    channels = top_channels(act, call.options["channels"])
    logits, _ = call.model.forward_stages(act, start=stage)
    assert logits is not None
    score = float(score_of(logits, call.target, call.versus)[0])
    drops = []
    for part in _batches(len(channels), act.numel()):
        chosen = channels[part]
        batch = act.expand(len(chosen), -1, -1, -1).clone(memory_format=torch.channels_last)  # (b, C, h, w)
        # Stage outputs are post-ReLU, so 0 is "off" (pytorch-grad-cam's choice for such layers too).
        batch[torch.arange(len(chosen), device=act.device), chosen] = 0.0
        logits, _ = call.model.forward_stages(batch, start=stage)
        assert logits is not None
        drops.append(score - score_of(logits, call.target, call.versus))
        done(len(chosen))
    # Divided by |y|, not y: a negative score (possible for a contrast) would otherwise flip every weight.
    weights = torch.cat(drops).float() / (abs(score) if score != 0 else 1.0)  # (n,)
    return _weighted_map(act, channels, weights.to(act.dtype))


def _per_stage(stage_map: Callable[[MethodCall, str, Callable[[int], None]], Tensor]) -> Callable[[MethodCall], dict]:
    """A registry ``compute`` running ``stage_map`` at every stage asked for, reporting progress per batch."""

    def compute(call: MethodCall) -> dict[str, Tensor]:
        total = sum(len(top_channels(call.activations[s], call.options["channels"])) for s in call.stages)
        count = [0]

        def done(n: int) -> None:
            count[0] += n
            call.progress(min(1.0, count[0] / total))

        with torch.inference_mode(), torch.autocast(device_type=call.image.device.type, enabled=False):
            return {s: stage_map(call, s, done) for s in call.stages}

    return compute


SCORE_CAM = register(
    Method(
        name="scorecam",
        label="Score-CAM",
        space="layer",
        cost=lambda stage, options: _SCORE_PER_CHANNEL * _channel_count(stage, options),
        compute=_per_stage(_score_cam_stage),
        finish=finish_layer_map,
        options={"channels": DEFAULT_CHANNELS},
    )
)
ABLATION_CAM = register(
    Method(
        name="ablationcam",
        label="Ablation-CAM",
        space="layer",
        cost=lambda stage, options: 0.05 + _ABLATION_PER_CHANNEL[stage] * _channel_count(stage, options),
        compute=_per_stage(_ablation_cam_stage),
        finish=finish_layer_map,
        options={"channels": DEFAULT_CHANNELS},
    )
)
