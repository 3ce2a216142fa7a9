"""SmoothGrad (Smilkov et al., 2017): the input gradient of the class score, averaged over noisy copies.

The gradient of a class score with respect to the pixels is sharp but noisy; averaging it
over ``n`` copies of the image with Gaussian noise added (sigma a fraction of the input's
value range, 15 % as the paper recommends and as :data:`.captum_methods.NOISE_STDEV` sets
for Integrated Gradients' NoiseTunnel) keeps what is stable. The copies go through the
network in batches, one forward and one backward each; the noise comes from a generator
seeded by the option ``seed``, so a map is reproducible. The map is the mean gradient
itself (captum's ``NoiseTunnel(Saliency)`` with ``abs=False``), finished as every pixel map is:
|attribution| summed over colours, scaled by its 99th percentile.

The inference copy's ReLUs and residual sums are in place; autograd allows that (see
:meth:`~resnet_demo.core.model.Bottleneck.forward_parts`) and nothing is hooked, so the
shared copy is called as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from .captum_methods import NOISE_STDEV, finish_pixel_map
from .gradcam import score_of
from .methods import Method, MethodCall, check_range, register

__all__ = ["SAMPLES", "SMOOTHGRAD", "SMOOTHGRAD_BATCH", "smoothgrad_batches", "smooth_gradient"]

SAMPLES = 25  # noisy copies by default; the paper sees little change past 50
SAMPLES_RANGE = (1, 200)
SIGMA_PCT = round(NOISE_STDEV * 100)  # noise sigma in percent of the input's value range
SIGMA_RANGE = (1, 100)
# Copies per forward + backward: a backward keeps every activation of the batch (~0.1 GB per
# 224 px copy for ResNet-50), so batches stay small.
SMOOTHGRAD_BATCH = 8
# Forward passes per noisy copy: a forward and a backward to the input in batches of 8, measured
# at 1.5 lone forwards on ResNet-50 at 224 px (2 threads, AMD EPYC; fastest of 4 interleaved runs).
_PER_SAMPLE = 1.5


def _checked(options: Mapping[str, int]) -> tuple[int, int]:
    n = check_range(value=options["smoothgrad_samples"], low=SAMPLES_RANGE[0], high=SAMPLES_RANGE[1],
                    what="noisy samples", method="SmoothGrad")  # fmt: skip
    sigma = check_range(value=options["smoothgrad_sigma_pct"], low=SIGMA_RANGE[0], high=SIGMA_RANGE[1],
                        what="percent of noise", method="SmoothGrad")  # fmt: skip
    return n, sigma


def smoothgrad_batches(n: int, batch: int = SMOOTHGRAD_BATCH) -> list[int]:
    """The batch sizes ``n`` copies go through the network in: full batches, then the rest
    (the order in which captum's NoiseTunnel draws its noise)."""
    return [batch] * (n // batch) + ([n % batch] if n % batch else [])


def smooth_gradient(
    *,
    forward: Callable[[Tensor], Tensor],
    image: Tensor,
    samples: int,
    sigma: float,
    seed: int,
    batch: int = SMOOTHGRAD_BATCH,
    progress: Callable[[float], None] | None = None,
) -> Tensor:
    """The mean over ``samples`` noisy copies of d score / d input: (1, 3, H, W) float32.

    ``forward`` maps a (B, 3, H, W) batch to the (B,) scores to explain; ``sigma`` is the
    noise's standard deviation in input units. The noise is drawn batch by batch, in the
    layout of ``image``, from a generator seeded with ``seed`` on ``image``'s device.
    """
    generator = torch.Generator(device=image.device).manual_seed(seed)
    total = torch.zeros(image.shape, dtype=torch.float32, device=image.device)  # (1, 3, H, W)
    done = 0
    with torch.enable_grad(), torch.autocast(device_type=image.device.type, enabled=False):
        for size in smoothgrad_batches(samples, batch):
            noise = torch.randn((size, *image.shape[1:]), generator=generator, device=image.device)  # (b, 3, H, W)
            noisy = (image.detach().float() + sigma * noise).requires_grad_(True)
            (grad,) = torch.autograd.grad(forward(noisy).sum(), noisy)  # rows are independent: one backward
            total += grad.sum(dim=0, keepdim=True)
            done += size
            if progress is not None:
                progress(done / samples)
    return total / samples


def _smoothgrad(call: MethodCall) -> dict[str, Tensor]:
    n, sigma_pct = _checked(call.options)
    x = call.image
    sigma = sigma_pct / 100 * float(x.max() - x.min())

    def forward(batch: Tensor) -> Tensor:
        logits = call.model(batch.contiguous(memory_format=torch.channels_last))  # (B, classes)
        return score_of(logits, call.target, call.versus)

    attr = smooth_gradient(
        forward=forward, image=x, samples=n, sigma=sigma, seed=call.options["seed"], progress=call.progress
    )
    return {"input": attr}


def _cost(stage: str, options: Mapping[str, int]) -> float:
    n, _ = _checked(options)
    return _PER_SAMPLE * n


SMOOTHGRAD = register(
    Method(
        name="smoothgrad",
        label="SmoothGrad",
        space="input",
        cost=_cost,
        compute=_smoothgrad,
        finish=finish_pixel_map,
        options={"smoothgrad_samples": SAMPLES, "smoothgrad_sigma_pct": SIGMA_PCT, "seed": 0},
    )
)
