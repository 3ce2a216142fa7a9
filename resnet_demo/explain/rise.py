"""RISE (Petsiuk et al., 2018): the class score of randomly masked copies, averaged per pixel.

``N`` binary grids of ``s x s`` cells (s = 7), each cell kept with probability p = 0.5,
are upsampled bilinearly to ``(s + 1)`` cells of the crop's size and cropped at a random
shift of less than a cell, as the paper does, so the masks are smooth and no grid line
sits at a fixed place. The masked images go through the network in batches (forwards
only, under ``inference_mode``); the saliency of a pixel is the paper's

    S(x) = sum_i score_i * mask_i(x) / (N p),

an estimate of the mean score when the pixel is kept. The score is the class's softmax
probability, as in the paper, or logit(target) - logit(versus) for a contrastive map.

The raw map, (H, W), is the same sum with each score less the masks' mean score:
sum_i (score_i - mean) * mask_i(x) / (N p). Its expectation is S(x) minus the mean score,
positive where keeping the pixel raises the score above what a random mask gives, so
the finishing can keep only evidence for the class (the positive part, scaled by its
maximum, as occlusion's map); and centring the scores removes the noise of how often
each pixel happened to be kept (a control variate), which the plain sum carries. Masks
come from a generator seeded by the option ``seed``: the same seed gives the same map.
The network's forward checks for cancellation between stages, so a cancelled request
stops within one batch.

The masks are smooth over about a cell, so a map spreads about a cell beyond the region
that makes the score: a square of 48 px in a 112 px crop keeps about 68 % of the map's
positive mass at the default grid (cells of 16 px), a square of 80 px in 96 px about 92 %
with cells of 6 px (``rise_grid`` 16).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from .captum_methods import finish_occlusion_map
from .gradcam import score_of
from .methods import Method, MethodCall, check_range, register

__all__ = ["GRID", "KEEP", "MASKS", "RISE", "rise_batch_size", "rise_masks", "rise_saliency"]

# 300 masks cost about 240 forwards (20 to 30 s for ResNet-50 at 224 px on 2 cores); the paper uses 4000.
MASKS = 300
MASKS_RANGE = (50, 4000)
GRID = 7  # cells per side of a mask, the paper's s
GRID_RANGE = (2, 32)
KEEP = 0.5  # probability that a cell is kept, the paper's p
# Values per batch (batch x 3 x H x W) sent through the network at once: ~16 MB of input, 32 images at most.
_BATCH_VALUES = 4 * 1024 * 1024
_MAX_BATCH = 32
# Forward passes per mask: a batched forward per image costs less than a lone one; measured at 0.74 to
# 0.78 on ResNet-50 at 224 px (2 threads, AMD EPYC, batches of 27; fastest of 4 interleaved runs).
_PER_MASK = 0.8


def _checked(options: Mapping[str, int]) -> tuple[int, int]:
    n = check_range(value=options["rise_masks"], low=MASKS_RANGE[0], high=MASKS_RANGE[1], what="masks", method="RISE")
    s = check_range(value=options["rise_grid"], low=GRID_RANGE[0], high=GRID_RANGE[1], what="grid cells per side",
                    method="RISE")  # fmt: skip
    return n, s


def rise_batch_size(image: Tensor) -> int:
    """Masked copies of (1, 3, H, W) ``image`` per forward."""
    return max(1, min(_MAX_BATCH, _BATCH_VALUES // image.numel()))


def rise_masks(*, count: int, size: tuple[int, int], grid: int, generator: torch.Generator) -> Tensor:
    """``count`` RISE masks of ``size`` (H, W): (count, H, W) float32 in [0, 1], on the generator's device.

    Each is a ``grid x grid`` Bernoulli(p) grid, upsampled bilinearly to (grid + 1) cells
    and cropped at a random shift of less than a cell (the paper's construction).
    """
    device = generator.device
    h, w = size
    cell_h, cell_w = -(-h // grid), -(-w // grid)  # ceil: the cells cover the crop
    cells = (torch.rand((count, 1, grid, grid), generator=generator, device=device) < KEEP).float()
    up = F.interpolate(cells, size=((grid + 1) * cell_h, (grid + 1) * cell_w), mode="bilinear", align_corners=False)
    dy = torch.randint(0, cell_h, (count, 1, 1), generator=generator, device=device)
    dx = torch.randint(0, cell_w, (count, 1, 1), generator=generator, device=device)
    rows = dy + torch.arange(h, device=device).view(1, h, 1)  # (count, H, 1)
    cols = dx + torch.arange(w, device=device).view(1, 1, w)  # (count, 1, W)
    return up[torch.arange(count, device=device).view(count, 1, 1), 0, rows, cols]  # (count, H, W)


def rise_saliency(
    *,
    forward: Callable[[Tensor], Tensor],
    image: Tensor,
    masks: int,
    grid: int = GRID,
    seed: int = 0,
    batch: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> Tensor:
    """RISE's saliency of (1, 3, H, W) ``image``, from scores less their mean: (H, W) float32.

    ``forward`` maps a (B, 3, H, W) batch of masked copies to their (B,) scores; it is
    called under ``torch.inference_mode``. ``batch`` None: :func:`rise_batch_size`.
    """
    size = tuple(image.shape[-2:])
    batch = batch or rise_batch_size(image)
    generator = torch.Generator(device=image.device).manual_seed(seed)
    weighted = torch.zeros(size, dtype=torch.float32, device=image.device)  # sum_i score_i mask_i: (H, W)
    kept = torch.zeros(size, dtype=torch.float32, device=image.device)  # sum_i mask_i: (H, W)
    score_sum = 0.0
    with torch.inference_mode(), torch.autocast(device_type=image.device.type, enabled=False):
        for start in range(0, masks, batch):
            count = min(batch, masks - start)
            m = rise_masks(count=count, size=size, grid=grid, generator=generator)  # (b, H, W)
            scores = forward((image * m[:, None]).to(image.dtype)).float()  # (b,)
            weighted += torch.einsum("b,bhw->hw", scores, m)
            kept += m.sum(dim=0)
            score_sum += float(scores.sum())
            if progress is not None:
                progress((start + count) / masks)
    return (weighted - score_sum / masks * kept) / (masks * KEEP)


def _rise(call: MethodCall) -> dict[str, Tensor]:
    n, s = _checked(call.options)

    def forward(batch: Tensor) -> Tensor:
        logits = call.model(batch.contiguous(memory_format=torch.channels_last)).float()  # (B, classes)
        if call.versus is None:
            return torch.softmax(logits, dim=1)[:, call.target]  # the paper's score
        return score_of(logits, call.target, call.versus)  # a probability has no contrast: the logits'

    sal = rise_saliency(forward=forward, image=call.image, masks=n, grid=s, seed=call.options["seed"],
                        progress=call.progress)  # fmt: skip
    return {"input": sal[None, None]}  # (1, 1, H, W): finished as occlusion's drop in score


def _cost(stage: str, options: Mapping[str, int]) -> float:
    n, _ = _checked(options)
    return _PER_MASK * n


RISE = register(
    Method(
        name="rise",
        label="RISE",
        space="input",
        cost=_cost,
        compute=_rise,
        finish=finish_occlusion_map,
        options={"rise_masks": MASKS, "rise_grid": GRID, "seed": 0},
    )
)
