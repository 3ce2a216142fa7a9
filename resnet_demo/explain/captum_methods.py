"""Guided Grad-CAM, Integrated Gradients (optionally smoothed by NoiseTunnel) and Occlusion,
from captum, as registry entries.

They cost tens to hundreds of forward passes (see each entry's ``cost`` and
:func:`~resnet_demo.explain.method_cost`), so they run on request only. Nothing is
hooked or changed on the shared network: guided backprop, which hooks every ReLU, gets a
per-call shell of the network (:func:`resnet_demo.core.shell.shell`) that shares its
weights but owns its modules.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from captum.attr import GuidedGradCam, IntegratedGradients, NoiseTunnel, Occlusion
from torch import Tensor, nn

from ..core.model import ResNet
from ..core.shell import shell
from .gradcam import score_of
from .methods import FinishedMap, Method, MethodCall, register

__all__ = [
    "GUIDED_GRADCAM",
    "IG_BATCH",
    "IG_STEPS",
    "INTEGRATED_GRADIENTS",
    "NOISE_STDEV",
    "OCCLUSION",
    "OCCLUSION_BATCH",
    "OCCLUSION_WINDOW",
    "finish_occlusion_map",
    "finish_pixel_map",
]

# Integrated Gradients: Riemann steps and how many of them go through the network at once.
IG_STEPS = 32
IG_BATCH = 4
# NoiseTunnel (SmoothGrad) noise, as a fraction of the input's value range.
NOISE_STDEV = 0.15
# Occlusion: a grey (dataset-mean) square of a quarter of the crop, moved by half its side.
OCCLUSION_WINDOW = 4  # crop side / window side
OCCLUSION_BATCH = 7

# captum announces every guided-backprop call with a UserWarning; the hooks it means sit
# on a per-call shell (see _guided_gradcam), so the warning says nothing useful here.
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")


class _Scored(nn.Module):
    """The network as captum sees it: the input made ``channels_last``; out come the logits
    (``target`` picks the class), or for a contrastive map the one column
    logit(target) - logit(versus) (``target`` is then 0)."""

    def __init__(self, model: ResNet, call: MethodCall) -> None:
        super().__init__()
        self.model = model  # only called: a wrapper adds no hook and changes nothing on it
        self.contrast = None if call.versus is None else (call.target, call.versus)
        self.target = call.target if call.versus is None else 0

    def forward(self, inp: Tensor) -> Tensor:
        # captum builds its batches (scaled or occluded copies) in the default layout.
        logits = self.model(inp.contiguous(memory_format=torch.channels_last))  # (B, classes)
        return logits if self.contrast is None else score_of(logits, *self.contrast)[:, None]  # (B, 1)


def finish_pixel_map(attr: Tensor, size: tuple[int, int]) -> FinishedMap:
    """A (1, 3, H, W) pixel attribution as a heat map: |attribution| summed over colours,
    scaled by its 99th percentile. The raw map is the (3, H, W) attribution."""
    attr = torch.nan_to_num(attr.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)[0]  # (3, H, W)
    m = attr.abs().sum(dim=0)
    # Pixel attributions are heavy-tailed: a few pixels would otherwise wash out the rest.
    scale = float(torch.quantile(m.flatten(), 0.99)) if m.numel() else 0.0
    scale = scale if scale > 0 else float(m.max())
    return _scaled(m, attr, scale)


def finish_occlusion_map(attr: Tensor, size: tuple[int, int]) -> FinishedMap:
    """A (1, 3, H, W) occlusion map as a heat map: the drop in score where a patch covers
    a pixel, positive part, scaled by its maximum. The raw map is (H, W)."""
    attr = torch.nan_to_num(attr.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)[0]  # (3, H, W)
    raw = attr.mean(dim=0)  # the window spans all channels: they hold the same value
    m = raw.clamp(min=0.0)  # evidence for the class: covering it lowers the score
    return _scaled(m, raw, float(m.max()))


def _scaled(m: Tensor, raw: Tensor, scale: float) -> FinishedMap:
    all_zero = scale <= 0.0
    heat = torch.zeros_like(m) if all_zero else (m / scale).clamp(0.0, 1.0)
    return heat.cpu().numpy().astype(np.float32), raw.cpu().numpy().astype(np.float32), all_zero


def _guided_gradcam(call: MethodCall) -> dict[str, Tensor]:
    maps = {}
    with torch.enable_grad(), torch.autocast(device_type=call.image.device.type, enabled=False):
        # Guided backprop hooks every ReLU, and needs them out of place: only the shell's (its own
        # modules: the shared model gets no hook, and keeps its in-place setting).
        own = shell(call.model).set_inplace(False)
        scored = _Scored(own, call)
        for stage in call.stages:
            layer = own.maxpool if stage == "stem" else getattr(own, stage)
            maps[stage] = GuidedGradCam(scored, layer).attribute(
                call.image.clone().requires_grad_(True), target=scored.target, interpolate_mode="bilinear"
            )
    return maps


def _integrated_gradients(call: MethodCall) -> dict[str, Tensor]:
    x = call.image
    mean = torch.tensor(call.preprocessing.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(call.preprocessing.std, device=x.device).view(1, 3, 1, 1)
    black = ((0.0 - mean) / std).expand_as(x).contiguous()  # a black image, normalised
    steps, samples = call.options["ig_steps"], call.options["noise_tunnel_samples"]
    with torch.enable_grad(), torch.autocast(device_type=x.device.type, enabled=False):
        scored = _Scored(call.model, call)
        ig = IntegratedGradients(scored)
        kwargs = {"baselines": black, "target": scored.target, "n_steps": steps, "internal_batch_size": IG_BATCH}
        if samples > 0:
            stdev = NOISE_STDEV * float(x.max() - x.min())
            attr = NoiseTunnel(ig).attribute(
                x.clone(), nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=1, stdevs=stdev, **kwargs
            )
        else:
            attr = ig.attribute(x.clone(), **kwargs)
    return {"input": attr}


def _occlusion(call: MethodCall) -> dict[str, Tensor]:
    x = call.image
    side = x.shape[-1] // OCCLUSION_WINDOW
    scored = _Scored(call.model, call)
    with torch.inference_mode():  # forwards only
        attr = Occlusion(scored).attribute(
            x.clone(),
            sliding_window_shapes=(3, side, side),
            strides=(3, max(1, side // 2), max(1, side // 2)),
            baselines=0.0,  # the dataset mean colour
            target=scored.target,
            perturbations_per_eval=OCCLUSION_BATCH,
        )
    return {"input": attr}


GUIDED_GRADCAM = register(
    Method(
        name="guided-gradcam",
        label="Guided Grad-CAM",
        space="layer",
        cost=lambda stage, options: 3.2,
        compute=_guided_gradcam,
        finish=finish_pixel_map,
        question="which pixels",  # Grad-CAM's region sharpened to the pixels that carry it
    )
)
INTEGRATED_GRADIENTS = register(
    Method(
        name="ig",
        label="Integrated Gradients",
        space="input",
        # 47 forwards for 32 steps measured; NoiseTunnel repeats it all per noisy sample.
        cost=lambda stage, options: 47.0 / 32 * options["ig_steps"] * max(1, options["noise_tunnel_samples"]),
        compute=_integrated_gradients,
        finish=finish_pixel_map,
        options={"ig_steps": IG_STEPS, "noise_tunnel_samples": 0},
    )
)
OCCLUSION = register(
    Method(
        name="occlusion",
        label="Occlusion",
        space="input",
        cost=lambda stage, options: 36.0,  # 49 window positions, in batches of 7
        compute=_occlusion,
        finish=finish_occlusion_map,
    )
)
